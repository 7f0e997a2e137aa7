"""LRP rules as small declarative objects (tutorial Sec. 5, TNNLS eq. 7–8, deep Taylor Sec. 4–5).

A rule for a linear layer z_j = Σ_i x_i w_ij + b_j is a weighted sum of *terms*; each term is a sum of
*parts*, and each part is the same layer evaluated with a modified input, weight and bias,
z_pj = Σ_i in_p(x)_i ρ_p(w_ij) + ρ_p(b_j). A term t redistributes the relevance R_j of the layer's
outputs (only of the outputs with z_j > 0 or z_j < 0 when the term says ``where``) as

    R_i = Σ_t c_t · Σ_{p ∈ t} in_p(x)_i · Σ_j ρ_p(w_ij) · R_j / stab(z_tj),    z_tj = Σ_{p ∈ t} z_pj

with stab(z) = z + ε·sign(z), sign(0) = +1 (TNNLS eq. 7). A term may declare the ``sign`` its z_tj has
wherever it carries relevance (z⁺ ≥ 0, z⁻ ≤ 0, the γ terms on their side of zero): stab(z) is then the
layer evaluated with its bias shifted by ±ε, which saves the stabiliser's passes over the output. The
mechanism that evaluates a rule is bench/lrp/propagate.py; a rule only says *what* to compute.

Inputs of a part: ``"x"`` (the layer's input), ``"pos"`` / ``"neg"`` (its positive / negative part),
and, for rules of the first layer only, the constants ``"low"`` / ``"high"`` (the data's pixel bounds in
model-input units, deep Taylor Sec. 4.2) and ``"ones"``. Relevance that lands on a constant is the
input layer's relevance (z^B, w², flat): it is not of the form x ⊙ gradient, so the mechanism collects
it explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

INPUTS = ("x", "pos", "neg", "low", "high", "ones")
SOURCES = ("low", "high", "ones")  # constant inputs: first layer only


# Parameter modifiers ρ: named module-level functions and frozen dataclasses (hashable, comparable), so
# that a rule is a plain value and can be printed, compared and cached.
def positive(t: torch.Tensor) -> torch.Tensor:
    """ρ(t) = t⁺"""
    return t.clamp(min=0)


def negative(t: torch.Tensor) -> torch.Tensor:
    """ρ(t) = t⁻"""
    return t.clamp(max=0)


def minus_positive(t: torch.Tensor) -> torch.Tensor:
    """ρ(t) = −t⁺ (the l_i w⁺_ij term of z^B)"""
    return -t.clamp(min=0)


def minus_negative(t: torch.Tensor) -> torch.Tensor:
    """ρ(t) = −t⁻ (the h_i w⁻_ij term of z^B)"""
    return -t.clamp(max=0)


def square(t: torch.Tensor) -> torch.Tensor:
    """ρ(t) = t² (w² rule)"""
    return t * t


def ones(t: torch.Tensor) -> torch.Tensor:
    """ρ(t) = 1 (flat rule)"""
    return torch.ones_like(t)


@dataclass(frozen=True)
class AddPart:
    """ρ(t) = t + γ·t⁺ (``sign=+1``) or t + γ·t⁻ (``sign=−1``) — LRP-γ."""

    gamma: float
    sign: int = 1

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t + self.gamma * (t.clamp(min=0) if self.sign > 0 else t.clamp(max=0))


Modifier = Optional[Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class Part:
    """One evaluation of the layer: ``layer(input; weight(w), bias(b))``. ``weight``/``bias`` ``None`` =
    unchanged; ``bias=False`` drops the bias."""

    input: str = "x"
    weight: Modifier = None
    bias: Union[Modifier, bool] = None

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"Part.input must be one of {INPUTS}, got {self.input!r}")


@dataclass(frozen=True)
class Term:
    """c_t times the relevance redistributed in proportion to the sum of the term's parts; ``where`` =
    ``"pos"`` / ``"neg"`` restricts the term to the outputs with z_j > 0 / z_j < 0. ``sign`` = +1 / −1:
    z_tj ≥ 0 / ≤ 0 for every input on the outputs the term applies to (a mathematical property of the
    parts, checked by tests/test_lrp_rules.py); None = unknown."""

    coefficient: float = 1.0
    parts: tuple[Part, ...] = (Part(),)
    where: Optional[str] = None
    sign: Optional[int] = None

    def __post_init__(self) -> None:
        if self.sign not in (None, 1, -1):
            raise ValueError(f"Term.sign must be None, 1 or -1, got {self.sign!r}")


def stabilize_(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``stabilize`` in place in ``z`` (a buffer the caller owns); one pass when z has no negative entry."""
    if epsilon == 0:
        return z.masked_fill_(z == 0, 1.0)
    negative = torch.signbit(z)  # −0.0 counts as negative, as copysign does below
    z.abs_().add_(epsilon)
    if bool(negative.any()):
        z.masked_scatter_(negative, z.masked_select(negative).neg_())
    return z


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """z + ε·sign(z) with sign(0) = +1 (TNNLS eq. 7), as a new tensor; with ε = 0 an exact zero
    denominator becomes 1 (its share is 0)."""
    if epsilon == 0:
        return torch.where(z == 0, torch.ones_like(z), z)
    return z.abs().add_(epsilon).copysign_(z)  # |z| + ε with z's sign; +0 → +ε


