"""The report's figures, drawn from the tidy tables (each function returns matplotlib Figures). Which figures a
report has is declared by the protocols (bench/protocols/, ``figures``: a file name, a kind and the table and
column it draws); this module draws the kinds:

* ``relative`` — :func:`relative_figures`: a value per perturbation step relative to a baseline, one panel per
  dataset (TNNLS Fig. 4, baseline = the random order of the same run) or one panel per patch size (Fig. 8);
* ``orders`` — :func:`curve_figures`: the MoRF (and LeRF, when present) curves f_c(x⁽ᵏ⁾) themselves;
* ``fraction`` — :func:`fraction_figures`: curves over the % of pixels changed (ROAD's MoRF and LeRF, deletion
  and insertion, pixel-flipping; DEFINITIONS §9), a panel per declared (table, order);
* ``scatter``, ``box`` — :func:`scatter_figures`, :func:`box_figures`: a per-image value of one method against
  another with the diagonal, and box plots per method (TNNLS Fig. 5, file size and entropy);
* :func:`heatmap_grid_figures` — images × methods, rendered by :mod:`bench.engine.render` (Fig. 6), for every run.

Every line is a run: its method's colour and marker (:mod:`bench.report.style`), a line style telling apart
runs of one method; mean over images with a shaded 95% bootstrap band. Functions return a list of
``(name_suffix, Figure)``: one figure per combination of the settings that are neither panels nor lines
(suffix ``""`` when there is only one).
"""

from __future__ import annotations

import re
import textwrap

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import protocols
from ..engine.render import COLORMAP, render_heatmap
from ..run.tables import HEATMAP_KEY, PAIRING_KEY
from . import style
from .aggregate import (area_matched_difference, mean_band, per_image, relative_to_random, relative_to_run,
                        step_fractions)
from .load import Results, linestyle_index, series_labels, series_order

PANEL_HEIGHT_IN = 1.9
MAX_COLS = 3
BAND_ALPHA = 0.18
N_MARKERS = 7  # markers per line
#: The SVG group id of a method's line and band (``METHOD_GID + method``) and of the random order's: how the
#: explorer (bench/report/html.py) finds a method's curves in the inline SVG.
METHOD_GID, RANDOM_ORDER_GID = "bench-method--", "bench-random-order"


def _fmt(col: str, value) -> str:
    if col == "patch":
        return f"patch {value}×{value}"
    if col == "dataset":
        return style.dataset_name(value)
    return str(value) if col == "model" else f"{col} {value}"


def _images_text(n_images) -> str:
    n = sorted({int(v) for v in n_images})
    return str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"


def condition_text(runs: pd.DataFrame, n_images=None, columns=("dataset", "model", "patch", "perturbation")) -> str:
    """The condition a figure shows, for its title: dataset, model, regions (patch), perturbation and images —
    each when it is the same for every run of the figure (otherwise the panels or lines say it)."""
    parts = []
    for col in columns:
        if col not in runs or runs[col].astype(str).nunique() != 1:
            continue
        value = runs[col].iloc[0]
        if col == "patch" and "regions" in runs and str(runs.regions.iloc[0]) == "slic":
            parts.append("SLIC superpixels")
        elif col == "perturbation":
            parts.append(f"{value} perturbation")
        else:
            parts.append(_fmt(col, value))
    images = n_images if n_images is not None else runs.n_images if "n_images" in runs else []
    if len(images):
        parts.append(f"{_images_text(images)} images")
    return " · ".join(parts)


def _standalone(fig: Figure, runs: pd.DataFrame, n_images, caption: str, n_boot: int | None,
                columns=("dataset", "model", "patch", "perturbation"), seed: int | None = None) -> None:
    """A figure that stands alone: its condition as its title (dataset, model, patch, perturbation, images), and
    its caption (what the lines and bands are) kept beside it, not drawn (``style.set_caption``). The bands'
    resamples: each run's own (``n_boot``/``seed`` None) or those asked for, and then the caption says so."""
    condition = condition_text(runs, n_images, columns)
    fig.suptitle(textwrap.fill(condition, int(fig.get_figwidth() * 15), break_on_hyphens=False), fontsize="small")
    if "bootstrap" not in runs:
        resamples = f"{n_boot or 1000} resamples"
    elif ((n_boot is None or {int(b) for b in runs.bootstrap} == {n_boot})
          and (seed is None or ("seed" in runs and {int(s) for s in runs.seed} == {seed}))):
        own = sorted({int(b) for b in runs.bootstrap})
        resamples = (f"{own[0] if len(own) == 1 else f'{own[0]}–{own[-1]}'} resamples: each run's own bootstrap "
                     f"setting and seed, those of its summary.csv")
    else:
        count = f"{n_boot} resamples" if n_boot is not None else "each run's own resamples"
        resamples = (f"{count}, {f'seed {seed}' if seed is not None else 'its own seed'}: not the runs' own "
                     f"(--n-boot/--seed), so a band differs from the intervals of their summary.csv")
    style.set_caption(fig, f"{caption} Lines: mean over {_images_text(n_images)} images; shaded: 95% percentile "
                           f"bootstrap interval over images ({resamples}; none over fewer than 2 images or 100 "
                           f"resamples). {condition}.")


