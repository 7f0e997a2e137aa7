"""Heatmap quality vs network quality (DEFINITIONS §7, TNNLS Fig. 7): test accuracy and AOPC along training.

Input: a tidy table with columns ``iteration``, ``test_accuracy``, ``mean``, ``ci_low``, ``ci_high`` (of a
quantity, AOPC in the paper) and optionally ``method`` and ``label`` — one row per checkpoint (and method), as
bench/run/network_quality.py writes it. Output: a figure with test accuracy (left axis, black) and the quantity
with its 95% band (right axis, the method's colour) against training iterations, and the Pearson and Spearman
correlations between accuracy and the quantity's mean over the checkpoints (per method), shown in the title (one
method) or the legend (several), and returned.
"""

from __future__ import annotations

import warnings

import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import style
from .load import NETWORK_COLUMNS, network_columns

CORRELATION_COLUMNS = ["method", "n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"]


def correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Pearson r and Spearman ρ with their two-sided p-values; NaN for fewer than 3 points or a constant."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    nan = float("nan")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": int(x.size), "pearson_r": nan, "pearson_p": nan, "spearman_rho": nan, "spearman_p": nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, s = pearsonr(x, y), spearmanr(x, y)
    return {"n": int(x.size), "pearson_r": float(p.statistic), "pearson_p": float(p.pvalue),
            "spearman_rho": float(s.statistic), "spearman_p": float(s.pvalue)}


def _corr_text(c: dict) -> str:
    if not np.isfinite(c["pearson_r"]):
        return f"correlation undefined (n={c['n']})"
    return (f"Pearson r = {c['pearson_r']:.2f} ({_p(c['pearson_p'])}), "
            f"Spearman ρ = {c['spearman_rho']:.2f} ({_p(c['spearman_p'])}), n = {c['n']}")


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def network_quality_figure(df: pd.DataFrame, *, title: str | None = None, logx: bool = False,
                           accuracy_label: str = "test accuracy", value_label: str | None = None
                           ) -> tuple[Figure, pd.DataFrame]:
    """Two-axis figure of test accuracy and the quantity (mean, 95% band) vs training iterations, and the table of
    correlations (columns ``method, n, pearson_r, pearson_p, spearman_rho, spearman_p``; one row per method).
    ``value_label``: the quantity's name on its axis (default: the table's ``label`` column, else "value").

    Accuracy is drawn once per iteration (its mean if several methods repeat it). The correlations are
    between ``test_accuracy`` and ``mean`` over the checkpoints of each method.
    """
    df = network_columns(df)
    missing = [c for c in NETWORK_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"network-quality table lacks columns {', '.join(missing)}")
    if value_label is None:
        value_label = str(df["label"].iloc[0]) if "label" in df.columns and len(df) else "value"
    df = df.copy()
    if "method" not in df.columns:
        df["method"] = "method"
    df = df.sort_values(["method", "iteration"], kind="stable")
    methods = style.sort_methods(df.method.astype(str))
    rows = []
    with style.paper():
        fig = style.new_figure(style.COLUMN_WIDTH_IN, 2.4)
        ax = fig.add_subplot()
        acc = df.groupby("iteration", sort=True).test_accuracy.mean()
        ax.plot(acc.index, acc.to_numpy(), color="black", marker="o", markersize=3, label=accuracy_label)
        ax.set_xlabel("training iterations")
        ax.set_ylabel(accuracy_label)
        ax2 = ax.twinx()
        ax2.spines["right"].set_visible(True)
        ax2.grid(False)
        for m in methods:
            g = df[df.method.astype(str) == m]
            c = correlations(g.test_accuracy, g["mean"])
            rows.append({"method": m, **c})
            st = style.method_style(m)
            label = f"{value_label}: {st.display}"
            if len(methods) > 1 and np.isfinite(c["pearson_r"]):
                label += f" (r = {c['pearson_r']:.2f}, ρ = {c['spearman_rho']:.2f})"
            ax2.fill_between(g.iteration, g.ci_low, g.ci_high, color=st.color, alpha=0.2, linewidth=0,
                             label=f"_band {m}")
            ax2.plot(g.iteration, g["mean"], color=st.color, marker=st.marker, label=label)
        ax2.set_ylabel(value_label)
        ax.set_zorder(ax2.get_zorder() + 1)  # accuracy in front of the AOPC bands
        ax.patch.set_visible(False)
        if np.issubdtype(np.asarray(df.iteration).dtype, np.integer):
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if logx:
            ax.set_xscale("log")
        corr = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
        head = title + "\n" if title else ""
        ax.set_title(head + (_corr_text(rows[0]) if len(rows) == 1 else f"accuracy vs {value_label}, per method"),
                     fontsize=6.5)
        handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
        labels = [lab for a in (ax, ax2) for lab in a.get_legend_handles_labels()[1]]
        fig.legend(handles, labels, loc="outside lower center", ncol=1 if len(methods) > 1 else 2)
        style.set_caption(fig, f"Test accuracy (left axis, black) and {value_label} (right axis; mean over images "
                               f"with its 95% bootstrap interval) of the model's checkpoints along training (TNNLS "
                               f"Fig. 7); r: Pearson, ρ: Spearman correlation over the checkpoints.")
    return fig, corr
