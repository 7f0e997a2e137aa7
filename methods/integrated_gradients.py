"""Integrated gradients (Sundararajan et al. 2017): R = (x − x̄) ⊙ ∫₀¹ ∂f_c/∂x (x̄ + α(x − x̄)) dα.

Parameters: ``steps`` (quadrature points), ``quadrature`` (gausslegendre — the default, as Captum's —
riemann_middle or riemann_trapezoid), ``baseline`` x̄: ``zero`` (0 in model-input units, i.e. the mean
image for mean/std-normalised data), ``black`` (the raw range's minimum, normalised) or ``uniform`` (raw
pixels drawn uniformly in the raw range, seeded per image), ``chunk`` (model inputs per forward/backward).
All images × steps are evaluated in chunks of ``chunk`` inputs; pooled signed (sum) by default.
"""

import numpy as np
import torch

from bench.interfaces import Context, Method
from bench.checks import choice, integer
from bench.errors import BenchError
from bench.plugins import load_module
from bench.engine.seeding import rand_per_image

BASELINES = ("zero", "black", "uniform")
QUADRATURES = ("gausslegendre", "riemann_middle", "riemann_trapezoid")


def quadrature(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes α ∈ [0, 1] and weights (summing to 1) of the path integral."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    if rule == "riemann_middle":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1 / steps)
    if steps < 2:
        raise BenchError("riemann_trapezoid needs steps ≥ 2")
    weights = np.full(steps, 1 / (steps - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0, 1, steps), weights


class IntegratedGradients(Method):
    pooling = "sum"

    def __init__(self, steps: int = 32, quadrature: str = "gausslegendre", baseline: str = "zero",
                 chunk: int = 256) -> None:
        p = "method.params."
        integer(p + "steps", steps, low=1)
        choice(p + "quadrature", quadrature, QUADRATURES)
        if quadrature == "riemann_trapezoid" and steps < 2:
            raise BenchError(f"{p}steps must be ≥ 2 with {p}quadrature=riemann_trapezoid (its nodes include both "
                             f"ends of the path), got {steps}")
        choice(p + "baseline", baseline, BASELINES)
        integer(p + "chunk", chunk, low=1)
        self.steps, self.quadrature, self.baseline, self.chunk = steps, quadrature, baseline, chunk
        self._gradient = load_module("methods", "gradient").input_gradient

    def baseline_of(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        norm = ctx.normalization
        if self.baseline == "zero":
            return torch.zeros_like(x)
        if self.baseline == "black":
            return norm.normalize(torch.full_like(x, norm.raw_range[0]))
        lo, hi = norm.raw_range
        raw = rand_per_image(ctx.seed, "ig_baseline", list(ctx.image_ids), tuple(x.shape[1:]), x.device, x.dtype)
        return norm.normalize(lo + (hi - lo) * raw)

    def attribute(self, model, x, target, ctx: Context) -> torch.Tensor:
        alphas, weights = (torch.as_tensor(a, dtype=x.dtype, device=x.device)
                           for a in quadrature(self.steps, self.quadrature))
        base = self.baseline_of(x, ctx)
        diff = x - base
        total = torch.zeros_like(x)
        n = len(x) * self.steps
        view = (-1,) + (1,) * (x.dim() - 1)
        for start in range(0, n, self.chunk):  # (image, step) pairs, image-major, in chunks
            k = torch.arange(start, min(start + self.chunk, n), device=x.device)
            b, s = k // self.steps, k % self.steps
            inputs = base[b] + alphas[s].view(view) * diff[b]
            grad = self._gradient(model, inputs, target[b])
            total.index_add_(0, b, grad * weights[s].view(view))
        return diff * total
