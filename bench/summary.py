"""From a run's tidy tables to its summary table and the printed table (SPEC §4–6).

The summary is computed from the tables alone, so a run, a merge of shards and a collected sweep all
produce it the same way. One row per quantity, over images: mean, median, s.e.m. and a 95% percentile
bootstrap interval; all quantities of a run are resampled with the same image indices, so paired
differences stay paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import bootstrap_ci, sem

COMPLEXITY = ("png_bytes", "jpeg_bytes", "entropy_bits")
CONTINUITY = ("continuity_max", "continuity_mean")


def final_aopc(curves: pd.DataFrame) -> pd.DataFrame:
    """Per image, AOPC at the last step L for each order: index image_id (first-seen order), columns orders."""
    last = curves[curves.step == curves.step.max()]
    return last.pivot(index="image_id", columns="order", values="aopc").loc[last.image_id.unique()]


def per_image_quantities(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per image, one column per summarised quantity."""
    final = final_aopc(tables["curves"])
    cols = {f"aopc_{o}": final[o] for o in ("morf", "lerf", "random") if o in final}
    for o in ("morf", "lerf"):
        if o in final:
            cols[f"aopc_{o}_minus_random"] = final[o] - final["random"]
    out = pd.DataFrame(cols, index=final.index)
    for name, quantities in (("complexity", COMPLEXITY), ("continuity", CONTINUITY)):
        if name in tables:
            out = out.join(tables[name].set_index("image_id")[list(quantities)])
    if {"morf", "lerf"} <= set(tables["curves"].order):
        out = out.join(srg_quantities(tables["curves"], final))
    if "road" in tables:
        out = out.join(road_quantities(tables["road"]))
    if "irof" in tables:
        out = out.join(irof_quantities(tables["irof"]))
    for name in ("pixel_flipping", "faithfulness_correlation", "deletion", "insertion"):  # (the summary's row order)
        if name not in tables:
            continue
        if name == "faithfulness_correlation":
            out = out.join(tables[name].set_index("image_id")[[name]])
            continue
        fraction, morf = AUC_VS_RANDOM[name]
        auc = curve_auc(tables[name], fraction)
        out = out.join(pd.DataFrame({morf: auc["morf"], f"{name}_auc_random": auc["random"],
                                     f"{morf}_minus_random": auc["morf"] - auc["random"]}))
    return out


#: §9 protocols summarised by the AUC of the heatmap's curve and of the paired random order: table →
#: (its fraction column, the name of the heatmap's AUC; ``<name>_auc_random``, ``<that>_minus_random`` follow).
AUC_VS_RANDOM = {"pixel_flipping": ("fraction_perturbed", "pixel_flipping_auc"),
                 "deletion": ("fraction_changed", "deletion_auc_morf"),
                 "insertion": ("fraction_changed", "insertion_auc_morf")}


def curve_auc(curves: pd.DataFrame, fraction: str) -> pd.DataFrame:
    """Per image and order, the trapezoidal area under the score curve over the fraction of pixels changed
    (column ``fraction``), from 0 to the last step's fraction (SPEC §9): Σ_k ½(f_k + f_{k+1})(a_{k+1} − a_k)."""
    from scipy.integrate import trapezoid

    wide = curves.pivot_table(index=["image_id", "order"], columns="step", values=["score_value", fraction],
                              dropna=False)  # (sorted: steps in order along the rows)
    auc = pd.Series(trapezoid(wide["score_value"].to_numpy(np.float64), wide[fraction].to_numpy(np.float64),
                              axis=1), index=wide.index)
    return auc.unstack("order").loc[curves.image_id.unique()]


