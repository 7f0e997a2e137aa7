"""``make_report``: tables of one or many runs → every figure (PDF + PNG) and the summary tables (MD, TeX, CSV).

Which figures and tables there are follows from the protocols' declarations (bench/protocols/: ``figures``,
``quantities``, ``own_table``) and the tables the runs have. Files written to ``out`` (a name gets
``__<setting>`` appended when the setting that is neither a panel nor a line varies, e.g.
``aopc_vs_random__patch-4``):

=====================================  =================================================================
a protocol's ``relative`` figure       its value relative to the random order vs the % of pixels perturbed (area-
                                       matched for unequal regions), a panel per dataset
(``aopc_vs_random``)                   (TNNLS Fig. 4); ``…_by_patch`` a panel per patch size, when several (Fig. 8)
a protocol's ``orders`` figure         MoRF (and LeRF) curves f_c(x⁽ᵏ⁾) vs k with the random order
(``curves``)
``fraction`` figures (``road_curves``, curves vs the % of pixels changed, a panel per declared table and order
``deletion_insertion_curves``, …)
``scatter`` / ``box`` figures          per image one method against a reference, box plots per method (Fig. 5)
(``complexity_scatter``, …)
``heatmap_grid``                       images × methods heatmaps (Fig. 6), from heatmaps.parquet / .npz
``network_quality``                    test accuracy and a quantity vs training iterations (Fig. 7), when a table
                                       exists, and ``network_quality_correlations.csv`` (Pearson, Spearman)
``summary_table.{md,tex,csv}``         one quantity (``--quantity``, default AOPC − random) per method ×
                                       dataset/patch, best marked, paired tests
``<protocol>_table.{md,tex,csv}``      the same for the headline of a protocol that asks for it (``own_table``;
                                       ``road_table``: the ROAD gap), when the runs have it
``faithfulness_table.{md,tex,csv}``    the headline of every protocol of the faithfulness family the runs have:
                                       mean [95% CI] per method, best marked (by each quantity's direction)
``per_image.parquet``                  every run's per-image quantities, tidy (run identity, image_id, quantity,
                                       value, direction): what the metric card is computed from
``metric_card.{csv,md,tex,pdf,png}``   the metric report card (DEFINITIONS §10), when the runs have ≥ 3 methods
                                       with random (experiment=metric_card: every criterion; bench/report/card.py)
``runs.csv``                           the runs read: key, folder, condition, L, images, equal_regions, duplicate flag
``<figure>.caption.txt``               each figure's caption (what its lines and bands are), beside it
``warnings.txt``                       what was left out or ambiguous (duplicates, missing baselines, a name for
                                       two models or image sets, a column whose methods ran on other inputs or
                                       models, runs without a 95% interval), if any
``index.html``                         the results explorer (bench/report/html.py): one self-contained page that
                                       opens offline — the tables above (sortable, filterable, from the same
                                       DataFrames as the CSV files), every curve figure (each method's lines
                                       shown or hidden), the heatmap gallery with per-image quantities, the metric
                                       card, each run's provenance, failed and missing jobs, the warnings
                                       (``--no-html``: none, and an earlier report's page removed)
=====================================  =================================================================
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Callable

from .. import protocols
from ..errors import BenchError
from ..run.progress import progress
from ..run.tables import write_csv, write_text
from . import figures, style, table
from .load import Results, load_results
from .card_report import write_card
from .network import network_quality_figure

log = logging.getLogger(__name__)

FIG4_PANELS, FIG4_FILES = ["dataset", "model"], ["perturbation", "patch", "target", "score"]
FIG8_PANELS, FIG8_FILES = ["patch"], ["dataset", "model", "perturbation", "target", "score"]


#: The figure kinds drawn as curves (bench/report/figures.py): the explorer (index.html) shows them.
CURVE_KINDS = ("relative", "orders", "fraction")


def figure_jobs(results: Results, baseline: str, patch_baseline: str, reference: str | None, grid_images: int,
                n_boot: int, seed: int | None) -> list[tuple[str, str, Callable[[], list]]]:
    """(file name, figure kind, a function drawing its figures) for every figure the protocols declare (catalogue
    order; the ``fraction`` figures of one file once), then the heatmap grid (kind ``heatmap_grid``)."""
    jobs, seen = [], set()
    for cls in protocols.catalogue():
        for f in cls.figures:
            if f.kind == "relative":
                base = "random" if baseline == "random" else baseline
                jobs.append((f.file.format(baseline=base), f.kind,
                             partial(figures.relative_figures, results, FIG4_PANELS, FIG4_FILES, baseline, n_boot,
                                     seed, f)))
                if results.runs.patch.nunique() > 1:
                    jobs.append((f.file.format(baseline=patch_baseline) + "_by_patch", f.kind,
                                 partial(figures.relative_figures, results, FIG8_PANELS, FIG8_FILES, patch_baseline,
                                         n_boot, seed, f)))
            elif f.kind == "orders":
                jobs.append((f.file, f.kind, partial(figures.curve_figures, results, n_boot, seed, f)))
            elif f.kind == "fraction" and f.file not in seen:
                seen.add(f.file)
                jobs.append((f.file, f.kind, partial(figures.fraction_figures, results, f.file, n_boot, seed)))
            elif f.kind == "scatter":
                jobs.append((f.file, f.kind, partial(figures.scatter_figures, results, f, reference)))
            elif f.kind == "box":
                jobs.append((f.file, f.kind, partial(figures.box_figures, results, f)))
    jobs.append(("heatmap_grid", "heatmap_grid", partial(figures.heatmap_grid_figures, results, grid_images)))
    return jobs


def check_formats(formats) -> None:
    """Every figure format must be one matplotlib can write — checked before anything is written."""
    from matplotlib.figure import Figure

    known = Figure().canvas.get_supported_filetypes()
    bad = [f for f in formats if f not in known]
    if bad or not formats:
        raise BenchError(f"--formats: unknown figure format '{bad[0] if bad else ''}'; choose from "
                         f"{', '.join(sorted(known))}")


def refuse_out(out: Path, default: bool = False) -> None:
    """Refuse (one line) a report folder that is or lies in a job folder (whose files only its job writes; also
    through a link), or that is a folder ``python -m bench.collect`` wrote (its next collection removes the files
    it did not write, and the report's warnings.txt would replace collect's)."""
    from ..run.collect import COLLECTION, job_folder_of

    what = f"the report's {'default ' if default else ''}folder {out}"
    inside = job_folder_of(out)
    if inside is not None:
        raise BenchError(f"{what} lies in the job folder {inside}, whose files only its job writes; give --out a "
                         f"folder outside it")
    if (Path(out) / COLLECTION).exists():
        raise BenchError(f"{what} is a folder bench.collect wrote (its files are the collection's); give --out "
                         f"another folder, e.g. {Path(out) / 'report'}")


def make_report(dirs, out=None, *, baseline: str = "random", patch_baseline: str = "random",
                quantity: str | None = None, reference: str | None = None, grid_images: int = 8,
                n_boot: int | None = None, seed: int | None = None, duplicates: str = "keep",
                formats=("pdf", "png"), digits: int | None = None, show_progress: bool | None = None,
                results: Results | None = None, html: bool = True) -> dict[str, list[Path]]:
    """Read the runs below ``dirs`` and write the report to ``out`` (default ``<first dir>/report``).
    Returns {figure or table name: [files written]}. ``seed=None``: each run's own seed for its bootstrap.
    ``quantity``: what ``summary_table`` reports (default: the headline of the protocol every run computes).
    ``html``: also the explorer, ``index.html`` (bench/report/html.py)."""
    check_formats(formats)
    first = Path(dirs if isinstance(dirs, (str, Path)) else list(dirs)[0])
    default = out is None
    out = Path(out) if out is not None else (first.parent if first.is_file() else first) / "report"
    refuse_out(out, default)  # (before reading anything)
    results = results if results is not None else load_results(dirs, duplicates, show_progress)
    methods = set(results.runs.method)
    for option, name in (("baseline", baseline), ("patch baseline", patch_baseline), ("reference", reference)):
        if name not in (None, "random") and name not in methods:
            raise BenchError(f"{option} '{name}' is not a method of these runs; they have: "
                             f"{', '.join(style.sort_methods(methods))}")
    out.mkdir(parents=True, exist_ok=True)

    jobs = figure_jobs(results, baseline, patch_baseline, reference, grid_images, n_boot, seed)
    correlations = []
    if results.network is not None:
        def network_job():
            fig, corr = network_quality_figure(results.network)
            correlations.append(corr)
            return [("", fig)]
        jobs.append(("network_quality", "network", network_job))

    written: dict[str, list[Path]] = {}
    curves: list[tuple[str, str, str]] = []  # (name, inline SVG, caption) for the explorer
    for name, kind, make in progress(jobs, desc="report: figures", unit="fig", enabled=show_progress):
        for suffix, fig in make():
            written[name + suffix] = style.save_figure(fig, out, name + suffix, formats)
            if html and kind in CURVE_KINDS:
                from .html import figure_svg
                curves.append((name + suffix, figure_svg(fig, f"f{len(curves)}", name + suffix),
                               style.caption_of(fig)))
            if style.caption_of(fig):  # the caption beside the figure, never drawn into it
                write_text(style.caption_of(fig) + "\n", out / f"{name + suffix}.caption.txt")
                written[name + suffix].append(out / f"{name + suffix}.caption.txt")
    if correlations:
        write_csv(correlations[0], out / "network_quality_correlations.csv")
        written["network_quality_correlations"] = [out / "network_quality_correlations.csv"]

    frames: dict = {}  # the DataFrames the CSV tables are written from: the explorer shows the same
    written.update(table.write_tables(results, out, quantity, n_boot, seed, digits, frames=frames))
    written.update(write_card(results, out, formats, frames=frames))
    write_csv(results.runs, out / "runs.csv")
    written["runs"] = [out / "runs.csv"]
    if results.warnings:
        write_text("\n".join(dict.fromkeys(results.warnings)) + "\n", out / "warnings.txt")
        written["warnings"] = [out / "warnings.txt"]
    elif (out / "warnings.txt").exists():
        (out / "warnings.txt").unlink()  # from an earlier report of other tables
    if html:
        from .html import write_html
        written["index"] = [write_html(out, results, frames, curves, dirs, grid_images, digits)]
    elif (out / "index.html").exists():
        (out / "index.html").unlink()  # an earlier report's page: its numbers are not these tables'
    return written
