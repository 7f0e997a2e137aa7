"""The summary table for papers: AOPC per method × column (dataset, patch, …) with 95% intervals, the best
method per column marked, and a paired test of every method against that best over the same images.

* Quantity (default ``aopc_morf_minus_random``): per image, AOPC(L) of MoRF minus AOPC(L) of the random
  order of the same run (SPEC §4); or ``aopc_morf``. Mean, s.e.m. and a 95% percentile bootstrap interval
  over images (the run's seed, so they equal the run's ``summary.csv``).
* Best per column: the highest mean (higher AOPC = the heatmap found more of what the model relies on; higher
  ROAD gap = its MoRF and LeRF orders separate better), the lowest for the ROAD AUCs of MoRF (LOWER_IS_BETTER).
* ROAD quantities (``road_gap``, ``road_auc_morf_minus_random``, …; ``road_table.*``): per image from the
  run's ``road.parquet``, as in its summary (SPEC §9).
* Test: two-sided **Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``, zero differences dropped,
  exact for small samples without ties, normal approximation otherwise) on the per-image differences
  method − best over the images both runs evaluated; p-values Holm-adjusted over the methods of a column.
  A method whose adjusted p ≥ α (0.05) is marked † — not significantly different from the best.
  All differences zero → p = 1; fewer than 2 paired images → p = NaN (not marked).

Outputs: ``summary_table.csv`` (long, one row per run, every number), ``summary_table.md`` and
``summary_table.tex`` (rows = methods, columns = conditions; cells ``mean [ci_low, ci_high]``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from .aggregate import FAMILY_QUANTITIES, ROAD_QUANTITIES, family_values, final_values
from .load import Results, series_labels, series_order
from ..stats import bootstrap_ci, sem

#: The columns a table column is made of (those that vary are shown in its header; dataset and patch always).
COLUMN_KEY = ["dataset", "model", "perturbation", "patch", "steps", "target", "score"]
ALPHA = 0.05
LOWER_IS_BETTER = {"road_auc_morf", "road_auc_morf_minus_random", "deletion_auc_morf",
                   "deletion_auc_morf_minus_random", "pixel_flipping_auc", "pixel_flipping_auc_minus_random"}
TEST_NAME = "Wilcoxon signed-rank, two-sided, Holm-adjusted within column"
QUANTITY_TITLES = {"aopc_morf_minus_random": "AOPC − random", "aopc_morf": "AOPC (MoRF)",
                   "aopc_random": "AOPC (random order)", "road_gap": "ROAD gap AUC(LeRF) − AUC(MoRF)",
                   "road_auc_morf_minus_random": "ROAD AUC(MoRF) − AUC(random)",
                   "srg": "SRG AUC(LeRF) − AUC(MoRF)", "srg_aopc": "SRG AOPC(MoRF) − AOPC(LeRF)",
                   "deletion_auc_morf": "deletion AUC", "deletion_auc_morf_minus_random": "deletion AUC − random",
                   "insertion_auc_morf": "insertion AUC", "insertion_auc_morf_minus_random": "insertion AUC − random",
                   "faithfulness_correlation": "faithfulness correlation",
                   "pixel_flipping_auc": "pixel-flipping AUC", "pixel_flipping_auc_minus_random": "pixel-flipping AUC − random",
                   "irof_morf": "IROF", "irof_morf_minus_random": "IROF − random", "irof_aoc": "IROF (Quantus AOC)"}


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences ``d`` (see the module docstring)."""
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float("nan")
    if not np.any(d != 0):
        return 1.0
    from scipy.stats import wilcoxon
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaNs stay NaN and do not count)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def column_label(row: pd.Series, varying: list[str]) -> str:
    parts = [str(row["dataset"])]
    parts += [f"{c} {row[c]}" for c in COLUMN_KEY if c != "dataset" and (c in varying or c == "patch")]
    return " · ".join(parts)


