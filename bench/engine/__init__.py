"""The engine: the device numerics every protocol builds on, independent of any protocol.

regions (tiles, superpixels, seeded orders), curves (all perturbed inputs of a batch through the model in chunks),
replacement (the functions g and the §9 substrates; imputation.py, biharmonic.py), seeding and counter_rng (per-image
random streams, the same bits on every device), pooling, scoring (the class c and f_c), render (heatmap → RGB),
stats (bootstrap, s.e.m.). Nothing here imports from protocols/, run/ or report/.
"""
