"""Replacement functions g (SPEC §4, TNNLS eq. 11): what a region's pixels become once it is perturbed.

Two kinds, by what g depends on:

* **static** — the value a pixel is replaced by does not depend on the other regions (``uniform``,
  ``mean``, ``zero``). ``draw`` returns, per image and repeat, one full image of replacement values; since
  regions are disjoint and each is replaced once, x⁽ᵏ⁾ = where(first k regions, draw, x) exactly, and a
  region's draw is made once and stays.
* **sequential** — g(x⁽ᵏ⁻¹⁾, r_k) reads the current image around the region (``blur``, ``inpaint``), so
  the steps are applied one after another: ``step(current, region_mask)`` returns x⁽ᵏ⁾. Deterministic,
  so one repeat suffices (the run records ``repeats`` = 1 for these).

All values are produced in model-input (normalised) units; raw-range draws are normalised like the data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .api import Normalization
from .errors import BenchError
from .seeding import rand_per_image


class Replacement:
    name = ""
    sequential = False  # static: draw(); sequential: step()
    random = False      # whether repeats draw different values


class Uniform(Replacement):
    """Every pixel, every channel i.i.d. U(raw_low, raw_high), then normalised (TNNLS Sec. IV-A)."""

    name, random = "uniform", True

    def draw(self, x: torch.Tensor, image_ids: list[str], repeats: int, seed: int,
             norm: Normalization) -> torch.Tensor:
        """(B, C, H, W) inputs → (B, repeats, C, H, W) replacement values on x's device."""
        lo, hi = norm.raw_range
        u = rand_per_image(seed, "replacement", list(image_ids), (repeats, *x.shape[1:]), x.device, x.dtype)
        return norm.normalize(lo + (hi - lo) * u)


class Constant(Replacement):
    """A fixed raw value per channel, normalised: the base of ``zero`` and ``mean``."""

    def raw_value(self, norm: Normalization) -> torch.Tensor:
        raise NotImplementedError

    def draw(self, x, image_ids, repeats, seed, norm):
        raw = self.raw_value(norm).to(device=x.device, dtype=x.dtype).view(1, 1, -1, 1, 1)
        value = norm.normalize(raw.expand(1, 1, x.shape[1], 1, 1))
        return value.expand(x.shape[0], repeats, *x.shape[1:])


class Zero(Constant):
    """Black: the low end of the raw pixel range (0 for images in [0, 1])."""

    name = "zero"

    def raw_value(self, norm):
        return torch.tensor([float(norm.raw_range[0])])


class Mean(Constant):
    """The per-channel dataset mean (the normalisation's mean, in raw units)."""

    name = "mean"

    def raw_value(self, norm):
        return torch.tensor([float(m) for m in norm.mean])


class Blur(Replacement):
    """The region replaced by the Gaussian blur (σ = ``sigma`` px, kernel ±3σ, reflect padding) of the
    current image x⁽ᵏ⁻¹⁾, batched on the device."""

    name, sequential = "blur", True

    def __init__(self, sigma: float = 2.0) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
            raise BenchError(f"perturbation 'blur' needs perturbation.params.sigma > 0, a finite number of pixels; "
                             f"got {sigma!r}")
        self.sigma = float(sigma)

    def step(self, current: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """current (N, C, H, W), region (N, 1, H, W) bool → x⁽ᵏ⁾."""
        radius = max(1, int(np.ceil(3 * self.sigma)))
        t = torch.arange(-radius, radius + 1, device=current.device, dtype=current.dtype)
        k = torch.exp(-0.5 * (t / self.sigma) ** 2)
        k = k / k.sum()
        c = current.shape[1]
        pad = min(radius, current.shape[-1] - 1, current.shape[-2] - 1)
        mode = "reflect" if pad == radius else "replicate"
        y = F.pad(current, (radius, radius, radius, radius), mode=mode)
        y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
        return torch.where(region, y, current)


class Inpaint(Replacement):
    """The region filled by biharmonic inpainting from the current image x⁽ᵏ⁻¹⁾
    (``skimage.restoration.inpaint_biharmonic``, per channel). Runs on the host, one library call per
    image and step; biharmonic inpainting is linear, so it is done in normalised units directly."""

    name, sequential = "inpaint", True

    def step(self, current: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        from skimage.restoration import inpaint_biharmonic

        host = current.detach().float().cpu().numpy()
        masks = region[:, 0].cpu().numpy()
        out = host.copy()
        for i in range(len(host)):
            if masks[i].all():  # nothing left to inpaint from: keep the region's current values
                continue
            out[i] = np.moveaxis(inpaint_biharmonic(np.moveaxis(host[i], 0, -1), masks[i], channel_axis=-1), -1, 0)
        return torch.from_numpy(out).to(device=current.device, dtype=current.dtype)


REPLACEMENTS = {r.name: r for r in (Uniform, Zero, Mean, Blur, Inpaint)}


def make_replacement(name: str, **params) -> Replacement:
    if not isinstance(name, str) or name not in REPLACEMENTS:
        shown = repr(name) if isinstance(name, str) else str(name)
        raise BenchError(f"unknown perturbation {shown}; available: {', '.join(REPLACEMENTS)}")
    try:
        return REPLACEMENTS[name](**params)
    except TypeError as exc:
        raise BenchError(f"perturbation '{name}': bad params {params}: {exc}") from None
