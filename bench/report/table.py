"""The summary tables for papers: one quantity per method × column (a condition: dataset, patch, …) with 95%
intervals, the best methods of a column marked, and a paired test of every method against the top one.

* **Quantity** (default: the headline of the protocol every run computes, AOPC − random): any quantity a protocol
  declares (bench/protocols/), per image exactly as the run's summary computes it (so the mean and the interval
  equal the run's ``summary.csv``: the run's seed, the images where it is finite). Mean, s.e.m. and a 95%
  percentile bootstrap interval over images. **Unequal regions**: in a column whose runs have regions of unequal
  size (``equal_regions`` false: tiles with a patch that does not divide the image side, superpixels) the default
  AOPC quantity is the area-matched one (``aopc_area_*`` for ``aopc_*``, DEFINITIONS §4 "Unequal regions"), and the
  caption says so; an AOPC quantity asked for by name is kept, with a warning and a caption note that it is biased
  there.
* **Unit**: every table names the unit of each quantity as the runs computed it (``protocols.unit`` of the
  quantity, the run's ``score`` and ``protocol_settings``; older runs: the protocol's declared default score), in
  the caption when one unit serves the whole table, else in each column head.
* **Columns**: one per condition — every :data:`COLUMN_KEY` setting (dataset, model and weights, perturbation,
  regions, patch, steps, images, repeats, seed, bootstrap, metrics, every protocol setting): runs that differ in
  any of them are separate columns, never ranked together. Heads name the dataset (its display name) and the
  patch, plus what varies between the columns (e.g. ``50 images``, ``deletion substrate=blur``); the settings that
  do not vary are in the caption.
* **Top**: the method with the highest mean of a column (the lowest for a quantity declared lower-is-better,
  direction −1), the ``random`` heatmap excluded (:data:`BASELINES`: it is the baseline the others are measured
  against, never "best"); a quantity without direction (0, e.g. the random order's own AOPC) has no top.
* **Test**: two-sided **Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``, zero differences dropped,
  exact for small samples without ties, normal approximation otherwise) of every other run of the column on
  the per-image differences run − top over the images both evaluated; p-values Holm-adjusted over the runs of
  the column. All differences zero → p = 1; fewer than 2 paired images → p = NaN.
* **Best** (bold, ``is_best``) — only in a column with at least 2 methods other than the baselines, and there
  the top and every method **tied** with it, all marked alike: a method is tied with the top when its mean
  equals the top's as printed (same decimals), or when it is not significantly different from the top
  (Holm-adjusted p ≥ α = 0.05). ``not_significantly_worse``: tied by the test only (not the top).

Outputs (:func:`write_tables`): ``summary_table.csv`` (long, one row per run, every number), ``summary_table.md``
and ``summary_table.tex`` (rows = methods, columns = conditions; cells ``mean [ci_low, ci_high]``); the same for
a protocol that asks for a table of its own (``own_table``: ``<name>_table.*``); and ``faithfulness_table.{csv,md,
tex}`` — the headline quantity of every protocol of the faithfulness family side by side (columns = quantities,
each head naming exactly the quantity shown, e.g. "IROF (MoRF, raw)" for ``irof_morf``; a block of rows per
condition).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import protocols
from ..engine.stats import bootstrap_ci, interval_note, sem
from ..run.tables import COLUMN_KEY, write_csv, write_text
from .aggregate import quantity_values
from .load import Results, series_labels, series_order
from .style import dataset_name

ALPHA = 0.05
TEST_NAME = "Wilcoxon signed-rank, two-sided, Holm-adjusted within column"
#: Heatmap methods that are baselines: compared like the others, never the top or "best" of a column.
BASELINES = ("random",)
#: Why and how a table's AOPC is area-matched (its caption).
AREA_WHY = "the regions differ in size (the patch does not divide the image side, or superpixels)"
AREA_HOW = ("each curve is compared with the random order over the same fraction of pixels perturbed "
            "(DEFINITIONS §4, Unequal regions)")


def declaration(quantity: str) -> protocols.Quantity | None:
    """The quantity's declaration in its protocol's file (None: not a declared quantity)."""
    found = protocols.quantities().get(quantity)
    return found[1] if found else None


def title(quantity: str) -> str:
    """The quantity's label for people (its declaration's ``label``)."""
    q = declaration(quantity)
    return q.label if q else quantity


def direction(quantity: str) -> int:
    q = declaration(quantity)
    return int(q.direction) if q else 1


def lower_is_better(quantity: str) -> bool:
    return direction(quantity) < 0


def head(quantity: str) -> str:
    """A column head that names exactly the quantity shown: its label, plus the order (MoRF/LeRF) when the label
    does not say it, plus ", raw" when the protocol also declares the same quantity relative to the random order
    (``<name>_minus_random``): ``irof_morf`` → "IROF (MoRF), raw", ``pixel_flipping_auc`` → "pixel-flipping AUC,
    raw"."""
    label = title(quantity)
    parts = quantity.split("_")
    orders = [o for o in ("MoRF", "LeRF") if o.lower() in parts and o not in label]
    text = label + (f" ({', '.join(orders)})" if orders else "")
    return text + (", raw" if f"{quantity}_minus_random" in protocols.quantities() else "")


