"""The job folder's owner (bench/run/jobdir.py): one process per folder (a second is refused at once, a killed
holder's lock is taken over and the rerun ends with the tables of an uninterrupted run), non-finite model
outputs never give a finished run over NaN, and a full or read-only disk ends in one line with the finished
blocks kept."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from bench.run import identity, jobdir
from bench.run.collect import collect

from conftest import FAST_MODEL, bench_main, scaled

SLOW_METHOD = textwrap.dedent("""
    import os, time
    from bench.interfaces import Method
    from bench.engine.seeding import rand_per_image

    class Slow(Method):
        def attribute(self, model, x, target, ctx):
            time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
            return rand_per_image(ctx.seed, "slow", list(ctx.image_ids), tuple(x.shape[1:])).to(x.device)
""")
JOB = [*FAST_MODEL, "method=slow", "n_images=6", "block_size=2", "batch_size=2", "steps=3", "repeats=1",
       "bootstrap=100"]


@pytest.fixture
def slow(tmp_path, monkeypatch, cache_dir):
    plugin = tmp_path / "plugin"
    (plugin / "methods").mkdir(parents=True)
    (plugin / "conf" / "method").mkdir(parents=True)
    (plugin / "methods" / "slow.py").write_text(SLOW_METHOD)
    (plugin / "conf" / "method" / "slow.yaml").write_text("name: slow\nplugin: slow\npooling: null\nparams: {}\n")
    monkeypatch.setenv("BENCH_PLUGIN_PATH", str(plugin))
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")
    return [*JOB, f"hydra.searchpath=[file://{plugin / 'conf'}]"]


def tables(folder):
    done = json.loads((folder / "DONE").read_text())
    return {n: pd.read_parquet(folder / e["file"]).drop(columns="wall_time_s") for n, e in done["tables"].items()}


def wait_for(path, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_one_process_per_folder_and_a_killed_holder_is_taken_over(slow, tmp_path, capsys):
    run_dir = tmp_path / "job"
    holder = subprocess.Popen([sys.executable, "-m", "bench", *slow, f"hydra.run.dir={run_dir}"],
                              env={**os.environ, "SLOW_SECONDS": "2"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_for(jobdir.block_marker(run_dir, 0), holder)
        # a second process on the same folder: refused at once, naming the holder; nothing of the folder touched
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
        start = time.monotonic()
        code, out, err = bench_main([*slow, f"hydra.run.dir={run_dir}"], capsys)
        assert code == 2 and err.count("\n") == 1 and f"is in use by pid {holder.pid} on host" in err, err
        assert time.monotonic() - start < scaled(10)
        assert all(p.read_bytes() == b for p, b in before.items())
        running = collect(run_dir, write=False).jobs[0]
        assert running.status == "incomplete" and f"running: pid {holder.pid}" in running.reason
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    assert (run_dir / ".lock").exists() and not (run_dir / "DONE").exists()
    # (how many blocks the killed holder finished depends on the machine's load: counted, not assumed)
    n_done = sum(jobdir.finished_block(run_dir, b, 2 * b, 2 * b + 2) is not None for b in range(3))
    assert n_done >= 1
    # the same command again: the dead holder's lock is taken over, the finished blocks kept
    code, out, err = bench_main([*slow, f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0 and "taking over stale lock" in err and f"{2 * n_done} already done" in err, err
    assert not (run_dir / ".lock").exists()
    reference = tmp_path / "reference"
    assert bench_main([*slow, f"hydra.run.dir={reference}"], capsys)[0] == 0
    resumed, uninterrupted = tables(run_dir), tables(reference)
    for name in uninterrupted:
        pd.testing.assert_frame_equal(resumed[name], uninterrupted[name], check_exact=True, obj=name)
    # wall time: every attempt's set-up and every finished block, whichever attempt computed it
    done, manifest = json.loads((run_dir / "DONE").read_text()), json.loads((run_dir / "job.json").read_text())
    assert done["attempts"] == 2 and len(manifest["attempts"]) == 2
    assert done["provenance"]["wall_time_s"] >= 2.0  # block 0, computed by the killed attempt, slept 2 s


NAN_MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        '''Logits of a fixed linear map; NaN (mode=some) for an image whose centre pixel is bright, and for a
        perturbed input whose corner pixel holds a uniform draw (not a multiple of 1/255); or always (all).'''
        def __init__(self, mode="some"):
            super().__init__()
            self.mode = mode
            self.lin = nn.Linear(784, 10)
            with torch.no_grad():
                self.lin.weight.copy_(torch.randn(10, 784, generator=torch.Generator().manual_seed(0)) * 0.05)

        def forward(self, x):
            out = self.lin(x.flatten(1))
            raw = x.flatten(1) * 0.3081 + 0.1307
            drawn = ((raw[:, 0] * 255 - (raw[:, 0] * 255).round()).abs() > 1e-3)
            bad = (raw[:, 14 * 28 + 14] > 0.5) | drawn
            bad = bad if self.mode == "some" else torch.ones(len(x), dtype=torch.bool)
            return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)
""")


