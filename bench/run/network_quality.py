"""Heatmap quality vs network quality (DEFINITIONS §7, TNNLS Sec. IV-D, Fig. 7): one row per checkpoint.

Runs of ``model=checkpoint`` (``experiment=network_quality``) carry the checkpoint folder and iteration in
their ``model_params``; the folder's ``checkpoints.csv`` (bench/models/ ``train_embedded_cnn``) has the
test accuracy of every checkpoint. ``network_quality_table`` joins the two: per method and iteration the
test accuracy and AOPC with its 95% bootstrap interval over images, the table the report draws (Fig. 7).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .. import protocols
from ..models import CHECKPOINTS_CSV


def network_quantity() -> tuple[str, str]:
    """(quantity, label) of the protocols' declared ``network`` figure (TNNLS Fig. 7: AOPC of MoRF)."""
    figure = next(f for cls in protocols.catalogue() for f in cls.figures if f.kind == "network")
    return figure.value, figure.label


def network_quality_table(summary: pd.DataFrame, quantity: str | None = None) -> pd.DataFrame | None:
    """Summary rows of checkpoint runs → columns method, iteration, test_accuracy, mean, ci_low, ci_high, sem,
    n_images, quantity, label (of ``quantity``, default :func:`network_quantity`); None when the summary has no
    checkpoint runs."""
    quantity, label = (quantity, quantity) if quantity else network_quantity()
    if "model_params" not in summary.columns:
        return None
    rows = summary[summary.quantity == quantity]
    out = []
    accuracies: dict[str, pd.DataFrame] = {}
    for _, r in rows.iterrows():
        params = json.loads(r["model_params"]) if isinstance(r["model_params"], str) else {}
        if "dir" not in params or "iteration" not in params or not params.get("dir"):
            continue
        folder = str(Path(str(params["dir"])).expanduser())
        if folder not in accuracies:
            path = Path(folder) / CHECKPOINTS_CSV
            accuracies[folder] = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["iteration"])
        table = accuracies[folder]
        iteration = int(table.iteration.max()) if str(params["iteration"]) == "last" else int(params["iteration"])
        acc = table.loc[table.iteration == iteration, "test_accuracy"]
        out.append(dict(method=r["method"], iteration=iteration,
                        test_accuracy=float(acc.iloc[0]) if len(acc) else float("nan"),
                        mean=r["mean"], ci_low=r["ci_low"], ci_high=r["ci_high"], sem=r["sem"],
                        n_images=r["n_images"], quantity=quantity, label=label, checkpoints=folder))
    if not out:
        return None
    return pd.DataFrame(out).sort_values(["method", "iteration"], kind="stable").reset_index(drop=True)
