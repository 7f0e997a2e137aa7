"""``index.html``: the report's results explorer — one self-contained page that opens from disk (no server, no
network: its style and script are inlined from bench/report/explorer/, its figures are inline SVG, its heatmaps
inline PNG).

It shows, built from the very DataFrames the report's CSV files are written from (one source of truth):

* every summary table and the faithfulness table, a row per run (and quantity): sortable by any column (a click on
  its head), filterable by dataset, model, patch and protocol; the best of a column marked as in the paper tables
  (bold, the same rule: top and tied), the paired test's Holm-adjusted p-value against the top kept;
* the curve figures of every protocol (matplotlib's own SVG of the report's figures: random order and bands
  included), each method's lines shown or hidden by a checkbox;
* the heatmap gallery: methods × the first ``--grid-images`` images of each dataset, rendered as the complexity
  metric renders them (:func:`bench.engine.render.render_heatmap`), the per-image quantities of a cell on hover
  (a title the script makes from the cell's JSON) and, with the input image, on click;
* the metric report card, when the runs make one;
* every run's provenance (condition, versions, device, wall time, code and weights digests, its resolved
  configuration), the jobs below the report's folders that are not in the tables (failed, incomplete, missing,
  duplicate) and the report's warnings.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .. import protocols
from . import figures, style, table as tables
from .load import Results

#: Longest side of a gallery thumbnail in pixels (larger heatmaps are downscaled; smaller ones are kept and
#: scaled up by the browser, pixelated).
THUMB_PX = 96
#: The provenance columns shown per run (when the runs have them), after its condition.
PROVENANCE_COLUMNS = ["run_key", "device", "device_name", "wall_time_s", "bench_version", "python_version",
                      "torch_version", "torchvision_version", "numpy_version", "scipy_version", "skimage_version",
                      "pandas_version", "code_sha", "model_sha", "data_sha"]
FILTERS = ("dataset", "model", "patch", "protocol")
BEST_CLASS = ' class="best"'
_esc = html.escape


def asset(name: str) -> str:
    """A file of bench/report/explorer/ (shipped with the package) as text."""
    return resources.files("bench.report").joinpath("explorer", name).read_text(encoding="utf-8")


def slug(text: str) -> str:
    """``text`` as a CSS class / id part: letters, digits, ``-`` and ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(text))


def _num(x) -> str:
    """A number for a ``data-value`` attribute: Python's repr of the float, as the CSV files write it."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return ""
    return repr(x) if np.isfinite(x) else ""


# ------------------------------------------------------------------------------------------------- figures


def figure_svg(fig, prefix: str, label: str) -> str:
    """A report figure as inline SVG: text kept as text, ids prefixed (several figures share one page), each
    method's lines and band of class ``bm-<method>`` and the random order's ``bm-random-order`` (their gids,
    :data:`figures.METHOD_GID`), ``role="img"`` with ``label``."""
    import matplotlib

    buf = io.StringIO()
    with style.paper(), matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r'id="' + re.escape(figures.METHOD_GID) + r'([^"]*)"',
                 lambda m: f'class="bm bm-{slug(html.unescape(m.group(1)))}"', svg)
    svg = svg.replace(f'id="{figures.RANDOM_ORDER_GID}"', 'class="bm bm-random-order"')
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{_esc(label)}" ', 1)


def png_uri(rgb: np.ndarray, max_px: int = THUMB_PX) -> str:
    """An H×W×3 (or H×W) uint8 image as a ``data:image/png`` URI, downscaled to ``max_px`` on its longest side."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb))
    scale = max_px / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _input_rgb(im: np.ndarray) -> np.ndarray:
    a = np.clip(np.asarray(im, dtype=np.float64), 0, 1)
    a = a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
    return (a * 255 + 0.5).astype(np.uint8)


# -------------------------------------------------------------------------------------------------- tables


def _protocol_of(quantity: str) -> str:
    found = protocols.quantities().get(quantity)
    return found[0].name if found else ""


def _filters(df: pd.DataFrame, name: str) -> str:
    out = []
    for f in FILTERS:
        values = sorted({str(v) for v in df[f]}, key=lambda v: (len(v), v) if v.isdigit() else (0, v))
        options = "".join(f'<option value="{_esc(v)}">{_esc(v)}</option>' for v in values)
        out.append(f'<label>{f}<select data-filter="{f}" id="{name}-filter-{f}" aria-label="{f}">'
                   f'<option value="">all ({len(values)})</option>{options}</select></label>')
    return '<div class="filters">' + "".join(out) + '<span class="count" aria-live="polite"></span></div>'


