"""Sweeps through a real Slurm (hydra/launcher=slurm_cpu, bench/run/slurm.py): a grid collected through the
callback; a job cancelled after its first block, then the same command; a job requeued after its time
limit; a refused request; a job that fails. Tables are compared with the same sweep run here without Slurm.

The tests marked ``slurm`` need a running Slurm with accounting: ``sudo tests/slurm/start.sh`` starts a
single-node one (CI does; ``tests/slurm/stop.sh`` stops it). Without it they are skipped with that line —
unless ``BENCH_REQUIRE_SLURM=1`` (set by .ci/run), which makes a missing Slurm a failure.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.run import slurm
from bench.run.collect import collect

from conftest import FAST_MODEL, scaled

START = "tests/slurm/start.sh"


def _slurm_up() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout
        acct = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = out.split()  # idle, mix, alloc, comp (jobs ending): up; down, drain, fail …: not usable
    return any(s.startswith(("idle", "mix", "alloc", "comp")) for s in states) and acct.returncode == 0


@pytest.fixture(scope="module")
def cluster():
    if not _slurm_up():
        message = f"no running Slurm with accounting here; start one with: sudo {START}"
        if os.environ.get("BENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"BENCH_REQUIRE_SLURM=1 but {message}")
        pytest.skip(message)


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


SLURM = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.timeout_min=10"]


def sweep(*args, cwd, timeout=600):
    """``python -m bench -m …`` (the user's command) in a subprocess; ``timeout``: seconds on an idle machine
    (``scaled`` to the machine's speed now)."""
    return subprocess.run([sys.executable, "-m", "bench", "-m", *FAST_MODEL, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=scaled(timeout), env=dict(os.environ))


def tables(sweep_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for name in ("curves", "summary"):
        df = pd.read_parquet(sweep_dir / "collected" / f"{name}.parquet").drop(columns="wall_time_s")
        keys = [c for c in ("method", "patch", "image_id", "order", "k", "quantity") if c in df]
        out[name] = df.sort_values(keys).reset_index(drop=True)
    return out


def assert_same_tables(a: Path, b: Path) -> None:
    ta, tb = tables(a), tables(b)
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=True, obj=name)


def reference(args, tmp_path, cache_dir) -> Path:
    """The same sweep without Slurm (Hydra's basic launcher, one job after another)."""
    out = tmp_path / "reference"
    proc = sweep(*args, f"hydra.sweep.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return out


def reference_meanwhile(args, tmp_path):
    """``reference`` started now in the background on one thread — the core the Slurm job (cpus_per_task=1, so
    one thread) leaves free — so that it costs no extra time; ``.result()`` waits for it and returns its folder."""
    out = tmp_path / "reference"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "-m", *FAST_MODEL, *args, f"hydra.sweep.dir={out}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})

    class Pending:
        @staticmethod
        def result() -> Path:
            stdout, stderr = proc.communicate(timeout=scaled(900))
            assert proc.returncode == 0, stderr
            return out
    return Pending()


def slurm_jobs(sweep_dir: Path) -> list[str]:
    """Slurm job ids (``<array>_<task>``, or ``<job>`` alone) that ran for this sweep, from submitit's logs."""
    import re

    return sorted({re.sub(r"_\d+_log\.out$", "", p.name) for p in (sweep_dir / ".submitit").glob("*/*_log.out")})


def sized_for(seconds: float, job: list[str], tmp_path: Path) -> tuple[int, int]:
    """(n_images, steps) that make ``job`` compute for about ``seconds`` here (timed on 40 images, steps=25)."""
    probe = tmp_path / "probe"
    proc = sweep(*job, "n_images=40", "steps=25", f"hydra.sweep.dir={probe}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wall = float(pd.read_parquet(probe / "collected" / "curves.parquet").wall_time_s.iloc[0])
    setup = sum(a["setup_s"] for a in json.loads(next(probe.glob("*/job.json")).read_text())["attempts"])
    per_image = (wall - setup) / 40  # (the set-up may include training the embedded model)
    shutil.rmtree(probe)
    n = int(seconds / per_image)
    if n <= 1000:  # the embedded dataset's evaluation images
        return max(200, n // 25 * 25), 25
    return 1000, min(100, int(25 * n / 1000))


def errors(proc) -> list[str]:
    """The error lines of a command (besides them, stderr holds the log's list of the sweep's jobs)."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if not ln.startswith("[") and ln.strip()]


def wait_for(predicate, timeout: float, what: str):
    timeout = scaled(timeout)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ------------------------------------------------------------------------------------------ on Slurm

@pytest.mark.slurm
def test_grid_on_slurm_is_collected_and_a_finished_sweep_is_not_resubmitted(cluster, cache_dir, tmp_path):
    grid = ["method=random,sensitivity", "patch=3,7", "n_images=6", "steps=3", "block_size=3", "bootstrap=50"]
    out = tmp_path / "sweep"
    proc = sweep(*grid, *SLURM, f"hydra.sweep.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 job(s) submitted" in proc.stdout + proc.stderr
    assert "collected 4 run(s) from 4 job(s)" in proc.stdout and "4 finished" in proc.stdout
    ran = slurm_jobs(out)
    assert len(ran) == 4 and len({r.split("_")[0] for r in ran}) == 1  # one array of 4 tasks
    assert_same_tables(out, reference(grid, tmp_path, cache_dir))

    again = sweep(*grid, *SLURM, f"hydra.sweep.dir={out}", cwd=tmp_path)  # nothing submitted, collected again
    assert again.returncode == 0, again.stderr
    assert (again.stdout + again.stderr).count("finished already: not submitted") == 4
    assert "submitted;" not in again.stdout + again.stderr and slurm_jobs(out) == ran


@pytest.mark.slurm
def test_a_cancelled_job_is_listed_then_the_same_command_resumes_it(cluster, cache_dir, tmp_path):
    # job #0 is slow (batch_size=1: ~12 s on 2 cores) and cancelled after its first block; job #1 is quick
    grid = ["method=smoothgrad,random", "n_images=100", "block_size=5", "steps=10", "bootstrap=50"]
    out = tmp_path / "sweep"
    args = [*grid, "batch_size=1", *SLURM, f"hydra.sweep.dir={out}"]
    expected = reference_meanwhile([*grid, "batch_size=1"], tmp_path)
    first = subprocess.Popen([sys.executable, "-m", "bench", "-m", *FAST_MODEL, *args], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))

    def first_block():
        assert first.poll() is None, first.communicate()
        return list(out.glob("*method=smoothgrad*/parts/*.done.json"))

    slow = wait_for(first_block, 300, "the first finished block of the slow job")[0].parent.parent
    array = wait_for(lambda: slurm_jobs(out), 10, "submitit's job folders")[0].split("_")[0]
    subprocess.run(["scancel", f"{array}_0"], check=True)
    stdout, stderr = first.communicate(timeout=scaled(300))
    assert first.returncode == 1, stdout + stderr
    assert "1 not finished" in stdout + stderr or "1 incomplete" in stdout + stderr
    listed = [ln for ln in (stdout + stderr).splitlines() if ln.strip().startswith(f"{slow.name}:")]
    assert len(listed) == 1 and "ended by Slurm: CANCELLED" in listed[0] and f"(job {array}_0;" in listed[0], \
        stdout + stderr
    assert "block(s) done (killed, timed out or still running)" in listed[0]  # its process is gone
    assert "Traceback" not in stdout + stderr
    done_before = len(list((slow / "parts").glob("*.done.json")))
    assert 1 <= done_before < 20

    again = sweep(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "finished already: not submitted" in again.stdout + again.stderr  # the quick job is not resubmitted
    assert "1 job(s) submitted" in again.stdout + again.stderr
    manifest = json.loads((slow / "job.json").read_text())
    assert len(manifest["attempts"]) == 2
    assert_same_tables(out, expected.result())


@pytest.mark.slurm
def test_a_job_requeued_after_its_time_limit_resumes_to_the_same_tables(cluster, cache_dir, tmp_path):
    # batch_size=1 makes the job slow: sized here to ~60 s of compute on this machine, its time limit is 1 min.
    # Slurm sends SIGUSR2 `signal_delay_s` before the limit, but on its own ~30 s tick, so 10-50 s after the
    # start; submitit requeues the job, and each attempt resumes from the blocks finished before. The
    # reference is the same job without Slurm, at the same batch size (on the CPU, smoothgrad's curves at batch
    # sizes 1, 7 and 100 differ by up to ~1e-4 relative: the convolutions of other batch shapes take other paths).
    job = ["method=smoothgrad", "block_size=25", "bootstrap=50", "batch_size=1"]
    n_images, steps = sized_for(60.0, job, tmp_path)
    job += [f"n_images={n_images}", f"steps={steps}"]
    out = tmp_path / "sweep"
    expected = reference_meanwhile(job, tmp_path)
    proc = sweep(*job, *SLURM, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=10",
                 "hydra.launcher.max_num_timeout=10", f"hydra.sweep.dir={out}", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = next(p for p in out.iterdir() if (p / "job.json").exists())
    attempts = json.loads((folder / "job.json").read_text())["attempts"]
    assert len(attempts) >= 2, f"not requeued: {attempts}"
    assert "Requeued job" in "".join(p.read_text() for p in (out / ".submitit").glob("*/*_log.err"))
    assert_same_tables(out, expected.result())


@pytest.mark.slurm
def test_refused_requests_and_failing_jobs_are_one_line_each(cluster, cache_dir, tmp_path):
    grid = ["method=random,sensitivity", "n_images=4", "steps=2", "block_size=2", "bootstrap=50"]
    # more CPUs than any node has: refused by sbatch --test-only, nothing submitted, exit 2
    proc = sweep(*grid, *SLURM, "hydra.launcher.cpus_per_task=512", f"hydra.sweep.dir={tmp_path / 'a'}", cwd=tmp_path)
    err = errors(proc)
    assert proc.returncode == 2 and len(err) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert err[0].startswith("error: Slurm refuses the sweep's jobs") and "cpus_per_task" in err[0]
    assert "at most" in err[0] and not slurm_jobs(tmp_path / "a")
    # a GPU on a partition without GPUs: sbatch's own error, one line, exit 2
    proc = sweep(*grid, *SLURM, "hydra.launcher.gpus_per_node=1", f"hydra.sweep.dir={tmp_path / 'b'}", cwd=tmp_path)
    err = errors(proc)
    assert proc.returncode == 2 and len(err) == 1 and "gres" in err[0].lower(), proc.stderr
    # a partition that does not exist
    proc = sweep(*grid, *SLURM, "hydra.launcher.partition=nosuch", f"hydra.sweep.dir={tmp_path / 'c'}", cwd=tmp_path)
    err = errors(proc)
    assert proc.returncode == 2 and len(err) == 1 and "no partition 'nosuch'" in err[0], proc.stderr
    # a time limit above the partition's: accepted by sbatch, then pending for ever: cancelled, one line
    proc = sweep(*grid, *SLURM, "hydra.launcher.partition=short", "hydra.launcher.timeout_min=5",
                 f"hydra.sweep.dir={tmp_path / 'd'}", cwd=tmp_path)
    err = errors(proc)
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "never clears" in err[0] and "timeout_min=5 but its time limit is 1 min" in err[0]
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-p", "short"], capture_output=True, text=True).stdout,
             30, "the cancelled array to leave the queue")

    # a job refused by its own checks is not submitted; a job that fails on the node is listed; exit 1
    out = tmp_path / "e"
    proc = sweep("method=random,sensitivity", "n_images=4", "steps=2", "bootstrap=50", "block_size=2",
                 "+method.params.nosuch=1", *SLURM, f"hydra.sweep.dir={out}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "refused: not submitted" in proc.stdout + proc.stderr and not slurm_jobs(out)
    assert "2 failed" in proc.stderr and "takes no parameters, got ['nosuch']" in proc.stderr

    out = tmp_path / "f"  # device=cuda passes the check here (left to the node), fails on the CPU node
    proc = sweep("method=random,sensitivity", "n_images=4", "steps=2", "bootstrap=50", "block_size=2", "device=cuda",
                 *SLURM, f"hydra.sweep.dir={out}", cwd=tmp_path)
    assert proc.returncode == 1 and "2 job(s) submitted" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "2 failed" in proc.stderr and "device=cuda requested but CUDA is not available here" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------ no Slurm needed

def test_pending_reasons_that_never_clear():
    for reason in ("PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "QOSMaxCpuPerJobLimit",
                   "AssocMaxWallDurationPerJobLimit", "QOSMaxGRESPerJob", "InvalidAccount", "BadConstraints"):
        assert slurm.NEVER.match(reason), reason
    for reason in ("Resources", "Priority", "None", "ReqNodeNotAvail", "AssocGrpCpuLimit", "QOSGrpGRES",
                   "BeginTime", "Dependency", "JobArrayTaskLimit"):
        assert not slurm.NEVER.match(reason), reason


def test_slurm_words_and_time_limits():
    assert slurm._slurm_error("sbatch: error: Invalid generic resource (gres) specification\n") == \
        "Invalid generic resource (gres) specification"
    assert slurm._slurm_error("sbatch: error: Memory specification can not be satisfied\nsbatch: error: Batch job "
                              "submission failed: Requested node configuration is not available") == \
        "Requested node configuration is not available"
    assert slurm._slurm_error("allocation failure: Requested node configuration is not available") == \
        "allocation failure: Requested node configuration is not available"
    assert [slurm._minutes(t) for t in ("1:00", "30:00", "1:00:00", "2-00:00:00", "infinite", "0:30")] == \
        [1, 30, 60, 2880, None, 1]


def test_limits_are_named_from_sinfo(monkeypatch):
    answers = {"-o": "debug*|2|3900|(null)|1:00:00\ngpu|64|512000|gpu:a100:4(S:0-1)|2-00:00:00\n"}

    def fake_run(cmd, **kwargs):
        out = answers["-o"]
        if "-p" in cmd:
            out = "\n".join(ln for ln in out.splitlines() if ln.split("|")[0].rstrip("*") == cmd[cmd.index("-p") + 1])
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(slurm.subprocess, "run", fake_run)
    text = slurm._limit(dict(partition=None, cpus_per_task=8, tasks_per_node=1, mem_gb=32, gpus_per_node=1,
                             timeout_min=240))
    assert text == ("partition debug: cpus_per_task×tasks_per_node=8 but its nodes have at most 2 CPUs; mem_gb=32 "
                    "but its nodes have at most 3900 MB; gpus_per_node=1 but its nodes have no GPUs; timeout_min=240 "
                    "but its time limit is 60 min")
    assert slurm._limit(dict(partition="gpu", cpus_per_task=8, tasks_per_node=1, mem_gb=32, gpus_per_node=4,
                             timeout_min=240)) == ""
    assert "gpus_per_node=8 but its nodes have 4 GPUs" in slurm._limit(
        dict(partition="gpu", cpus_per_task=8, tasks_per_node=1, mem_gb=32, gpus_per_node=8, timeout_min=60))
    assert "no partition 'nosuch'" in slurm._limit(dict(partition="nosuch"))


def test_ended_jobs_are_named_in_the_collected_report(tmp_path):
    from bench.run.cli import CollectCallback, SWEEP
    from omegaconf import OmegaConf

    (tmp_path / "method=random").mkdir()
    (tmp_path / "method=random" / "job.json").write_text("{}")
    slurm.ENDED.clear()
    slurm.ENDED.by_dir[str((tmp_path / "method=random").resolve())] = "ended by Slurm: CANCELLED (job 7_0)"
    try:
        CollectCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    finally:
        slurm.ENDED.clear()
    job = next(j for j in SWEEP.collection.jobs if j.path.name == "method=random")
    assert job.status == "incomplete" and job.reason.startswith("ended by Slurm: CANCELLED (job 7_0); ")
    assert not SWEEP.collection.ok
