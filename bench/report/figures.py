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
from .aggregate import mean_band, per_image, relative_to_random, relative_to_run
from .load import Results, linestyle_index, series_labels, series_order

PANEL_HEIGHT_IN = 1.9
MAX_COLS = 3
BAND_ALPHA = 0.18
N_MARKERS = 7  # markers per line


def _fmt(col: str, value) -> str:
    if col == "patch":
        return f"patch {value}×{value}"
    if col == "dataset":
        return style.dataset_name(value)
    return str(value) if col == "model" else f"{col} {value}"


def _band_note(fig: Figure, n_images) -> None:
    """Say what the lines and bands are, with the number of images, above the panels."""
    n = sorted({int(v) for v in n_images})
    text = str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"
    fig.suptitle(f"mean over {text} images; band: 95% bootstrap interval", fontsize="small")


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


def panel_grid(n: int, extra_height: float = 0.45, ncols: int | None = None, square: bool = False
               ) -> tuple[Figure, list]:
    """A figure of n panels at column width (1 column; 2 square ones) or text width (more), ``ncols``
    (default up to MAX_COLS) per row; extra_height (inches) is room for the legend."""
    ncols = min(n, MAX_COLS) if ncols is None else ncols
    nrows = -(-n // ncols)
    width = style.COLUMN_WIDTH_IN if ncols == 1 or (square and ncols == 2) else style.TEXT_WIDTH_IN
    height = width / ncols + 0.1 if square else PANEL_HEIGHT_IN
    fig = style.new_figure(width, height * nrows + extra_height)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _line(ax, run_meta, label: str, ls: int, band: pd.DataFrame) -> None:
    st = style.method_style(run_meta.method)
    steps = band.step.to_numpy()
    ax.fill_between(steps, band.ci_low, band.ci_high, color=st.color, alpha=BAND_ALPHA, linewidth=0,
                    label=f"_band {label}")
    ax.plot(steps, band["mean"], color=st.color, marker=st.marker, label=label,
            linestyle=style.LINESTYLES[ls % len(style.LINESTYLES)], markevery=max(1, len(steps) // N_MARKERS))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _legend(fig: Figure, axes: list) -> None:
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 4 if fig.get_figwidth() > 4 else 2))


def _seed(run_meta, seed: int | None) -> int:
    return int(run_meta.seed if seed is None else seed)


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
                     n_boot: int = 1000, seed: int | None = None, figure: protocols.Figure | None = None
                     ) -> list[tuple[str, Figure]]:
    """``figure.value`` (default: the declared ``relative`` figure's, AOPC) of MoRF − that of the baseline per image
    vs L: mean and 95% band over images, a line per run. ``baseline="random"``: the random order of the same run
    (TNNLS Fig. 4); a method name: that method's run of the same setting, paired by image (TNNLS Fig. 8 uses
    sensitivity)."""
    figure = figure or declared("relative")[0]
    out = []
    base_title = "random" if baseline == "random" else style.display_name(baseline)
    with style.paper():
        for suffix, frun, panels in facets(results.runs, panel_cols, file_cols):
            labels = series_labels(frun, panel_cols + file_cols)
            order = series_order(frun, labels)
            ls = linestyle_index(frun, order, labels)
            fig, axes = panel_grid(len(panels))
            for ax, (title, prun) in zip(axes, panels):
                pairs = None if baseline == "random" else _baseline_runs(prun, baseline, results.warnings)
                ax.axhline(0.0, color="0.5", linewidth=0.6, zorder=0, label="_zero")
                for run in [r for r in order if r in set(prun.run)]:
                    meta = prun.set_index("run").loc[run]
                    rows = results.run_table(run, figure.table)
                    if rows is None:
                        continue
                    if pairs is None:
                        diff = relative_to_random(rows, figure.value)
                    elif run not in pairs or meta.method == baseline:
                        continue
                    else:
                        diff = relative_to_run(rows, results.run_table(pairs[run], figure.table), figure.value)
                    if diff is None or diff.values.size == 0:
                        results.warnings.append(f"{run}: no rows to compare with the {base_title} baseline")
                        continue
                    _line(ax, meta, labels[run], ls[run], mean_band(diff, n_boot, _seed(meta, seed)))
                ax.set_title(title)
                ax.set_xlabel("perturbation steps L")
                ax.set_ylabel(f"{figure.label} − {figure.label}({base_title})")
            _band_note(fig, frun.n_images)
            _legend(fig, axes)
            out.append((suffix, fig))
    return out