TABLE_HEADS = ["Method", "Dataset", "Model", "Patch", "Protocol", "Quantity", "Condition", "Mean [95% CI]", "Images",
               "Δ vs top", "p (Holm) vs top", "Mark"]


def table_section(name: str, df: pd.DataFrame, caption: str, digits: int | None) -> str:
    """One table of the report, a row per row of its CSV: the cells of the Markdown table, sortable and
    filterable; ``data-value`` holds each number as the CSV has it."""
    df = df.reset_index(drop=True).assign(protocol=[_protocol_of(q) for q in df.quantity])
    decimals, marked = tables.marks(df, digits)  # as the .md/.tex tables mark them
    rows = []
    for i, r in df.iterrows():
        d = decimals[r.quantity]
        best = bool(marked[i])
        mark = ("best (top)" if r.is_top else "best (tied with the top)") if best else \
            ("top" if r.is_top else "")
        quantity = r["head"] if "head" in df.columns else tables.title(r.quantity)
        unit = f" [{r.unit}]" if str(r.unit) else ""
        cells = [
            f"<td>{_esc(str(r.label))}</td>", f"<td>{_esc(style.dataset_name(r.dataset))}</td>",
            f"<td>{_esc(str(r.model))}</td>", f'<td class="num" data-value="{_num(r.patch)}">{_esc(str(r.patch))}</td>',
            f"<td>{_esc(r.protocol)}</td>", f'<td title="{_esc(r.quantity)}">{_esc(quantity + unit)}</td>',
            f"<td>{_esc(str(r.get('condition', r.column)))}</td>",
            f'<td class="num mean" data-value="{_num(r["mean"])}" data-ci-low="{_num(r.ci_low)}" '
            f'data-ci-high="{_num(r.ci_high)}">{_esc(tables._cell(r, d, "−"))}</td>',
            f'<td class="num" data-value="{_num(r.n_images)}">{int(r.n_images)}</td>',
            f'<td class="num" data-value="{_num(r.mean_diff_vs_top)}">{_esc(tables.number(r.mean_diff_vs_top, d, "−"))}'
            f"</td>",
            f'<td class="num" data-value="{_num(r.p_holm)}">'
            f'{"" if not np.isfinite(r.p_holm) else f"{r.p_holm:.3g}"}</td>',
            f"<td>{_esc(mark)}</td>"]
        attrs = " ".join(f'data-{f}="{_esc(str(r[f]))}"' for f in FILTERS)
        rows.append(f'<tr{BEST_CLASS if best else ""} {attrs} data-run="{_esc(r.run)}" '
                    f'data-quantity="{_esc(r.quantity)}">' + "".join(cells) + "</tr>")
    heads = "".join(f'<th scope="col"><button type="button" class="sort">{_esc(h)}</button></th>'
                    for h in TABLE_HEADS)
    return (f'<div class="table-block" id="{name}"><h3>{_esc(name)} '
            f'<small>({name}.csv, .md, .tex)</small></h3>{_filters(df, name)}'
            f'<div class="scroll"><table data-table="{name}"><caption class="caption">{_esc(caption)}</caption>'
            f"<thead><tr>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></div>")


def tables_section(frames: dict[str, pd.DataFrame], digits: int | None) -> str:
    names = [n for n in ("faithfulness_table", "summary_table") if n in frames]
    names += [n for n in frames if n.endswith("_table") and n not in names]
    if not names:
        return '<section id="tables"><h2>Tables</h2><p>No table: the runs have no finite values.</p></section>'
    parts = []
    for n in names:
        df = frames[n]
        caption = tables.family_caption(df) if n == "faithfulness_table" else tables.caption(df)
        parts.append(table_section(n, df, caption, digits))
    return ('<section id="tables"><h2>Tables</h2><p class="caption">A row per run and quantity, the numbers of the '
            "CSV files; click a column head to sort, choose a dataset, model, patch or protocol to filter. Bold "
            "(highlighted): the best of its column as in the paper tables.</p>" + "".join(parts) + "</section>")


# -------------------------------------------------------------------------------------------------- curves


