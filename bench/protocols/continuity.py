"""Explanation continuity (DEFINITIONS §6, tutorial Montavon et al. 2018, Sec. 7.1 / Fig. 6).

Continuity is estimated over a finite neighbourhood of nearby input pairs (x, x′) as

    C = max_{pairs} ‖R(x) − R(x′)‖₁ / ‖x − x′‖₂        (lower = more continuous),

with R the **full relevance tensor** (same shape as x, C×H×W; no channel pooling), the L1 norm over all
its entries and the L2 norm over all entries of x − x′. Per image the max and the mean over its pairs are
reported. Pairs with ‖x − x′‖₂ = 0 (e.g. shifting a horizontally constant image) have no defined ratio
and are left out; an image with no usable pair gets NaN.

Neighbourhoods (``kind``):

``translate``
    x_t = shift_t(x), t = 0 … T (``max_shift``): the image moved t pixels to the right,
    ``x_t[..., j] = x[..., max(j − t, 0)]`` — replicate-edge padding of the left column, then crop to W.
    Consecutive pairs (x_t, x_{t+1}) are compared. The heatmaps are compared **in the shifted frame**:
    R(x_{t+1}) is compared with R(x_t) moved one pixel right, i.e. on the columns j = 1 … W−1,
    ``R(x_{t+1})[..., j]`` against ``R(x_t)[..., j−1]`` (the overlap where both carry the same content; the
    new left column and the column pushed out on the right are left out, nothing is padded into R).
    Rationale: a heatmap of a shifted image should be the shifted heatmap, so an explanation that is
    exactly translation-equivariant scores 0. Comparing R(x_{t+1}) with R(x_t) on the same pixel grid
    would instead charge every method for the image content having moved. The denominator is the actual
    distance between the two inputs, ‖x_{t+1} − x_t‖₂ on the common pixel grid (aligning the inputs
    too would give 0, since with replicate padding x_{t+1} is exactly x_t shifted by one).
    T = 0 gives no pairs (NaN, ``n_pairs`` = 0, ``attribute`` is not called).

``noise``
    x′_i = x + σ ε_i, ε_i ~ N(0, I) i.i.d. per entry, i = 1 … N (``n_samples``), in the units of x
    (the model's own normalisation); pairs (x, x′_i) compared on the same grid. The noise of an image
    is drawn on the device from the stream (seed, "continuity.noise", image key) (bench.seeding), so it does
    not depend on batch size, batch order or which other images are in the batch.

The ``attribute`` callable
    ``attribute(xs, idx) -> R`` with ``xs`` an (M, C, H, W) tensor of neighbours (detached; enable grad
    inside if needed) and ``idx`` an (M,) int64 tensor on the same device giving, for each row, the
    position in ``x`` (0 … B−1) of the original image it was derived from. It must return relevance of
    the same shape as ``xs``. ``idx`` lets the caller keep each image's explained class fixed for all its
    neighbours, e.g. ``attribute = lambda xs, idx: explain(model, xs, target=targets[idx])`` with
    ``targets`` computed once on the clean batch. All neighbours of all images (the unperturbed ones
    included) are attributed in one call, or in consecutive chunks of ``batch_size`` rows.

As a protocol (``metrics=[aopc,continuity]``): the table ``continuity``, one row per image, with the
neighbourhood's settings as columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.engine.seeding import randn_per_image
from bench.errors import BenchError
from bench.protocols.base import Batch, Protocol, Quantity, RunInfo, Table, choice, integer, number, setting

#: ‖R(x) − R(x′)‖₁ / ‖x − x′‖₂: relevance per unit of input distance (the model input's, after normalisation).
CONTINUITY = "relevance L1 / input L2"
NOISE_STREAM = "continuity.noise"


def shift_right(x: torch.Tensor, t: int) -> torch.Tensor:
    """Move (…, W) images t ≥ 0 pixels right with replicate-edge padding: out[..., j] = x[..., max(j−t, 0)]."""
    w = x.shape[-1]
    cols = (torch.arange(w, device=x.device) - int(t)).clamp(min=0)
    return x[..., cols]


def continuity_ratio(r_a, r_b, x_a, x_b) -> torch.Tensor:
    """Row-wise ‖r_a − r_b‖₁ / ‖x_a − x_b‖₂ over all non-batch entries, in float64; NaN where x_a = x_b.

    ``r_*`` and ``x_*`` are (P, ...) tensors (the two relevance tensors may be cropped views of
    different shape than the inputs). Returns a (P,) float64 tensor.
    """
    num = (r_a.double() - r_b.double()).abs().flatten(1).sum(1)
    den = (x_a.double() - x_b.double()).flatten(1).norm(dim=1)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.full_like(den, math.nan))


def _attribute_all(attribute, xs: torch.Tensor, idx: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    """One ``attribute`` call for all rows, or ⌈M / batch_size⌉ calls on consecutive chunks."""
    m = xs.shape[0]
    step = m if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    out = []
    for s in range(0, m, step):
        r = attribute(xs[s : s + step], idx[s : s + step])
        r = torch.as_tensor(r, device=xs.device) if not torch.is_tensor(r) else r
        if tuple(r.shape) != tuple(xs[s : s + step].shape):
            raise ValueError(f"attribute returned shape {tuple(r.shape)} for inputs {tuple(xs[s:s+step].shape)}")
        out.append(r.detach())
    return torch.cat(out)


def continuity(
    attribute,
    x: torch.Tensor,
    *,
    kind: str = "translate",
    max_shift: int = 4,
    sigma: float = 0.05,
    n_samples: int = 8,
    seed: int = 0,
    image_keys=None,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Continuity of ``attribute`` around each image of ``x`` (B, C, H, W); see the module docstring.

    Returns one row per image: ``image`` (key; default "0" … "B−1" — pass dataset ids so that the noise
    does not depend on the batch), ``kind``, ``neighbourhood`` (e.g. ``"translate(max_shift=4)"``),
    ``max_shift``, ``sigma``, ``n_samples`` (NaN where not applicable to ``kind``), ``seed``, ``n_pairs``
    (pairs with a defined ratio), ``continuity_max``, ``continuity_mean``.
    """
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError("x must be a (B, C, H, W) tensor")
    x = x.detach()
    b = x.shape[0]
    keys = [str(i) for i in range(b)] if image_keys is None else [str(k) for k in image_keys]
    if len(keys) != b:
        raise ValueError(f"{len(keys)} image_keys for {b} images")

    if kind == "translate":
        t_max = int(max_shift)
        if t_max < 0:
            raise ValueError(f"max_shift must be ≥ 0, got {max_shift}")
        settings = {"max_shift": t_max, "sigma": math.nan, "n_samples": math.nan}
        name = f"translate(max_shift={t_max})"
        k = t_max + 1  # views per image: shifts 0 … T
        if t_max == 0:
            ratios = torch.empty(b, 0, dtype=torch.float64)
        else:
            w = x.shape[-1]
            cols = (torch.arange(w, device=x.device)[None, :] - torch.arange(k, device=x.device)[:, None]).clamp(min=0)
            views = x[..., cols].permute(0, 3, 1, 2, 4)  # (B, C, H, K, W) → (B, K, C, H, W)
            idx = torch.arange(b, device=x.device).repeat_interleave(k)
            r = _attribute_all(attribute, views.reshape(b * k, *x.shape[1:]), idx, batch_size)
            r = r.reshape(b, k, *x.shape[1:])
            p = t_max  # pairs (t, t+1), t = 0 … T−1
            ratios = continuity_ratio(
                r[:, 1:, ..., 1:].reshape(b * p, -1),  # R(x_{t+1}) on columns 1 … W−1
                r[:, :-1, ..., :-1].reshape(b * p, -1),  # R(x_t) moved right by one
                views[:, 1:].reshape(b * p, -1),
                views[:, :-1].reshape(b * p, -1),
            ).reshape(b, p)
    elif kind == "noise":
        n = int(n_samples)
        if n < 1 or not sigma > 0:
            raise ValueError(f"noise needs n_samples ≥ 1 and sigma > 0, got {n_samples}, {sigma}")
        settings = {"max_shift": math.nan, "sigma": float(sigma), "n_samples": n}
        name = f"noise(sigma={float(sigma):g},n_samples={n})"
        dtype = x.dtype if x.is_floating_point() else torch.float32
        eps = randn_per_image(seed, NOISE_STREAM, keys, (n, *x.shape[1:]), x.device, dtype)
        views = torch.cat([x[:, None].to(dtype), x[:, None].to(dtype) + float(sigma) * eps], dim=1)  # (B, 1+N, ...)
        idx = torch.arange(b, device=x.device).repeat_interleave(n + 1)
        r = _attribute_all(attribute, views.reshape(b * (n + 1), *x.shape[1:]), idx, batch_size)
        r = r.reshape(b, n + 1, *x.shape[1:])
        ratios = continuity_ratio(
            r[:, 1:].reshape(b * n, -1),
            r[:, :1].expand(-1, n, *([-1] * (x.dim() - 1))).reshape(b * n, -1),
            views[:, 1:].reshape(b * n, -1),
            views[:, :1].expand(-1, n, *([-1] * (x.dim() - 1))).reshape(b * n, -1),
        ).reshape(b, n)
    else:
        raise ValueError(f"kind must be 'translate' or 'noise', got {kind!r}")

    rat = ratios.cpu().numpy()
    valid = ~np.isnan(rat)
    n_pairs = valid.sum(axis=1)
    safe = np.where(valid, rat, 0.0)
    c_max = np.where(n_pairs > 0, np.where(valid, rat, -np.inf).max(axis=1, initial=-np.inf), np.nan)
    c_mean = np.where(n_pairs > 0, safe.sum(axis=1) / np.maximum(n_pairs, 1), np.nan)
    return pd.DataFrame(
        {
            "image": keys,
            "kind": kind,
            "neighbourhood": name,
            **settings,
            "seed": int(seed),
            "n_pairs": n_pairs.astype(np.int64),
            "continuity_max": c_max,
            "continuity_mean": c_mean,
        }
    )


