"""Explanation-quality benchmarking suite (region perturbation, AOPC, complexity, continuity).

The data flow is one way: dataset → model → method → heatmap → metrics → tidy table → report.
See README.md, section "How it works", for where each step lives.
"""

__version__ = "0.1.0"


def evaluate_explanations(*args, **kwargs):
    """The Python API (bench/inmemory.py): a model and images in memory → the CLI's tidy tables."""
    import importlib  # (by name: the code identity, bench/identity.py, follows `from .` imports, and this
                      # entry point orchestrates a run, it computes no number itself)

    return importlib.import_module("bench.inmemory").evaluate_explanations(*args, **kwargs)
