"""The translation trick (tutorial Sec. 6.4) as a wrapper for any method of the catalogue:

    R*(x) = 1/|T| Σ_{τ∈T} τ⁻¹(R(τ(x))),   T = all shifts (dy, dx) with |dy|, |dx| ≤ ``shift`` pixels.

τ shifts the image and fills the uncovered border by repeating the edge pixels; τ⁻¹ is its adjoint,
which hands the relevance of every pixel of the shifted image back to the pixel it was copied from (so
relevance is conserved: Σ τ⁻¹(R) = Σ R). ``method`` names the wrapped method's config
(conf/method/<method>.yaml); its default pooling is also this method's. A shifted copy of image ``id``
is attributed under the id ``id~t<dy>,<dx>`` so that seeded methods draw fresh randomness for it.
"""


import torch

from bench import plugins
from bench.interfaces import Context, Method
from bench.checks import integer
from bench.errors import BenchError


def shift_index(n: int, d: int, device) -> torch.Tensor:
    """Source index of every position after shifting by d, the border repeated."""
    return (torch.arange(n, device=device) - d).clamp(0, n - 1)


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return x.index_select(-2, shift_index(h, dy, x.device)).index_select(-1, shift_index(w, dx, x.device))


def translate_back(r: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The adjoint of ``translate``: relevance of each shifted pixel back to its source pixel."""
    h, w = r.shape[-2:]
    cols = torch.zeros_like(r).index_add_(-1, shift_index(w, dx, r.device), r)
    return torch.zeros_like(r).index_add_(-2, shift_index(h, dy, r.device), cols)


class Translation(Method):
    def __init__(self, method: str = "lrp_eps", shift: int = 1) -> None:
        integer("method.params.shift", shift, low=0)
        cfg = plugins.conf_node("method", method, "method.params.method")
        if cfg.get("plugin") == "translation":
            raise BenchError("translation: the wrapped method cannot itself be a translation")
        self.inner = plugins.build("methods", cfg, f"method.params.method={method}")
        if self.inner.fixed_heatmaps:
            raise BenchError(f"translation: method.params.method={method} has heatmaps of the images themselves "
                             f"only, none of their shifted copies")
        self.pooling = cfg.get("pooling") or self.inner.pooling
        self.shifts = [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)]

    def attribute(self, model, x, target, ctx: Context) -> torch.Tensor:
        total = torch.zeros_like(x)
        for dy, dx in self.shifts:  # one batched call of the wrapped method per shift
            ids = list(ctx.image_ids) if (dy, dx) == (0, 0) else [f"{i}~t{dy},{dx}" for i in ctx.image_ids]
            r = self.inner.attribute(model, translate(x, dy, dx), target,
                                     Context(ids, seed=ctx.seed, normalization=ctx.normalization))
            total += translate_back(r, dy, dx)
        return total / len(self.shifts)