def curves_section(curves: list[tuple[str, str, str]], results: Results) -> str:
    """The curve figures (name, inline SVG, caption) with a checkbox per method."""
    if not curves:
        return '<section id="curves"><h2>Curves</h2><p>No curve figure.</p></section>'
    boxes = []
    for m in style.sort_methods(set(results.runs.method)):
        boxes.append(f'<label><input type="checkbox" checked data-curves="{slug(m)}" id="curves-{slug(m)}">'
                     f'<span class="swatch" style="background:{style.method_color(m)}"></span>'
                     f"{_esc(style.display_name(m))}</label>")
    boxes.append('<label><input type="checkbox" checked data-curves="random-order" id="curves-random-order">'
                 '<span class="swatch" style="background:#000"></span>random order (baseline)</label>')
    figs = [f'<figure id="fig-{slug(name)}"><div class="svg">{svg}</div><figcaption><strong>{_esc(name)}</strong>: '
            f"{_esc(caption)}</figcaption></figure>" for name, svg, caption in curves]
    return ('<section id="curves"><h2>Curves</h2><p class="caption">Every protocol\'s curves per condition: mean '
            "over images with the 95% bootstrap band; show or hide a method's lines and bands:</p>"
            f'<fieldset class="methods"><legend>methods</legend>{"".join(boxes)}</fieldset>{"".join(figs)}'
            "</section>")


# ------------------------------------------------------------------------------------------------- gallery


def _colorbar() -> str:
    import matplotlib

    from ..engine.render import COLORMAP

    cmap = matplotlib.colormaps[COLORMAP]
    stops = ", ".join(matplotlib.colors.to_hex(cmap(v)) for v in np.linspace(0, 1, 9))
    return (f'<span class="colorbar" style="background: linear-gradient(to right, {stops})" role="img" '
            f'aria-label="colour scale from −1 (blue) through 0 (white) to +1 (red)"></span>')


def _quantities_json(values: dict) -> str:
    """A cell's per-image quantities (4 significant digits) as JSON."""
    return json.dumps({k: (f"{v:.4g}" if isinstance(v, float) and np.isfinite(v) else str(v))
                       for k, v in values.items()}, separators=(",", ":"))


def gallery_section(results: Results, grid_images: int) -> str:
    """Methods × images per dataset (:func:`figures.heatmap_groups`: the heatmap grid's own selection)."""
    from ..engine.render import render_heatmap

    groups = figures.heatmap_groups(results, grid_images)
    if not groups:
        return '<section id="gallery"><h2>Heatmaps</h2><p>No heatmaps: the runs kept none.</p></section>'
    blocks = []
    for g, (title, runs, labels, images, maps, inputs) in enumerate(groups):
        heads = figures._column_heads(results, runs, results.runs, images)
        head = "".join(f'<th scope="col" class="col">{_esc(heads[i])}</th>' for i in images)
        rows = []
        if all(i in inputs for i in images):
            cells = "".join(f'<td><img class="input" data-image="{_esc(i)}" src="{png_uri(_input_rgb(inputs[i]))}" '
                            f'alt="input image {_esc(i)}"></td>' for i in images)
            rows.append(f'<tr class="inputs"><th scope="row" class="row">input</th>{cells}</tr>')
        method = results.runs.set_index("run").method
        for run in runs:
            q = results.run_quantities(run)
            cells = []
            for i in images:
                values = q.loc[i].to_dict() if q is not None and i in q.index else {}
                data = _quantities_json(values)  # (the script makes it the cell's title: shown on hover)
                label = labels[run]
                cells.append(f'<td><button type="button" class="cell" aria-pressed="false" data-run="{_esc(run)}" '
                             f'data-method="{_esc(method[run])}" data-image="{_esc(i)}" data-label="{_esc(label)}" '
                             f'data-q="{_esc(data)}">'
                             f'<img src="{png_uri(render_heatmap(maps[run][i]))}" '
                             f'alt="heatmap of {_esc(label)} for image {_esc(i)}"></button></td>')
            rows.append(f'<tr data-run="{_esc(run)}"><th scope="row" class="row">{_esc(labels[run])}</th>'
                        f'{"".join(cells)}</tr>')
        blocks.append(f'<div class="gallery-block" id="gallery-{g}"><h3>{_esc(style.dataset_name(title))}</h3>'
                      f'<div class="scroll"><table class="gallery"><thead><tr><th scope="col">method</th>{head}</tr>'
                      f'</thead><tbody>{"".join(rows)}</tbody></table></div>'
                      f'<div class="detail" aria-live="polite"><p>Click a heatmap: its image and per-image '
                      f"quantities.</p></div></div>")
    return ('<section id="gallery"><h2>Heatmaps</h2><p class="caption">Methods (rows) × the first '
            f"{grid_images} images that every method has (columns: id, class, the model's prediction), each heatmap "
            "divided by its largest |h| and coloured as the suite renders heatmaps to measure how complex they are "
            "(DEFINITIONS §5) "
            f"{_colorbar()} red positive, white 0, blue negative. Hover a heatmap for its per-image quantities, "
            "click it for its image.</p>" + "".join(blocks) + "</section>")


