"""Layer-wise relevance propagation (tutorial Sec. 5, TNNLS eq. 7–8, deep Taylor Sec. 4–6), every variant
of the catalogue as one plug-in configured by its YAML (conf/method/lrp_*.yaml, deep_taylor.yaml).

Parameters (key ``params``):
    rule:        the rule of every Conv2d/Linear layer not covered below —
                 epsilon | zero | gamma | alpha_beta | zplus
    first_rule:  null (= ``rule``) | zbox (z^B with the data's pixel bounds) | wsquare (w²) | flat | any rule
                 above — for the layer(s) that receive the model's input
    conv_rule, dense_rule: null (= ``rule``) or a rule name, for Conv2d / Linear layers (a composite)
    epsilon, gamma, alpha, beta: the constants of the rules that use them (α − β = 1; TNNLS eq. 8 writes
                 β with the opposite sign: its α=2, β=−1 is α=2, β=1 here)
    low, high:   z^B bounds in model-input units; null = the data's raw pixel range mapped through the
                 model's normalisation (``ctx.normalization.input_bounds``)
    maxpool:     wta (winner-take-all, the gradient's routing) | proportional (tutorial 5.3)

Relevance at the output is f_c(x) on the explained class and 0 elsewhere; BatchNorm is merged into the
layer before it; average pooling uses the z-rule. See bench/lrp/ for the mechanism.
"""

from bench.api import Context, Method
from bench.errors import BenchError
from bench.lrp import Composite, WeightCache, lrp, make_rule
from bench.lrp.propagate import MAXPOOL_MODES


class LRP(Method):
    pooling = "sum"

    def __init__(self, rule: str = "epsilon", first_rule: str | None = None, conv_rule: str | None = None,
                 dense_rule: str | None = None, epsilon: float = 1.0, gamma: float = 0.25, alpha: float = 2.0,
                 beta: float = 1.0, low: float | None = None, high: float | None = None,
                 maxpool: str = "wta") -> None:
        constants = {"epsilon": dict(epsilon=epsilon), "gamma": dict(gamma=gamma),
                     "alpha_beta": dict(alpha=alpha, beta=beta), "zbox": dict(low=low, high=high)}

        def build(name):
            return None if name is None else make_rule(name, **constants.get(name, {}))

        default = build(rule)
        if default.first_layer_only:
            raise BenchError(f"rule '{rule}' only applies to the first layer; use it as first_rule")
        for slot, name in (("conv_rule", conv_rule), ("dense_rule", dense_rule)):
            if name is not None and build(name).first_layer_only:
                raise BenchError(f"{slot}='{name}' only applies to the first layer; use it as first_rule")
        if maxpool not in MAXPOOL_MODES:
            raise BenchError(f"maxpool must be one of {', '.join(MAXPOOL_MODES)}, got '{maxpool}'")
        self.composite = Composite(default=default, conv=build(conv_rule), dense=build(dense_rule),
                                   first=build(first_rule))
        self.maxpool = maxpool
        self.cache = WeightCache()  # modified weights (w⁺, …) reused from batch to batch

    def attribute(self, model, x, target, ctx: Context):
        bounds = ctx.normalization.input_bounds(x)
        return lrp(model, x, target, self.composite, maxpool=self.maxpool, bounds=bounds, cache=self.cache)
