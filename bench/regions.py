"""Regions and their ordering (SPEC §3, TNNLS Sec. III-A).

Regions are the non-overlapping m×m tiles of the H×W grid, row-major; when m does not divide H or W
the last row/column of tiles is smaller, so every pixel belongs to exactly one region.
"""

from __future__ import annotations

import math

import torch

from .seeding import randperm_per_image


def n_regions(height: int, width: int, patch: int) -> int:
    return math.ceil(height / patch) * math.ceil(width / patch)


def tile_ids(height: int, width: int, patch: int, device=None) -> torch.Tensor:
    """(H, W) long tensor: the region index of every pixel, ``(i // m) * ceil(W / m) + j // m``."""
    rows = torch.arange(height, device=device) // patch
    cols = torch.arange(width, device=device) // patch
    return rows[:, None] * math.ceil(width / patch) + cols[None, :]


def region_scores(heatmap: torch.Tensor, ids: torch.Tensor, count: int) -> torch.Tensor:
    """(B, H, W) heatmap → (B, R) region scores, the sum of h over each region's pixels."""
    b = heatmap.shape[0]
    out = torch.zeros(b, count, dtype=heatmap.dtype, device=heatmap.device)
    return out.index_add_(1, ids.flatten(), heatmap.reshape(b, -1))


def morf_order(scores: torch.Tensor, tiebreak: torch.Tensor) -> torch.Tensor:
    """Regions by decreasing score, ties broken by the permutation ``tiebreak`` (B, R), never by position.

    The scores are first put in the permuted order; a stable descending sort then keeps tied regions in
    that random order. Returns (B, R) region indices, most relevant first.
    """
    permuted = scores.gather(1, tiebreak)
    idx = torch.sort(permuted, dim=1, descending=True, stable=True).indices
    return tiebreak.gather(1, idx)


def seeded_orders(scores: torch.Tensor, image_ids: list[str], seed: int) -> dict[str, torch.Tensor]:
    """The MoRF order of the heatmap and the random-baseline order, both seeded per image (SPEC §3)."""
    count = scores.shape[1]
    tiebreak, random = randperm_per_image(seed, ("tiebreak", "random_order"), image_ids, count, scores.device)
    return {"morf": morf_order(scores, tiebreak), "random": random}


def pixel_ranks(order: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, R) order → (B, H, W) step at which each pixel is replaced minus one.

    Pixel p is replaced from step k on iff ``rank[p] < k``; step k has replaced exactly the first k
    regions of the order.
    """
    b, count = order.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(count, device=order.device).expand(b, count))
    return rank[:, ids]