def summary_table(results: Results, quantity: str = "aopc_morf_minus_random", n_boot: int = 1000,
                  seed: int | None = None) -> pd.DataFrame:
    """Long table, one row per run: the column key, method, label, statistics and the paired test."""
    runs = results.runs
    varying = [c for c in COLUMN_KEY if runs[c].astype(str).nunique() > 1]
    labels = series_labels(runs, COLUMN_KEY)
    order = {r: i for i, r in enumerate(series_order(runs, labels))}
    rows, per_image = [], {}
    for _, r in runs.iterrows():
        family = quantity in FAMILY_QUANTITIES
        values = (family_values(results.run_quantities(r.run), quantity) if family
                  else final_values(results.run_table(r.run), quantity))
        if values is None:
            if not family:  # (a run without that protocol is simply not in its table)
                results.warnings.append(f"{r.run}: no rows for {quantity} (is the random order missing?); "
                                        f"not in the summary table")
            continue
        per_image[r.run] = values
        v = values.to_numpy()
        lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=int(r.seed if seed is None else seed))
        rows.append({**{c: r[c] for c in COLUMN_KEY}, "column": column_label(r, varying), "method": r.method,
                     "method_params": r.method_params, "pooling": r.pooling, "seed": r.seed, "repeats": r.repeats,
                     "run": r.run, "label": labels[r.run], "quantity": quantity, "L": r.L, "n_images": v.size,
                     "mean": float(v.mean()), "sem": float(sem(v)), "ci_low": float(lo), "ci_high": float(hi)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    out = []
    for _, g in table.groupby("column", sort=False):
        g = g.copy()
        lower = quantity in LOWER_IS_BETTER
        best = g.loc[g["mean"].idxmin() if lower else g["mean"].idxmax()]
        g["best_label"], g["is_best"] = best.label, g.run == best.run
        g["rank"] = g["mean"].rank(ascending=lower, method="min").astype(int)
        n_paired, diff, p = [], [], []
        for run in g.run:
            a, b = per_image[run], per_image[best.run]
            shared = a.index.intersection(b.index, sort=False)
            d = a.loc[shared].to_numpy() - b.loc[shared].to_numpy()
            n_paired.append(len(shared))
            diff.append(float(d.mean()) if d.size else float("nan"))
            p.append(float("nan") if run == best.run else wilcoxon_p(d))
        g["n_paired"], g["mean_diff_vs_best"], g["p_value"] = n_paired, diff, p
        g["p_holm"] = holm(np.asarray(p))
        g["not_significantly_worse"] = ~g.is_best & (g.p_holm >= ALPHA)
        g["test"] = TEST_NAME
        out.append(g)
    table = pd.concat(out, ignore_index=True)
    label_rank = {}
    for r in sorted(order, key=order.get):
        label_rank.setdefault(labels[r], len(label_rank))
    table["_order"] = table.label.map(label_rank)
    return table.sort_values(["_order", *COLUMN_KEY], kind="stable").drop(columns="_order").reset_index(drop=True)


def _decimals(table: pd.DataFrame, digits: int | None) -> int:
    if digits is not None:
        return int(digits)
    scale = np.nanmax(np.abs(table["mean"].to_numpy())) if len(table) else 1.0
    if not np.isfinite(scale) or scale == 0:
        return 3
    return int(min(4, max(1, 2 - math.floor(math.log10(scale)))))


def _grid(table: pd.DataFrame, digits: int | None, bold, dagger) -> tuple[list[str], list[list[str]]]:
    """Rows = labels, columns = ``column``; decimals by the scale of each quantity (one per table, as before)."""
    dec = {q: _decimals(g, digits) for q, g in table.groupby("quantity")}
    columns = list(dict.fromkeys(table.column))
    labels = list(dict.fromkeys(table.label))
    cells = {}
    for _, r in table.iterrows():
        d = dec[r.quantity]
        text = f"{r['mean']:.{d}f} [{r.ci_low:.{d}f}, {r.ci_high:.{d}f}]"
        text = bold(text) if r.is_best else text
        cells[(r.label, r.column)] = text + (dagger if r.not_significantly_worse else "")
    return columns, [[lab] + [cells.get((lab, c), "–") for c in columns] for lab in labels]


def caption(table: pd.DataFrame) -> str:
    quantity = table.quantity.iloc[0]
    q = QUANTITY_TITLES.get(quantity, quantity)
    n = sorted(set(table.n_images))
    n_text = str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"
    where = ("per image (trapezoidal areas over the fractions of pixels changed)" if quantity in ROAD_QUANTITIES
             or "auc" in quantity or quantity == "srg" else "per image" if quantity in FAMILY_QUANTITIES
             else "at the last step L")
    return (f"{q} {where}, mean [95% bootstrap interval] over {n_text} images. Bold: best per column. "
            f"†: not significantly different from the best (two-sided Wilcoxon signed-rank test on the "
            f"per-image differences over the images both evaluated, Holm-adjusted p ≥ {ALPHA}).")


def to_markdown(table: pd.DataFrame, digits: int | None = None) -> str:
    columns, rows = _grid(table, digits, lambda s: f"**{s}**", " †")
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| method | " + " | ".join(map(esc, columns)) + " |", "|---|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + caption(table) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "ε": r"$\varepsilon$",
          "ℓ": r"$\ell$", "∞": r"$\infty$", "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$",
          "×": r"$\times$", "²": r"$^2$", "−": "--", "–": "--", "·": r"$\cdot$", "≥": r"$\geq$",
          "†": r"$^\dagger$"}


_LATEX_SEQUENCES = {"ℓ₂²": "\x02\\ell_2^2\x02", "ℓ₂": "\x02\\ell_2\x02", "ℓ∞": "\x02\\ell_\\infty\x02"}


def latex_escape(text: str) -> str:
    """Plain text (with the Greek letters and symbols of method names) → LaTeX."""
    text = str(text)
    for seq, math in _LATEX_SEQUENCES.items():
        text = text.replace(seq, math)
    parts = text.split("\x02")  # odd parts are ready-made math
    return "".join(f"${p}$" if i % 2 else "".join(_LATEX.get(ch, ch) for ch in p) for i, p in enumerate(parts))


def to_latex(table: pd.DataFrame, digits: int | None = None, label: str = "tab:aopc") -> str:
    columns, rows = _grid(table, digits, lambda s: "\x00" + s + "\x01", "†")
    cell = lambda s: latex_escape(s).replace("\x00", r"\textbf{").replace("\x01", "}")  # noqa: E731
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             r"\caption{" + latex_escape(caption(table)) + "}", r"\label{" + label + "}",
             r"\begin{tabular}{l" + "c" * len(columns) + "}", r"\toprule",
             "Method & " + " & ".join(map(latex_escape, columns)) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


#: The family table's columns, in this order, where the runs have them.
FAMILY_COLUMNS = ("aopc_morf_minus_random", "srg", "pixel_flipping_auc", "deletion_auc_morf", "insertion_auc_morf",
                  "road_gap", "irof_morf", "faithfulness_correlation")


def family_table(results: Results, n_boot: int = 1000, seed: int | None = None) -> pd.DataFrame | None:
    """The faithfulness family side by side: one :func:`summary_table` per quantity of FAMILY_COLUMNS that
    some run has (beyond AOPC), stacked; its ``column`` is the quantity's title (and the condition, when
    several). None when the runs have no §9 protocol."""
    parts = []
    for quantity in FAMILY_COLUMNS:
        part = summary_table(results, quantity, n_boot, seed)
        if part.empty:
            continue
        several = part.column.nunique() > 1
        part["column"] = [QUANTITY_TITLES.get(quantity, quantity) + (f" · {c}" if several else "")
                          for c in part.column]
        parts.append(part)
    if len(parts) < 2:
        return None
    return pd.concat(parts, ignore_index=True)


def family_markdown(table: pd.DataFrame, digits: int | None = None) -> str:
    columns, rows = _grid(table, digits, lambda s: f"**{s}**", " †")
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| method | " + " | ".join(map(esc, columns)) + " |", "|---|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    n = sorted(set(table.n_images))
    n_text = str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"
    better = ", ".join(f"{QUANTITY_TITLES[q]}: lower" for q in FAMILY_COLUMNS if q in LOWER_IS_BETTER
                       and q in set(table.quantity))
    return ("\n".join(lines) + f"\n\nThe faithfulness family per method, mean [95% bootstrap interval] over {n_text}"
            f" images (SPEC §4, §9). Bold: best per column (higher is better{'; ' + better + ' is better' if better else ''}). "
            f"†: not significantly different from the best (two-sided Wilcoxon signed-rank test, Holm-adjusted "
            f"p ≥ {ALPHA}).\n")
