"""Resume: a job killed at any point (SIGKILL) and started again with the same command keeps its finished
blocks, recomputes only the rest, and ends with the tables of an uninterrupted run. Partial files never
pass for finished ones, and a folder holding another configuration is refused in one line."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from bench.run.collect import collect
from bench.errors import BenchError

from conftest import FAST_MODEL, scaled

# A seeded random heatmap that takes its time (so the job can be killed between blocks) and logs which
# images it explained (to show that a resumed job does not recompute the finished blocks).
SLOW_METHOD = textwrap.dedent("""
    import os, time
    from bench.interfaces import Method
    from bench.engine.seeding import rand_per_image

    class Slow(Method):
        def attribute(self, model, x, target, ctx):
            with open(os.environ["SLOW_LOG"], "a") as f:
                f.write("".join(f"{i}\\n" for i in ctx.image_ids))
            time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
            return rand_per_image(ctx.seed, "slow", list(ctx.image_ids), tuple(x.shape[1:])).to(x.device)
""")
# 6 images in 3 blocks of 2; heatmaps kept for the first 3 (a table that spans two blocks)
JOB = ["method=slow", "n_images=6", "block_size=2", "batch_size=2", "steps=3", "repeats=1", "bootstrap=100",
       "save_heatmaps=3"]


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch):
    """Other people edit the sources while tests run: pin the code identity that resume checks."""
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


@pytest.fixture
def slow(tmp_path):
    plugin = tmp_path / "plugin"
    (plugin / "methods").mkdir(parents=True)
    (plugin / "conf" / "method").mkdir(parents=True)
    (plugin / "methods" / "slow.py").write_text(SLOW_METHOD)
    (plugin / "conf" / "method" / "slow.yaml").write_text("name: slow\nplugin: slow\npooling: null\nparams: {}\n")
    return plugin


def _cli(slow, run_dir, log, seconds, *extra):
    args = [sys.executable, "-m", "bench", *FAST_MODEL, *JOB, f"hydra.searchpath=[file://{slow / 'conf'}]",
            f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "BENCH_PLUGIN_PATH": str(slow), "SLOW_LOG": str(log), "SLOW_SECONDS": str(seconds)}
    return args, env


def _compose(slow, *extra):
    from hydra import compose, initialize_config_dir

    from bench.plugins import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*FAST_MODEL, *JOB, f"hydra.searchpath=[file://{slow / 'conf'}]", *extra])


def _tables(run_dir):
    """The job's final tables without the one column that differs between any two runs (wall time)."""
    out = {name: pd.read_parquet(run_dir / f"{name}.parquet") for name in ("curves", "heatmaps")}
    out["summary"] = pd.read_csv(run_dir / "summary.csv")
    return {k: v.drop(columns="wall_time_s") for k, v in out.items()}


