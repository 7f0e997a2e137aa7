"""Replacement functions g (SPEC §4): what a region's pixels become once it is perturbed.

A replacement draws, per image and repeat, one full image of replacement values in model-input units.
Because regions are disjoint and each is replaced once, region r at any step takes its pixels from that
image: every region's draw is made once and stays (TNNLS eq. 11 with g fixed per repeat).
"""

from __future__ import annotations

import torch

from .api import Normalization
from .errors import BenchError
from .seeding import rand_per_image


class Uniform:
    """Every pixel, every channel i.i.d. U(raw_low, raw_high), then normalised like the data."""

    name = "uniform"
    random = True

    def draw(self, x: torch.Tensor, image_ids: list[str], repeats: int, seed: int,
             norm: Normalization) -> torch.Tensor:
        """(B, C, H, W) inputs → (B, repeats, C, H, W) replacement values, on x's device."""
        lo, hi = norm.raw_range
        u = rand_per_image(seed, "replacement", list(image_ids), (repeats, *x.shape[1:]))
        u = u.to(device=x.device, dtype=x.dtype, non_blocking=True)
        return norm.normalize(lo + (hi - lo) * u)


REPLACEMENTS = {"uniform": Uniform}


def make_replacement(name: str, **params):
    if name not in REPLACEMENTS:
        raise BenchError(f"unknown perturbation '{name}'; available: {', '.join(REPLACEMENTS)}")
    return REPLACEMENTS[name](**params)
