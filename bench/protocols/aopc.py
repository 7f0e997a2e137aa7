"""Region perturbation and AOPC (Samek et al., TNNLS 2017, Sec. III-A; DEFINITIONS §3–4): every run computes it.

Regions (the tiles of ``patch``, or each image's superpixels with ``regions=slic``) are perturbed in the
heatmap's order — MoRF, and LeRF when ``orders`` lists it — and in the paired random order, by the run's
replacement function g (``perturbation``) with ``repeats`` draws; the score f_c(x⁽ᵏ⁾) is tracked for
k = 0 … L, L = min(``steps``, regions), and per image

    AOPC(L) = 1/(L+1) · Σ_{k=0..L} ( f_c(x⁽⁰⁾) − f_c(x⁽ᵏ⁾) )                      (TNNLS eq. 12)

is reported for each order, and the paired difference to the random order. Its settings are the run's own
(``patch``, ``steps``, ``repeats``, ``orders``, ``perturbation``, ``per_repeat``, ``regions``).

Tables: ``curves`` (image × order × step k = 0 … L: ``fraction_perturbed``, ``score_value`` (mean over repeats),
``score_std``, ``aopc`` (AOPC(k) of that image), ``nonfinite`` (repeats whose score was NaN/inf)) and, with
``per_repeat``, ``curves_repeats`` (one row per repeat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.engine.curves import imputed_scores, perturbed_scores, sequential_scores
from bench.protocols.base import Batch, Figure, Protocol, Quantity, Steps, Table, grid_frame

LAST = "at the last step L"


def unequal_regions(run) -> bool:
    """Whether a run's regions differ in size (its ``equal_regions`` is false)."""
    return str(run.get("equal_regions", True)).lower() in ("false", "0")


AREA_MATCHED = "over the same fraction of pixels as the random order (DEFINITIONS §4 Unequal regions)"
#: The columns of ``curves.parquet``, in this order (after the provenance, bench/run/tables.py).
CURVE_COLUMNS = ["image_id", "label", "target_class", "order", "step", "fraction_perturbed", "score_value", "score_std",
                 "aopc", "nonfinite"]


