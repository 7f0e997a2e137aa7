"""Layer-wise relevance propagation: rules (rules.py) on one gradient-trick mechanism (propagate.py)."""

from .propagate import lrp, lrp_hooks
from .rules import AlphaBeta, Epsilon, Gamma, Part, Rule, Term, Zero

__all__ = ["lrp", "lrp_hooks", "Rule", "Term", "Part", "Epsilon", "Zero", "Gamma", "AlphaBeta"]