# ----------------------------------------------------------------------------------------------- the card


def card_section(rows: pd.DataFrame | None) -> str:
    if rows is None or rows.empty:
        return ""
    from .card import card_table
    from .card_report import caption

    parts = []
    for condition in rows.condition.unique():
        wide = card_table(rows[rows.condition == condition])
        head = "".join(f'<th scope="col">{_esc(str(c))}</th>' for c in ["quantity", *wide.columns])
        body = "".join("<tr>" + f'<th scope="row">{_esc(str(i))}</th>' + "".join(
            f'<td class="num">{_esc(str(v))}</td>' for v in r) + "</tr>" for i, r in zip(wide.index, wide.values))
        parts.append(f'<div class="scroll"><table class="card"><caption class="caption">'
                     f'{_esc(caption(rows, condition))}</caption><thead><tr>{head}</tr></thead><tbody>{body}'
                     f"</tbody></table></div>")
    return '<section id="card"><h2>Metric report card</h2>' + "".join(parts) + "</section>"


# --------------------------------------------------------------------------------------------- provenance


def job_statuses(dirs) -> pd.DataFrame:
    """Every job folder below ``dirs`` with its status and reason (bench/run/collect.py), the jobs a sweep
    expected but that never started (``missing``), and the jobs listed by a collection's jobs.csv."""
    from ..run.collect import COLLECTION, jobs_below

    roots = [Path(d).resolve() for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs)]
    roots = [r.parent if r.is_file() else r for r in roots]
    rows, seen = [], set()
    for root in roots:
        for j in jobs_below(root)[0]:
            key = str(j.path) if j.path is not None else f"{root}:{' '.join(j.overrides)}"
            if key in seen:
                continue
            seen.add(key)
            rows.append({"job": str(j.path) if j.path is not None else "", "status": j.status, "reason": j.reason,
                         "overrides": " ".join(j.overrides), "run_key": j.run_key or ""})
        for marker in sorted(root.rglob(COLLECTION)):
            listed = marker.parent / "jobs.csv"
            if not listed.is_file():
                continue
            try:
                base = Path(json.loads(marker.read_text())["root"])
                jobs_csv = pd.read_csv(listed, dtype=str, keep_default_na=False)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for r in jobs_csv.itertuples():
                path = str((base / r.job).resolve()) if r.job else ""
                key = path or f"{base}:{r.overrides}"
                if key in seen:
                    continue
                seen.add(key)
                rows.append({"job": path, "status": r.status, "reason": r.reason, "overrides": r.overrides,
                             "run_key": r.run_key})
    return pd.DataFrame(rows, columns=["job", "status", "reason", "overrides", "run_key"])


def _config_text(run_dir: Path, run_key: str, jobs: pd.DataFrame) -> str:
    """The run's resolved configuration (its job folder's config.yaml), when found."""
    candidates = [run_dir / "config.yaml"]
    if run_key:
        candidates += [Path(p) / "config.yaml" for p in jobs.loc[jobs.run_key == run_key, "job"] if p]
    for c in candidates:
        try:
            if c.is_file():
                return c.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
    return ""


