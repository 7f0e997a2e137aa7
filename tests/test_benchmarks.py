"""The benchmark scripts run and print their figures (their speed is not tested: they measure it)."""

import pytest

from bench.perf import engine as perf, methods as perf_methods


def test_engine_benchmark_runs_and_reports_every_figure(capsys):
    perf.main(["--images", "3", "--steps", "3", "--repeats", "1", "--rounds", "1", "--batch-size", "8",
               "--channels-last"])
    out = capsys.readouterr().out
    for line in ("plain forward", "engine (MoRF+random)", "engine efficiency", "channels-last"):
        assert line in out
    assert "(9 evaluations" in out or "(18 evaluations" in out  # 3 images × 2 orders × 1 repeat × L=3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_quantus_comparison_checks_the_curve_when_quantus_is_installed(precision, capsys):
    pytest.importorskip("quantus")  # a test dependency ([test] extra); skipped only outside it
    perf.main(["--images", "2", "--steps", "2", "--repeats", "1", "--rounds", "1", "--batch-size", "8",
               "--quantus", "--precision", precision])
    out = capsys.readouterr().out
    assert f"· {precision} ·" in out and "speed-up over quantus" in out
    assert f"tolerance {perf.curve_tolerance(precision):.3g} for {precision} with TF32 off" in out
    assert "same curve as quantus" in out and "(OK)" in out and "MISMATCH" not in out


def test_curve_tolerance_follows_the_precision():
    assert perf.curve_tolerance("fp32") == 1e-4
    assert perf.curve_tolerance("bf16") == 4 * 2.0**-7 and perf.curve_tolerance("fp16") == 4 * 2.0**-10


def test_method_benchmark_runs(capsys):
    perf_methods.main(["--model", "resnet18", "--size", "32", "--batch", "2", "--repeats", "1",
                       "--methods", "sensitivity,lrp_eps,lrp_composite"])
    out = capsys.readouterr().out
    assert "| lrp_composite |" in out and "× gradient" in out


def _keep_freed_memory_in_a_fresh_process(env_value):
    import os
    import subprocess
    import sys

    env = dict(os.environ, BENCH_KEEP_FREED_MEMORY=env_value)
    code = ("import torch; from bench.runtime import keep_freed_memory as k; applied = k();"
            "a = torch.arange(20_000_000, dtype=torch.float64); del a;"  # 160 MB: served from the heap now
            "b = torch.arange(20_000_000, dtype=torch.float64); assert float(b.sum()) == 19_999_999 * 1e7;"
            "print(applied, k())")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_freed_memory_is_kept_for_reuse_on_glibc_and_can_be_switched_off():
    import platform

    applied = _keep_freed_memory_in_a_fresh_process("1").split()
    assert applied[0] == applied[1]  # the second call reports the same state
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied[0] == "True"
    assert _keep_freed_memory_in_a_fresh_process("0").split() == ["False", "False"]


def test_imputation_benchmark_runs_and_agrees_with_quantus(capsys):
    from bench.perf import imputation as perf_imputation

    perf_imputation.main(["--size", "9", "--images", "2", "--channels", "2", "--fractions", "0.5", "--rounds", "1"])
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].split()[:2] == ["size", "frac"] and len(rows) == 2
    size, frac, systems, *_, diff = rows[1].split()
    assert (size, frac, systems) == ("9", "0.50", "4") and float(diff) <= 1e-6


def test_road_benchmark_runs(cache_dir, capsys):
    from bench.perf import road as perf_road

    perf_road.main(["--images", "3", "--rounds", "1", "model.params.epochs=1", "repeats=1", "road.fractions=[0.5]",
                    "method=sensitivity"])
    out = capsys.readouterr().out
    assert "3 images, 1 fractions" in out and "quantus ROAD (MoRF only)" in out and "speed-up" in out


def test_inpaint_benchmark_runs_and_the_solvers_agree(cache_dir, capsys):
    from bench.perf import inpaint as perf_inpaint

    perf_inpaint.main(["--images", "2", "--rounds", "1", "model.params.epochs=1", "method=sensitivity", "steps=5"])
    out = capsys.readouterr().out
    assert "2 images × 2 orders" in out and "inpainting alone" in out
    assert float(out.rsplit("largest curve difference", 1)[1]) <= 1e-4


def test_family_benchmark_runs(cache_dir, capsys):
    from bench.perf import family as perf_family

    perf_family.main(["--images", "2", "--rounds", "1", "--only", "aopc,deletion,insertion,faithfulness_correlation,irof",
                      "model.params.epochs=1", "method=sensitivity", "steps=3", "faithfulness_correlation.subsets=3",
                      "deletion.steps=4", "insertion.steps=4", "irof.n_segments=8"])
    out = capsys.readouterr().out
    assert "the model alone:" in out
    for name in ("aopc", "deletion", "faithfulness_correlation", "irof"):
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert line.count("×") == 2 or (name == "irof" and "×" in line), line
    assert "no Quantus counterpart" in out
