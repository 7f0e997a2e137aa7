"""LRP for vision transformers: AttnLRP (Achtibat et al., ICML 2024) and CP-LRP (Ali et al., ICML 2022) on the
suite's LRP mechanism (bench/lrp/: the rules in rules.py, the transformer's operations in transformer.py), for
torchvision's and timm's ``VisionTransformer`` (conf/method/attnlrp.yaml, cp_lrp.yaml).

Parameters (key ``params``):
    attention:    attnlrp (the softmax rule and the uniform rule on q kᵀ and A v) | cp (the attention weights held
                  constant: relevance reaches the tokens through the values only)
    epsilon:      ε of the LRP-ε rule on the linear layers; 0 (default): their gradient, as LXT's efficient
                  implementation (LRP-0 divides by nothing there, so it needs no stabiliser)
    conv_gamma, dense_gamma: null (LRP-ε) or γ of LRP-γ on the Conv2d (patch embedding) / every Linear layer, the
                  attention's projections included (LXT's vision-transformer example searches conv γ ∈ {0.1, 0.25,
                  100}, linear γ ∈ {0, 0.01, 0.05, 0.1, 1}; through Zennit it reaches only the Linear layers torchvision
                  calls as modules, the MLP and the head — tests/test_attnlrp.py reproduces it with per-name rules)
    softmax_bias: true (AttnLRP Prop. 3.1 with the bias term, the paper's and LXT's rule) | false (without it:
                  conservative, less stable); attnlrp only
    matmul_epsilon: ε of the uniform rule on the attention's products (0: the gradient halved, as LXT)

Everywhere: the identity rule on GELU/SiLU/Tanh, LayerNorm/RMSNorm with σ held constant, residual additions in
proportion to the summands. Relevance at the output is f_c(x) on the explained class and 0 elsewhere.
"""

from bench.checks import boolean, choice, number
from bench.errors import BenchError
from bench.interfaces import Context, Method
from bench.lrp import Gamma, WeightCache, attnlrp, cp_lrp, lrp
from bench.lrp.rules import Softmax, Uniform

P = "method.params."


class TransformerLRP(Method):
    pooling = "sum"

    def __init__(self, attention: str = "attnlrp", epsilon: float = 0.0, conv_gamma: float | None = None,
                 dense_gamma: float | None = None, softmax_bias: bool = True, matmul_epsilon: float = 0.0) -> None:
        choice(P + "attention", attention, ("attnlrp", "cp"))
        number(P + "epsilon", epsilon, low=0)
        number(P + "matmul_epsilon", matmul_epsilon, low=0)
        boolean(P + "softmax_bias", softmax_bias)
        gammas = {}
        for key, value in (("conv", conv_gamma), ("dense", dense_gamma)):
            gammas[key] = None if value is None else Gamma(number(P + f"{key}_gamma", value, low=0))
        if attention == "cp" and not softmax_bias:
            raise BenchError(f"{P}softmax_bias=false is AttnLRP's softmax rule; attention=cp holds the attention "
                             "weights constant (no softmax rule)")
        product = Uniform(matmul_epsilon)
        if attention == "attnlrp":
            self.composite = attnlrp(epsilon, softmax=Softmax(bias=softmax_bias), product=product, **gammas)
        else:
            self.composite = cp_lrp(epsilon, product=product, **gammas)
        self.cache = WeightCache()  # modified weights (LRP-γ) reused from batch to batch

    def attribute(self, model, x, target, ctx: Context):
        return lrp(model, x, target, self.composite, cache=self.cache)