def _titled(fig: Figure, runs: pd.DataFrame, n_images, caption: str) -> None:
    """Like :func:`_standalone`, for figures of per-image values (no bands): heatmaps do not depend on the
    patch or the perturbation, so the condition is the dataset, the model and the images."""
    condition = condition_text(runs, n_images, ("dataset", "model"))
    fig.suptitle(textwrap.fill(condition, int(fig.get_figwidth() * 15), break_on_hyphens=False), fontsize="small")
    style.set_caption(fig, f"{caption} {condition}.")


def _settings_text(results: Results, runs, tables) -> str:
    """The settings of the protocols behind ``tables`` (from the rows' ``protocol_params``), for a caption."""
    import json

    parts = []
    for t in dict.fromkeys(tables):
        rows = results.tables.get(t)
        if rows is None or "protocol_params" not in rows or not len(rows):
            continue
        rows = rows[rows.run.isin(set(runs))]
        values = rows.protocol_params.dropna().unique()
        if len(values) == 1 and values[0] not in ("", "{}"):
            params = json.loads(values[0])
            parts.append(f"{t}: " + ", ".join(f"{k} {v}" for k, v in params.items()))
    return (" Settings — " + "; ".join(parts) + ".") if parts else ""


def _unequal(meta) -> bool:
    """Whether a run's regions differ in size (its ``equal_regions`` is false; older runs: equal)."""
    return str(meta.get("equal_regions", True)).lower() in ("false", "0")


def _end_note(ax, x_end: float) -> None:
    """Say in the panel where curves stop before the whole image is perturbed."""
    if x_end < 99.5:
        ax.axvline(x_end, color="0.6", linewidth=0.5, linestyle="--", zorder=0, label="_end")
        ax.annotate(f"curves end at {x_end:.0f}%", (x_end, 1), xycoords=("data", "axes fraction"),
                    ha="right", va="top", fontsize="x-small", color="0.35", xytext=(-2, -2),
                    textcoords="offset points")


def _suffix(keys: dict) -> str:
    text = "_".join(f"{c}-{v}" for c, v in keys.items())
    return ("__" + re.sub(r"[^A-Za-z0-9.=-]+", "-", text)) if text else ""


def _groups(df: pd.DataFrame, cols: list[str]):
    """(key dict, rows) per distinct value of ``cols``, sorted; one group {} when ``cols`` is empty."""
    if not cols:
        return [({}, df)]
    return [(dict(zip(cols, k if isinstance(k, tuple) else (k,))), g)
            for k, g in df.groupby(cols, sort=True, dropna=False)]


def facets(runs: pd.DataFrame, panel_cols: list[str], file_cols: list[str]):
    """Yield (file suffix, runs of the file, [(panel title, runs of the panel)]). File columns appear in
    the suffix only when they vary; panel titles show the panel columns that vary (dataset, patch always)."""
    fvary = [c for c in file_cols if runs[c].astype(str).nunique() > 1]
    for fkey, frun in _groups(runs, file_cols):
        pvary = [c for c in panel_cols if c in ("dataset", "patch") or frun[c].astype(str).nunique() > 1]
        panels = [(" · ".join(_fmt(c, v) for c, v in pkey.items() if c in pvary), prun)
                  for pkey, prun in _groups(frun, panel_cols)]
        yield _suffix({c: fkey[c] for c in fvary}), frun, panels


