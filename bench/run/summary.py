"""From a run's tidy tables to its summary table and the printed table (DEFINITIONS §4–6, §9).

The summary is computed from the tables alone, so a run, a merge of shards and a collected sweep all produce it
the same way: every protocol (bench/protocols/, catalogue order) gives its per-image quantities from the tables
(``Protocol.per_image``; None when the run did not compute it). One row per quantity, over images: mean, median,
s.e.m. and a 95% percentile bootstrap interval; all quantities of a run are resampled with the same image
indices, so paired differences stay paired. Over fewer than 2 images or with fewer than 100 resamples the interval
is NaN (``interval_note``), and the run, the printed table and the report say why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import protocols
from ..engine.stats import bootstrap_ci, interval_note, sem
from .tables import SUMMARY_COLUMNS, with_provenance


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
    for j, n in enumerate(stats["n_images"]):
        if interval_note(int(n), n_boot):  # no interval rather than a degenerate one
            stats["ci_low"][j] = stats["ci_high"][j] = np.nan
    return pd.DataFrame({"quantity": per_image.columns, **stats})


def interval_warnings(summary: pd.DataFrame) -> list[str]:
    """One line per reason the summary's quantities (of one run) have no 95% interval (``interval_note``), naming
    them ("every quantity" when none has one)."""
    notes: dict[str, list[str]] = {}
    rows = summary[summary.n_images > 0]
    for _, r in rows.iterrows():
        if note := interval_note(int(r.n_images), int(r.bootstrap)):
            notes.setdefault(note, []).append(str(r.quantity))

    def which(qs: list[str]) -> str:
        if len(qs) == len(rows) > 1:
            return f"every quantity ({len(qs)})"
        return ", ".join(qs[:4]) + (f", … ({len(qs)} in all)" if len(qs) > 4 else "")
    return [f"{note} for {which(qs)}" for note, qs in notes.items()]


def _keys(rows: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One string per row of its values in ``columns`` (missing values as ""; a summary read from CSV has NaN)."""
    if not len(rows):
        return pd.Series([], index=rows.index, dtype=object)
    return rows[columns].apply(lambda col: col.map(lambda v: "" if pd.isna(v) else str(v))).agg("\x1f".join, axis=1)


def _run_groups(rows: pd.DataFrame):
    """The rows of each run in ``rows`` (summary rows of many runs: a collection), by its condition and run key."""
    from .tables import CONDITION

    key = [c for c in [*CONDITION, "run_key"] if c in rows]
    return rows.groupby(_keys(rows, key), sort=False) if key else [("", rows)]


def _run_name(r) -> str:
    """A run for people: its method and the settings an interval depends on."""
    settings = ", ".join(f"{c}={r[c]}" for c in ("images", "bootstrap") if c in r.index)
    return f"{r['method']}" + (f" ({settings})" if settings else "")


def interval_lines(summary: pd.DataFrame) -> list[str]:
    """For the summary rows of many runs (a collection): one line per reason some runs have no 95% interval
    (``interval_note``: fewer than 2 images or 100 resamples), naming the runs."""
    if summary is None or not len(summary) or not {"n_images", "bootstrap", "method"} <= set(summary.columns):
        return []
    notes: dict[str, list[str]] = {}
    for _, run in _run_groups(summary):
        found = {note for _, r in run[run.n_images > 0].iterrows()
                 if (note := interval_note(int(r.n_images), int(r.bootstrap)))}
        for note in sorted(found):
            notes.setdefault(note, []).append(_run_name(run.iloc[0]))
    return [f"{note}: {len(names)} run(s) — {', '.join(names[:3])}{', …' if len(names) > 3 else ''}; their "
            f"tables show the mean without an interval" for note, names in notes.items()]


