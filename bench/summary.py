"""From the tidy curve table to the summary table and the printed table (SPEC §4).

The summary is computed from the curve rows alone, so a run, a merge of shards and a collected sweep
all produce it the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import bootstrap_ci, sem

QUANTITIES = ("aopc_morf", "aopc_random", "aopc_morf_minus_random")


def final_aopc(curves: pd.DataFrame) -> pd.DataFrame:
    """Per image, AOPC at the last step L for each order: index image_id, columns orders."""
    last = curves[curves.step == curves.step.max()]
    return last.pivot(index="image_id", columns="order", values="aopc").loc[last.image_id.unique()]


def summarize_run(tables: dict[str, pd.DataFrame], n_boot: int, seed: int) -> pd.DataFrame:
    """MoRF AOPC(L), random-baseline AOPC(L) and their paired per-image difference: mean, s.e.m. and a
    95% bootstrap interval over images (the same resamples for all three, so the pair stays paired).
    ``tables`` are a run's tidy tables by name (at least ``curves``)."""
    final = final_aopc(tables["curves"])
    morf, rnd = final["morf"].to_numpy(), final["random"].to_numpy()
    values = np.stack([morf, rnd, morf - rnd], 1)
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return pd.DataFrame({"quantity": QUANTITIES, "mean": values.mean(0), "sem": sem(values),
                         "ci_low": low, "ci_high": high, "n_images": len(values)})


def format_table(summary: pd.DataFrame) -> str:
    """The short table printed at the end of a run."""
    q = summary.set_index("quantity")
    first = summary.iloc[0]

    def fmt(name: str, ci: bool = False) -> str:
        r = q.loc[name]
        s = f"{r['mean']:.4f} ± {r['sem']:.4f}"
        return s + f" [{r['ci_low']:.4f}, {r['ci_high']:.4f}]" if ci else s

    table = pd.DataFrame([{
        "method": first["method"], "random AOPC": fmt("aopc_random"), f"AOPC(L={first['L']})": fmt("aopc_morf"),
        "AOPC − random [95% CI]": fmt("aopc_morf_minus_random", ci=True), "images": int(first["n_images"]),
    }])
    head = (f"{first['dataset']} · {first['model']} · patch {first['patch']} ({first['n_regions']} regions) · "
            f"L={first['L']} · {first['repeats']} repeats · {first['perturbation']} · score={first['score']}"
            f" · mean ± s.e.m. over images")
    return head + "\n" + table.to_string(index=False)
