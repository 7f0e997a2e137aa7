"""Layer-wise relevance propagation: rules (rules.py) on one gradient-trick mechanism (propagate.py),
composites mapping layers to rules (composites.py), BatchNorm merging (canonizers.py)."""

from .composites import Composite, as_composite, attnlrp, cp_lrp, deep_taylor, epsilon_gamma_box
from .propagate import WeightCache, lrp, lrp_hooks
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Part, Rule, Term, WSquare, ZBox, Zero, ZPlus, make_rule, stabilize

__all__ = ["lrp", "lrp_hooks", "WeightCache", "Rule", "Term", "Part", "Epsilon", "Zero", "Gamma", "AlphaBeta", "ZPlus",
           "ZBox", "WSquare", "Flat", "make_rule", "stabilize", "Composite", "as_composite", "deep_taylor",
           "epsilon_gamma_box", "attnlrp", "cp_lrp"]