ORDER_TITLES = {"morf": "MoRF", "lerf": "LeRF"}


def curve_figures(results: Results, n_boot: int = 1000, seed: int | None = None,
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
            fig, axes = panel_grid(len(panels) * len(orders), ncols=len(panels))
            score = frun.score.iloc[0]
            for i, o in enumerate(orders):
                for j, (title, prun) in enumerate(panels):
                    ax = axes[i * len(panels) + j]
                    runs = [r for r in order if r in set(prun.run)]
                    for run in runs:
                        m = per_image(results.run_table(run, figure.table), o, "score_value")
                        if m is not None and m.values.size:
                            meta = prun.set_index("run").loc[run]
                            _line(ax, meta, labels[run], ls[run], mean_band(m, n_boot, _seed(meta, seed)))
                    rnd = per_image(results.run_table(runs[0], figure.table), "random", "score_value") if runs else None
                    if rnd is not None and rnd.values.size:
                        b = mean_band(rnd, n_boot, _seed(prun.set_index("run").loc[runs[0]], seed))
                        ax.fill_between(b.step, b.ci_low, b.ci_high, color="0.6", alpha=BAND_ALPHA, linewidth=0,
                                        label="_band random order")
                        ax.plot(b.step, b["mean"], color="0.4", linestyle=(0, (4, 2)), label="random order")
                    ax.set_title(f"{ORDER_TITLES[o]} · {title}")
                    ax.set_xlabel("perturbation step k")
                    ax.set_ylabel(f"$f_c(x^{{(k)}})$ ({score})")
            _band_note(fig, frun.n_images)
            _legend(fig, axes)
            out.append((suffix, fig))
    return out


def fraction_figures(results: Results, file: str, n_boot: int = 1000, seed: int | None = None
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
                                   extra_height=0.75)
            n_images = set()
            for i, (table, o, heading, xlabel, x_col) in enumerate(specs):
                for j, (title, prun) in enumerate(panels):
                    ax = axes[i * len(panels) + j] if len(panels) > 1 else axes[i]
                    runs_here = [r for r in order if r in set(prun.run)]
                    score = frun.score.iloc[0]
                    first = True
                    for run in runs_here:
                        rows = results.run_table(run, table)
                        if rows is None:
                            continue
                        meta = prun.set_index("run").loc[run]
                        score = rows[f"{table}_score"].iloc[0] if f"{table}_score" in rows else score
                        pct = 100 * rows.groupby("step")[x_col].mean()
                        shown = [(o, labels[run], ls[run])] + ([("random", "random order", None)] if first else [])
                        first = False
                        for which, label, style_index in shown:
                            m = per_image(rows, which, "score_value")
                            if m is None or m.values.size == 0:
                                continue
                            band = mean_band(m, n_boot, _seed(meta, seed))
                            n_images.add(len(m.image_ids))
                            band["step"] = pct.loc[band.step].to_numpy()
                            if style_index is None:
                                ax.fill_between(band.step, band.ci_low, band.ci_high, color="0.6", alpha=BAND_ALPHA,
                                                linewidth=0, label="_band random order")
                                ax.plot(band.step, band["mean"], color="0.4", linestyle=(0, (4, 2)), label=label)
                            else:
                                _line(ax, meta, label, style_index, band)
                    ax.xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(20))
                    ax.set_title(f"{heading} · {title}")
                    ax.set_xlabel(xlabel)
                    ax.set_ylabel(f"$f_c$ ({score})")
            _band_note(fig, n_images or {0})
            _legend(fig, axes)
            out.append((suffix, fig))
    return out


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
    return [("", fig)]


