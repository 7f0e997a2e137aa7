"""Layer-wise relevance propagation with one rule for every linear layer (TNNLS eq. 7–8, tutorial Sec. 5).

Parameters (conf/method/lrp_*.yaml, key ``params``):
    rule: epsilon | zero | gamma | alpha_beta
    epsilon, gamma, alpha, beta: the rule's constants
    maxpool: wta (winner-take-all, the gradient's routing) | proportional (tutorial 5.3)
"""

from bench.api import Context, Method
from bench.errors import BenchError
from bench.lrp import AlphaBeta, Epsilon, Gamma, Zero, lrp

RULES = {
    "epsilon": lambda p: Epsilon(epsilon=p.get("epsilon", 1.0)),
    "zero": lambda p: Zero(),
    "gamma": lambda p: Gamma(gamma=p.get("gamma", 0.25)),
    "alpha_beta": lambda p: AlphaBeta(alpha=p.get("alpha", 2.0), beta=p.get("beta", 1.0)),
}


class LRP(Method):
    pooling = "sum"

    def __init__(self, rule: str = "epsilon", epsilon: float = 1.0, gamma: float = 0.25, alpha: float = 2.0,
                 beta: float = 1.0, maxpool: str = "wta") -> None:
        if rule not in RULES:
            raise BenchError(f"unknown LRP rule '{rule}'; available: {', '.join(RULES)}")
        if rule == "alpha_beta" and abs(alpha - beta - 1.0) > 1e-9:
            raise BenchError(f"LRP-αβ needs α − β = 1 (tutorial eq. 1), got α={alpha}, β={beta}")
        self.rule = RULES[rule](dict(epsilon=epsilon, gamma=gamma, alpha=alpha, beta=beta))
        self.maxpool = maxpool

    def attribute(self, model, x, target, ctx: Context):
        return lrp(model, x, target, lambda name, module: self.rule, maxpool=self.maxpool)