@dataclass(frozen=True)
class AOPC(Protocol):
    title = "AOPC"
    required = True
    needs = ("regions", "region_orders")
    tables = (Table("curves", ("image_id", "order", "step", "score_value", "aopc")),)
    quantities = (
        Quantity("aopc_random", 0, "AOPC (random order)", LAST, printed="random AOPC",
            steps=Steps("curves", "random", from_start=True)),
        Quantity("aopc_morf", +1, "AOPC (MoRF)", LAST, printed="AOPC(L={L})",
            steps=Steps("curves", "morf", from_start=True)),
        Quantity("aopc_morf_minus_random", +1, "AOPC − random", LAST, headline=True,
                 printed="AOPC − random [95% CI]", print_as="ci",
                     steps=Steps("curves", "morf", "random", from_start=True)),
        Quantity("aopc_lerf", -1, "AOPC (LeRF)", LAST, printed="LeRF AOPC",
            steps=Steps("curves", "lerf", from_start=True)),
        Quantity("aopc_lerf_minus_random", -1, "AOPC (LeRF) − random", LAST,
            steps=Steps("curves", "lerf", "random", from_start=True)),
        # for runs with unequal regions these stand in for the plain ones in comparisons (``replaces``)
        Quantity("aopc_area_random", 0, "area-matched AOPC (random order)", AREA_MATCHED, when=unequal_regions,
                 replaces="aopc_random"),
        Quantity("aopc_area_morf", +1, "area-matched AOPC (MoRF)", AREA_MATCHED, when=unequal_regions,
                 replaces="aopc_morf"),
        Quantity("aopc_area_morf_minus_random", +1, "area-matched AOPC − random", AREA_MATCHED,
                 printed="area-matched AOPC − random [95% CI]", print_as="ci", when=unequal_regions,
                 replaces="aopc_morf_minus_random"),
        Quantity("aopc_area_lerf", -1, "area-matched AOPC (LeRF)", AREA_MATCHED, when=unequal_regions,
                 replaces="aopc_lerf"),
        Quantity("aopc_area_lerf_minus_random", -1, "area-matched AOPC (LeRF) − random", AREA_MATCHED,
                 when=unequal_regions, replaces="aopc_lerf_minus_random"),
        Quantity("nonfinite_scores", 0, "non-finite perturbed scores", "per image (count)", diagnostic=True,
                 unit="count"),
    )
    figures = (Figure("aopc_vs_{baseline}", "relative", table="curves", value="aopc", label="AOPC"),
               Figure("curves", "orders", table="curves"),
               Figure("network_quality", "network", value="aopc_morf", label="AOPC"))

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        """MoRF (and LeRF) curves of the heatmap and the paired random-baseline curve; superpixels: the first
        min(L, largest R) steps are computed, and an image's steps after its own R repeat its last value."""
        run, regions, seeded = batch.run, batch.regions, batch.region_orders
        x, target, f0 = batch.x, batch.target, batch.f0
        orders = [seeded[o] for o in run.orders]
        ranks = torch.stack([regions.ranks(o) for o in orders], 1)
        steps = min(run.L, regions.count)
        g = run.replacement
        if g.sequential:
            scores = sequential_scores(run.scores, x, ranks, g.step, target, steps, run.batch_size)
        elif g.imputed:
            draws = g.draw(x, batch.image_ids, run.repeats, run.seed, run.normalization)
            scores = imputed_scores(run.scores, x, ranks, g.fill, draws, target, torch.arange(1, steps + 1),
                                    run.batch_size)
        else:
            draws = g.draw(x, batch.image_ids, run.repeats, run.seed, run.normalization)
            scores = perturbed_scores(run.scores, x, ranks, draws, target, steps, run.batch_size)  # B,O,J,L
        scores = regions.extend(scores, run.L)

        first = f0.view(-1, 1, 1).expand(-1, len(orders), 1)
        nonfinite = torch.cat([torch.zeros_like(first), (~torch.isfinite(scores)).sum(2).to(first.dtype)], -1)
        curve = torch.cat([first, scores.mean(2)], -1)
        spread = torch.cat([torch.zeros_like(first), scores.std(2, correction=0)], -1)
        aopc = aopc_curve(f0.view(-1, 1), curve)
        replaced = torch.stack([regions.extend(regions.fraction(o, steps, curve.dtype), run.L) for o in orders], 1)
        fraction = torch.cat([torch.zeros_like(first), replaced], -1)
        per_image, names, per_repeat, L = batch.per_image(), list(run.orders), run.per_repeat, run.L

        def rows() -> dict[str, pd.DataFrame]:
            tables = {"curves": grid_frame(
                per_image, order=names, step=np.arange(L + 1),
                values=dict(fraction_perturbed=fraction, score_value=curve, score_std=spread, aopc=aopc,
                            nonfinite=nonfinite))}
            tables["curves"]["nonfinite"] = tables["curves"]["nonfinite"].astype("int64")
            if per_repeat:
                tables["curves_repeats"] = grid_frame(
                    dict(image_id=per_image["image_id"]), order=names, repeat=np.arange(scores.shape[2]),
                    step=np.arange(1, L + 1), values=dict(score_value=scores))
            return tables
        return rows

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        """AOPC(L) per order, their paired differences to the random order, and the count of non-finite
        perturbed scores when there were any."""
        curves = tables.get("curves")
        if curves is None:
            return None
        final = final_aopc(curves)
        cols = {f"aopc_{o}": final[o] for o in ("morf", "lerf", "random") if o in final}
        for o in ("morf", "lerf"):
            if o in final:
                cols[f"aopc_{o}_minus_random"] = final[o] - final["random"]
        cols.update(area_quantities(curves, final.index))
        out = pd.DataFrame(cols, index=final.index)
        if "nonfinite" in curves and curves["nonfinite"].any():
            counts = curves.groupby("image_id", sort=False)["nonfinite"].sum()
            out["nonfinite_scores"] = counts.reindex(out.index).to_numpy(dtype=np.float64)
        return out

    @classmethod
    def notes(cls, tables) -> list[str]:
        curves = tables.get("curves")
        if curves is None or not curves["nonfinite"].any():
            return []
        per_image = curves.groupby("image_id")["nonfinite"].sum()
        return [f"{int((per_image > 0).sum())} image(s) had {int(per_image.sum())} non-finite (NaN/inf) perturbed "
                f"score(s) from the model; their curves are NaN from there on and they are left out of those "
                f"quantities (summary: n_images, nonfinite_scores)"]


