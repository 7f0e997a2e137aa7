"""Spread over images: standard error and a seeded percentile-bootstrap 95% interval."""

from __future__ import annotations

import numpy as np


def sem(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Standard error of the mean, std(ddof=1)/√n; NaN for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    if n < 2:
        return np.full(np.delete(values.shape, axis), np.nan) if values.ndim > 1 else np.float64(np.nan)
    return values.std(axis=axis, ddof=1) / np.sqrt(n)


#: An interval is given only over at least MIN_IMAGES images and MIN_RESAMPLES bootstrap resamples (DEFINITIONS,
#: Summaries): one image has no spread to resample, and a percentile of fewer resamples is noise, not a 95% bound.
MIN_IMAGES, MIN_RESAMPLES = 2, 100


def interval_note(n_images: int, n_boot: int) -> str | None:
    """Why no 95% bootstrap interval is given for a mean over ``n_images`` with ``n_boot`` resamples, or None."""
    if n_images < MIN_IMAGES:
        return f"no CI: {n_images} image{'s' if n_images != 1 else ''} (an interval needs ≥ {MIN_IMAGES})"
    if n_boot < MIN_RESAMPLES:
        return f"no CI: bootstrap={n_boot} < {MIN_RESAMPLES} resamples"
    return None


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, axis: int = 0,
                 level: float = 0.95, stat=np.mean) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``stat`` over ``axis`` (the images), vectorised and seeded.

    All columns share the same resampled image indices, so paired quantities stay paired.
    """
    values = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0)
    n = values.shape[0]
    if n == 0:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = stat(values[idx], axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha], axis=0)
    return low, high