#: What the runs of one column (one condition, its methods side by side) must share beyond the column's key
#: (tables.COLUMN_KEY): the inputs (the dataset's ``preprocessing``; ``data_sha`` covers it where recorded) and, where
#: no digest vouches for the weights (``model_sha`` unrecorded), the model's settings (``model_params``).
SAME_IN_A_COLUMN = (("model", "model", ""), ("model_sha", "weights", ""), ("dataset", "dataset", ""),
                    ("data_sha", "images", ""), ("preprocessing", "inputs (preprocessing)", ""),
                    ("model_params", "model settings", "model_sha"))


def mixed_columns(rows: pd.DataFrame) -> list[str]:
    """One line per column of a comparison (``rows``: runs or summary rows; a column = the rows that share every
    ``tables.COLUMN_KEY`` setting present, compared across methods) whose methods were measured on different
    models or inputs (:data:`SAME_IN_A_COLUMN`): a table that ranks them side by side compares more than the
    methods. Runs of the suite record ``model_sha`` and ``data_sha`` (part of the key), so this flags older tables
    and tables pooled beyond the key."""
    from .tables import COLUMN_KEY

    if rows is None or not len(rows):
        return []
    key = [c for c in COLUMN_KEY if c in rows]
    groups = rows.groupby(_keys(rows, key), sort=False) if key else [("", rows)]
    lines = []
    for _, g in groups:
        first = g.iloc[0]
        where = ", ".join(f"{c}={_short(first[c])}" for c in ("dataset", "model", "patch", "images", "seed")
                          if c in g and c in key)
        for column, what, unless in SAME_IN_A_COLUMN:
            if column in key or column not in g:
                continue
            sub = g if not unless or unless not in g else g[_keys(g, [unless]) == ""]
            values = _keys(sub, [column])
            if values.nunique() < 2:
                continue
            by_value = [f"'{_short(v) or '(none)'}' ({', '.join(dict.fromkeys(sub.method[values == v].astype(str)))})"
                        for v in dict.fromkeys(values)] if "method" in sub else list(dict.fromkeys(values))
            lines.append(f"one column ({where or 'all runs'}) mixes {values.nunique()} different {what}: "
                         f"{'; '.join(by_value[:3])}{'; …' if len(by_value) > 3 else ''} — its methods were not "
                         f"measured on the same {'model' if column.startswith('model') else 'inputs'}; "
                         f"compare them with care")
    return list(dict.fromkeys(lines))


def with_run(summary: pd.DataFrame, provenance: dict) -> pd.DataFrame:
    """The summary rows of a run as written (``SUMMARY_COLUMNS``): its provenance, each quantity's protocol and
    that protocol's settings, and the quantity's unit as the run computed it (``protocols.unit``)."""
    declared = protocols.quantities()
    names = summary.quantity.map(lambda q: declared[q][0].name if q in declared else "")
    out = with_provenance(summary, provenance, protocol=names)
    units = {q: protocols.unit(q, provenance["score"], provenance["protocol_settings"]) for q in summary.quantity}
    out.insert(out.columns.get_loc("quantity") + 1, "unit", out.quantity.map(units))
    return out[SUMMARY_COLUMNS]


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
        if how != "ci":
            return s
        note = interval_note(int(r["n_images"]), int(r["bootstrap"]))
        return s + (f" [{note}]" if note else f" [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")

    row = {"method": first["method"]}
    for cls in protocols.catalogue():
        for quantity in cls.quantities:
            if quantity.printed and quantity.name in q.index and (quantity.when is None or quantity.when(first)):
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


def stand_in(quantity: str, row) -> str:
    """The quantity a comparison reports for ``quantity`` in the run of summary row ``row``: a declared quantity
    that ``replaces`` it for such runs (``Quantity.when``; e.g. the area-matched AOPC for unequal regions), else
    itself."""
    for _, q in protocols.quantities().values():
        if q.replaces == quantity and q.when is not None and q.when(row):
            return q.name
    return quantity


