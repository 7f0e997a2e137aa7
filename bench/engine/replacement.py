"""Replacement functions g (DEFINITIONS §4, TNNLS eq. 11): what a region's pixels become once it is perturbed.

Two kinds, by what g depends on:

* **static** — the value a pixel is replaced by does not depend on the other regions (``uniform``,
  ``mean``, ``zero``). ``draw`` returns, per image and repeat, one full image of replacement values; since
  regions are disjoint and each is replaced once, x⁽ᵏ⁾ = where(first k regions, draw, x) exactly, and a
  region's draw is made once and stays.
* **sequential** — g(x⁽ᵏ⁻¹⁾, r_k) reads the current image around the region (``blur``, ``inpaint``), so
  the steps are applied one after another: ``step(current, region_mask)`` returns x⁽ᵏ⁾. Deterministic,
  so one repeat suffices (the run records ``repeats`` = 1 for these).
* **imputed** — x⁽ᵏ⁾ is computed from the original image and all regions removed so far (``road``):
  ``fill(x, removed, draw)`` with ``removed`` = the first k regions and ``draw`` the repeat's noise (from
  ``draw``), so every step is independent of the others and all are batched like static ones.

All values are produced in model-input (normalised) units; raw-range draws are normalised like the data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..interfaces import Normalization
from ..errors import BenchError
from .seeding import rand_per_image, randn_per_image


class Replacement:
    name = ""
    sequential = False  # static: draw(); sequential: step()
    imputed = False     # draw() noise, then fill(x, removed, noise) for each step
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
        return torch.where(region, gaussian_blur(current, self.sigma, max(1, int(np.ceil(3 * self.sigma)))), current)


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """(N, C, H, W) → the separable Gaussian blur of σ ``sigma`` with a (2·radius + 1)-tap kernel normalised to
    sum 1, reflect padding (replicate when the image is smaller than the kernel), on x's device."""
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    mode = "reflect" if pad == radius else "replicate"
    y = F.pad(x, (radius, radius, radius, radius), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class Inpaint(Replacement):
    """The region filled by biharmonic inpainting from the current image x⁽ᵏ⁻¹⁾, per channel, clipped to
    the range of the image's known pixels: the system of ``skimage.restoration.inpaint_biharmonic``.
    ``solver=device`` (default): all images of the step at once on the device, float64 direct solves
    (bench/engine/biharmonic.py); ``solver=host``: scikit-image itself, one call per image and step in the
    image's float32 (the two agree to float32 rounding). Biharmonic inpainting is linear and its clipping
    range moves with the data, so it is done in normalised units directly."""

    name, sequential = "inpaint", True

    def __init__(self, solver: str = "device") -> None:
        from ..checks import choice

        self.solver = choice("perturbation.params.solver", solver, ("device", "host"))

    def step(self, current: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        if self.solver == "device":
            from .biharmonic import inpaint_biharmonic

            return inpaint_biharmonic(current, region)
        from skimage.restoration import inpaint_biharmonic

        host = current.detach().float().cpu().numpy()
        masks = region[:, 0].cpu().numpy()
        out = host.copy()
        for i in range(len(host)):
            if masks[i].all() or not masks[i].any():  # nothing left to inpaint from, or nothing to inpaint
                continue
            out[i] = np.moveaxis(inpaint_biharmonic(np.moveaxis(host[i], 0, -1), masks[i], channel_axis=-1), -1, 0)
        return torch.from_numpy(out).to(device=current.device, dtype=current.dtype)


class Road(Replacement):
    """ROAD's noisy linear imputation (Rong et al., ICML 2022; DEFINITIONS §9): the removed pixels of the original
    image x (all regions removed so far) take the values that make each the weighted mean of its 8
    neighbours (bench/engine/imputation.py, solved on the device), plus Gaussian noise of σ = ``noise`` in
    model-input units (ROAD's default 0.01), seeded per image and repeat; ``noise=0``: the imputation alone.
    ``tol`` and ``max_iter`` are the solver's convergence criterion and iteration cap (null: 50·max(H, W) + 100)."""

    name, imputed, random = "road", True, True

    def __init__(self, noise: float = 0.01, tol: float = 1e-10, max_iter: int | None = None) -> None:
        from ..checks import integer, number

        self.noise = float(number("perturbation.params.noise", noise, low=0))
        self.tol = float(number("perturbation.params.tol", tol, low=0, low_open=True))
        self.max_iter = None if max_iter is None else integer("perturbation.params.max_iter", max_iter, low=1)
        self.random = self.noise > 0

    def draw(self, x: torch.Tensor, image_ids: list[str], repeats: int, seed: int,
             norm: Normalization) -> torch.Tensor:
        """(B, repeats, C, H, W) noise: σ·N(0, 1), one field per image and repeat."""
        if self.noise == 0:
            return torch.zeros((x.shape[0], repeats, *x.shape[1:]), dtype=x.dtype, device=x.device)
        return self.noise * randn_per_image(seed, "road_noise", list(image_ids), (repeats, *x.shape[1:]), x.device,
                                            x.dtype)

    def fill(self, x: torch.Tensor, removed: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W), removed (N, 1, H, W) bool, noise (N, C, H, W) → the perturbed inputs."""
        from .imputation import linear_imputation

        filled = linear_imputation(x, removed, self.tol, self.max_iter)
        return torch.where(removed, filled + noise, x)


REPLACEMENTS = {r.name: r for r in (Uniform, Zero, Mean, Blur, Inpaint, Road)}


def make_replacement(name: str, **params) -> Replacement:
    if not isinstance(name, str) or name not in REPLACEMENTS:
        shown = repr(name) if isinstance(name, str) else str(name)
        raise BenchError(f"unknown perturbation {shown}; available: {', '.join(REPLACEMENTS)}")
    try:
        return REPLACEMENTS[name](**params)
    except TypeError as exc:
        raise BenchError(f"perturbation '{name}': bad params {params}: {exc}") from None


#: The static replacement images of the §9 protocols (``substrate``).
SUBSTRATES = ("zero", "mean", "image_mean", "blur")


def substrate(kind: str, x: torch.Tensor, image_ids: list[str], seed: int, norm: Normalization,
              blur_sigma: float = 5.0, blur_kernel: int = 11) -> torch.Tensor:
    """A static replacement image for the §9 protocols (their ``substrate``), (B, C, H, W) in model-input units:
    ``zero`` (black), ``mean`` (the per-channel dataset mean), ``image_mean`` (the per-channel mean of the image
    itself) or ``blur`` (the image blurred by a Gaussian of ``blur_sigma``, kernel ``blur_kernel`` px)."""
    if kind == "image_mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    if kind == "blur":
        return gaussian_blur(x, blur_sigma, blur_kernel // 2)
    constant = Zero() if kind == "zero" else Mean()
    return constant.draw(x, image_ids, 1, seed, norm)[:, 0]
