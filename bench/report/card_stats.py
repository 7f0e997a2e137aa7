"""The statistics of the metric report card (DEFINITIONS §10), vectorised over bootstrap resamples.

Every function takes image weights ``w`` (R, n): row r of a resample's multiplicity of each image (row 0 all ones:
the estimate on the images themselves), so one call gives the estimate and its R − 1 bootstrap replicates — a
resample is the same images repeated, never a Python loop over resamples, images or methods.
Rankings: rank 1 = best (highest oriented mean), ties get the mean rank.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from ..engine.stats import MIN_RESAMPLES


def weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples + 1, n) image multiplicities: row 0 all ones, then ``resamples`` seeded bootstrap resamples."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return np.vstack([np.ones((1, n)), counts])


def wmean(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted means over the last axis (images) of ``v`` (..., n): (R, ...)."""
    with np.errstate(invalid="ignore", divide="ignore"):   # a resample without any of these images: NaN
        return np.einsum("...i,ri->r...", v, w) / w.sum(1).reshape(-1, *[1] * (v.ndim - 1))


def ranking(means: np.ndarray) -> np.ndarray:
    """Ranks over the last axis (methods): 1 = highest mean, ties the mean rank; NaN means give NaN ranks."""
    r = rankdata(-means, axis=-1, method="average")
    return np.where(np.isnan(means).any(-1, keepdims=True), np.nan, r)


def tau_b(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's τ_b between rankings ``a`` and ``b`` over the last axis (…, M): (n_c − n_d) / √((P − t_a)(P − t_b)),
    P the M(M−1)/2 pairs, t the pairs tied in one ranking; NaN when a ranking is all ties."""
    i, j = np.triu_indices(a.shape[-1], 1)
    sa, sb = np.sign(a[..., i] - a[..., j]), np.sign(b[..., i] - b[..., j])
    den = np.sqrt((sa != 0).sum(-1) * (sb != 0).sum(-1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sa * sb).sum(-1) / np.where(den > 0, den, 1), np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ between ``x`` (K,) and each row of ``y`` (…, K): Pearson's r of their ranks; NaN when one is
    constant."""
    rx = rankdata(x)
    ry = rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(), ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ry * rx).sum(-1) / np.where(den > 0, den, 1), np.nan)


def krippendorff_ordinal(ranks: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Krippendorff's α, ordinal metric, of ``ranks`` (n raters × U units, no missing values) with rater
    multiplicities ``w`` (R, n): α = 1 − (N − 1) Σ o_ck δ²_ck ÷ Σ n_c n_k δ²_ck, o the coincidence matrix
    (Σ over units of the pairs of distinct raters' values, ÷ (m_u − 1)), n_c its margins, N = Σ n_c, δ²_ck =
    (Σ_{g from c to k} n_g − (n_c + n_k)/2)² (Krippendorff 2011). R values, NaN where D_e = 0 (all values one)."""
    values, codes = np.unique(ranks, return_inverse=True)
    codes = codes.reshape(ranks.shape)
    onehot = np.zeros((*ranks.shape, len(values)))
    np.put_along_axis(onehot, codes[..., None], 1.0, axis=-1)
    counts = np.einsum("iuc,ri->ruc", onehot, w)                     # R × U × V: raters giving unit u value c
    m = w.sum(1)                                                     # raters per unit (every rater rates every unit)
    o = (np.einsum("ruc,ruk->rck", counts, counts) - np.einsum("ruc,ck->rck", counts, np.eye(len(values))))
    o = o / (m - 1)[:, None, None]
    n_c = o.sum(2)                                                   # R × V
    cum = np.cumsum(n_c, 1)
    lo = np.minimum.outer(np.arange(len(values)), np.arange(len(values)))
    hi = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
    between = cum[:, hi] - cum[:, lo] + n_c[:, lo]                  # Σ_{g=lo}^{hi} n_g
    d2 = (between - (n_c[:, :, None] + n_c[:, None, :]) / 2) ** 2
    total = n_c.sum(1)
    d_o = (o * d2).sum((1, 2))
    d_e = (n_c[:, :, None] * n_c[:, None, :] * d2).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d_e > 0, 1 - (total - 1) * d_o / np.where(d_e > 0, d_e, 1), np.nan)


def cronbach(items: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Cronbach's α of ``items`` (n cases × L items) with case multiplicities ``w`` (R, n):
    α = L/(L−1) · (1 − Σ_k var_k ÷ var(Σ_k item_k)); NaN when the total does not vary or L < 2."""
    n_items = items.shape[1]
    if n_items < 2:
        return np.full(len(w), np.nan)
    total = items.sum(1)
    sw = w.sum(1)

    def var(x):  # weighted (population) variance of each column of x (n, …) → (R, …); ddof cancels in α
        mean = np.einsum("i...,ri->r...", x, w) / sw.reshape(-1, *[1] * (x.ndim - 1))
        sq = np.einsum("i...,ri->r...", x ** 2, w) / sw.reshape(-1, *[1] * (x.ndim - 1))
        return sq - mean ** 2

    var_total = var(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var_total > 1e-15 * (1 + np.abs(total).max() ** 2),
                        n_items / (n_items - 1) * (1 - var(items).sum(1) / var_total), np.nan)


def kendall_w(ranks: np.ndarray) -> np.ndarray:
    """Kendall's W of m rankings of n objects, ``ranks`` (…, m, n), with the tie correction:
    W = 12 S ÷ (m² (n³ − n) − m Σ_j T_j), S = Σ_i (R_i − m(n+1)/2)², T_j = Σ over rater j's tie groups (t³ − t)."""
    m, n = ranks.shape[-2], ranks.shape[-1]
    s = ((ranks.sum(-2) - m * (n + 1) / 2) ** 2).sum(-1)
    ties = np.zeros(ranks.shape[:-1])
    for idx in np.ndindex(ranks.shape[:-1]):       # rankings × raters (few): the tie groups of each
        _, t = np.unique(ranks[idx], return_counts=True)
        ties[idx] = (t ** 3 - t).sum()
    den = m ** 2 * (n ** 3 - n) - m * ties.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 12 * s / np.where(den > 0, den, 1), np.nan)


def percentile_ci(replicates: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap replicates (NaN ones left out; NaN when none is finite)."""
    finite = replicates[np.isfinite(replicates)]
    if not len(finite) or len(replicates) < MIN_RESAMPLES:  # (fewer resamples: no interval, as everywhere)
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)