def comparison_table(summary: pd.DataFrame) -> str:
    """The comparison a sweep ends with: one row per method (with its parameters when they vary), one column per
    condition (the settings that vary among the runs) × headline quantity of each protocol run (its stand-in
    for runs with unequal regions, :func:`stand_in`), cells ``mean [95% CI]``, units in the heads; runs that
    differ in any setting (tables.COLUMN_KEY, images, repeats and seed included) are separate columns."""
    if summary is None or not len(summary):
        return ""
    from .tables import COLUMN_KEY

    s = summary.copy()
    for c in [*COLUMN_KEY, "method", "method_params", "pooling"]:
        if c not in s:
            s[c] = ""
    keys = [c for c in COLUMN_KEY if s[c].astype(str).nunique() > 1]
    series = ["method"] + [c for c in ("method_params", "pooling")
                           if s.groupby("method")[c].nunique().max() > 1]
    declared = protocols.quantities()
    headlines = [q.name for cls in protocols.catalogue() for q in cls.quantities if q.headline]
    cells, columns, replaced, no_ci = {}, [], False, {}
    twice = []
    groups = [(nth, one) for _, g in s.groupby([*series, *keys] if keys else series, sort=False, dropna=False)
              for nth, one in g.groupby(g.groupby("quantity").cumcount(), sort=True)]  # (one run each: its rows are
    for nth, run in groups:                                                         # its quantities, once each)
        first = run.iloc[0]
        by_name = run.set_index("quantity")
        condition = ", ".join(f"{k}={_short(first[k])}" for k in keys)
        row = " ".join(str(first[c]) for c in series) + (f" #{nth + 1}" if nth else "")
        if nth:
            twice.append(row)
        for headline_name in headlines:
            name = stand_in(headline_name, first)
            replaced |= name != headline_name
            if name not in by_name.index:
                continue
            r = by_name.loc[name]
            unit = r["unit"] if "unit" in r and isinstance(r["unit"], str) and r["unit"] else ""
            arrow = {1: " ↑", -1: " ↓"}.get(declared[name][1].direction, "")
            head = f"{declared[name][1].label}{f' [{unit}]' if unit else ''}{arrow}"
            col = f"{condition} · {head}" if condition else head
            if col not in columns:
                columns.append(col)
            if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
                ci = f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
            else:
                ci = "[no CI]"
                note = (interval_note(int(r["n_images"]), int(r["bootstrap"])) if "bootstrap" in r.index
                        and np.isfinite(r["n_images"]) and r["n_images"] > 0 else None) or "no CI"
                no_ci.setdefault(note, []).append(f"{row}{f' ({condition})' if condition else ''}")
            cells.setdefault(row, {})[col] = f"{r['mean']:.3g} {ci}"
    table = pd.DataFrame.from_dict(cells, orient="index").reindex(columns=columns).fillna("–")
    table.index.name = "method"
    same = [f"{c}={_short(s[c].iloc[0])}" for c in ("dataset", "model", "images", "repeats") if c not in keys]
    lines = [f"comparison ({', '.join(same)}): mean [95% bootstrap CI] over images; ↑ higher is better, ↓ lower"]
    from .tables import name_clashes

    lines += [f"warning: {line}" for line in [*name_clashes(s), *mixed_columns(s)]]
    if replaced:
        lines.append("where regions are unequal (equal_regions=false) AOPC is area-matched "
                     "(DEFINITIONS §4 Unequal regions)")
    notes = []  # below the table: what its cells are
    if twice:
        notes.append(f"warning: {len(twice)} run(s) of a condition already shown ({', '.join(twice[:3])}"
                     f"{', …' if len(twice) > 3 else ''}): the same condition run or collected twice, shown as #2, …")
    for note, where in no_ci.items():  # (one line per reason: fewer than 2 images, fewer than 100 resamples)
        where = list(dict.fromkeys(where))
        notes.append(f"warning: {note}: {len(where)} cell(s) show [no CI] — {', '.join(where[:3])}"
                     f"{', …' if len(where) > 3 else ''}")
    return "\n".join([*lines, table.to_string(line_width=120), *notes])


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "…"
