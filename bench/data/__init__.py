"""Helpers of the dataset and method plug-ins that read files: image folders with their preprocessing
(imagefolders.py) and precomputed heatmaps keyed by image id (heatmap_files.py)."""