def panel_grid(n: int, extra_height: float = 0.45, ncols: int | None = None, square: bool = False,
               sharey: bool = False) -> tuple[Figure, list]:
    """A figure of n panels at column width (1 column; 2 square ones) or text width (more), ``ncols``
    (default up to MAX_COLS) per row; extra_height (inches) is room for the title and the legend. ``sharey``:
    one y scale for every panel (panels that are compared with each other)."""
    ncols = min(n, MAX_COLS) if ncols is None else ncols
    nrows = -(-n // ncols)
    width = style.COLUMN_WIDTH_IN if ncols == 1 or (square and ncols == 2) else style.TEXT_WIDTH_IN
    height = width / ncols + 0.1 if square else PANEL_HEIGHT_IN
    fig = style.new_figure(width, height * nrows + extra_height)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    if sharey:
        for ax in axes:
            ax.yaxis.set_tick_params(labelleft=True)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def band_alpha(n_lines: int) -> float:
    """Band opacity: lighter with more lines, so that 7 methods' bands do not merge into one grey area."""
    return BAND_ALPHA if n_lines <= 3 else max(0.05, BAND_ALPHA * 3 / n_lines)


def _line(ax, run_meta, label: str, ls: int, band: pd.DataFrame, alpha: float = BAND_ALPHA) -> None:
    st = style.method_style(run_meta.method)
    steps = band.step.to_numpy()
    gid = METHOD_GID + run_meta.method  # (SVG only: the explorer shows and hides a method's lines by it)
    ax.fill_between(steps, band.ci_low, band.ci_high, color=st.color, alpha=alpha, linewidth=0,
                    label=f"_band {label}", gid=gid)
    ax.plot(steps, band["mean"], color=st.color, marker=st.marker, label=label, gid=gid,
            linestyle=style.LINESTYLES[ls % len(style.LINESTYLES)], markevery=max(1, len(steps) // N_MARKERS))


def _random_order(ax, x, band: pd.DataFrame, alpha: float = BAND_ALPHA) -> None:
    """The random order (the baseline of every run): black, dotted, no markers (:data:`style.RANDOM_ORDER`)."""
    o = style.RANDOM_ORDER
    ax.fill_between(x, band.ci_low, band.ci_high, color="0.5", alpha=alpha, linewidth=0, label="_band random order",
                    gid=RANDOM_ORDER_GID)
    ax.plot(x, band["mean"], color=o["color"], linestyle=o["linestyle"], linewidth=o["linewidth"], label=o["label"],
            gid=RANDOM_ORDER_GID)


def _legend(fig: Figure, axes: list) -> None:
    """One legend under the panels, in as many columns as its labels fit in the figure's width (about 0.06 in per
    character at 7 pt, plus the handle), so that it takes a few rows, not a third of the figure."""
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        entry_in = 0.45 + 0.062 * max(len(lab) for lab in handles)
        ncol = max(1, min(len(handles), int((fig.get_figwidth() - 0.1) // entry_in)))
        rows = -(-len(handles) // ncol)
        if rows > 2:  # the panels keep their height; the figure grows by the legend's extra rows
            fig.set_figheight(fig.get_figheight() + 0.15 * (rows - 2))
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", handlelength=2.2,
                   columnspacing=0.8, handletextpad=0.4, ncol=ncol)


def _seed(run_meta, seed: int | None) -> int:
    return int(run_meta.seed if seed is None else seed)


def _n_boot(run_meta, n_boot: int | None) -> int:
    """The resamples of a run's band: its own ``bootstrap`` setting unless the report was given ``--n-boot``."""
    return int(run_meta.bootstrap if n_boot is None else n_boot)


def declared(kind: str) -> list[protocols.Figure]:
    """The figures of ``kind`` the protocols declare, in catalogue order."""
    return [f for cls in protocols.catalogue() for f in cls.figures if f.kind == kind]


def _baseline_runs(panel: pd.DataFrame, baseline: str, warnings: list[str]) -> dict[str, str]:
    """Run → the run of method ``baseline`` with the same setting and seed (``PAIRING_KEY``; the first such in
    sorted order)."""
    key = PAIRING_KEY
    base = panel[panel.method == baseline].sort_values("run")
    out = {}
    for _, r in panel.iterrows():
        match = base[(base[key].astype(str) == r[key].astype(str)).all(axis=1)]
        if len(match):
            out[r.run] = match.run.iloc[0]
            if len(match) > 1:
                warnings.append(f"several '{baseline}' runs match {r.run}; compared with {match.run.iloc[0]}")
        else:
            warnings.append(f"no '{baseline}' run with the same setting as {r.run}; it is left out")
    return out


def relative_figures(results: Results, panel_cols: list[str], file_cols: list[str], baseline: str = "random",
                     n_boot: int | None = None, seed: int | None = None, figure: protocols.Figure | None = None
                     ) -> list[tuple[str, Figure]]:
    """``figure.value`` (default: the declared ``relative`` figure's, AOPC) of MoRF − that of the baseline per image
    against the % of pixels perturbed (so that patch sizes are comparable): mean and 95% band over images, a line
    per run, one y scale for all panels. ``baseline="random"``: the random order of the same run (TNNLS Fig. 4);
    a method name: that method's run of the same setting, paired by image (TNNLS Fig. 8 uses sensitivity). A run
    whose regions differ in size (``equal_regions`` false) is drawn area-matched (DEFINITIONS §4 Unequal regions:
    both curves over the same fraction of pixels), and the caption says so."""
    figure = figure or declared("relative")[0]
    out = []
    base_title = "random order" if baseline == "random" else style.display_name(baseline)
    with style.paper():
        for suffix, frun, panels in facets(results.runs, panel_cols, file_cols):
            labels = series_labels(frun, panel_cols + file_cols)
            order = series_order(frun, labels)
            ls = linestyle_index(frun, order, labels)
            fig, axes = panel_grid(len(panels), extra_height=0.75, sharey=True)
            alpha = band_alpha(max(len(set(p.run)) for _, p in panels))
            area_runs, area_panels, ends = [], [], []
            for ax, (title, prun) in zip(axes, panels):
                pairs = None if baseline == "random" else _baseline_runs(prun, baseline, results.warnings)
                ax.axhline(0.0, color="0.5", linewidth=0.6, zorder=0, label="_zero")
                panel_end = 0.0
                for run in [r for r in order if r in set(prun.run)]:
                    meta = prun.set_index("run").loc[run]
                    rows = results.run_table(run, figure.table)
                    if rows is None:
                        continue
                    if pairs is not None and (run not in pairs or meta.method == baseline):
                        continue
                    base_rows = rows if pairs is None else results.run_table(pairs[run], figure.table)
                    area = "fraction_perturbed" in rows and _unequal(meta)
                    if area:
                        diff = area_matched_difference(rows, "morf", base_rows, "random" if pairs is None else "morf")
                        area_runs.append(run)
                        area_panels.append(title)
                    else:
                        diff = (relative_to_random(rows, figure.value) if pairs is None
                                else relative_to_run(rows, base_rows, figure.value))
                    if diff is None or diff.values.size == 0:
                        results.warnings.append(f"{run}: no rows to compare with the {base_title} baseline")
                        continue
                    band = mean_band(diff, _n_boot(meta, n_boot), _seed(meta, seed))
                    if not area:
                        if "fraction_perturbed" in rows:
                            band["step"] = 100 * step_fractions(rows).reindex(band.step).to_numpy()
                        else:  # (an older table without fractions: steps)
                            band["step"] = band.step.astype(float)
                    panel_end = max(panel_end, float(band.step.max()))
                    _line(ax, meta, labels[run], ls[run], band, alpha)
                ends.append(panel_end)
                _end_note(ax, panel_end)
                ax.set_title(title + (" · area-matched" if title in area_panels else ""))
                ax.set_xlabel("pixels perturbed (%)")
                ax.set_ylabel(f"{figure.label} − {base_title}")
            what = (f"{figure.label} of the heatmap's order (MoRF) minus that of the {base_title}, per image (paired), "
                    f"against the share of pixels perturbed.")
            if area_runs:
                which = ("every run" if len(area_runs) == len(frun)
                         else "the runs of " + ", ".join(dict.fromkeys(area_panels)))
                what += (f" For {which} the regions differ in size, so both curves are compared over the same fraction "
                         f"of pixels (area-matched AOPC, DEFINITIONS §4 Unequal regions).")
            if baseline != "random":  # an interval no run computed: said so
                what += (f" The band of a difference to the {base_title} run is computed here (with the run's own "
                         f"resamples and seed unless --n-boot/--seed), not an interval of either run's summary.csv.")
            if any(e < 99.5 for e in ends):
                what += " The dashed vertical line marks where curves end before the whole image is perturbed."
            _standalone(fig, frun, frun.n_images, what, n_boot, seed=seed)
            _legend(fig, axes)
            out.append((suffix, fig))
    return out


ORDER_TITLES = {"morf": "MoRF", "lerf": "LeRF"}


def _percent(rows: pd.DataFrame, order: str, steps) -> np.ndarray:
    """Steps of ``order`` as % of pixels perturbed (their mean fraction over images); steps for older tables."""
    steps = np.asarray(steps)
    if "fraction_perturbed" not in rows:
        return steps.astype(float)
    return 100 * step_fractions(rows, order).reindex(steps).to_numpy()


def curve_figures(results: Results, n_boot: int | None = None, seed: int | None = None,
                  figure: protocols.Figure | None = None) -> list[tuple[str, Figure]]:
    """f_c(x⁽ᵏ⁾) vs step k of ``figure.table`` (default: the declared ``orders`` figure's, the curves), mean and 95%
    band over images: a row of panels for MoRF (and one for LeRF when present), a panel per dataset, a line per
    run, and the random order of the first run (grey, dashed)."""
    figure = figure or declared("orders")[0]
    table = results.table(figure.table)
    if table is None:
        return []
    panel_cols, file_cols = ["dataset", "model"], ["perturbation", "patch", "target", "score"]
    orders = [o for o in ("morf", "lerf") if (table.order == o).any()]
    out = []
    with style.paper():
        for suffix, frun, panels in facets(results.runs, panel_cols, file_cols):
            labels = series_labels(frun, panel_cols + file_cols)
            order = series_order(frun, labels)
            ls = linestyle_index(frun, order, labels)
            if not orders:
                continue
            fig, axes = panel_grid(len(panels) * len(orders), ncols=len(panels), extra_height=0.75, sharey=True)
            score = frun.score.iloc[0]
            alpha = band_alpha(max(len(set(p.run)) for _, p in panels))
            ends = []
            for i, o in enumerate(orders):
                for j, (title, prun) in enumerate(panels):
                    ax = axes[i * len(panels) + j]
                    runs = [r for r in order if r in set(prun.run)]
                    end = 0.0
                    for run in runs:
                        rows = results.run_table(run, figure.table)
                        m = per_image(rows, o, "score_value")
                        if m is not None and m.values.size:
                            meta = prun.set_index("run").loc[run]
                            band = mean_band(m, _n_boot(meta, n_boot), _seed(meta, seed))
                            band["step"] = _percent(rows, o, band.step)
                            end = max(end, float(band.step.max()))
                            _line(ax, meta, labels[run], ls[run], band, alpha)
                    rows = results.run_table(runs[0], figure.table) if runs else None
                    rnd = per_image(rows, "random", "score_value") if runs else None
                    if rnd is not None and rnd.values.size:
                        b = mean_band(rnd, _n_boot(prun.set_index("run").loc[runs[0]], n_boot),
                                      _seed(prun.set_index("run").loc[runs[0]], seed))
                        _random_order(ax, _percent(rows, "random", b.step), b, alpha)
                    ends.append(end)
                    _end_note(ax, end)
                    ax.set_title(f"{ORDER_TITLES[o]} · {title}")
                    ax.set_xlabel("pixels perturbed (%)")
                    ax.set_ylabel(f"$f_c(x^{{(k)}})$ ({score})")
            what = (f"The score f_c ({score}) as regions are perturbed in the heatmap's order "
                    f"({' and '.join(ORDER_TITLES[o] for o in orders)}) and in the paired random order (the "
                    f"baseline of every run, dotted), against the share of pixels perturbed (each step at its mean "
                    f"share over images).")
            if any(e < 99.5 for e in ends):
                what += " The dashed vertical line marks where curves end before the whole image is perturbed."
            _standalone(fig, frun, frun.n_images, what, n_boot, seed=seed)
            _legend(fig, axes)
            out.append((suffix, fig))
    return out


def fraction_figures(results: Results, file: str, n_boot: int | None = None, seed: int | None = None
                     ) -> list[tuple[str, Figure]]:
    """The ``fraction`` figures the protocols declare under the name ``file``: f_c vs the % of pixels changed,
    mean and 95% band over images, a panel per declared (table, order) and dataset, a line per run that has the
    table, and the paired random order of the first run (grey, dashed) — e.g. ROAD's MoRF and LeRF (Rong et al.
    2022), deletion and insertion (Petsiuk et al. 2018), pixel-flipping with the heatmap recomputed at every step
    (tutorial Sec. 7.2), at each step's mean fraction over images (regions may differ in size). Panels of tables
    no run has are left out. A table's ``<table>_score`` column names the score it tracks (the run's otherwise)."""
    specs = [(*panel, f.x) for f in declared("fraction") if f.file == file for panel in f.panels]
    specs = [p for p in specs if p[0] in results.tables]
    if not specs:
        return []
    have = set().union(*(set(results.tables[t].run) for t, *_ in specs))
    panel_cols, file_cols = ["dataset", "model"], ["perturbation", "patch", "target", "score"]
    runs = results.runs[results.runs.run.isin(have)]
    out = []
    with style.paper():
        for suffix, frun, panels in facets(runs, panel_cols, file_cols):
            labels = series_labels(frun, panel_cols + file_cols)
            order = series_order(frun, labels)
            ls = linestyle_index(frun, order, labels)
            fig, axes = panel_grid(len(specs) * len(panels), ncols=len(specs) if len(panels) == 1 else len(panels),
                                   extra_height=0.85)
            n_images, log_axes = set(), []
            for i, (table, o, heading, xlabel, x_col) in enumerate(specs):
                for j, (title, prun) in enumerate(panels):
                    ax = axes[i * len(panels) + j] if len(panels) > 1 else axes[i]
                    runs_here = [r for r in order if r in set(prun.run)]
                    alpha = band_alpha(len(runs_here))
                    score = frun.score.iloc[0]
                    first, means = True, []
                    for run in runs_here:
                        rows = results.run_table(run, table)
                        if rows is None:
                            continue
                        meta = prun.set_index("run").loc[run]
                        score = rows[f"{table}_score"].iloc[0] if f"{table}_score" in rows else score
                        pct = 100 * rows.groupby("step")[x_col].mean()
                        shown = [(o, labels[run], ls[run])] + ([("random", "", None)] if first else [])
                        first = False
                        for which, label, style_index in shown:
                            m = per_image(rows, which, "score_value")
                            if m is None or m.values.size == 0:
                                continue
                            band = mean_band(m, _n_boot(meta, n_boot), _seed(meta, seed))
                            n_images.add(len(m.image_ids))
                            band["step"] = pct.loc[band.step].to_numpy()
                            if style_index is None:
                                _random_order(ax, band.step, band, alpha)
                            else:
                                _line(ax, meta, label, style_index, band, alpha)
                                means.append(band)
                    if _saturates(means):  # (insertion: most of the change within the first few %)
                        ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
                        ax.set_xlim(0, 100)
                        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([0, 1, 10, 100]))
                        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                        log_axes.append(heading)
                    else:
                        ax.xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(20))
                    ax.set_title(f"{heading} · {title}")
                    ax.set_xlabel(xlabel)
                    ax.set_ylabel(f"$f_c$ ({score})")
            what = (f"{' and '.join(dict.fromkeys(h for _, _, h, _, _ in specs))}: the score f_c against the share of "
                    f"pixels changed, in the heatmap's order and in the paired random order (the baseline, dotted); "
                    f"each step at its mean share over images.")
            if log_axes:
                what += (f" {', '.join(dict.fromkeys(log_axes))}: the x axis is linear up to 1 % and logarithmic "
                         f"above, because the curves change most within the first few %.")
            what += _settings_text(results, frun.run, [t for t, *_ in specs])
            _standalone(fig, frun, sorted(n_images or {0}), what, n_boot, columns=("dataset", "model"), seed=seed)
            _legend(fig, axes)
            out.append((suffix, fig))
    return out


def _saturates(bands: list[pd.DataFrame], within: float = 5.0, share: float = 0.8) -> bool:
    """Whether the mean curves make ``share`` of their whole change within the first ``within`` % of the x axis
    (they would pile into one corner on a linear axis)."""
    if not bands:
        return False
    done = []
    for b in bands:
        y, x = b["mean"].to_numpy(float), b.step.to_numpy(float)
        total = abs(y[-1] - y[0])
        if not np.isfinite(total) or total == 0 or len(x) < 3:
            return False
        done.append(abs(np.interp(within, x, y) - y[0]) / total)
    return float(np.median(done)) >= share


HEATMAP_GROUP = [c for c in HEATMAP_KEY if c not in ("method", "method_params", "pooling", "seed")]


def _heatmap_series(results: Results, table: pd.DataFrame):
    """Per dataset (HEATMAP_GROUP): (title, its runs in legend order, labels, run → method) for the runs of
    a complexity or heatmap table."""
    meta = results.runs[results.runs.run.isin(set(table.run))]
    labels = series_labels(meta, HEATMAP_GROUP, [c for c in HEATMAP_KEY if c not in HEATMAP_GROUP])
    _, _, panels = next(facets(meta, HEATMAP_GROUP, []))
    methods = meta.set_index("run").method
    return [(title, series_order(prun, labels), labels, methods) for title, prun in panels]


def scatter_figures(results: Results, figure: protocols.Figure | None = None, reference: str | None = None
                    ) -> list[tuple[str, Figure]]:
    """Per image, ``figure.value`` (default: the declared ``scatter`` figure's, PNG size) of each method (y) against
    a reference method (x; default: the first method in catalogue order other than random), with the diagonal:
    points below it are images where the method's value is smaller (e.g. less complex) than the reference's. A
    panel per method and dataset."""
    figure = figure or declared("scatter")[0]
    metric = figure.value
    table = results.table(figure.table)
    if table is None or table.empty:
        return []
    groups = _heatmap_series(results, table)
    rows = []  # per dataset: [(group title, reference run, other run, labels, methods)]
    for title, runs, labels, methods in groups:
        ref = next((r for r in runs if methods[r] == reference), None) if reference else None
        ref = ref or next((r for r in runs if methods[r] != "random"), runs[0])
        rows.append([(title, ref, r, labels, methods) for r in runs if r != ref])
    rows = [r for r in rows if r]
    if not rows:
        return []
    width = max(map(len, rows))
    if width <= 4:  # a row per dataset, a column per compared method
        pairs = [row[j] if j < len(row) else None for row in rows for j in range(width)]
    else:
        pairs = [pair for row in rows for pair in row]
    with style.paper():
        fig, axes = panel_grid(len(pairs), extra_height=0.1, ncols=width if width <= 4 else None, square=True)
        for ax, pair in zip(axes, pairs):
            if pair is None:
                ax.set_visible(False)
                continue
            title, ref, run, labels, methods = pair
            x = table[table.run == ref].set_index("image_id")[metric]
            y = table[table.run == run].set_index("image_id")[metric]
            shared = x.index.intersection(y.index, sort=False)
            xv, yv = x.loc[shared].to_numpy(float), y.loc[shared].to_numpy(float)
            st = style.method_style(methods[run])
            ax.scatter(xv, yv, s=6, color=st.color, marker=st.marker, linewidths=0.3, label=labels[run])
            if xv.size:
                lo, hi = min(xv.min(), yv.min()), max(xv.max(), yv.max())
                pad = 0.05 * (hi - lo or 1.0)
                ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", linestyle="--", linewidth=0.7,
                        label="_diagonal")
                ax.set_xlim(lo - pad, hi + pad)
                ax.set_ylim(lo - pad, hi + pad)
                ax.text(0.97, 0.03, f"below diagonal: {np.mean(yv < xv):.0%} of {xv.size}",
                        transform=ax.transAxes, ha="right", va="bottom", fontsize="small")
            ax.set_aspect("equal", adjustable="box")
            if len(groups) > 1:
                ax.set_title(title)
            ax.set_xlabel(f"{labels[ref]}: {figure.label or metric}")
            ax.set_ylabel(f"{labels[run]}: {figure.label or metric}")
        meta = results.runs[results.runs.run.isin(set(table.run))]
        _titled(fig, meta, [table.groupby("run").image_id.nunique().max()],
                f"{figure.label or metric} per image: each method (y) against {labels[rows[0][0][1]]} (x), with the "
                f"diagonal; a point below it is an image where the method's value is smaller.")
    return [("", fig)]


def box_figures(results: Results, figure: protocols.Figure | None = None) -> list[tuple[str, Figure]]:
    """Box plots of ``figure.value`` (default: the declared ``box`` figure's, entropy) per method, a panel per
    dataset (TNNLS Fig. 5, bottom)."""
    figure = figure or declared("box")[0]
    metric = figure.value
    table = results.table(figure.table)
    if table is None or table.empty:
        return []
    groups = list(_heatmap_series(results, table))
    with style.paper():
        fig, axes = panel_grid(len(groups), extra_height=0.5)
        for ax, (title, runs, labels, methods) in zip(axes, groups):
            data = [table.loc[table.run == r, metric].to_numpy(float) for r in runs]
            parts = ax.boxplot(data, patch_artist=True, widths=0.6, flierprops={"markersize": 2},
                               medianprops={"color": "black", "linewidth": 0.8})
            for box, r in zip(parts["boxes"], runs):
                box.set_facecolor(style.method_color(methods[r]))
                box.set_alpha(0.7)
                box.set_label(labels[r])
            ax.set_xticks(range(1, len(runs) + 1), [textwrap.fill(labels[r], 12) for r in runs])
            ax.grid(False, axis="x")
            ax.set_title(title)
            ax.set_ylabel(figure.label or metric)
        meta = results.runs[results.runs.run.isin(set(table.run))]
        _titled(fig, meta, [table.groupby("run").image_id.nunique().max()],
                f"{figure.label or metric} per image, one box per method (median, quartiles, whiskers at 1.5 "
                f"interquartile ranges, outliers as points).")
    return [("", fig)]


GRID_HEAD_IN, GRID_BAR_IN, GRID_GAP = 0.25, 0.34, 0.04  # column heads, colour bar, gap between cells (× cell)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)


def _column_heads(results: Results, runs: list[str], meta: pd.DataFrame, images: list[str]) -> dict[str, str]:
    """Per image its id and, from the first run's curves, its class and the model's prediction (with
    ``target=predicted`` the explained class is the prediction; with ``target=label`` it is the label)."""
    curves = results.run_table(runs[0], protocols.anchor())
    heads = {i: str(i) for i in images}
    if curves is None or not {"label", "target_class"} <= set(curves.columns):
        return heads
    first = curves.drop_duplicates("image_id").set_index("image_id")
    predicted = str(meta.set_index("run").loc[runs[0], "target"]) == "predicted"
    for i in images:
        if i in first.index:
            r = first.loc[i]
            heads[i] = (f"{i}\nclass {r.label} · pred. {r.target_class}" if predicted
                        else f"{i}\nclass {r.label} (explained)")
    return heads


def heatmap_groups(results: Results, n_images: int = 8) -> list[tuple]:
    """What the heatmap grid shows, per dataset: (title, runs in legend order, run → label, the first ``n_images``
    images that every run has (in the order of the first run's table), run → image → heatmap (H×W), image →
    input image (H×W×C in [0, 1]; those the runs kept)). A dataset without such an image is left out, with a
    warning."""
    table = results.heatmaps
    if table is None or table.empty:
        return []
    out = []
    for title, runs, labels, _ in _heatmap_series(results, table):
        maps = {r: dict(zip(table.loc[table.run == r, "image_id"], table.loc[table.run == r, "heatmap"]))
                for r in runs}
        images = [i for i in maps[runs[0]] if all(i in maps[r] for r in runs)][:n_images]
        if not images:
            warning = f"heatmap grid {title}: no image has a heatmap of every method"
            if warning not in results.warnings:
                results.warnings.append(warning)
            continue
        inputs = {}
        if "image" in table.columns:
            rows = table[table.run.isin(runs) & table.image_id.isin(images)]
            for image_id, im in zip(rows.image_id, rows.image):
                if isinstance(im, np.ndarray):
                    inputs.setdefault(image_id, im)
        out.append((title, runs, labels, images, maps, inputs))
    return out


def heatmap_grid_figures(results: Results, n_images: int = 8) -> list[tuple[str, Figure]]:
    """The input images (first row, when the runs kept them) and methods (rows) × images (columns), as TNNLS
    Fig. 6: each heatmap divided by its max|h| and coloured by the suite's rendering
    (:func:`bench.render.render_heatmap`, the one the complexity metric uses): red = positive, blue = negative,
    white = 0. The first ``n_images`` images (in the order of the first method's table) that every method has,
    each column headed by its id, class and the model's prediction. Exactly one column wide (3.5 in, up to 4
    images) or one page wide (7.16 in), the cells filling it, no empty margins. A figure per dataset."""
    table = results.heatmaps
    if table is None or table.empty:
        return []
    out = []
    groups = heatmap_groups(results, n_images)
    several = len(_heatmap_series(results, table)) > 1
    with style.paper():
        for title, runs, labels, images, maps, inputs in groups:
            show_inputs = all(i in inputs for i in images)
            names = [textwrap.fill(n, 14) for n in (["input"] if show_inputs else []) + [labels[r] for r in runs]]
            nrows, ncols = len(names), len(images)
            h0, w0 = maps[runs[0]][images[0]].shape
            width = style.COLUMN_WIDTH_IN if ncols <= 4 else style.TEXT_WIDTH_IN
            label_in = 0.1 + 0.068 * max(len(line) for n in names for line in n.splitlines())  # 8 pt
            cell = (width - label_in - 0.02) / (ncols + GRID_GAP * (ncols - 1))
            grid_h = cell * h0 / w0 * (nrows + GRID_GAP * (nrows - 1))
            height = GRID_HEAD_IN + grid_h + GRID_BAR_IN
            fig = Figure(figsize=(width, height))
            fig.subplots_adjust(left=label_in / width, right=1 - 0.02 / width, top=1 - GRID_HEAD_IN / height,
                                bottom=GRID_BAR_IN / height, wspace=GRID_GAP, hspace=GRID_GAP)
            axes = fig.subplots(nrows, ncols, squeeze=False)
            heads = _column_heads(results, runs, results.runs, images)
            for i, name in enumerate(names):
                for j, image in enumerate(images):
                    ax = axes[i, j]
                    if show_inputs and i == 0:
                        im = inputs[image]
                        ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1,
                                  interpolation="nearest")
                    else:
                        ax.imshow(render_heatmap(maps[runs[i - show_inputs]][image]), interpolation="nearest")
                    _bare(ax)
                    if i == 0:
                        ax.set_title(heads[image], fontsize=5.5, pad=2, linespacing=1.1)
                    if j == 0:
                        ax.set_ylabel(name, rotation=0, ha="right", va="center", labelpad=3)
            x0, x1 = axes[-1, 0].get_position().x0, axes[-1, -1].get_position().x1
            bar = min(1.5 / width, x1 - x0)
            cax = fig.add_axes(((x0 + x1 - bar) / 2, 0.1 / height, bar, 0.07 / height))
            sm = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-1, 1), cmap=COLORMAP)
            cb = fig.colorbar(sm, cax=cax, orientation="horizontal")
            cb.set_ticks([-1, 0, 1])
            cb.ax.tick_params(labelsize="x-small", length=2, pad=1)
            cb.ax.set_title("h / max|h| per heatmap", fontsize="x-small", pad=2)
            meta = results.runs[results.runs.run.isin(runs)]
            style.set_caption(fig, f"Heatmaps of the first {len(images)} images (columns: image id, class, the model's "
                                   f"prediction) for each method (rows), each divided by its largest |h| and coloured "
                                   f"red (positive), white (0), blue (negative) — the rendering whose file sizes and "
                                   f"entropy say how complex a heatmap is (DEFINITIONS §5). "
                                   f"{condition_text(meta[['dataset', 'model']], [len(images)])}.")
            out.append((_suffix({"dataset": title}) if several else "", fig))
    return out