GRID_LABEL_IN, GRID_TOP_IN, GRID_BAR_IN, GRID_CELL_IN, GRID_BAR_WIDTH_IN = 1.1, 0.08, 0.6, 0.6, 1.5


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)


def heatmap_grid_figures(results: Results, n_images: int = 8) -> list[tuple[str, Figure]]:
    """The input images (first row, when the runs kept them) and methods (rows) × images (columns), as TNNLS
    Fig. 6: each heatmap divided by its max|h| and coloured by the suite's rendering
    (:func:`bench.render.render_heatmap`, the one the complexity metric uses): red = positive, blue = negative,
    white = 0. The first ``n_images`` images (in the order of the first method's table) that every method has;
    cells of GRID_CELL_IN inches (column width when it fits). A figure per dataset."""
    table = results.heatmaps
    if table is None or table.empty:
        return []
    out = []
    groups = _heatmap_series(results, table)
    with style.paper():
        for title, runs, labels, methods in groups:
            maps = {r: dict(zip(table.loc[table.run == r, "image_id"], table.loc[table.run == r, "heatmap"]))
                    for r in runs}
            images = [i for i in maps[runs[0]] if all(i in maps[r] for r in runs)][:n_images]
            if not images:
                results.warnings.append(f"heatmap grid {title}: no image has a heatmap of every method")
                continue
            inputs = {}
            if "image" in table.columns:
                rows = table[table.run.isin(runs) & table.image_id.isin(images)]
                for image_id, im in zip(rows.image_id, rows.image):
                    if isinstance(im, np.ndarray):
                        inputs.setdefault(image_id, im)
            show_inputs = all(i in inputs for i in images)
            names = (["input"] if show_inputs else []) + [labels[r] for r in runs]
            nrows, ncols = len(names), len(images)
            h0, w0 = maps[runs[0]][images[0]].shape
            cell = min(GRID_CELL_IN, (style.TEXT_WIDTH_IN - GRID_LABEL_IN - 0.05) / ncols)
            width = GRID_LABEL_IN + cell * ncols + 0.05
            width = style.COLUMN_WIDTH_IN if width <= style.COLUMN_WIDTH_IN else width
            height = cell * h0 / w0 * nrows + GRID_TOP_IN + GRID_BAR_IN
            fig = Figure(figsize=(width, height))
            fig.subplots_adjust(left=GRID_LABEL_IN / width, right=(GRID_LABEL_IN + cell * ncols) / width,
                                top=1 - GRID_TOP_IN / height, bottom=GRID_BAR_IN / height, wspace=0.04, hspace=0.04)
            axes = fig.subplots(nrows, ncols, squeeze=False)
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
                    if j == 0:
                        ax.set_ylabel(textwrap.fill(name, 14), rotation=0, ha="right", va="center")
            x0, x1 = axes[-1, 0].get_position().x0, axes[-1, -1].get_position().x1
            bar = min(GRID_BAR_WIDTH_IN / width, x1 - x0)
            cax = fig.add_axes(((x0 + x1 - bar) / 2, 0.2 / height, bar, 0.08 / height))
            sm = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-1, 1), cmap=COLORMAP)
            cb = fig.colorbar(sm, cax=cax, orientation="horizontal")
            cb.set_ticks([-1, 0, 1])
            cb.ax.tick_params(labelsize="small", length=2, pad=1)
            cb.ax.set_title(f"h / max|h| per heatmap{' · ' + title if len(groups) > 1 else ''}", fontsize="small",
                            pad=2)
            out.append((_suffix({"dataset": title}) if len(groups) > 1 else "", fig))
    return out
