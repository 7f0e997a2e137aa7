"""From a run's tidy tables to its summary table and the printed table (SPEC §4–6, §9).

The summary is computed from the tables alone, so a run, a merge of shards and a collected sweep all produce it
the same way: every protocol (bench/protocols/, catalogue order) gives its per-image quantities from the tables
(``Protocol.per_image``; None when the run did not compute it). One row per quantity, over images: mean, median,
s.e.m. and a 95% percentile bootstrap interval; all quantities of a run are resampled with the same image
indices, so paired differences stay paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import protocols
from ..engine.stats import bootstrap_ci, sem


def per_image_quantities(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per image (the images of the run's first protocol, in order of appearance), one column per
    quantity: the protocols' in catalogue order, then the diagnostic ones (``Quantity.diagnostic``)."""
    frames = [f for cls in protocols.catalogue() if (f := cls.per_image(tables)) is not None]
    out = frames[0]
    for frame in frames[1:]:
        out = out.join(frame)
    declared = protocols.quantities()
    last = [c for c in out.columns if c in declared and declared[c][1].diagnostic]
    return out[[c for c in out.columns if c not in last] + last]


def summarize_run(tables: dict[str, pd.DataFrame], n_boot: int, seed: int) -> pd.DataFrame:
    """The summary rows of one run: every quantity of its protocols (``per_image_quantities``).

    A quantity that is not finite for some images (the model returned NaN/inf for a perturbed input) is
    summarised over the images where it is, and ``n_images`` says over how many; the quantities finite for
    every image share one set of bootstrap resamples."""
    per_image = per_image_quantities(tables)
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


def undefined_reasons(summary: pd.DataFrame) -> list[str]:
    """Why the quantities no image has a finite value of are undefined (their ``Quantity.undefined``, else the
    model's NaN/inf outputs), one line each, without repeats."""
    declared = protocols.quantities()
    empty = summary[summary.n_images == 0].quantity
    generic = "the model returned NaN/inf for the perturbed inputs of every image"
    return list(dict.fromkeys((declared[q][1].undefined if q in declared else "") or generic for q in empty))


def format_table(summary: pd.DataFrame) -> str:
    """The short table printed at the end of a run: the quantities declared ``printed``, in catalogue order."""
    q = summary.set_index("quantity")
    first = summary.iloc[0]

    def fmt(name: str, how: str) -> str:
        r = q.loc[name]
        if how == "mean":
            return f"{r['mean']:.4g}"
        s = f"{r['mean']:.4f} ± {r['sem']:.4f}"
        return s + f" [{r['ci_low']:.4f}, {r['ci_high']:.4f}]" if how == "ci" else s

    row = {"method": first["method"]}
    for cls in protocols.catalogue():
        for quantity in cls.quantities:
            if quantity.printed and quantity.name in q.index:
                row[quantity.printed.format(L=first["L"])] = fmt(quantity.name, quantity.print_as)
    row["images"] = int(first["n_images"])
    where = (f"patch {first['patch']} ({first['n_regions']} regions)" if first.get("regions", "tiles") == "tiles"
             else "SLIC superpixels")
    head = (f"{first['dataset']} · {first['model']} · {where} · "
            f"L={first['L']} · {first['repeats']} repeats · {first['perturbation']} · score={first['score']}"
            f" · mean ± s.e.m. over images")
    return head + "\n" + pd.DataFrame([row]).to_string(index=False)


def headline(summary: pd.DataFrame) -> float:
    """The mean of the run's first headline quantity (the required protocol's): the objective a Hydra sweeper
    optimises."""
    names = [q.name for cls in protocols.catalogue() if cls.required for q in cls.quantities if q.headline]
    return float(summary.loc[summary.quantity == names[0], "mean"].iloc[0])