@dataclass(frozen=True)
class Rule:
    """Base class: ``terms`` and the stabiliser ``epsilon`` define the rule. Each rule declares its own
    fields, its constants first and ``epsilon`` last, so that e.g. ``Gamma(0.5)`` means γ = 0.5."""

    epsilon = 1e-9  # class default for rules without a field of that name

    @property
    def terms(self) -> tuple[Term, ...]:
        return (Term(),)

    @property
    def first_layer_only(self) -> bool:
        """True for rules with constant inputs (z^B, w², flat): they compute the *input* relevance."""
        return any(p.input in SOURCES for t in self.terms for p in t.parts)


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-ε (TNNLS eq. 7): R_i = Σ_j x_i w_ij / (z_j + ε sign z_j) · R_j, z_j including the bias."""

    epsilon: float = 1.0


@dataclass(frozen=True)
class Zero(Rule):
    """LRP-0 (Bach et al. 2015): LRP-ε with ε = 0 (a zero denominator passes nothing)."""

    epsilon: float = 0.0


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-γ (Montavon et al. 2019): R_i = Σ_j x_i (w_ij + γ w⁺_ij) / Σ_i x_i (w_ij + γ w⁺_ij) · R_j, for
    x ≥ 0 and z_j > 0 (the bias is modified alike, b + γ b⁺). In the generalised form of Andéol et al.
    (2021), also used by Zennit, outputs with z_j < 0 favour the negative contributions (w + γ w⁻) and
    negative inputs use the mirrored weights, so the rule is defined for pixel inputs too."""

    gamma: float = 0.25
    epsilon: float = 1e-9

    @property
    def terms(self) -> tuple[Term, ...]:
        up, down = AddPart(self.gamma, 1), AddPart(self.gamma, -1)
        # on z_j > 0: z_tj = z_j + γ(Σ x⁺w⁺ + x⁻w⁻ + b⁺) ≥ z_j > 0; on z_j < 0 mirrored
        return (Term(1.0, (Part("pos", up, up), Part("neg", down, False)), where="pos", sign=1),
                Term(1.0, (Part("pos", down, down), Part("neg", up, False)), where="neg", sign=-1))


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-αβ with α − β = 1 (tutorial eq. 1):
    R_i = Σ_j (α z⁺_ij / Σ_i z⁺_ij − β z⁻_ij / Σ_i z⁻_ij) R_j, z_ij = x_i w_ij, the bias counted with its
    sign (b⁺ in the positive, b⁻ in the negative denominator). TNNLS eq. 8 writes the same rule with the
    opposite sign convention for β (α = 2, β = −1 there is α = 2, β = 1 here). α=1, β=0 is the z⁺ rule."""

    alpha: float = 2.0
    beta: float = 1.0
    epsilon: float = 1e-9

    def __post_init__(self) -> None:
        if abs(self.alpha - self.beta - 1.0) > 1e-9 or self.beta < 0:
            raise ValueError(f"LRP-αβ needs α − β = 1 and β ≥ 0 (tutorial eq. 1), got α={self.alpha}, "
                             f"β={self.beta}")

    @property
    def terms(self) -> tuple[Term, ...]:
        terms = [Term(self.alpha, (Part("pos", positive, positive), Part("neg", negative, False)), sign=1)]
        if self.beta:
            terms.append(Term(-self.beta, (Part("pos", negative, negative), Part("neg", positive, False)),
                              sign=-1))
        return tuple(terms)


@dataclass(frozen=True)
class ZPlus(AlphaBeta):
    """The z⁺ rule (deep Taylor Sec. 4.2, tutorial eq. 2): R_i = Σ_j x_i w⁺_ij / Σ_i x_i w⁺_ij · R_j for
    x ≥ 0; positive biases count in the denominator as in deep Taylor Sec. 6.2 (= LRP-α1β0)."""

    alpha: float = 1.0
    beta: float = 0.0


@dataclass(frozen=True)
class ZBox(Rule):
    """The z^B rule for pixel inputs l_i ≤ x_i ≤ h_i (deep Taylor Sec. 4.2, tutorial Table 2):
    R_i = Σ_j (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij) / Σ_i (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij) · R_j, with
    max(0, b_j) added to the denominator (deep Taylor Sec. 6.2). ``low``/``high`` ``None`` = the data's
    raw pixel range mapped through the model's normalisation (``Normalization.input_bounds``).
    First layer only."""

    low: Optional[float] = None
    high: Optional[float] = None
    epsilon: float = 1e-9

    @property
    def terms(self) -> tuple[Term, ...]:
        return (Term(1.0, (Part("x", None, positive), Part("low", minus_positive, False),
                           Part("high", minus_negative, False))),)


@dataclass(frozen=True)
class WSquare(Rule):
    """The w² rule for unbounded real inputs (deep Taylor Sec. 4.1 eq. 13):
    R_i = Σ_j w²_ij / Σ_i w²_ij · R_j (no bias). First layer only."""

    epsilon: float = 1e-9

    @property
    def terms(self) -> tuple[Term, ...]:
        return (Term(1.0, (Part("ones", square, False),), sign=1),)


@dataclass(frozen=True)
class Flat(Rule):
    """The flat rule: R_i = Σ_j 1 / |{i: i → j}| · R_j (every input of a neuron's receptive field gets an
    equal share). First layer only."""

    epsilon: float = 1e-9

    @property
    def terms(self) -> tuple[Term, ...]:
        return (Term(1.0, (Part("ones", ones, False),), sign=1),)


# ------------------------------------------------------------------------ rules of transformer operations
# Relevance through the operations of a transformer other than its linear layers (AttnLRP, Achtibat et al., ICML 2024;
# CP-LRP, Ali et al., ICML 2022). Like the rules above they only say *what* to compute; bench/lrp/transformer.py
# evaluates them on the same convention R_a = a ⊙ g_a. A Composite names one of each (composites.py).


@dataclass(frozen=True)
class Identity:
    """The identity rule on an element-wise non-linearity y = f(x) (GELU, SiLU, tanh; AttnLRP eq. 9): R_x = R_y,
    i.e. g_x = g_y ⊙ f(x) / x (0 where x = 0). Conservative; LXT's ``identity_rule_implicit``."""


