"""From curve rows to per-image matrices, paired differences and mean curves with 95% bootstrap bands.

The band of a curve is the percentile bootstrap over images of ``bench.stats.bootstrap_ci``, vectorised
over steps: every step is resampled with the same image indices, and with the run's own seed and the
same number of resamples the band at the final step equals the interval in the run's ``summary.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.stats import bootstrap_ci, interval_note, sem

#: Bound on n_boot × n_images × steps values resampled at once (bootstrap over steps in chunks).
MAX_BOOT_VALUES = 1 << 23


@dataclass
class PerImage:
    """Values of one run and order: ``values[i, k]`` for image ``image_ids[i]`` at step ``steps[k]``."""

    image_ids: np.ndarray
    steps: np.ndarray
    values: np.ndarray


def per_image(curves: pd.DataFrame, order: str, value: str) -> PerImage | None:
    """Images × steps matrix of ``value`` for one run's rows of ``order``; images in order of first
    appearance (as summary.csv), only images with every step. None if the order is absent."""
    sub = curves[curves.order == order]
    if sub.empty:
        return None
    wide = sub.pivot_table(index="image_id", columns="step", values=value, aggfunc="first", sort=False)
    wide = wide.reindex(pd.unique(sub.image_id)).dropna(axis=0, how="any")
    wide = wide[sorted(wide.columns)]
    return PerImage(wide.index.to_numpy(dtype=object), wide.columns.to_numpy(dtype=np.int64),
                    wide.to_numpy(dtype=np.float64))


def paired_difference(a: PerImage, b: PerImage) -> PerImage:
    """a − b over the images and steps both have (images in a's order)."""
    images = [i for i in a.image_ids if i in set(b.image_ids)]
    steps = np.intersect1d(a.steps, b.steps)
    ia = pd.Index(a.image_ids).get_indexer(images)
    ib = pd.Index(b.image_ids).get_indexer(images)
    sa, sb = np.searchsorted(a.steps, steps), np.searchsorted(b.steps, steps)
    return PerImage(np.asarray(images, dtype=object), steps, a.values[np.ix_(ia, sa)] - b.values[np.ix_(ib, sb)])


def bootstrap_band(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``bench.stats.bootstrap_ci`` of the mean over axis 0 for each column, in column chunks that bound
    memory; the resampled image indices depend only on (n, n_boot, seed), so chunks are consistent."""
    values = np.asarray(values, dtype=np.float64)
    n, k = values.shape
    chunk = max(1, MAX_BOOT_VALUES // max(1, n_boot * n))
    low, high = np.empty(k), np.empty(k)
    for start in range(0, k, chunk):
        lo, hi = bootstrap_ci(values[:, start:start + chunk], n_boot=n_boot, seed=seed, level=level)
        low[start:start + chunk], high[start:start + chunk] = lo, hi
    return low, high


def mean_band(m: PerImage, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per step: mean over images, s.e.m., 95% bootstrap interval (NaN: no band, over fewer than 2 images or
    100 resamples, ``interval_note``), number of images."""
    if len(m.image_ids) == 0:
        return pd.DataFrame(columns=["step", "mean", "sem", "ci_low", "ci_high", "n_images"])
    low, high = bootstrap_band(m.values, n_boot=n_boot, seed=seed)
    if interval_note(len(m.image_ids), n_boot):
        low, high = np.full_like(low, np.nan), np.full_like(high, np.nan)
    return pd.DataFrame({"step": m.steps, "mean": m.values.mean(0), "sem": np.atleast_1d(sem(m.values)),
                         "ci_low": low, "ci_high": high, "n_images": len(m.image_ids)})


def relative_to_random(curves: pd.DataFrame, value: str) -> PerImage | None:
    """Per image and step: ``value`` (e.g. AOPC) of MoRF − the same of the random order of the same run (paired:
    same replacement draws). None when the run has no random-order rows."""
    morf, rnd = per_image(curves, "morf", value), per_image(curves, "random", value)
    if morf is None or rnd is None:
        return None
    return paired_difference(morf, rnd)


def relative_to_run(curves: pd.DataFrame, baseline: pd.DataFrame, value: str) -> PerImage | None:
    """Per image and step: ``value`` of MoRF of this run − the same of a baseline run (e.g. sensitivity, as TNNLS
    Fig. 8), over the images and steps both have."""
    a, b = per_image(curves, "morf", value), per_image(baseline, "morf", value)
    if a is None or b is None:
        return None
    return paired_difference(a, b)


def quantity_values(results, run: str, quantity: str) -> pd.Series | None:
    """Per image (index image_id, order of appearance) one declared quantity of one run, exactly as its summary
    computes it (``Results.run_quantities``), the images where it is finite; None when the run does not have it."""
    quantities = results.run_quantities(run)
    if quantities is None or quantity not in quantities:
        return None
    out = quantities[quantity].astype(np.float64).rename(quantity)
    out.index.name = "image_id"
    return out[np.isfinite(out.to_numpy())]


def step_fractions(curves: pd.DataFrame, order: str = "morf") -> pd.Series:
    """Per step, the mean over images of the fraction of pixels perturbed (``fraction_perturbed``) of ``order``:
    where a step lies on a fraction-of-pixels axis (the same for every image with equal tiles)."""
    sub = curves[curves.order == order]
    return sub.groupby("step").fraction_perturbed.mean()


def area_matched_difference(a: pd.DataFrame, a_order: str, b: pd.DataFrame, b_order: str, points: int = 50
                            ) -> PerImage | None:
    """Per image, the area-matched AOPC (DEFINITIONS §4 Unequal regions) of ``a``'s ``a_order`` curve minus that of
    ``b``'s ``b_order`` curve (the same run's random order, or another run's MoRF), as a function of the fraction of
    pixels perturbed: at ``points`` fractions up to the largest one every image's two curves reach. ``steps`` are
    those fractions in %."""
    from ..protocols.aopc import area_aopc_curve

    fa, sa = per_image(a, a_order, "fraction_perturbed"), per_image(a, a_order, "score_value")
    fb, sb = per_image(b, b_order, "fraction_perturbed"), per_image(b, b_order, "score_value")
    if fa is None or fb is None:
        return None
    images = [i for i in fa.image_ids if i in set(fb.image_ids)]
    if not images:
        return None
    ia, ib = pd.Index(fa.image_ids).get_indexer(images), pd.Index(fb.image_ids).get_indexer(images)
    end = min(fa.values[ia, -1].min(), fb.values[ib, -1].min())
    if not end > 0:
        return None
    grid = np.linspace(0.0, end, points + 1)[1:]
    diff = (area_aopc_curve(fa.values[ia], sa.values[ia], grid) - area_aopc_curve(fb.values[ib], sb.values[ib], grid))
    return PerImage(np.asarray(images, dtype=object), 100 * grid, diff)