@pytest.fixture
def nan_model(tmp_path, monkeypatch):
    (tmp_path / "nan_model.py").write_text(NAN_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["model=user", "model.params._target_=nan_model.Net", "model.params.checkpoint=random",
            "n_images=24", "steps=8", "repeats=2", "bootstrap=50", "method=sensitivity"]


def test_a_model_returning_nan_for_some_images(nan_model, tmp_path, capsys, cache_dir):
    run_dir = tmp_path / "run"
    code, out, err = bench_main([*nan_model, "+model.params.mode=some", f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0, err
    skipped = pd.read_csv(run_dir / "skipped.csv")
    assert len(skipped) > 0 and skipped.reason.str.contains("model's output for the unperturbed image").all()
    summary = pd.read_csv(run_dir / "summary.csv").set_index("quantity")
    n = 24 - len(skipped)
    assert summary.loc["nonfinite_scores", "n_images"] == n and summary.loc["nonfinite_scores", "mean"] > 0
    # images with a NaN perturbed score are left out of the AOPC quantities, and counted
    curves = pd.read_parquet(run_dir / "curves.parquet")
    hit = curves[curves.order == "random"].groupby("image_id").nonfinite.sum()
    assert 0 < (hit > 0).sum() < n and summary.loc["aopc_random", "n_images"] == n - (hit > 0).sum()
    assert summary["mean"].notna().all()
    assert "non-finite (NaN/inf) perturbed score(s)" in err and f"{len(skipped)} image(s) skipped" in err


def test_a_model_returning_nan_for_all_images(nan_model, tmp_path, capsys, cache_dir):
    run_dir = tmp_path / "run"
    code, out, err = bench_main([*nan_model, "+model.params.mode=all", f"hydra.run.dir={run_dir}"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: no image could be evaluated: all 24 were skipped")
    assert "model's output for the unperturbed image is not finite" in lines[-1]
    assert not (run_dir / "DONE").exists() and (run_dir / "FAILED").exists()
    assert collect(run_dir, write=False).jobs[0].status == "failed"


def test_a_full_disk_keeps_the_finished_blocks(slow, tmp_path, capsys, monkeypatch):
    import bench.run.tables

    run_dir = tmp_path / "job"
    real = bench.run.tables.atomic_write
    written = []

    def full_after_first_block(path, write):
        if "block-000001" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        return real(path, write)

    monkeypatch.setattr(bench.run.tables, "atomic_write", full_after_first_block)
    code, out, err = bench_main([*slow, f"hydra.run.dir={run_dir}"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: cannot write ") and "block-000001" in lines[-1]
    assert "No space left on device" in lines[-1] and "Traceback" not in err
    assert jobdir.finished_block(run_dir, 0, 0, 2) is not None and not (run_dir / ".lock").exists()
    monkeypatch.setattr(bench.run.tables, "atomic_write", real)
    code, out, err = bench_main([*slow, f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0 and "4 image(s) to compute, 2 already done" in err
    reference = tmp_path / "reference"
    assert bench_main([*slow, f"hydra.run.dir={reference}"], capsys)[0] == 0
    for name, table in tables(reference).items():
        pd.testing.assert_frame_equal(tables(run_dir)[name], table, check_exact=True, obj=name)


def test_a_read_only_folder_is_one_line(slow, tmp_path, capsys, monkeypatch):
    import bench.run.lock

    def read_only(self, token):
        raise OSError(errno.EROFS, "Read-only file system", str(self.folder / f".lock.tmp-{token}"))

    monkeypatch.setattr(bench.run.lock.JobLock, "_create", read_only)
    code, out, err = bench_main([*slow, f"hydra.run.dir={tmp_path / 'ro'}"], capsys)
    assert code == 2 and err.startswith(f"error: cannot write {tmp_path / 'ro'}") and err.count("\n") == 1, err
    assert "Read-only file system" in err


def test_report_errors_are_one_line(tmp_path, capsys):
    from bench.report.__main__ import main as report

    assert report([str(tmp_path), "--formats", "xyz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --formats: unknown figure format 'xyz'") and err.count("\n") == 1
    assert not (tmp_path / "report").exists()


def test_code_identity_follows_the_imports_of_the_code_that_computes_numbers():
    from bench.plugins import ROOT

    aopc = ROOT / "bench" / "protocols" / "aopc.py"  # every run computes it (its file is among the run's plug-ins)
    names = {str(f.relative_to(ROOT)) for f in identity.number_files([ROOT / "methods" / "lrp.py", aopc])}
    assert {"bench/engine/curves.py", "bench/engine/regions.py", "bench/engine/replacement.py", "bench/engine/seeding.py", "bench/engine/counter_rng.py",
            "bench/run/evaluate.py",
            "bench/run/summary.py", "bench/models/__init__.py", "bench/lrp/propagate.py", "bench/lrp/rules.py",
            "methods/lrp.py"} <= names
    orchestration = {"bench/run/cli.py", "bench/run/collect.py", "bench/run/job.py", "bench/run/jobdir.py", "bench/run/lock.py",
                     "bench/run/progress.py", "bench/report/build.py", "bench/perf/engine.py"}
    assert not names & orchestration


@pytest.fixture
def small_disk(tmp_path):
    """A real 96 KiB file system (tmpfs), to be filled or made read-only; needs root (CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root; the simulated full and read-only disks above cover the logic")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_real_full_then_read_only_disk(slow, small_disk, tmp_path, capsys):
    run_dir = small_disk / "job"
    code, out, err = bench_main([*slow, "save_heatmaps=6", f"hydra.run.dir={run_dir}"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: cannot write ") and "No space left on device" in lines[-1], err
    assert "Traceback" not in err and not (run_dir / "DONE").exists()
    kept = [b for b in range(3) if jobdir.finished_block(run_dir, b, 2 * b, 2 * b + 2)]
    assert kept and kept == list(range(len(kept)))  # the blocks finished before the disk was full are kept
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    code, out, err = bench_main([*slow, "save_heatmaps=6", f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0 and f"{2 * len(kept)} already done" in err, err
    reference = tmp_path / "reference"
    assert bench_main([*slow, "save_heatmaps=6", f"hydra.run.dir={reference}"], capsys)[0] == 0
    for name, table in tables(reference).items():
        pd.testing.assert_frame_equal(tables(run_dir)[name], table, check_exact=True, obj=name)
    # read-only: a new run folder and a report both end in one line naming the path
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    code, out, err = bench_main([*slow, f"hydra.run.dir={small_disk / 'other'}"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Read-only file system" in err and str(small_disk) in err, err
    from bench.report.__main__ import main as report

    assert report([str(reference), "--out", str(small_disk / "report"), "--formats", "png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {small_disk}") and err.count("\n") == 1, err