@dataclass(frozen=True)
class Continuity(Protocol):
    kind: str = setting("translate", choice("translate", "noise"),
                        "translate (shift by 0…max_shift px, replicate edge) | noise (x + σ·N(0, I), n_samples)")
    max_shift: int = setting(4, integer(low=1), "translate: the largest shift (px)")
    sigma: float = setting(0.05, number(0, low_open=True), "noise: σ in model-input units")
    n_samples: int = setting(8, integer(low=1), "noise: neighbours per image")

    title = "continuity"
    family = "continuity"
    attributes_inputs = True
    tables = (Table("continuity", ("image_id", "continuity_max", "continuity_mean"), per_heatmap=True),)
    quantities = (
        Quantity("continuity_max", -1, "continuity (max ratio)", headline=True, printed="continuity", print_as="mean",
                 unit=CONTINUITY),
        Quantity("continuity_mean", -1, "continuity (mean ratio)", unit=CONTINUITY),
    )

    def check(self, run: RunInfo) -> None:
        w = run.image_shape[2]
        if self.kind == "translate" and self.max_shift >= w:
            raise BenchError(f"continuity.max_shift={self.max_shift} must be smaller than the image width {w}")

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        """Every neighbour attributed in batches, each image's class fixed. Neighbour v > 0 of an image gets its
        own id ``<image_id>~<v>`` so that methods seeded per image (random, SmoothGrad) draw afresh for it."""
        run, target, image_ids = batch.run, batch.target, batch.image_ids
        first_row: dict[int, int] = {}
        seen = [0]

        def attribute(xs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            ids = []
            for row, i in enumerate(idx.tolist(), start=seen[0]):
                v = row - first_row.setdefault(i, row)
                ids.append(image_ids[i] if v == 0 else f"{image_ids[i]}~{v}")
            seen[0] += len(ids)
            return run.attribute(xs, target[idx], ids)

        table = continuity(attribute, batch.x, seed=run.seed, image_keys=image_ids, batch_size=run.batch_size,
                           **self.values()).rename(columns={"image": "image_id"})
        return lambda: {"continuity": table}

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        rows = tables.get("continuity")
        return None if rows is None else rows.set_index("image_id")[["continuity_max", "continuity_mean"]]
