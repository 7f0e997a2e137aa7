"""Explanation-quality benchmarking suite (region perturbation, AOPC, complexity, continuity).

The data flow is one way: dataset → model → method → heatmap → metrics → tidy table → report.
See README.md, section "How it works", for where each step lives.
"""

__version__ = "0.1.0"
