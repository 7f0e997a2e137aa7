"""The metric report card's cost (DEFINITIONS §10) — a benchmark, not a test:
``python -m bench.perf.card <sweep>/collected [--rounds 3]``, on a finished ``experiment=metric_card`` sweep.

Prints, from the runs' recorded wall times (``wall_time_s``: set-up and evaluation of each job):

* the plain sweep of the same methods and protocols — the reference runs (first seed, unrandomised, clean);
* the card's extra runs, by kind (further seeds, randomised models, noisy inputs) and their cost relative to the
  plain sweep;
* the card's statistics (per_image.parquet's table, then every criterion with its bootstrap), timed here in
  ``--rounds`` rounds (median), and their share of the whole card.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.card", description=__doc__.split("\n\n")[0])
    ap.add_argument("collected", help="the sweep's collected/ folder (python -m bench.collect)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    from ..report.card import metric_card, per_image_table
    from ..report.load import load_results
    from ..run.card_sweep import reference_runs

    results = load_results([args.collected], show_progress=False)
    runs = pd.read_csv(f"{args.collected}/summary.csv").drop_duplicates("run_key")
    kind = pd.Series("further seeds", index=runs.index)
    kind[reference_runs(runs).index] = "plain sweep"
    kind[runs.randomise_layers > 0] = "randomised models"
    kind[runs.input_noise > 0] = "noisy inputs"
    wall = runs.groupby(kind).wall_time_s.agg(["sum", "count"])
    stats_s = []
    for _ in range(args.rounds):
        results._quantities.clear()  # every round derives the per-image quantities from the tables again
        t = time.perf_counter()
        card = metric_card(per_image_table(results), results)
        stats_s.append(time.perf_counter() - t)
    plain = wall.loc["plain sweep", "sum"]
    total = wall["sum"].sum() + statistics.median(stats_s)
    images = int(runs.images.iloc[0])
    print(f"metric card of {args.collected}: {runs.method.nunique()} methods, {images} images, "
          f"{len(card.quantity.unique())} quantities, metrics={runs.metrics.iloc[0]}")
    for name in ("plain sweep", "further seeds", "randomised models", "noisy inputs"):
        if name in wall.index:
            s, n = wall.loc[name]
            print(f"  {name:18s} {int(n):3d} runs  {s:8.1f} s  ({s / plain:.2f}× the plain sweep)")
    print(f"  {'statistics':18s}           {statistics.median(stats_s):8.1f} s  (median of {args.rounds}; "
          f"{statistics.median(stats_s) / total:.1%} of the card's {total:.0f} s)")
    print(f"  card / plain sweep: {total / plain:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