def test_sigkilled_job_resumes_to_the_uninterrupted_result(cache_dir, slow, tmp_path, monkeypatch):
    run_dir = tmp_path / "job"
    args, env = _cli(slow, run_dir, tmp_path / "attempt1.log", 1.0)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = run_dir / "parts" / "block-000000.done.json"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=scaled(60))
    assert proc.returncode == -signal.SIGKILL, err  # killed in the middle of block 1 (each block sleeps 1 s)
    assert first.exists() and not (run_dir / "DONE").exists() and not (run_dir / "curves.parquet").exists()

    # collect sees an unfinished job, not a result
    c = collect(tmp_path, write=False)
    (job,) = c.jobs
    assert job.status == "incomplete" and "1 of 3 block(s) done" in job.reason and not c.tables

    # what a kill can leave behind must not pass for finished: a part file without its marker (garbage),
    # a temporary file of an interrupted atomic write, a marker of another layout
    (run_dir / "parts" / "block-000001.curves.parquet").write_bytes(b"half a parquet file")
    (run_dir / "parts" / ".block-000001.done.json.abc.tmp").write_text("{")
    (run_dir / "parts" / "block-000002.done.json").write_text(json.dumps({"block": 2, "start": 4, "stop": 5}))

    args, env = _cli(slow, run_dir, tmp_path / "attempt2.log", 0)
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr
    assert "4 image(s) to compute, 2 already done" in proc.stdout + proc.stderr
    done = json.loads((run_dir / "DONE").read_text())
    assert done["n_images"] == 6 and not (run_dir / "parts").exists()
    # the resumed attempt explained only the images of the unfinished blocks (2…5)
    first_block = set((tmp_path / "attempt1.log").read_text().split()[:2])
    second = (tmp_path / "attempt2.log").read_text().split()
    assert len(first_block) == 2 and not first_block & set(second) and len(second) == 4

    # an uninterrupted run of the same job (in-process) gives identical tables
    monkeypatch.setenv("BENCH_PLUGIN_PATH", str(slow))
    monkeypatch.setenv("SLOW_LOG", str(tmp_path / "reference.log"))
    from bench.run.job import run

    run(_compose(slow), tmp_path / "reference")
    resumed, reference = _tables(run_dir), _tables(tmp_path / "reference")
    for name in reference:
        pd.testing.assert_frame_equal(resumed[name], reference[name], check_exact=True, obj=name)
    assert len(reference["curves"]) == 6 * 2 * 4 and len(reference["heatmaps"]) == 3

    # started again when finished: nothing is recomputed
    assert run(_compose(slow), run_dir) is not None
    assert (tmp_path / "attempt2.log").read_text().split() == second

    # another configuration in the same folder is refused, in one line, and the results are kept
    with pytest.raises(BenchError, match=r"already holds results of a different configuration \(steps=3 there, "
                                         r"4 now\); rerun with resume=false"):
        run(_compose(slow, "steps=4"), run_dir)
    with pytest.raises(BenchError, match="shard 0 of num_shards=1"):
        run(_compose(slow, "shard=1", "num_shards=2"), run_dir)
    assert (run_dir / "DONE").exists()
    # … unless resume=false: recomputed from scratch, runtime keys (batch_size) may differ
    run(_compose(slow, "steps=4", "resume=false", "batch_size=4"), run_dir)
    assert pd.read_parquet(run_dir / "curves.parquet").step.max() == 4


def test_runtime_keys_do_not_block_resume_and_blocks_never_cross(cache_dir, slow, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_PLUGIN_PATH", str(slow))
    monkeypatch.setenv("SLOW_LOG", str(tmp_path / "log"))
    from bench.run.job import run
    from bench.run.spec import build_spec as spec_of

    job = spec_of(_compose(slow, "n_images=7", "block_size=3", "shard=1", "num_shards=2"))
    assert job.blocks() == [(1, 3, 6), (2, 6, 7)]  # 3 blocks; shard 1 of 2 takes the last two
    with pytest.raises(BenchError, match="num_shards=4 but n_images=6 makes only 3 block"):
        spec_of(_compose(slow, "num_shards=4"))
    with pytest.raises(BenchError, match="shard must be an integer with 0 ≤ shard < num_shards=2"):
        spec_of(_compose(slow, "shard=2", "num_shards=2"))
    # an attempt that dies after its last block but before DONE; started again with other runtime keys
    # (batch_size, num_workers), it only assembles the blocks
    import bench.run.job

    def crash(*args, **kwargs):
        raise RuntimeError("killed before the end")

    run_dir, finish = tmp_path / "job", bench.run.job._finish
    monkeypatch.setattr(bench.run.job, "_finish", crash)
    with pytest.raises(RuntimeError):
        run(_compose(slow, "batch_size=1"), run_dir)
    monkeypatch.setattr(bench.run.job, "_finish", finish)
    explained = (tmp_path / "log").read_text()
    assert len(explained.split()) == 6 and not (run_dir / "DONE").exists()
    # blocks computed by other code are never continued
    monkeypatch.setenv("BENCH_CODE_VERSION", "edited")
    with pytest.raises(BenchError, match="results computed by different code"):
        run(_compose(slow), run_dir)
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")
    assert run(_compose(slow, "batch_size=5", "num_workers=0"), run_dir) is not None
    assert (tmp_path / "log").read_text() == explained and (run_dir / "DONE").exists()
