"""Regions and their ordering (DEFINITIONS §3, TNNLS Sec. III-A).

Regions are the non-overlapping m×m tiles of the H×W grid, row-major; when m does not divide H or W
the last row/column of tiles is smaller, so every pixel belongs to exactly one region. Or, per image, SLIC
superpixels (DEFINITIONS §9, bench/engine/superpixels.py): a batch's images then have different numbers of regions, held
as ``Regions`` padded to the batch's largest count with empty regions that every order puts last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .seeding import randperm_per_image, randperm_ragged


def n_regions(height: int, width: int, patch: int) -> int:
    return math.ceil(height / patch) * math.ceil(width / patch)


def tile_ids(height: int, width: int, patch: int, device=None) -> torch.Tensor:
    """(H, W) long tensor: the region index of every pixel, ``(i // m) * ceil(W / m) + j // m``."""
    rows = torch.arange(height, device=device) // patch
    cols = torch.arange(width, device=device) // patch
    return rows[:, None] * math.ceil(width / patch) + cols[None, :]


def region_relevance(heatmap: torch.Tensor, ids: torch.Tensor, count: int) -> torch.Tensor:
    """(B, H, W) heatmap → (B, R) region relevance, the sum of h over each region's pixels; ``ids`` (H, W) shared
    by the batch or (B, H, W) per image."""
    b = heatmap.shape[0]
    if ids.dim() == 3:
        flat = (ids.reshape(b, -1) + count * torch.arange(b, device=ids.device).view(-1, 1)).flatten()
        out = torch.zeros(b * count, dtype=heatmap.dtype, device=heatmap.device)
        return out.index_add_(0, flat, heatmap.flatten()).view(b, count)
    out = torch.zeros(b, count, dtype=heatmap.dtype, device=heatmap.device)
    return out.index_add_(1, ids.flatten(), heatmap.reshape(b, -1))


def morf_order(relevance: torch.Tensor, tiebreak: torch.Tensor) -> torch.Tensor:
    """Regions by decreasing relevance, ties broken by the permutation ``tiebreak`` (B, R), never by position.

    The relevance values are first put in the permuted order; a stable descending sort then keeps tied regions in
    that random order. Returns (B, R) region indices, most relevant first.
    """
    permuted = relevance.gather(1, tiebreak)
    idx = torch.sort(permuted, dim=1, descending=True, stable=True).indices
    return tiebreak.gather(1, idx)


def seeded_orders(relevance: torch.Tensor, image_ids: list[str], seed: int,
                  counts: list[int] | None = None) -> dict[str, torch.Tensor]:
    """The MoRF order of the heatmap and the random-baseline order, both seeded per image (DEFINITIONS §3).
    ``counts``: image i has only regions 0 … counts[i]−1 (superpixels; the rest is padding, put last by
    both orders, and the permutations are those of counts[i] regions, whatever the batch)."""
    count = relevance.shape[1]
    if counts is None or min(counts) == count:
        tiebreak, random = randperm_per_image(seed, ("tiebreak", "random_order"), image_ids, count, relevance.device)
        return {"morf": morf_order(relevance, tiebreak), "random": random}
    tiebreak, random = (randperm_ragged(seed, s, image_ids, counts, count, relevance.device)
                        for s in ("tiebreak", "random_order"))
    return {"morf": morf_order(mask_padding(relevance, counts), tiebreak), "random": random}


def mask_padding(relevance: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """(B, R) relevance with the padded regions (index ≥ counts[b]) at −inf, so that a descending sort puts them last."""
    c = torch.tensor(counts, device=relevance.device).view(-1, 1)
    return relevance.masked_fill(torch.arange(relevance.shape[1], device=relevance.device) >= c, float("-inf"))


def lerf_order(morf: torch.Tensor, counts: list[int] | None = None) -> torch.Tensor:
    """LeRF: the MoRF order from its end (DEFINITIONS §3); with ``counts``, each image's real regions reversed and its
    padding kept last."""
    if counts is None or min(counts) == morf.shape[1]:
        return morf.flip(1)
    j = torch.arange(morf.shape[1], device=morf.device)
    c = torch.tensor(counts, device=morf.device).view(-1, 1)
    return morf.gather(1, torch.where(j < c, c - 1 - j, j))


def pixel_ranks(order: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, R) order → (B, H, W) step at which each pixel is replaced minus one.

    Pixel p is replaced from step k on iff ``rank[p] < k``; step k has replaced exactly the first k
    regions of the order.
    """
    b, count = order.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(count, device=order.device).expand(b, count))
    if ids.dim() == 3:
        return rank.gather(1, ids.reshape(b, -1)).view(ids.shape)
    return rank[:, ids]


@dataclass
class Regions:
    """One batch's regions: ``ids`` (H, W) tiles shared by the batch or (B, H, W) per image, ``count`` R
    (padded: the batch's largest), ``counts`` the regions image b really has, ``sizes`` (B, R) their pixels
    (0 for padding) and how a region's relevance is made from the heatmap (``aggregate``) (``sum``, DEFINITIONS §3; ``mean``, IROF)."""

    ids: torch.Tensor
    count: int
    counts: list[int]
    sizes: torch.Tensor
    aggregate: str = "sum"

    @classmethod
    def tiles(cls, height: int, width: int, patch: int, n_images: int, device=None, aggregate: str = "sum"
              ) -> "Regions":
        ids = tile_ids(height, width, patch, device)
        count = n_regions(height, width, patch)
        sizes = torch.bincount(ids.flatten(), minlength=count).expand(n_images, count)
        return cls(ids, count, [count] * n_images, sizes, aggregate)

    @classmethod
    def per_image(cls, ids: torch.Tensor, counts: list[int], aggregate: str = "sum") -> "Regions":
        """From (B, H, W) labels with image b's in 0 … counts[b]−1."""
        count = max(counts)
        sizes = region_relevance(torch.ones(ids.shape, dtype=torch.long, device=ids.device), ids, count)
        return cls(ids, count, list(counts), sizes, aggregate)

    @property
    def ragged(self) -> bool:
        return min(self.counts) < self.count

    def relevance(self, heatmap: torch.Tensor) -> torch.Tensor:
        """(B, H, W) heatmap → (B, R) region relevance: the sum, or the mean over the region's pixels."""
        s = region_relevance(heatmap, self.ids, self.count)
        return s / self.sizes.clamp(min=1).to(s.dtype) if self.aggregate == "mean" else s

    def orders(self, heatmap: torch.Tensor, image_ids: list[str], seed: int) -> dict[str, torch.Tensor]:
        """MoRF, LeRF and the random order of ``heatmap``'s regions (DEFINITIONS §3), seeded per image."""
        seeded = seeded_orders(self.relevance(heatmap), image_ids, seed, self.counts)
        seeded["lerf"] = lerf_order(seeded["morf"], self.counts)
        return seeded

    def ranks(self, order: torch.Tensor) -> torch.Tensor:
        return pixel_ranks(order, self.ids)

    def pixel_mask(self, removed: torch.Tensor) -> torch.Tensor:
        """(B, R) bool regions → (B, H, W) bool pixels."""
        if self.ids.dim() == 3:
            return removed.gather(1, self.ids.flatten(1)).view(self.ids.shape)
        return removed[:, self.ids]

    def fraction(self, order: torch.Tensor, steps: int, dtype=torch.float64) -> torch.Tensor:
        """(B, steps) fraction of the pixels in the first 1 … steps regions of ``order``."""
        total = self.ids.shape[-1] * self.ids.shape[-2]
        return self.sizes.gather(1, order[:, :steps]).cumsum(1).to(dtype) / total

    def extend(self, per_step: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, …, S) values of steps 1 … S → (B, …, steps): image b's steps after counts[b] (all its regions
        perturbed, nothing left to change) repeat its value at counts[b]."""
        s = per_step.shape[-1]
        if not self.ragged and s == steps:
            return per_step
        k = torch.arange(steps, device=per_step.device)
        c = torch.tensor(self.counts, device=per_step.device).view(-1, 1)
        idx = torch.minimum(k, c - 1).clamp(max=s - 1)  # (B, steps)
        idx = idx.view(idx.shape[0], *([1] * (per_step.dim() - 2)), steps).expand(*per_step.shape[:-1], steps)
        return per_step.gather(-1, idx)


def pixel_order_ranks(orders: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """(B, O, H, W) ranks of the pixels in each of ``orders`` ((B, H·W) orders of the pixels, one region each)."""
    pixels = tile_ids(height, width, 1, device=orders[0].device)
    return torch.stack([pixel_ranks(o, pixels) for o in orders], 1)