def provenance_section(results: Results, jobs: pd.DataFrame) -> str:
    runs = results.runs
    status = {}
    for r in jobs.itertuples():
        if r.run_key and r.status in ("finished", "duplicate"):
            status.setdefault(r.run_key, r.status)
    cols = ["run", "status", "method", "dataset", "model", "patch", "metrics", "images", "seed"]
    extra = []
    rows = []
    for _, r in runs.iterrows():
        first = results.run_table(r.run)
        meta = first.iloc[0] if first is not None and len(first) else r
        extra = [c for c in PROVENANCE_COLUMNS if c in meta.index]
        values = {**{c: r.get(c, "") for c in cols}, **{c: meta[c] for c in extra}}
        values["status"] = "finished (in the tables)" + (" · duplicate condition" if r.get("duplicate") else "")
        config = _config_text(Path(r.dir), str(values.get("run_key", "")), jobs)
        details = json.dumps({c: (v.item() if hasattr(v, "item") else v) for c, v in r.items()}, indent=1,
                             default=str)
        cells = "".join(f"<td>{_esc(str(values[c]))}</td>" for c in cols + extra if c != "status")
        rows.append(f'<tr data-run="{_esc(r.run)}"><td class="status-finished">{_esc(values["status"])}</td>{cells}'
                    f'<td><details><summary>config</summary><pre>{_esc(config or "(no config.yaml found)")}</pre>'
                    f"<pre>{_esc(details)}</pre></details></td></tr>")
    head = "".join(f'<th scope="col">{_esc(c)}</th>' for c in ["status"] + [c for c in cols + extra if c != "status"]
                   + ["resolved config"])
    out = [f'<div class="scroll"><table class="provenance"><caption class="caption">The {len(runs)} run(s) in the '
           f"tables: their condition, device, versions, digests and wall time (s), as recorded in their tables; "
           f"the resolved configuration from the job folder.</caption><thead><tr>{head}</tr></thead><tbody>"
           f"{''.join(rows)}</tbody></table></div>"]
    other = jobs[jobs.status != "finished"]
    if len(other):
        body = "".join(f'<tr data-status="{_esc(r.status)}"><td class="status-{_esc(r.status)}">{_esc(r.status)}</td>'
                       f"<td>{_esc(r.job or '(no folder)')}</td><td>{_esc(r.overrides)}</td><td>{_esc(r.reason)}</td>"
                       f"</tr>" for r in other.itertuples())
        out.append(f'<div class="scroll"><table class="jobs"><caption class="caption">{len(other)} job(s) below the '
                   f"report's folders not in the tables: failed, incomplete (killed, timed out or running), missing "
                   f"(a sweep's job that never started) or duplicate.</caption><thead><tr><th scope=\"col\">status"
                   f'</th><th scope="col">job</th><th scope="col">overrides</th><th scope="col">reason</th></tr>'
                   f"</thead><tbody>{body}</tbody></table></div>")
    else:
        out.append("<p>Every job below the report's folders is in the tables (none failed, incomplete or "
                   "missing).</p>")
    return '<section id="provenance"><h2>Runs and provenance</h2>' + "".join(out) + "</section>"


def warnings_section(warnings: list[str]) -> str:
    if not warnings:
        return '<section id="warnings"><h2>Warnings</h2><p>None.</p></section>'
    items = "".join(f"<li>{_esc(w)}</li>" for w in dict.fromkeys(warnings))
    return f'<section id="warnings"><h2>Warnings</h2><ul class="warnings">{items}</ul></section>'


# -------------------------------------------------------------------------------------------------- page


def page(results: Results, frames: dict[str, pd.DataFrame], curves: list[tuple[str, str, str]], dirs,
         grid_images: int = 8, digits: int | None = None) -> str:
    """The whole page as text (see the module docstring)."""
    from .. import __version__

    jobs = job_statuses(dirs)
    sections = [tables_section(frames, digits), curves_section(curves, results), gallery_section(results, grid_images),
                card_section(frames.get("metric_card")), provenance_section(results, jobs),
                warnings_section(results.warnings)]
    nav = [("tables", "Tables"), ("curves", "Curves"), ("gallery", "Heatmaps")] + \
        ([("card", "Metric card")] if frames.get("metric_card") is not None else []) + \
        [("provenance", "Runs"), ("warnings", f"Warnings ({len(dict.fromkeys(results.warnings))})")]
    runs = results.runs
    problems = int((jobs.status != "finished").sum()) if len(jobs) else 0
    summary = (f"{len(runs)} runs · {runs.method.nunique()} methods · {runs.dataset.nunique()} dataset(s) · "
               f"{problems} job(s) not in the tables · bench {__version__}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>bench report explorer</title>"
            f"<style>{asset('explorer.css')}</style></head><body>"
            f"<header><h1>bench report explorer</h1><p>{_esc(summary)}</p></header>"
            "<nav aria-label=\"sections\">" + "".join(f'<a href="#{i}">{_esc(t)}</a>' for i, t in nav) + "</nav>"
            "<main>" + "".join(sections) + "</main>"
            f"<script>{asset('explorer.js')}</script></body></html>\n")


def write_html(out: Path, results: Results, frames: dict[str, pd.DataFrame], curves: list[tuple[str, str, str]],
               dirs, grid_images: int = 8, digits: int | None = None) -> Path:
    """Write ``out/index.html`` (atomically) and return its path."""
    from ..run.tables import write_text

    path = Path(out) / "index.html"
    write_text(page(results, frames, curves, dirs, grid_images, digits), path)
    return path