def srg_quantities(curves: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    """Symmetric relevance gain (Blücher et al. 2024; SPEC §9) of the region-perturbation curves, per image:
    ``srg`` = AUC(LeRF) − AUC(MoRF) over the fraction of pixels perturbed, and its AOPC form
    ``srg_aopc`` = AOPC_MoRF(L) − AOPC_LeRF(L)."""
    auc = curve_auc(curves, "fraction_perturbed")
    return pd.DataFrame({"srg": auc["lerf"] - auc["morf"], "srg_aopc": final["morf"] - final["lerf"]},
                        index=final.index)


def road_auc(road: pd.DataFrame) -> pd.DataFrame:
    """Per image and order, the AUC of the ROAD score curve over the fraction of pixels removed (SPEC §9)."""
    return curve_auc(road, "fraction_removed")


def road_quantities(road: pd.DataFrame) -> pd.DataFrame:
    """road_auc_{morf,lerf,random}, the MoRF/LeRF gap road_gap = AUC(LeRF) − AUC(MoRF) (large: the heatmap
    separates what matters from what does not) and road_auc_morf_minus_random (paired, per image)."""
    auc = road_auc(road)
    out = pd.DataFrame({f"road_auc_{o}": auc[o] for o in ("morf", "lerf", "random")}, index=auc.index)
    out["road_gap"] = auc["lerf"] - auc["morf"]
    out["road_auc_morf_minus_random"] = auc["morf"] - auc["random"]
    return out


def irof_quantities(irof: pd.DataFrame) -> pd.DataFrame:
    """IROF (Rieger & Hansen 2020; SPEC §9) per image, from the relative curve p_k = f_c(x⁽ᵏ⁾)/f_c(x) over its
    R superpixels: ``irof_morf`` = 1/(R+1) Σ_{k=0..R} (1 − p_k), the AOPC-style area over the curve (and
    ``irof_random``, ``irof_morf_minus_random``; high = faithful), and ``irof_aoc`` = R − Σ_{k=1..R} p_k +
    ½(p_1 + p_R) = R − trapezoid(p_1 … p_R), Quantus 0.6's un-normalised form (unit-width trapezoids)."""
    order = irof.image_id.unique()  # (first seen, as every per-image quantity)
    irof = irof.astype({"relative_score": np.float64}).sort_values(["image_id", "order", "step"], kind="stable")
    drop = 1.0 - irof.groupby(["image_id", "order"], sort=False).relative_score.mean().unstack("order")
    p = irof[(irof.order == "morf") & (irof.step > 0)].groupby("image_id", sort=False).relative_score
    aoc = p.size() - p.sum() + (p.first() + p.last()) / 2
    return pd.DataFrame({"irof_morf": drop["morf"], "irof_random": drop["random"],
                         "irof_morf_minus_random": drop["morf"] - drop["random"], "irof_aoc": aoc}).loc[order]


def summarize_run(tables: dict[str, pd.DataFrame], n_boot: int, seed: int) -> pd.DataFrame:
    """The summary rows of one run (AOPC of each order, paired differences with the random baseline,
    and complexity/continuity when present).

    A quantity that is not finite for some images (the model returned NaN/inf for a perturbed input) is
    summarised over the images where it is, and ``n_images`` says over how many; the quantities finite for
    every image share one set of bootstrap resamples, as before. ``nonfinite_scores`` (perturbed scores
    that were NaN/inf, per image) is added when there were any."""
    per_image = per_image_quantities(tables)
    if "nonfinite" in tables["curves"] and tables["curves"]["nonfinite"].any():
        counts = tables["curves"].groupby("image_id", sort=False)["nonfinite"].sum()
        per_image["nonfinite_scores"] = counts.reindex(per_image.index).to_numpy(dtype=np.float64)
    values = per_image.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    whole = finite.all(0)
    stats = {k: np.full(values.shape[1], np.nan) for k in ("mean", "median", "sem", "ci_low", "ci_high")}
    stats["n_images"] = finite.sum(0)
    if whole.any():
        v = values[:, whole]
        stats["ci_low"][whole], stats["ci_high"][whole] = bootstrap_ci(v, n_boot=n_boot, seed=seed)
        stats["mean"][whole], stats["median"][whole], stats["sem"][whole] = v.mean(0), np.median(v, 0), sem(v)
    for j in np.flatnonzero(~whole):
        v = values[finite[:, j], j]
        if len(v):
            lo, hi = bootstrap_ci(v[:, None], n_boot=n_boot, seed=seed)
            stats["ci_low"][j], stats["ci_high"][j] = lo[0], hi[0]
            stats["mean"][j], stats["median"][j], stats["sem"][j] = v.mean(), np.median(v), sem(v[:, None])[0]
    return pd.DataFrame({"quantity": per_image.columns, **stats})


def format_table(summary: pd.DataFrame) -> str:
    """The short table printed at the end of a run."""
    q = summary.set_index("quantity")
    first = summary.iloc[0]

    def fmt(name: str, ci: bool = False) -> str:
        r = q.loc[name]
        s = f"{r['mean']:.4f} ± {r['sem']:.4f}"
        return s + f" [{r['ci_low']:.4f}, {r['ci_high']:.4f}]" if ci else s

    row = {"method": first["method"], "random AOPC": fmt("aopc_random"), f"AOPC(L={first['L']})": fmt("aopc_morf"),
           "AOPC − random [95% CI]": fmt("aopc_morf_minus_random", ci=True)}
    if "aopc_lerf" in q.index:
        row["LeRF AOPC"] = fmt("aopc_lerf")
    for name, label in (("png_bytes", "PNG bytes"), ("entropy_bits", "entropy"), ("continuity_max", "continuity")):
        if name in q.index:
            row[label] = f"{q.loc[name, 'mean']:.4g}"
    row["images"] = int(first["n_images"])
    where = (f"patch {first['patch']} ({first['n_regions']} regions)" if first.get("regions", "tiles") == "tiles"
             else "SLIC superpixels")
    head = (f"{first['dataset']} · {first['model']} · {where} · "
            f"L={first['L']} · {first['repeats']} repeats · {first['perturbation']} · score={first['score']}"
            f" · mean ± s.e.m. over images")
    return head + "\n" + pd.DataFrame([row]).to_string(index=False)