def family_columns() -> tuple[str, ...]:
    """The faithfulness table's columns: the headline quantity of every protocol of the faithfulness family,
    in catalogue order."""
    return tuple(h.name for cls in protocols.catalogue() if cls.family == "faithfulness" and (h := cls.headline()))


def area_matched(quantity: str) -> str | None:
    """The quantity declared to stand in for ``quantity`` in runs with unequal regions (``Quantity.replaces``: the
    area-matched AOPC, DEFINITIONS §4 "Unequal regions"), None when there is none."""
    return next((q.name for _, q in protocols.quantities().values() if q.replaces == quantity), None)


def is_stand_in(quantity: str) -> bool:
    q = declaration(quantity)
    return bool(q and q.replaces)


def unequal(run) -> bool:
    """Whether a run's regions differ in size (``equal_regions`` false; a run without the column: equal)."""
    return str(run.get("equal_regions", True)).lower() in ("false", "0")


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences ``d`` (see the module docstring)."""
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float("nan")
    if not np.any(d != 0):
        return 1.0
    from scipy.stats import wilcoxon
    nonzero = np.abs(d[d != 0])
    exact = nonzero.size <= 50 and np.unique(nonzero).size == nonzero.size   # (SciPy's own "auto" would run a
    with warnings.catch_warnings():                                          # permutation test on ties: slow)
        warnings.simplefilter("ignore")
        return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided",
                              method="exact" if exact else "approx").pvalue)


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


# ----------------------------------------------------------------------------------------------- columns


def _flat(value) -> dict[str, str]:
    """A JSON setting column ({protocol: {setting: value}} or {setting: value}) as flat "a.b" → value."""
    try:
        obj = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {"": str(value)}
    out = {}

    def walk(prefix, o):
        if isinstance(o, dict):
            for k in sorted(o):
                walk(f"{prefix}.{k}" if prefix else str(k), o[k])
        else:
            out[prefix] = json.dumps(o) if isinstance(o, (list, dict)) else str(o)
    walk("", obj if obj is not None else {})
    return out


_SETTING_TEXT = {
    "model": "model {}", "perturbation": "{} perturbation", "steps": "{} steps",
    "repeats": "{} repeats", "images": "{} images", "seed": "seed {}", "target": "target {}", "score": "score {}",
    "bootstrap": "{} resamples", "patch": "patch {}",
}


def setting_text(column: str, value) -> str:
    """One setting of a condition for people: ``patch 2``, ``50 images``, ``model embedded_cnn`` …"""
    if column == "dataset":
        return dataset_name(value)
    if column == "metrics":
        return "metrics " + str(value).replace(",", ", ")
    if column == "regions":
        return {"tiles": "square tiles", "slic": "SLIC superpixels"}.get(str(value), f"{value} regions")
    if column == "model_sha":
        return f"weights {str(value)[:10]}" if str(value) else "weights unrecorded"
    if column == "data_sha":
        return f"images {str(value)[:10]}" if str(value) else "images unrecorded"
    return _SETTING_TEXT.get(column, column + " {}").format(value)


def condition_parts(columns: pd.DataFrame) -> tuple[list[list[str]], list[str]]:
    """For the columns of a table (one row each, the :data:`COLUMN_KEY` values): the parts of each head (the
    dataset, the patch of tiles, and every setting that varies between the columns: the JSON settings by the
    entries that vary) and the parts that hold for all (for the caption)."""
    heads: list[list[str]] = [[] for _ in range(len(columns))]
    constant: list[str] = []
    first = ["dataset", "model", "regions", "patch"]  # then the rest in COLUMN_KEY order
    for c in [c for c in first if c in COLUMN_KEY] + [c for c in COLUMN_KEY if c not in first]:
        if c not in columns.columns:
            continue
        values = columns[c].tolist()
        varies = len({str(v) for v in values}) > 1
        if c in ("regions_params", "protocol_settings"):
            # the entries whose values differ between the columns that have them (a protocol's settings are
            # only in the runs of that protocol: metrics says which); none recorded (an older run): said so
            flats = [_flat(v) for v in values]
            keys = sorted({k for f in flats for k in f})
            diff = [k for k in keys if len({f[k] for f in flats if k in f}) > 1]
            prefix = "regions " if c == "regions_params" else ""
            some = any(flats)
            for h, f in zip(heads, flats):
                h += [f"{prefix}{k} {f[k]}" if k else f[k] for k in diff if k in f]
                if some and not f and c == "protocol_settings":
                    h.append("protocol settings unrecorded")
            continue
        if c == "dataset" or varies or (c == "patch" and set(columns.get("regions", ["tiles"])) == {"tiles"}):
            for h, v in zip(heads, values):
                h.append(setting_text(c, v))
        elif c not in ("metrics", "bootstrap", "model_sha", "data_sha", "images"):
            constant.append(setting_text(c, values[0]))
    return heads, constant


# ------------------------------------------------------------------------------------------------- table


def summary_table(results: Results, quantity: str | None = None, n_boot: int | None = None,
                  seed: int | None = None) -> pd.DataFrame:
    """Long table, one row per run that has its quantity: the column key, method, label, statistics, unit and the
    paired test. ``quantity=None``: the anchor protocol's headline, area-matched in the columns whose regions
    differ in size (module docstring). ``n_boot``/``seed`` None: each run's own ``bootstrap`` and ``seed``, so
    an interval is the one of its summary.csv (``run_interval``); no interval (NaN, and a warning) over fewer than
    2 images or 100 resamples."""
    asked = quantity
    default = default_quantity()
    runs = results.runs
    keys = runs[COLUMN_KEY].astype(str).agg("\x1f".join, axis=1) if len(runs) else pd.Series([], dtype=object)
    col_unequal = {k: any(unequal(r) for _, r in g.iterrows()) for k, g in runs.groupby(keys, sort=False)}
    labels = series_labels(runs, COLUMN_KEY)
    order = {r: i for i, r in enumerate(series_order(runs, labels))}
    rows, per_image, biased = [], {}, set()
    for (_, r), key in zip(runs.iterrows(), keys):
        q = asked or default
        if col_unequal[key] and (alt := area_matched(q)):
            if asked is None:
                q = alt
            else:
                biased.add(r.run)
        values = quantity_values(results, r.run, q)
        if values is None or values.empty:
            if _anchored(q):  # (a run without another protocol is simply not in its table)
                results.warnings.append(f"{r.run}: no finite values of {q}; not in its table")
            continue
        per_image[r.run] = values
        v = values.to_numpy()
        bseed = int(r.seed if seed is None else seed)
        nb = int(r.bootstrap if n_boot is None else n_boot)
        lo, hi = bootstrap_ci(v, n_boot=nb, seed=bseed)
        if note := interval_note(v.size, nb):
            lo = hi = float("nan")
            results.warnings.append(f"{r.run}: {note} for {q}; its table cell shows the mean only")
        rows.append({**{c: r[c] for c in COLUMN_KEY}, "_key": key, "method": r.method,
                     "method_params": r.method_params, "pooling": r.pooling, "run": r.run, "label": labels[r.run],
                     "quantity": q, "unit": protocols.unit(q, str(r.score), r.get("protocol_settings", "{}")),
                     "area_matched": is_stand_in(q) and asked is None,
                     "biased_unequal_regions": r.run in biased,
                     "equal_regions": not unequal(r), "L": r.L, "n_images": v.size, "mean": float(v.mean()),
                     "sem": float(sem(v)), "ci_low": float(lo), "ci_high": float(hi), "n_boot": nb,
                     "bootstrap_seed": bseed, "run_interval": nb == int(r.bootstrap) and bseed == int(r.seed)})
    if biased:
        results.warnings.append(
            f"{asked}: asked for by name, kept in the columns whose regions differ in size, where it is biased "
            f"(DEFINITIONS §4 \"Unequal regions\"); {area_matched(asked)} is the comparable quantity there "
            f"(runs: {', '.join(sorted(biased))})")
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # columns in the order of their settings (numbers as numbers), heads from what varies between them
    columns = table.drop_duplicates("_key")[["_key", *COLUMN_KEY]]
    columns = columns.sort_values(COLUMN_KEY, kind="stable", key=_natural).reset_index(drop=True)
    heads, _ = condition_parts(columns)
    texts = _unique([" · ".join(h) for h in heads])
    table["column"] = table["_key"].map(dict(zip(columns["_key"], texts)))
    table["column_index"] = table["_key"].map({k: i for i, k in enumerate(columns["_key"])})
    out = []
    for _, g in table.groupby("column_index", sort=True):
        out.append(_rank_and_test(g.copy(), per_image))
    table = pd.concat(out, ignore_index=True)
    table["is_best"] = marks(table, None)[1]
    table["test"] = TEST_NAME
    label_rank = {}
    for r in sorted(order, key=order.get):
        label_rank.setdefault(labels[r], len(label_rank))
    table["_order"] = table.label.map(label_rank)
    return (table.sort_values(["_order", "column_index"], kind="stable").drop(columns=["_order", "_key"])
            .reset_index(drop=True))


def _natural(values: pd.Series) -> pd.Series:
    """Sort key: numbers by value (patch 4 before patch 16), the rest as text."""
    numeric = pd.to_numeric(values, errors="coerce")
    return numeric if numeric.notna().all() else values.astype(str)


def _unique(texts: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for t in texts:
        seen[t] = seen.get(t, 0) + 1
        out.append(t if seen[t] == 1 else f"{t} #{seen[t]}")
    return out


def _rank_and_test(g: pd.DataFrame, per_image: dict[str, pd.Series]) -> pd.DataFrame:
    """One column: the top, ranks, the paired tests against the top (module docstring)."""
    quantity = g.quantity.iloc[0]
    d = direction(quantity)
    g["candidate"] = ~g.method.isin(BASELINES)
    cand = g[g.candidate]
    g["marks_allowed"] = d != 0 and len(cand) >= 2
    top = None
    if d != 0 and len(cand):
        top = cand.loc[cand["mean"].idxmin() if d < 0 else cand["mean"].idxmax()]
    g["is_top"] = (g.run == top.run) if top is not None else False
    g["top_label"] = top.label if top is not None else ""
    g["best_label"] = g["top_label"]  # (earlier name of the column)
    g["rank"] = cand["mean"].rank(ascending=d < 0, method="min") if d != 0 else np.nan
    n_paired, diff, p = [], [], []
    for run in g.run:
        if top is None:
            n_paired.append(0)
            diff.append(float("nan"))
            p.append(float("nan"))
            continue
        a, b = per_image[run], per_image[top.run]
        shared = a.index.intersection(b.index, sort=False)
        dd = a.loc[shared].to_numpy() - b.loc[shared].to_numpy()
        n_paired.append(len(shared))
        diff.append(float(dd.mean()) if dd.size else float("nan"))
        p.append(float("nan") if run == top.run else wilcoxon_p(dd))
    g["n_paired"], g["mean_diff_vs_top"], g["p_value"] = n_paired, diff, p
    g["mean_diff_vs_best"] = g["mean_diff_vs_top"]
    g["p_holm"] = holm(np.asarray(p))
    g["not_significantly_worse"] = g.candidate & ~g.is_top & (g.p_holm >= ALPHA)
    return g


def _marked(table: pd.DataFrame, decimals: dict[str, int]) -> pd.Series:
    """Per row: marked best — in a column that allows marks, the top and every candidate tied with it (the same
    mean as printed with ``decimals[quantity]``, or Holm-adjusted p ≥ α)."""
    out = pd.Series(False, index=table.index)
    for _, g in table.groupby("column_index" if "column_index" in table.columns else "column", sort=False):
        if not g.marks_allowed.iloc[0] or not g.is_top.any():
            continue
        top = g[g.is_top].iloc[0]
        d = decimals[top.quantity]
        printed = number(top["mean"], d)
        same = pd.Series([number(m, d) == printed for m in g["mean"]], index=g.index)
        out[g.index] = g.candidate & (g.is_top | same | (g.p_holm >= ALPHA))
    return out


def marks(table: pd.DataFrame, digits: int | None) -> tuple[dict[str, int], pd.Series]:
    """Decimals per quantity and, per row, marked best (:func:`_marked`), as the tables print them: per column; in
    the faithfulness table (rows with ``family_quantity``) per quantity, across its condition blocks."""
    decimals = {q: _decimals(g, digits) for q, g in table.groupby("quantity")}
    if "family_quantity" not in table.columns:
        return decimals, _marked(table, decimals)
    parts = [_marked(g.assign(column_index=g.condition_index), decimals)
             for _, g in table.groupby("family_quantity", sort=False)]
    marked = pd.concat(parts) if parts else pd.Series(False, index=table.index)
    return decimals, marked.reindex(table.index).fillna(False).astype(bool)


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


def number(x: float, d: int, minus: str = "-") -> str:
    """``x`` with ``d`` decimals; never "-0.00" (a value that rounds to zero is printed 0.00); ``minus``: the sign
    to print ("−" for LaTeX, where it becomes $-$)."""
    if not np.isfinite(x):
        return "nan" if np.isnan(x) else ("∞" if x > 0 else minus + "∞")
    text = f"{x:.{d}f}"
    if text.startswith("-"):
        text = text[1:] if float(text) == 0 else minus + text[1:]
    return text


def _cell(r, d: int, minus: str) -> str:
    if not (np.isfinite(r.ci_low) and np.isfinite(r.ci_high)):  # fewer than 2 images or 100 resamples
        return f"{number(r['mean'], d, minus)} [no CI]"
    return f"{number(r['mean'], d, minus)} [{number(r.ci_low, d, minus)}, {number(r.ci_high, d, minus)}]"


def _cells(table: pd.DataFrame, digits: int | None, minus: str) -> dict[tuple[str, str], tuple[str, bool]]:
    """(label, column) → (cell text, marked best)."""
    decimals, marked = marks(table, digits)
    return {(r.label, r.column): (_cell(r, decimals[r.quantity], minus), bool(marked[i]))
            for i, r in table.iterrows()}


# ---------------------------------------------------------------------------------------------- captions


def _n_text(values) -> str:
    n = sorted({int(v) for v in values})
    return str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"


def _interval_text(table: pd.DataFrame) -> str:
    n_boot = _n_text(table.n_boot) if "n_boot" in table.columns else "1000"
    own = (table.run_interval.astype(bool) if "run_interval" in table.columns else pd.Series(True, index=table.index))
    if "run" in table.columns:  # (per run: the faithfulness table has a row per run and quantity)
        own = own.groupby(table.run, sort=False).all()
    if own.all():
        whose = "each run's own resamples and seed, as in its summary.csv"
        if "n_boot" in table.columns and table.n_boot.nunique() > 1:  # (bootstrap is part of the condition)
            whose += "; the runs' bootstrap settings differ, so intervals rest on different numbers of resamples"
    elif not own.any():
        whose = "not the runs' own resamples or seed (--n-boot/--seed), so they differ from their summary.csv"
    else:
        whose = (f"not the own resamples or seed of {int((~own).sum())} of the {len(own)} runs (--n-boot/--seed), "
                 f"whose intervals differ from their summary.csv")
    none = ("; no interval ([no CI]) over fewer than 2 images or 100 resamples"
            if {"ci_low", "ci_high"} <= set(table.columns) and
            not (np.isfinite(table.ci_low) & np.isfinite(table.ci_high)).all() else "")
    return (f"mean [95% percentile bootstrap interval over images, {n_boot} resamples: {whose}{none}] over "
            f"{_n_text(table.n_images)} images")


def _marks_text(table: pd.DataFrame) -> str:
    allowed = bool(table.marks_allowed.any()) if "marks_allowed" in table.columns else True
    rule = (f"Bold: the best of each column with at least 2 methods besides the random heatmap (a baseline, never "
            f"marked) — the top mean and every method tied with it, marked alike: the same mean as printed, or not "
            f"significantly different (two-sided Wilcoxon signed-rank test on the per-image differences to the top "
            f"over the images both evaluated, Holm-adjusted within the column, p ≥ {ALPHA}).")
    return rule if allowed else rule + " No column here has 2 such methods: none is marked."


def _unit_text(table: pd.DataFrame) -> str:
    units = list(dict.fromkeys(table.unit))
    return f"Unit: {units[0] or 'none'}" if len(units) == 1 else "Units: in each column head"


def _condition_text(table: pd.DataFrame) -> str:
    columns = table.drop_duplicates("column")[[c for c in COLUMN_KEY if c in table.columns]]
    _, constant = condition_parts(columns)
    return ", ".join(constant)


def _area_text(table: pd.DataFrame) -> str:
    if "area_matched" not in table.columns:
        return ""
    area = table.groupby("column", sort=False).area_matched.any()
    biased = table.groupby("column", sort=False).biased_unequal_regions.any()
    if area.all():
        return f" In every column {AREA_WHY}: the quantity is area-matched, {AREA_HOW}."
    if area.any():
        return (f" ‡: {title(table[table.area_matched].quantity.iloc[0])} in these columns, where {AREA_WHY}: "
                f"{AREA_HOW}.")
    if biased.any():
        q = table.quantity.iloc[0]
        return (f" ‡: in these columns the regions differ in size and {title(q)} is biased (DEFINITIONS §4, Unequal "
                f"regions); {area_matched(q)} is the comparable quantity there.")
    return ""


def _marker(table: pd.DataFrame) -> dict[str, str]:
    """Column → " ‡" for the columns the area note is about (when not every column is)."""
    if "area_matched" not in table.columns:
        return {}
    flag = table.groupby("column", sort=False).apply(
        lambda g: bool(g.area_matched.any() or g.biased_unequal_regions.any()), include_groups=False)
    return {c: " ‡" for c, f in flag.items() if f} if not flag.all() or not table.area_matched.any() else {}


def caption(table: pd.DataFrame) -> str:
    """The caption of a summary table: what the numbers are (quantity, where, direction, unit), over how many
    images and with which interval, the condition that holds for every column, the marks and the test."""
    quantities = list(dict.fromkeys(table.quantity))
    plain = [q for q in quantities if not (is_stand_in(q) and table.area_matched.any())] or quantities
    quantity = plain[0]
    q = declaration(quantity)
    where = q.where if q else "per image"
    better = {1: " (higher is better)", -1: " (lower is better)"}.get(direction(quantity), "")
    condition = _condition_text(table)
    interval = _interval_text(table)
    return (f"{title(quantity)} {where}{better}. {_unit_text(table)}. {interval[0].upper()}{interval[1:]}"
            f"{'; ' + condition if condition else ''}.{_area_text(table)} {_marks_text(table)}")


# ------------------------------------------------------------------------------------------------- render


def _heads(table: pd.DataFrame) -> tuple[list[str], dict[str, list[str]]]:
    """The columns in order and, per column, the lines of its head (condition parts, unit when units vary,
    the ‡ marker)."""
    cols = table.drop_duplicates("column").sort_values("column_index", kind="stable")
    several_units = table.unit.nunique() > 1
    heads, _ = condition_parts(cols[[c for c in COLUMN_KEY if c in cols.columns]].reset_index(drop=True))
    marker = _marker(table)
    out = {}
    for column, parts, (_, r) in zip(cols.column, heads, cols.iterrows()):
        lines = list(parts) + ([f"[{r.unit}]"] if several_units else [])
        lines[-1] += marker.get(column, "")
        out[column] = lines
    return list(cols.column), out


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def to_markdown(table: pd.DataFrame, digits: int | None = None) -> str:
    columns, heads = _heads(table)
    cells = _cells(table, digits, "-")
    labels = list(dict.fromkeys(table.label))
    lines = [_md_row(["method"] + [" · ".join(heads[c]) for c in columns]), "|---|" + "---|" * len(columns)]
    for lab in labels:
        row = [lab]
        for c in columns:
            text, bold = cells.get((lab, c), ("–", False))
            row.append(f"**{text}**" if bold else text)
        lines.append(_md_row(row))
    return "\n".join(lines) + "\n\n" + caption(table) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "ε": r"$\varepsilon$",
          "ℓ": r"$\ell$", "∞": r"$\infty$", "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$",
          "×": r"$\times$", "²": r"$^2$", "−": "$-$", "–": "--", "—": "---", "·": r"$\cdot$", "≥": r"$\geq$",
          "≤": r"$\leq$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "∫": r"$\int$", "∤": r"$\nmid$",
          "⁽": r"$^($", "⁾": r"$^)$", "ᵏ": r"$^k$", "⁰": r"$^0$", "₀": r"$_0$", "<": r"$<$", ">": r"$>$",
          "§": r"\S{}"}


_LATEX_SEQUENCES = {"ℓ₂²": "\x02\\ell_2^2\x02", "ℓ₂": "\x02\\ell_2\x02", "ℓ∞": "\x02\\ell_\\infty\x02",
                    "f_c(": "\x02f_c\x02("}


def latex_escape(text: str) -> str:
    """Plain text (with the Greek letters and symbols of method names) → LaTeX."""
    text = str(text)
    for seq, math_ in _LATEX_SEQUENCES.items():
        text = text.replace(seq, math_)
    parts = text.split("\x02")  # odd parts are ready-made math
    return "".join(f"${p}$" if i % 2 else "".join(_LATEX.get(ch, ch) for ch in p) for i, p in enumerate(parts))


def _tex_head(lines: list[str]) -> str:
    """A head of one or more lines (a nested tabular: no package needed)."""
    if len(lines) == 1:
        return latex_escape(lines[0])
    # "\\{}": a line that starts with "[" (a unit) is not read as the optional argument of "\\"
    return r"\begin{tabular}[b]{@{}c@{}}" + r"\\{}".join(map(latex_escape, lines)) + r"\end{tabular}"


def _tex_cell(text: str, bold: bool) -> str:
    text = latex_escape(text)
    return r"\textbf{" + text + "}" if bold else text


def to_latex(table: pd.DataFrame, digits: int | None = None, label: str = "tab:summary") -> str:
    columns, heads = _heads(table)
    cells = _cells(table, digits, "−")
    labels = list(dict.fromkeys(table.label))
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             r"\caption{" + latex_escape(caption(table)) + "}", r"\label{" + label + "}",
             r"\begin{tabular}{l" + "c" * len(columns) + "}", r"\toprule",
             "Method & " + " & ".join(_tex_head(heads[c]) for c in columns) + r" \\", r"\midrule"]
    for lab in labels:
        row = [latex_escape(lab)] + [_tex_cell(*cells.get((lab, c), ("–", False))) for c in columns]
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ faithfulness


def family_table(results: Results, n_boot: int | None = None, seed: int | None = None) -> pd.DataFrame | None:
    """The faithfulness family side by side: one :func:`summary_table` per quantity of :func:`family_columns` that
    some run has (AOPC: area-matched in the columns whose regions differ in size), stacked; ``head``: the head
    naming the quantity exactly (:func:`head`), ``condition``: the summary table's column (the condition),
    ``column``: both. None when the runs have no protocol of the family beyond the one every run computes."""
    parts = []
    default = default_quantity()
    for quantity in family_columns():
        part = summary_table(results, None if quantity == default else quantity, n_boot, seed)
        if part.empty:
            continue
        part["family_quantity"] = quantity
        part["head"] = [head(q) for q in part.quantity]
        part["condition"] = part["column"]
        part["condition_index"] = part["column_index"]
        parts.append(part)
    if len(parts) < 2:
        return None
    table = pd.concat(parts, ignore_index=True)
    table["column"] = table["head"] + " · " + table["condition"]
    return table


def _family_layout(table: pd.DataFrame, digits: int | None, minus: str):
    """(quantity heads in order, their units, condition blocks [(condition, [(label, [(text, bold)…])…])…])."""
    families = list(dict.fromkeys(table.family_quantity))
    units = {}
    for f in families:
        u = list(dict.fromkeys(table[table.family_quantity == f].unit))
        units[f] = u[0] if len(u) == 1 else " / ".join(u)
    decimals, marked = marks(table, digits)
    blocks = []
    conditions = table.drop_duplicates("condition").sort_values("condition_index", kind="stable").condition
    for cond in conditions:
        sub = table[table.condition == cond]
        rows = []
        for lab in dict.fromkeys(table.label):
            cells = []
            for f in families:
                hit = sub[(sub.label == lab) & (sub.family_quantity == f)]
                if hit.empty:
                    cells.append(("–", False))
                else:
                    r = hit.iloc[0]
                    cells.append((_cell(r, decimals[r.quantity], minus), bool(marked[hit.index[0]])))
            if any(t != "–" for t, _ in cells):
                rows.append((lab, cells))
        blocks.append((cond, rows))
    return families, units, blocks


def _family_heads(table: pd.DataFrame, families: list[str]) -> dict[str, str]:
    out = {}
    for f in families:
        hs = list(dict.fromkeys(table[table.family_quantity == f]["head"]))
        out[f] = hs[0] if len(hs) == 1 else f"{head(f)} ‡"
    return out


def family_caption(table: pd.DataFrame) -> str:
    families = list(dict.fromkeys(table.family_quantity))
    heads = _family_heads(table, families)
    better = {1: "higher is better", -1: "lower is better", 0: "no direction"}
    listing = "; ".join(
        f"{heads[f]} = {', '.join(dict.fromkeys(table[table.family_quantity == f].quantity))}: "
        f"{better[direction(f)]}" for f in families)
    raw = any(f"{q}_minus_random" in protocols.quantities() for q in set(table.quantity))
    condition = _condition_text(table.assign(column=table.condition))
    area = ""
    if table.area_matched.any():
        mixed = any(h.endswith("‡") for h in heads.values())
        area = (f" ‡: area-matched in the blocks where {AREA_WHY}: {AREA_HOW}." if mixed else
                f" In every block {AREA_WHY}: AOPC is area-matched, {AREA_HOW}.")
    blocks = table.condition.nunique()
    return (f"The faithfulness family per method: {_interval_text(table)}"
            f"{'; ' + condition if condition else ''}."
            + (f" One block of rows per condition ({blocks})." if blocks > 1 else "")
            + f" Columns (head = quantity of summary.csv: direction): {listing}."
            + (" Raw: the method's own value, not relative to the random order." if raw else "")
            + area + " Units in the column heads. "
            + _marks_text(table).replace("each column", "each column and block"))


def family_markdown(table: pd.DataFrame, digits: int | None = None) -> str:
    families, units, blocks = _family_layout(table, digits, "-")
    heads = _family_heads(table, families)
    several = len(blocks) > 1
    lines = [_md_row(["method"] + [f"{heads[f]} [{units[f]}]" for f in families]),
             "|---|" + "---|" * len(families)]
    for cond, rows in blocks:
        if several:
            lines.append(_md_row([f"*{cond}*"] + [""] * len(families)))
        for lab, cells in rows:
            lines.append(_md_row([lab] + [f"**{t}**" if b else t for t, b in cells]))
    return "\n".join(lines) + "\n\n" + family_caption(table) + "\n"


def family_latex(table: pd.DataFrame, digits: int | None = None, label: str = "tab:faithfulness") -> str:
    """The family table for LaTeX: a page-wide table, heads of two lines (quantity, unit), each cell the mean
    over its interval, a block of rows per condition."""
    families, units, blocks = _family_layout(table, digits, "−")
    heads = _family_heads(table, families)

    def cell(text: str, bold: bool) -> str:
        if text == "–":
            return "--"
        mean, ci = text.split(" ", 1)
        mean = latex_escape(mean)
        return (r"\begin{tabular}[t]{@{}c@{}}" + (r"\textbf{" + mean + "}" if bold else mean) + r"\\{\scriptsize "
                + latex_escape(ci) + r"}\end{tabular}")
    n = len(families)
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table*}[t]", r"\centering", r"\small",
             r"\caption{" + latex_escape(family_caption(table)) + "}", r"\label{" + label + "}",
             r"\setlength{\tabcolsep}{3pt}", r"\begin{tabular}{l" + "c" * n + "}", r"\toprule",
             "Method & " + " & ".join(_tex_head([heads[f], f"[{units[f]}]"]) for f in families) + r" \\"]
    for cond, rows in blocks:
        lines.append(r"\midrule")
        if len(blocks) > 1:
            lines.append(r"\multicolumn{" + str(n + 1) + r"}{l}{\emph{" + latex_escape(cond) + r"}} \\")
        for lab, cells in rows:
            lines.append(" & ".join([latex_escape(lab)] + [cell(t, b) for t, b in cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- files


def write_tables(results: Results, out: Path, quantity: str | None = None, n_boot: int | None = None,
                 seed: int | None = None, digits: int | None = None,
                 frames: dict[str, pd.DataFrame] | None = None) -> dict[str, list[Path]]:
    """Write ``summary_table`` (``quantity``; None: the default of :func:`summary_table`), the table of every
    protocol that asks for one of its own and the faithfulness table, each as .csv, .md and .tex, to ``out``.
    Returns {table name: [files written]}; ``frames``, when given, gets {table name: the DataFrame its CSV was
    written from} (what the explorer, bench/report/html.py, shows: one source of truth)."""
    out = Path(out)
    tables = [("summary_table", quantity, "tab:summary")]
    for cls in protocols.catalogue():
        if cls.own_table and cls.headline() and any(t.name in results.tables for t in cls.tables):
            tables.append((f"{cls.name}_table", cls.headline().name, f"tab:{cls.name}"))
    written: dict[str, list[Path]] = {}
    for name, q, label in tables:
        summary = summary_table(results, q, n_boot, seed)
        if not summary.empty:
            if frames is not None:
                frames[name] = summary
            write_csv(summary, out / f"{name}.csv")
            write_text(to_markdown(summary, digits), out / f"{name}.md")
            write_text(to_latex(summary, digits, label=label), out / f"{name}.tex")
            written[name] = [out / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    family = family_table(results, n_boot, seed)
    if family is not None:
        if frames is not None:
            frames["faithfulness_table"] = family
        write_csv(family, out / "faithfulness_table.csv")
        write_text(family_markdown(family, digits), out / "faithfulness_table.md")
        write_text(family_latex(family, digits), out / "faithfulness_table.tex")
        written["faithfulness_table"] = [out / f"faithfulness_table.{ext}" for ext in ("csv", "md", "tex")]
    return written