def area_quantities(curves: pd.DataFrame, images: pd.Index) -> dict[str, np.ndarray]:
    """Per image (in the order of ``images``), the area-matched AOPC (DEFINITIONS §4 "Unequal regions") of MoRF and
    LeRF (those present), each paired with the random order over their common range [0, a_max]: the
    ``aopc_area_random`` reported is the one matched to MoRF."""
    wide = curves.pivot_table(index=["image_id", "order"], columns="step",
                              values=["fraction_perturbed", "score_value"], aggfunc="first", dropna=False)

    def arrays(order: str) -> tuple[np.ndarray, np.ndarray]:
        block = wide.xs(order, level="order").reindex(images)
        return (block["fraction_perturbed"].to_numpy(np.float64), block["score_value"].to_numpy(np.float64))

    orders = set(curves.order.unique())
    base_fraction, base_score = arrays("random")
    out: dict[str, np.ndarray] = {}
    for o in ("morf", "lerf"):
        if o in orders:
            own, base, _ = area_matched_aopc(*arrays(o), base_fraction, base_score)
            if o == "morf":
                out["aopc_area_random"] = base
            out[f"aopc_area_{o}"], out[f"aopc_area_{o}_minus_random"] = own, own - base
    return out


def final_aopc(curves: pd.DataFrame) -> pd.DataFrame:
    """Per image, AOPC at the last step L for each order: index image_id (first-seen order), columns orders."""
    last = curves[curves.step == curves.step.max()]
    return last.pivot(index="image_id", columns="order", values="aopc").loc[last.image_id.unique()]


def area_integral(fraction: np.ndarray, score: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """∫₀^upper F(a) da of the piecewise-linear curves F through (fraction[..., k], score[..., k]) (fraction
    non-decreasing along the last axis, starting at 0), for ``upper`` (...,) ≤ each curve's last fraction:
    the trapezoid over the knots below ``upper`` plus the part of the segment that ``upper`` cuts."""
    a0, a1, f0, f1 = fraction[..., :-1], fraction[..., 1:], score[..., :-1], score[..., 1:]
    hi = np.minimum(a1, upper[..., None])
    lo = np.minimum(a0, hi)
    width = a1 - a0
    with np.errstate(invalid="ignore", divide="ignore"):
        at_hi = np.where(width > 0, f0 + (f1 - f0) * (hi - a0) / np.where(width > 0, width, 1), f1)
    return (0.5 * (hi - lo) * (f0 + at_hi)).sum(-1)


def area_matched_aopc(fraction: np.ndarray, score: np.ndarray, baseline_fraction: np.ndarray,
                      baseline_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The area-matched AOPC of an order and of its paired random order (DEFINITIONS §4 "Unequal regions"), per image:

        AOPC_area = (1/a_max) ∫₀^{a_max} ( f_c(x⁽⁰⁾) − F(a) ) da,   a_max = min(a_L(order), a_L(random)),

    F the curve as a function of the fraction a of pixels perturbed, linear between steps. Arrays (images, L+1)
    with ``score[:, 0]`` = f_c(x⁽⁰⁾) and ``fraction[:, 0]`` = 0. Returns (AOPC_area(order), AOPC_area(random),
    a_max); NaN where a_max = 0."""
    a_max = np.minimum(fraction[..., -1], baseline_fraction[..., -1])
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(a_max > 0, 1.0 / np.where(a_max > 0, a_max, 1), np.nan)
        own = score[..., 0] - area_integral(fraction, score, a_max) * scale
        base = baseline_score[..., 0] - area_integral(baseline_fraction, baseline_score, a_max) * scale
    return own, base, a_max


def area_aopc_curve(fraction: np.ndarray, score: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """AOPC_area(a) = (1/a) ∫₀^a (f_c(x⁽⁰⁾) − F(a')) da' at each a of ``grid`` (G,), a > 0, for curves
    (..., L+1): (..., G); NaN beyond a curve's last fraction (the figures of runs with unequal regions)."""
    upper = np.broadcast_to(grid, fraction.shape[:-1] + grid.shape)
    inside = upper <= fraction[..., -1:] + 1e-12
    clipped = np.minimum(upper, fraction[..., -1:])
    integral = area_integral(fraction[..., None, :], score[..., None, :], clipped)
    return np.where(inside, score[..., :1] - integral / grid, np.nan)


def aopc_curve(unperturbed: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """AOPC(L') for L' = 0..L (TNNLS eq. 12, per image): 1/(L'+1) Σ_{k=0..L'} (f(x⁽⁰⁾) − f(x⁽ᵏ⁾)).

    ``unperturbed`` (...,), ``curve`` (..., L+1) with ``curve[..., 0] == unperturbed``.
    """
    drop = unperturbed.unsqueeze(-1) - curve
    count = torch.arange(1, curve.shape[-1] + 1, device=curve.device, dtype=curve.dtype)
    return drop.cumsum(-1) / count
