"""Explanation-quality benchmarking suite (region perturbation, AOPC, complexity, continuity).

The data flow is one way: dataset → model → method → heatmap → metrics → tidy table → report.
See README.md, section "How it works", for where each step lives.
"""

__version__ = "0.1.0"


def evaluate_explanations(*args, **kwargs):
    """The Python API (bench/inmemory.py): a model and images in memory → the CLI's tidy tables."""
    from .inmemory import evaluate_explanations as evaluate

    return evaluate(*args, **kwargs)
