"""Explanation-quality benchmarking suite: region perturbation (MoRF, AOPC), the faithfulness protocols that grew
from it, heatmap complexity and continuity.

The data flow is one way, and so is the tree: ``engine/`` (the device numerics) → ``protocols/`` (one file per
protocol) → ``run/`` (config → checked spec → job folder → batches → tidy tables → collect) → ``report/``;
``models/`` and ``data/`` load what a run evaluates, ``perf/`` measures speed. See README.md, "How it works".
"""

from . import _moved

__version__ = "0.1.0"

_moved.install()  # old module paths (bench.api, bench.seeding, …) for one release


def evaluate_explanations(*args, **kwargs):
    """The Python API (bench/run/python_api.py): a model and images in memory → the CLI's tidy tables."""
    import importlib  # (by name: the code identity, bench/run/identity.py, follows `from .` imports, and this
                      # entry point orchestrates a run, it computes no number itself)

    return importlib.import_module("bench.run.python_api").evaluate_explanations(*args, **kwargs)
