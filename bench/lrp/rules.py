"""LRP rules as small declarative objects (tutorial Sec. 5, TNNLS eq. 7–8, deep Taylor Sec. 4–5).

A rule for a linear layer z_j = Σ_i x_i w_ij + b_j is a weighted sum of *terms*; each term is the same
layer evaluated with modified inputs and parameters, z_tj = Σ_i in_t(x)_i ρ_t(w_ij) + ρ_t(b_j). It
redistributes the relevance R_j of the layer's outputs as

    R_i = Σ_t c_t · in_t(x)_i · Σ_j ρ_t(w_ij) · R_j / stab(z_tj)

where stab(z) = z + ε·sign(z) (sign(0) = +1, TNNLS eq. 7). All rules share one mechanism
(bench/lrp/propagate.py): the layer's output is replaced by a value-preserving expression whose
gradient is the rule, so one backward pass computes every layer's redistribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

Fn = Optional[Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class Part:
    """One evaluation of the layer: ``layer(input(x); weight(w), bias(b))``; ``None`` = unchanged,
    and ``bias=False`` drops the bias."""

    input: Fn = None
    weight: Fn = None
    bias: Fn | bool = None

    @property
    def is_identity(self) -> bool:
        return self.input is None and self.weight is None and self.bias is None


@dataclass(frozen=True)
class Term:
    """c_t times the layer evaluated as the sum of its parts."""

    coefficient: float = 1.0
    parts: tuple[Part, ...] = (Part(),)


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """z + ε·sign(z) with sign(0) = +1; an exact zero denominator (ε = 0) becomes 1 (its share is 0)."""
    sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    denom = z + epsilon * sign
    return torch.where(denom == 0, torch.ones_like(denom), denom)


def _pos(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(min=0)


def _neg(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(max=0)


@dataclass(frozen=True)
class Rule:
    """Base class: ``terms`` and the stabiliser ``epsilon`` define the rule."""

    epsilon: float = 1e-9

    @property
    def terms(self) -> tuple[Term, ...]:
        return (Term(),)


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-ε (TNNLS eq. 7): R_i = Σ_j x_i w_ij / (z_j + ε sign z_j) · R_j, z_j including the bias."""

    epsilon: float = 1.0


@dataclass(frozen=True)
class Zero(Rule):
    """LRP-0 (tutorial eq. 1 with α=1, β=0 on signed contributions): LRP-ε with ε = 0."""

    epsilon: float = 0.0


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-γ: ρ(w) = w + γ w⁺ (and ρ(b) = b + γ b⁺), favouring positive contributions."""

    gamma: float = 0.25
    epsilon: float = 1e-9

    @property
    def terms(self) -> tuple[Term, ...]:
        g = self.gamma
        mod = lambda t: t + g * _pos(t)  # noqa: E731
        return (Term(parts=(Part(weight=mod, bias=mod),)),)


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-αβ with α − β = 1 (tutorial eq. 1; TNNLS eq. 8 writes β with the opposite sign):
    R_i = Σ_j (α z⁺_ij / z⁺_j − β z⁻_ij / z⁻_j) R_j, z⁺_ij = (x_i w_ij)⁺ (bias counted with its sign).
    α=1, β=0 is the z⁺ rule (deep Taylor Sec. 4)."""

    alpha: float = 2.0
    beta: float = 1.0
    epsilon: float = 1e-9

    @property
    def terms(self) -> tuple[Term, ...]:
        positive = (Part(input=_pos, weight=_pos, bias=_pos), Part(input=_neg, weight=_neg, bias=False))
        negative = (Part(input=_pos, weight=_neg, bias=_neg), Part(input=_neg, weight=_pos, bias=False))
        terms = [Term(self.alpha, positive)]
        if self.beta:
            terms.append(Term(-self.beta, negative))
        return tuple(terms)
