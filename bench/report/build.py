"""``make_report``: tables of one or many runs → every figure (PDF + PNG) and the summary table (MD, TeX, CSV).

Files written to ``out`` (a name gets ``__<setting>`` appended when the setting that is neither a panel
nor a line varies, e.g. ``aopc_vs_random__patch-4``):

=================================  =====================================================================
``aopc_vs_random``                 AOPC − AOPC(random order) vs L, a panel per dataset (TNNLS Fig. 4)
``aopc_vs_<baseline>_by_patch``    the same, a panel per patch size, when several (Fig. 8)
``curves``                         MoRF (and LeRF) curves f_c(x⁽ᵏ⁾) vs k with the random order
``road_curves``                    ROAD MoRF and LeRF curves vs the fraction removed (runs with a road table)
``deletion_insertion_curves``      deletion and insertion curves vs the % of pixels changed (runs with them)
``complexity_scatter``             per-image PNG size, method vs reference, with the diagonal (Fig. 5 top)
``complexity_entropy``             entropy box plots per method (Fig. 5 bottom)
``heatmap_grid``                   images × methods heatmaps (Fig. 6), from heatmaps.parquet / .npz
``network_quality``                accuracy and AOPC vs training iterations (Fig. 7), when a table exists,
                                   and ``network_quality_correlations.csv`` (Pearson, Spearman)
``summary_table.{md,tex,csv}``     AOPC [95% CI] per method × dataset/patch, best marked, paired tests
``road_table.{md,tex,csv}``        the same for the ROAD gap AUC(LeRF) − AUC(MoRF) (runs with a road table)
``faithfulness_table.{md,csv}``    every protocol the runs have (AOPC − random, SRG, deletion and insertion AUC,
                                   ROAD gap, faithfulness correlation): mean [95% CI] per method, best marked
``runs.csv``                       the runs read: key, folder, condition, L, images, duplicate flag
``warnings.txt``                   what was left out or ambiguous (duplicates, missing baselines), if any
=================================  =====================================================================
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import style
from ..errors import BenchError
from ..progress import progress
from ..tables import atomic_write, write_csv
from . import figures, table
from .load import Results, load_results
from .network import network_quality_figure

log = logging.getLogger(__name__)

FIG4_PANELS, FIG4_FILES = ["dataset", "model"], ["perturbation", "patch", "target", "score"]
FIG8_PANELS, FIG8_FILES = ["patch"], ["dataset", "model", "perturbation", "target", "score"]


def _write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    atomic_write(path, write)


def check_formats(formats) -> None:
    """Every figure format must be one matplotlib can write — checked before anything is written."""
    from matplotlib.figure import Figure

    known = Figure().canvas.get_supported_filetypes()
    bad = [f for f in formats if f not in known]
    if bad or not formats:
        raise BenchError(f"--formats: unknown figure format '{bad[0] if bad else ''}'; choose from "
                         f"{', '.join(sorted(known))}")


def make_report(dirs, out=None, *, baseline: str = "random", patch_baseline: str = "random",
                quantity: str = "aopc_morf_minus_random", reference: str | None = None, grid_images: int = 8,
                n_boot: int = 1000, seed: int | None = None, duplicates: str = "keep",
                formats=("pdf", "png"), digits: int | None = None, show_progress: bool | None = None,
                results: Results | None = None) -> dict[str, list[Path]]:
    """Read the runs below ``dirs`` and write the report to ``out`` (default ``<first dir>/report``).
    Returns {figure or table name: [files written]}. ``seed=None``: each run's own seed for its bootstrap."""
    check_formats(formats)
    results = results if results is not None else load_results(dirs, duplicates, show_progress)
    first = Path(dirs if isinstance(dirs, (str, Path)) else list(dirs)[0])
    out = Path(out) if out is not None else (first.parent if first.is_file() else first) / "report"
    methods = set(results.runs.method)
    for option, name in (("baseline", baseline), ("patch baseline", patch_baseline), ("reference", reference)):
        if name not in (None, "random") and name not in methods:
            raise BenchError(f"{option} '{name}' is not a method of these runs; they have: "
                             f"{', '.join(style.sort_methods(methods))}")
    out.mkdir(parents=True, exist_ok=True)

    jobs = [("aopc_vs_" + ("random" if baseline == "random" else baseline),
             lambda: figures.relative_figures(results, FIG4_PANELS, FIG4_FILES, baseline, n_boot, seed)),
            ("curves", lambda: figures.curve_figures(results, n_boot, seed)),
            ("road_curves", lambda: figures.protocol_figures(results, "road", n_boot, seed)),
            ("deletion_insertion_curves", lambda: figures.protocol_figures(results, "deletion_insertion", n_boot, seed)),
            ("pixel_flipping_curves", lambda: figures.protocol_figures(results, "pixel_flipping", n_boot, seed))]
    if results.runs.patch.nunique() > 1:
        jobs.append((f"aopc_vs_{patch_baseline}_by_patch",
                     lambda: figures.relative_figures(results, FIG8_PANELS, FIG8_FILES, patch_baseline, n_boot, seed)))
    jobs += [("complexity_scatter", lambda: figures.complexity_scatter_figures(results, reference)),
             ("complexity_entropy", lambda: figures.entropy_figures(results)),
             ("heatmap_grid", lambda: figures.heatmap_grid_figures(results, grid_images))]
    correlations = []
    if results.network is not None:
        def network_job():
            fig, corr = network_quality_figure(results.network)
            correlations.append(corr)
            return [("", fig)]
        jobs.append(("network_quality", network_job))

    written: dict[str, list[Path]] = {}
    for name, make in progress(jobs, desc="report: figures", unit="fig", enabled=show_progress):
        for suffix, fig in make():
            written[name + suffix] = style.save_figure(fig, out, name + suffix, formats)
    if correlations:
        write_csv(correlations[0], out / "network_quality_correlations.csv")
        written["network_quality_correlations"] = [out / "network_quality_correlations.csv"]

    tables = [("summary_table", quantity, "tab:aopc")]
    if results.road is not None:
        tables.append(("road_table", "road_gap", "tab:road"))
    for name, q, label in tables:
        summary = table.summary_table(results, q, n_boot, seed)
        if not summary.empty:
            write_csv(summary, out / f"{name}.csv")
            _write_text(out / f"{name}.md", table.to_markdown(summary, digits))
            _write_text(out / f"{name}.tex", table.to_latex(summary, digits, label=label))
            written[name] = [out / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    family = table.family_table(results, n_boot, seed)
    if family is not None:
        write_csv(family, out / "faithfulness_table.csv")
        _write_text(out / "faithfulness_table.md", table.family_markdown(family, digits))
        written["faithfulness_table"] = [out / f"faithfulness_table.{ext}" for ext in ("csv", "md")]
    write_csv(results.runs, out / "runs.csv")
    written["runs"] = [out / "runs.csv"]
    if results.warnings:
        _write_text(out / "warnings.txt", "\n".join(dict.fromkeys(results.warnings)) + "\n")
        written["warnings"] = [out / "warnings.txt"]
    elif (out / "warnings.txt").exists():
        (out / "warnings.txt").unlink()  # from an earlier report of other tables
    return written