@dataclass(frozen=True)
class ConstantScale:
    """LayerNorm / RMSNorm with the normalising scale 1/σ (1/RMS) held constant (AttnLRP Prop. 3.4: the identity
    rule on the division; CP-LRP's LayerNorm): the layer is then linear, y = (x − mean x) / σ ⊙ w + b, and relevance
    follows this linear map (its gradient; the bias b absorbs its share). LXT's ``layer_norm_forward`` (σ detached)."""


@dataclass(frozen=True)
class Softmax:
    """The softmax s = softmax(z) linearised at z (AttnLRP Prop. 3.1), J = diag(s) − s sᵀ its Jacobian there.
    ``bias=True`` (the paper's rule, LXT's ``softmax``): Taylor with the bias term, R_z = z ⊙ (R_s − s Σ R_s) — the
    gradient under R = a ⊙ g; the bias term s − J z absorbs relevance, so this rule is not conservative.
    ``bias=False``: Taylor without the bias term, R_z = z ⊙ Jᵀ (R_s / stab(J z)) with stab(t) = t + ε·sign(t)
    (LXT's ``TaylorDecompositionRule(bias=False)`` at z): conservative up to ε, unstable where J z ≈ 0."""

    bias: bool = True
    epsilon: float = 1e-6  # stabiliser of J z, bias=False only


@dataclass(frozen=True)
class Constant:
    """The operation's output is held constant: no relevance passes through it (CP-LRP: the attention weights
    A = softmax(q kᵀ / √d), so that relevance reaches the tokens through the values only)."""


@dataclass(frozen=True)
class Uniform:
    """A product o = a · b of two factors (the attention's q kᵀ and A v; AttnLRP eq. 7 and Prop. 3.3, LXT's
    ``matmul``): the ε-rule on the product, then an equal share for each factor that carries relevance,
    R_a = a ⊙ (∂o/∂a)ᵀ (R_o / (n · stab(o))), n the number of such factors. ε = 0: the gradient divided by n
    (LXT's ``divide_gradient``); a factor held constant (``Constant``) gets nothing, the other all (n = 1)."""

    epsilon: float = 0.0


RULES = {"epsilon": Epsilon, "zero": Zero, "gamma": Gamma, "alpha_beta": AlphaBeta, "zplus": ZPlus, "zbox": ZBox,
         "wsquare": WSquare, "flat": Flat}  # the config names of the rules


def make_rule(name: str, **params) -> Rule:
    """A rule by its config name: epsilon, zero, gamma, alpha_beta, zplus, zbox, wsquare, flat."""
    from ..errors import BenchError

    if not isinstance(name, str) or name not in RULES:
        shown = repr(name) if isinstance(name, str) else str(name)
        raise BenchError(f"unknown LRP rule {shown}; available: {', '.join(RULES)}")
    try:
        return RULES[name](**params)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"LRP rule '{name}': bad parameters {params}: {exc}") from None
