"""``python -m bench.report DIR [DIR ...] [--out OUT] [options]`` — see bench/report/build.py for the files."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import exit_with_cli_error
from .load import DUPLICATE_POLICIES


def quantities_by_protocol() -> dict[str, list[str]]:
    """Every declared quantity (bench/protocols/), by protocol, in catalogue order."""
    from .. import protocols

    out: dict[str, list[str]] = {}
    for name, (cls, _) in protocols.quantities().items():
        out.setdefault(cls.name, []).append(name)
    return out


def quantity_choices() -> list[str]:
    """What ``--quantity`` accepts: every quantity a protocol declares."""
    return [q for qs in quantities_by_protocol().values() for q in qs]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Figures (PDF, PNG), a summary table (Markdown, LaTeX, CSV) and index.html (a self-contained "
                    "results explorer) from the tables of one or many runs: every curves.parquet below the given "
                    "folders is read.")
    p.add_argument("dirs", nargs="+", help="results folders (a run, a sweep, or any folder above them)")
    p.add_argument("--out", help="output folder (default: <first DIR>/report); never in a job folder, nor a folder "
                                 "bench.collect wrote")
    p.add_argument("--baseline", default="random",
                   help="the relative figure (AOPC) relative to: 'random' (the random order of each run, TNNLS Fig. 4) "
                        "or a method name (its run of the same setting, paired by image)")
    p.add_argument("--patch-baseline", default="random",
                   help="the same for the per-patch-size figure (TNNLS Fig. 8 uses sensitivity)")
    p.add_argument("--quantity", default=None, choices=quantity_choices(), metavar="QUANTITY",
                   help="what the summary table reports per image: any quantity a protocol declares, as in "
                        "summary.csv — " + "; ".join(f"{name}: {', '.join(qs)}" for name, qs in
                                                    quantities_by_protocol().items())
                        + ". Default: the headline of the protocol every run computes, AOPC − random, and the "
                        "area-matched AOPC (DEFINITIONS §4 Unequal regions) for runs whose regions differ in size "
                        "(equal_regions false). Tables of a protocol's own (road_table.*) report its headline")
    p.add_argument("--reference", help="method on the x axis of the scatter figures (default: the first "
                                       "non-random method in catalogue order)")
    p.add_argument("--grid-images", type=int, default=8, help="images (columns) in the heatmap grid")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples for the 95%% intervals and bands "
                                                          "(default: each run's own bootstrap setting, so intervals "
                                                          "match its summary.csv; fewer than 100 give none)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: each run's own seed, so "
                                                          "intervals match its summary.csv)")
    p.add_argument("--duplicates", default="keep", choices=DUPLICATE_POLICIES,
                   help="runs of the same condition: keep all (labelled by run), keep the last, or stop")
    p.add_argument("--formats", default="pdf,png", help="comma-separated figure formats")
    p.add_argument("--digits", type=int, default=None, help="decimals in the Markdown/LaTeX table (default: by scale)")
    p.add_argument("--no-html", dest="html", action="store_false",
                   help="no index.html (the results explorer: one self-contained page of the tables, curves, "
                        "heatmaps, metric card and provenance, written by default)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from .build import make_report  # heavy imports after argument parsing

    if args.grid_images < 1 or (args.n_boot is not None and args.n_boot < 1):
        print("error: --grid-images and --n-boot must be positive", file=sys.stderr)
        return 2
    try:
        written = make_report(args.dirs, args.out, baseline=args.baseline, patch_baseline=args.patch_baseline,
                              quantity=args.quantity, reference=args.reference, grid_images=args.grid_images,
                              n_boot=args.n_boot, seed=args.seed, duplicates=args.duplicates,
                              formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
                              digits=args.digits, html=args.html)
    except Exception as exc:  # user errors, read-only or full disks: one line; bugs: their traceback
        return exit_with_cli_error(exc)
    for name, paths in written.items():
        print(f"{name}: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
