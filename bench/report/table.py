"""The summary table for papers: one quantity per method × column (dataset, patch, …) with 95% intervals, the
best method per column marked, and a paired test of every method against that best over the same images.

* Quantity (default: the headline of the protocol every run computes, AOPC − random): any quantity a protocol
  declares (bench/protocols/), per image exactly as the run's summary computes it (so the mean and the interval
  equal the run's ``summary.csv``: the run's seed, the images where it is finite). Mean, s.e.m. and a 95%
  percentile bootstrap interval over images.
* Best per column: the highest mean, or the lowest for a quantity declared lower-is-better (direction −1).
* Test: two-sided **Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``, zero differences dropped,
  exact for small samples without ties, normal approximation otherwise) on the per-image differences
  method − best over the images both runs evaluated; p-values Holm-adjusted over the methods of a column.
  A method whose adjusted p ≥ α (0.05) is marked † — not significantly different from the best.
  All differences zero → p = 1; fewer than 2 paired images → p = NaN (not marked).

Outputs: ``summary_table.csv`` (long, one row per run, every number), ``summary_table.md`` and
``summary_table.tex`` (rows = methods, columns = conditions; cells ``mean [ci_low, ci_high]``); the same for a
protocol that asks for a table of its own (``own_table``: ``<name>_table.*``); and ``faithfulness_table`` — the
headline quantity of every protocol of the faithfulness family side by side.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from .. import protocols
from ..engine.stats import bootstrap_ci, sem
from ..run.tables import COLUMN_KEY
from .aggregate import quantity_values
from .load import Results, series_labels, series_order

ALPHA = 0.05
TEST_NAME = "Wilcoxon signed-rank, two-sided, Holm-adjusted within column"


def declaration(quantity: str) -> protocols.Quantity | None:
    """The quantity's declaration in its protocol's file (None: not a declared quantity)."""
    found = protocols.quantities().get(quantity)
    return found[1] if found else None


def title(quantity: str) -> str:
    """The quantity's label for people (its declaration's ``label``)."""
    q = declaration(quantity)
    return q.label if q else quantity


def lower_is_better(quantity: str) -> bool:
    q = declaration(quantity)
    return bool(q and q.direction < 0)


def family_columns() -> tuple[str, ...]:
    """The faithfulness table's columns: the headline quantity of every protocol of the faithfulness family,
    in catalogue order."""
    return tuple(h.name for cls in protocols.catalogue() if cls.family == "faithfulness" and (h := cls.headline()))


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


def summary_table(results: Results, quantity: str | None = None, n_boot: int = 1000,
                  seed: int | None = None) -> pd.DataFrame:
    """Long table, one row per run that has ``quantity`` (default: the anchor protocol's headline): the column
    key, method, label, statistics and the paired test."""
    quantity = quantity or default_quantity()
    runs = results.runs
    varying = [c for c in COLUMN_KEY if runs[c].astype(str).nunique() > 1]
    labels = series_labels(runs, COLUMN_KEY)
    order = {r: i for i, r in enumerate(series_order(runs, labels))}
    rows, per_image = [], {}
    for _, r in runs.iterrows():
        values = quantity_values(results, r.run, quantity)
        if values is None or values.empty:
            if _anchored(quantity):  # (a run without another protocol is simply not in its table)
                results.warnings.append(f"{r.run}: no finite values of {quantity}; not in its table")
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
        lower = lower_is_better(quantity)
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


def default_quantity() -> str:
    """The headline quantity of the protocol every run computes (AOPC − random)."""
    return next(h.name for cls in protocols.catalogue() if cls.required and (h := cls.headline()))


def _anchored(quantity: str) -> bool:
    """Whether ``quantity`` belongs to a protocol every run computes (its absence from a run is worth a warning)."""
    found = protocols.quantities().get(quantity)
    return bool(found and found[0].required)


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
    q = declaration(quantity)
    n = sorted(set(table.n_images))
    n_text = str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"
    where = q.where if q else "per image"
    better = " (lower is better)" if lower_is_better(quantity) else ""
    return (f"{title(quantity)} {where}{better}, mean [95% bootstrap interval] over {n_text} images. Bold: best per "
            f"column. †: not significantly different from the best (two-sided Wilcoxon signed-rank test on the "
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


def to_latex(table: pd.DataFrame, digits: int | None = None, label: str = "tab:summary") -> str:
    columns, rows = _grid(table, digits, lambda s: "\x00" + s + "\x01", "†")
    cell = lambda s: latex_escape(s).replace("\x00", r"\textbf{").replace("\x01", "}")  # noqa: E731
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             r"\caption{" + latex_escape(caption(table)) + "}", r"\label{" + label + "}",
             r"\begin{tabular}{l" + "c" * len(columns) + "}", r"\toprule",
             "Method & " + " & ".join(map(latex_escape, columns)) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def family_table(results: Results, n_boot: int = 1000, seed: int | None = None) -> pd.DataFrame | None:
    """The faithfulness family side by side: one :func:`summary_table` per quantity of :func:`family_columns` that
    some run has, stacked; its ``column`` is the quantity's label (and the condition, when several). None when the
    runs have no protocol of the family beyond the one every run computes."""
    parts = []
    for quantity in family_columns():
        part = summary_table(results, quantity, n_boot, seed)
        if part.empty:
            continue
        several = part.column.nunique() > 1
        part["column"] = [title(quantity) + (f" · {c}" if several else "") for c in part.column]
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
    present = set(table.quantity)
    better = ", ".join(f"{title(q)}: lower" for q in family_columns() if lower_is_better(q) and q in present)
    return ("\n".join(lines) + f"\n\nThe faithfulness family per method, mean [95% bootstrap interval] over {n_text}"
            f" images (SPEC §4, §9). Bold: best per column (higher is better{'; ' + better + ' is better' if better else ''}). "
            f"†: not significantly different from the best (two-sided Wilcoxon signed-rank test, Holm-adjusted "
            f"p ≥ {ALPHA}).\n")
