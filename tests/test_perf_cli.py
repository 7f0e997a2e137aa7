"""Smoke test of the command-line benchmark (bench/perf/cli.py): one tiny real CLI run on CPU."""

import re

from bench.perf import cli as perf_cli


def test_perf_cli_reports_wall_time_rate_and_cpu_cores(capsys, tmp_path):
    perf_cli.main(["--images", "4", "--size", "64", "--patch", "16", "--steps", "3", "--repeats", "1",
                   "--batch-size", "64", "--device", "cpu", "--num-workers", "0", "--keep", str(tmp_path / "img"),
                   "--extra", "bootstrap=50"])
    out = capsys.readouterr().out
    assert re.search(r"^wall time\s+[\d.]+ s", out, re.M)
    # 4 images × 2 orders (morf, random) × 1 repeat × L = min(3, 16 regions of 64×64 at patch 16)
    assert re.search(r"^evaluations/s\s+[\d.]+\s+\(24 evaluations = 4 images × 2 orders × 1 repeats × L=3", out, re.M)
    assert re.search(r"^CPU busy cores\s+[\d.]+", out, re.M) and "paper scale (5040 images): ~" in out
    assert len(list((tmp_path / "img").glob("*/img_*.jpg"))) == 4
