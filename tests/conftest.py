import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Time limits of tests follow the machine's speed at the moment they are set (``scaled``): a test fails for a wrong
# result, never because the machine is busy. REFERENCE_S: the workload below on an idle 2-core machine (the best of
# 30 runs on the development machine, 2026-12-04).
REFERENCE_S = 0.046


def slowness() -> float:
    """How many times slower than the idle reference machine this one runs now (≥ 1): a fixed single-threaded
    workload, the median of 3 timings (a loaded machine shares its cores, so the workload takes longer)."""
    import statistics
    import time

    def once() -> float:
        start, total = time.perf_counter(), 0
        for i in range(1_000_000):
            total += i * i
        return time.perf_counter() - start

    return max(1.0, statistics.median(once() for _ in range(3)) / REFERENCE_S)


def scaled(seconds: float) -> float:
    """A time limit of ``seconds`` on the idle reference machine, for this machine as fast as it is now."""
    return seconds * slowness()


# Tests train the embedded CNN for one epoch (seconds) into a throw-away cache, shared by the session.
FAST_MODEL = ["model.params.epochs=1"]


def composed(overrides):
    """conf/config.yaml with Hydra overrides, as the CLI composes it (a DictConfig)."""
    from hydra import compose, initialize_config_dir

    from bench.plugins import CONF_DIR
    from bench.run.config import register_resolvers

    register_resolvers()  # ${bench_torchvision_input:…} and its siblings in conf/model/, the protocols' blocks
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def heatmaps_and_targets(tables, name: str):
    """An API run's image ids (in the order of table ``name``), their heatmaps (N, 1, H, W) from its
    ``heatmaps`` table and their explained classes: what a Quantus metric is handed in the agreement tests."""
    import numpy as np

    t = tables[name]
    ids = list(t.image_id.unique())
    heat = tables["heatmaps"].set_index("image_id").loc[ids]
    a = np.stack([np.asarray(h).reshape(hh, ww) for h, hh, ww in zip(heat.heatmap, heat.height, heat.width)])
    return ids, a[:, None], t.groupby("image_id", sort=False).target_class.first().loc[ids].to_numpy()


def quantus_scores(metric, model, x, target, heatmaps, softmax: bool, monkeypatch):
    """A Quantus 0.6 metric called on the CPU with its warnings silenced, as a NumPy array (np.trapz, which it
    calls and NumPy 2.4 removed, is np.trapezoid)."""
    import warnings

    import numpy as np

    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(metric(model=model, x_batch=x, y_batch=target, a_batch=heatmaps, device="cpu",
                                 softmax=softmax))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model-cache")
    os.environ["BENCH_CACHE_DIR"] = str(path)
    return path


@pytest.fixture
def run_cli(cache_dir, tmp_path):
    """Run ``python -m bench`` in a subprocess; returns (CompletedProcess, run_dir)."""
    def _run(*overrides, env=None, run_dir=None, fast_model=True):
        run_dir = run_dir or tmp_path / "run"
        args = [sys.executable, "-m", "bench", *(FAST_MODEL if fast_model else []), f"hydra.run.dir={run_dir}",
                *overrides]
        proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=scaled(300),
                              env={**os.environ, "BENCH_CACHE_DIR": str(cache_dir), **(env or {})})
        return proc, run_dir
    return _run


def bench_main(args, capsys) -> tuple[int, str, str]:
    """The real entry point (``bench`` / ``python -m bench``) in this process: (exit status, stdout, stderr)."""
    from bench.run.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def batch_sizes_and_two_shards(job, table: str, tmp_path):
    """Table ``table`` of the run ``job`` (overrides) computed at batch sizes 1, 7 and 64, and the same run as two
    shards (batch size 64) merged by collect: ({batch size: rows}, the merged rows). The one-job rows to compare
    the shards with are those of batch size 64."""
    import pandas as pd

    from bench.run.collect import collect
    from bench.run.job import run

    got = {}
    for bs in (1, 7, 64):
        run(composed([*job, f"batch_size={bs}"]), tmp_path / f"bs{bs}")
        got[bs] = pd.read_parquet(tmp_path / f"bs{bs}" / f"{table}.parquet")
    for shard in (0, 1):
        run(composed([*job, "batch_size=64", f"shard={shard}", "num_shards=2"]), tmp_path / "shards" / f"s{shard}")
    return got, collect(tmp_path / "shards", write=False).tables[table]


def assert_one_job(merged, whole) -> None:
    """Shards collected are exactly the rows one job wrote (but for the wall time)."""
    import pandas as pd

    keep = [c for c in whole.columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(merged[keep].reset_index(drop=True), whole[keep], check_exact=True)
