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

from bench.interfaces import Context, Method
from bench.checks import choice, number
from bench.errors import BenchError
from bench.lrp import Composite, WeightCache, lrp, make_rule
from bench.lrp.propagate import MAXPOOL_MODES

P = "method.params."


def _bound(key: str, value) -> float | None:
    return None if value is None else number(P + key, value)


class LRP(Method):
    pooling = "sum"

    def __init__(self, rule: str = "epsilon", first_rule: str | None = None, conv_rule: str | None = None,
                 dense_rule: str | None = None, epsilon: float = 1.0, gamma: float = 0.25, alpha: float = 2.0,
                 beta: float = 1.0, low: float | None = None, high: float | None = None,
                 maxpool: str = "wta") -> None:
        # every constant checked before any rule is built; the values themselves are passed on unchanged
        names = {"rule": rule, "first_rule": first_rule, "conv_rule": conv_rule, "dense_rule": dense_rule}
        number(P + "epsilon", epsilon, low=0)
        number(P + "gamma", gamma, low=0)
        number(P + "alpha", alpha, low=1)
        number(P + "beta", beta, low=0)
        if abs(alpha - beta - 1.0) > 1e-9:
            raise BenchError(f"{P}alpha and {P}beta must satisfy α − β = 1 (tutorial eq. 1; TNNLS's α=2, β=−1 "
                             f"is alpha=2, beta=1 here), got alpha={alpha:g}, beta={beta:g}")
        lo, hi = _bound("low", low), _bound("high", high)
        if lo is not None and hi is not None and not lo < hi:
            raise BenchError(f"{P}low must be below {P}high (the z^B pixel bounds in model-input units), "
                             f"got low={lo:g}, high={hi:g}")
        choice(P + "maxpool", maxpool, MAXPOOL_MODES)
        constants = {"epsilon": dict(epsilon=epsilon), "gamma": dict(gamma=gamma),
                     "alpha_beta": dict(alpha=alpha, beta=beta), "zbox": dict(low=low, high=high)}

        def build(slot):
            name = names[slot]
            if name is None and slot != "rule":
                return None
            try:  # make_rule refuses unknown names, listing the rules
                return make_rule(name, **(constants.get(name, {}) if isinstance(name, str) else {}))
            except BenchError as exc:
                raise BenchError(f"{P}{slot}: {exc}") from None

        rules = {slot: build(slot) for slot in names}
        for slot in ("rule", "conv_rule", "dense_rule"):
            if rules[slot] is not None and rules[slot].first_layer_only:
                raise BenchError(f"{P}{slot}='{names[slot]}' only applies to the first layer; use it as "
                                 f"{P}first_rule")
        self.composite = Composite(default=rules["rule"], conv=rules["conv_rule"], dense=rules["dense_rule"],
                                   first=rules["first_rule"])
        self.maxpool = maxpool
        self.cache = WeightCache()  # modified weights (w⁺, …) reused from batch to batch

    def attribute(self, model, x, target, ctx: Context):
        bounds = ctx.normalization.input_bounds(x)
        return lrp(model, x, target, self.composite, maxpool=self.maxpool, bounds=bounds, cache=self.cache)
