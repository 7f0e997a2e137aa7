"""Sweeps: multirun grids, folders named after overrides, launchers (basic, submitit_local; the Slurm config),
shards merging into the single-job table, collect (one tidy table, failed and missing jobs listed), and the
experiment presets."""

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from bench.run.collect import collect
from bench.run.config import dirname_of, sweep_name
from bench.run.tables import PROVENANCE

from conftest import FAST_MODEL, scaled

SMALL = ["n_images=3", "steps=2", "repeats=1", "bootstrap=50", "block_size=2"]


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch):
    """Other people edit the sources while tests run: pin the code identity that resume checks."""
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def cli(*args, cwd, module="bench", timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=scaled(timeout), env=dict(os.environ))


def in_process(overrides, out_dir):
    """One unsharded job run in this process (the reference for merged shards)."""
    from hydra import compose, initialize_config_dir

    from bench.plugins import CONF_DIR
    from bench.run.job import run

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return run(compose("config", overrides=[*FAST_MODEL, *overrides]), out_dir)


def without_wall_time(df):
    return df.drop(columns="wall_time_s").reset_index(drop=True)


BOOM = """
from bench.interfaces import Method

class Boom(Method):
    def attribute(self, model, x, target, ctx):
        raise RuntimeError("boom: a bug in a method")
"""


def test_multirun_grid_collects_into_one_table_and_lists_failed_and_missing_jobs(cache_dir, tmp_path):
    plugin = tmp_path / "plugin"
    (plugin / "methods").mkdir(parents=True)
    (plugin / "conf" / "method").mkdir(parents=True)
    (plugin / "methods" / "boom.py").write_text(BOOM)
    (plugin / "conf" / "method" / "boom.yaml").write_text("name: boom\nplugin: boom\npooling: null\n")
    sweep = tmp_path / "sweep"
    # 3 methods × 3 patches: the 2 × 2 grid random, sensitivity × patch 4, 7 runs; patch=29 does not fit the
    # 28×28 images (a one-line error) and `boom` crashes (a bug: traceback kept); the sweep goes on
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "-m", "method=random,sensitivity,boom", "patch=4,7,29", *FAST_MODEL, *SMALL,
         f"hydra.sweep.dir={sweep}", f"hydra.searchpath=[file://{plugin / 'conf'}]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=scaled(300), env={**os.environ, "BENCH_PLUGIN_PATH": str(plugin)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("error: patch=29 is larger than the 28×28 images") == 3
    assert "5 job(s) failed" in proc.stderr
    # … and ends with one comparison: methods × conditions
    comparison = proc.stdout[proc.stdout.index("comparison ("):]
    assert "patch=4 · AOPC − random [logit] ↑" in comparison and "patch=7 · AOPC − random [logit] ↑" in comparison
    assert [line.split()[0] for line in comparison.splitlines()[3:5]] == ["random", "sensitivity"], comparison

    # every job in a folder named after its overrides (no counter, no time: the same command finds it again)
    def name(m, p):
        return f"block_size=2,bootstrap=50,method={m},model.params.epochs=1,n_images=3,patch={p},repeats=1,steps=2"

    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name[0] != "." and p.name != "collected")
    assert jobs == sorted(name(m, p) for m in ("random", "sensitivity", "boom") for p in (4, 7, 29))
    assert (sweep / name("random", 29) / "FAILED").read_text().startswith("error: patch=29 is larger")
    crash = (sweep / name("boom", 4) / "FAILED").read_text()
    assert crash.startswith("error: RuntimeError: boom: a bug in a method") and "Traceback" in crash

    # collected by the multirun callback: one tidy table with all four finished combinations
    out = sweep / "collected"
    curves = pd.read_parquet(out / "curves.parquet")
    assert sorted(set(zip(curves.method, curves.patch))) == [("random", 4), ("random", 7), ("sensitivity", 4),
                                                              ("sensitivity", 7)]
    assert list(curves.columns[:len(PROVENANCE)]) == PROVENANCE and len(curves) == 4 * 3 * 2 * 3
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary.groupby(["method", "patch"])) == 4 and (summary.n_images == 3).all()
    for m, p in [("random", 4), ("sensitivity", 7)]:  # … each run's rows exactly as its job wrote them
        own = pd.read_parquet(sweep / name(m, p) / "curves.parquet")
        pd.testing.assert_frame_equal(curves[(curves.method == m) & (curves.patch == p)].reset_index(drop=True), own)
    table = pd.read_csv(out / "jobs.csv")
    assert sorted(table.status) == ["failed"] * 5 + ["finished"] * 4
    reasons = table[table.status == "failed"].set_index("job").reason
    assert reasons[name("sensitivity", 29)].startswith("patch=29 is larger")
    assert reasons[name("boom", 7)] == "RuntimeError: boom: a bug in a method"

    # collect as a separate step: the same files again (idempotent), exit status 1 because of the failures
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = cli(str(sweep), cwd=tmp_path, module="bench.collect")
    assert proc.returncode == 1 and "5 job(s) failed" in proc.stdout, proc.stdout + proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # a job whose folder vanished (never ran on the cluster) is listed as missing, with its overrides
    shutil.rmtree(sweep / name("random", 7))
    c = collect(sweep)
    missing = [j for j in c.jobs if j.status == "missing"]
    assert len(missing) == 1 and "method=random" in missing[0].overrides and "patch=7" in missing[0].overrides
    assert len(pd.read_parquet(out / "curves.parquet").groupby(["method", "patch"])) == 3 and not c.ok


def test_shards_on_submitit_local_merge_into_exactly_the_single_job_table(cache_dir, tmp_path):
    job = ["method=sensitivity", "n_images=5", "block_size=2", "steps=2", "repeats=1", "bootstrap=50",
           "save_heatmaps=3"]
    sweep = tmp_path / "shards"
    # the Slurm code path of hydra-submitit-launcher, run locally: one process per job
    proc = cli("-m", "shard=0,1", "num_shards=2", "hydra/launcher=submitit_local", *FAST_MODEL, *job,
               f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "collected 1 run(s) from 2 job(s)" in proc.stdout
    shards = sorted(p for p in sweep.iterdir() if (p / "job.json").exists())
    assert len(shards) == 2 and not any((p / "summary.csv").exists() for p in shards)  # no partial summaries
    assert sorted(len(list((p / "parts").glob("*.done.json"))) for p in shards) == [1, 2]  # 3 blocks split 1 + 2

    summary = in_process(job, tmp_path / "single")
    merged = {n: pd.read_parquet(sweep / "collected" / f"{n}.parquet") for n in ("curves", "heatmaps", "summary")}
    single = {n: pd.read_parquet(tmp_path / "single" / f"{n}.parquet") for n in ("curves", "heatmaps")}
    single["summary"] = summary
    for name in single:  # same rows, same order, same numbers (bit for bit); only the wall time differs
        pd.testing.assert_frame_equal(without_wall_time(merged[name]), without_wall_time(single[name]),
                                      check_exact=True, obj=name)
    assert merged["curves"].image_id.unique().tolist() == single["curves"].image_id.unique().tolist()

    # the unsharded job and the merged shards are the same run: collected once, the other marked duplicate
    shutil.move(str(tmp_path / "single"), str(sweep / "single"))
    c = collect(sweep, write=False)
    assert len(c.runs) == 1 and c.count("duplicate") == 1 and len(c.tables["curves"]) == 5 * 2 * 3

    # a shard that is lost makes the run incomplete: listed, its rows not passed off as the run's
    shutil.rmtree(sweep / "single")
    shutil.rmtree(shards[1])
    c = collect(sweep, write=False)
    assert not c.tables and not c.ok and c.count("missing") == 1
    assert any("not merged" in j.reason for j in c.jobs if j.status == "finished")


def test_folder_names_are_readable_and_collision_free():
    assert dirname_of("method=lrp_eps_0.01,patch=9") == "method=lrp_eps_0.01,patch=9"
    a, b = dirname_of("cache_dir=/a/b"), dirname_of("cache_dir=_a_b")
    assert "/" not in a and a != b and a.startswith("cache_dir=_a_b-")
    long = ",".join(f"key{i}=value{i}" for i in range(40))
    assert len(dirname_of(long)) <= 200 and dirname_of(long) != dirname_of(long + "x")
    assert sweep_name(["patch=3,9", "method=random,sensitivity"]) == "method=random,sensitivity__patch=3,9"
    assert sweep_name([]) == "default"


def test_experiments_and_launcher_configs_compose():
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from bench.plugins import CONF_DIR

    def grid(cfg):
        args = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
        return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)[0]

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=samek2017"], return_hydra_config=True)
        assert (cfg.patch, cfg.steps, cfg.repeats, cfg.perturbation.name, cfg.target, cfg.score) == \
            (9, 100, 10, "uniform", "predicted", "logit")
        assert [j[0] for j in grid(cfg)] == [f"method={m}" for m in (
            "random", "sensitivity", "sensitivity_linf", "deconvnet", "lrp_eps_0.01", "lrp_eps_100", "lrp_a2b1")]
        cfg = compose("config", overrides=["experiment=road"], return_hydra_config=True)
        assert list(cfg.metrics) == ["aopc", "road"] and cfg.road.noise == 0.01 and len(cfg.road.fractions) == 9
        assert [j[0] for j in grid(cfg)] == [f"method={m}" for m in (
            "random", "sensitivity", "lrp_eps", "integrated_gradients")]
        cfg = compose("config", overrides=["experiment=faithfulness"], return_hydra_config=True)
        assert list(cfg.metrics) == ["aopc", "srg", "pixel_flipping", "deletion", "insertion",
                                     "faithfulness_correlation", "road", "irof", "sensitivity_n", "infidelity"]
        assert list(cfg.orders) == ["morf", "lerf", "random"] and cfg.n_images == 200
        assert [j[0] for j in grid(cfg)] == [f"method={m}" for m in (
            "random", "sensitivity", "gradient_x_input", "deconvnet", "lrp_eps", "lrp_a1b0", "integrated_gradients")]
        cfg = compose("config", overrides=["experiment=samek2017_patches"], return_hydra_config=True)
        jobs = grid(cfg)
        assert len(jobs) == 5 * 5 and {j[1] for j in jobs} == {f"patch={p}" for p in (1, 3, 5, 9, 19)}
        assert ["method=lrp_eps", "patch=19"] in jobs and cfg.steps == 100 and cfg.repeats == 10
        # a method file with a dot in its name is an ordinary option (no quoting)
        assert compose("config", overrides=["method=lrp_eps_0.01"]).method.name == "lrp_eps_0.01" \
            if (CONF_DIR / "method" / "lrp_eps_0.01.yaml").exists() else True
        cfg = compose("config", overrides=["hydra/launcher=slurm_1gpu", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
        launcher = cfg.hydra.launcher
        assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1
        assert (launcher.partition, launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb) == \
            ("gpu", 240, 8, 32)
        assert launcher.array_parallelism == 64 and launcher.max_num_timeout == 3
        assert launcher._target_ == "hydra_plugins.bench_slurm.SlurmLauncher"  # bench/run/slurm.py, registered
        cpu = compose("config", overrides=["hydra/launcher=slurm_cpu"], return_hydra_config=True).hydra.launcher
        assert cpu._target_ == launcher._target_ and cpu.gpus_per_node is None and (cpu.cpus_per_task, cpu.mem_gb) == (2, 4)
        for name in ("joblib", "submitit_local", "submitit_slurm"):
            compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)


def _finished_job(job_dir, key, curves):
    """A finished unsharded job folder as bench/run/job.py leaves it (markers, manifest, tables)."""
    from bench.run.jobdir import file_digest
    from bench.run.tables import write_json

    job_dir.mkdir(parents=True)
    curves.to_parquet(job_dir / "curves.parquet", index=False)
    pd.DataFrame({"quantity": ["aopc_morf"], "mean": [float(curves.aopc.mean())]}).to_csv(job_dir / "summary.csv",
                                                                                           index=False)
    write_json({"run_key": key, "run_config": {"method": {"name": key}}, "shard": 0, "num_shards": 1,
                "blocks": [0, 1], "n_images": 1, "block_size": 1}, job_dir / "job.json")
    write_json({"run_key": key, "shard": 0, "num_shards": 1,
                "tables": {"curves": {"file": "curves.parquet", "digest": file_digest(job_dir / "curves.parquet")}},
                "summary": "summary.csv", "digests": {"summary": file_digest(job_dir / "summary.csv")},
                "provenance": {}, "block_spans": [[0, 0, 1]]}, job_dir / "DONE")


def test_collect_streams_runs_of_different_schemas_and_is_idempotent(tmp_path):
    root = tmp_path / "results"
    _finished_job(root / "a", "a", pd.DataFrame({"method": ["a", "a"], "aopc": [1.0, 2.0], "step": [0, 1]}))
    _finished_job(root / "b", "b", pd.DataFrame({"method": ["b"], "aopc": [3.0]}))        # a column less
    _finished_job(root / "c", "c", pd.DataFrame({"method": ["c"], "aopc": [4], "step": [0], "new": ["x"]}))  # more
    _finished_job(root / "d", "a", pd.DataFrame({"method": ["a", "a"], "aopc": [1.0, 2.0], "step": [0, 1]}))  # = a
    (root / "e").mkdir()
    (root / "e" / "FAILED").write_text("error: CUDA out of memory\nTraceback …\n")
    c = collect(root)
    curves = pd.read_parquet(root / "collected" / "curves.parquet")
    assert curves.method.tolist() == ["a", "a", "b", "c"] and curves.aopc.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert curves.new.tolist()[-1] == "x" and curves.step.isna().tolist() == [False, False, True, False]
    assert [(j.path.name, j.status) for j in c.jobs] == [("a", "finished"), ("b", "finished"), ("c", "finished"),
                                                         ("d", "duplicate"), ("e", "failed")]
    assert c.jobs[-1].reason == "CUDA out of memory" and not c.ok
    files = {p.name: p.read_bytes() for p in (root / "collected").iterdir()}
    (root / "collected" / "stale.parquet").write_bytes(b"from an earlier collection")
    collect(root)  # again: same files, the stale one removed, and its own output never collected as a job
    assert {p.name: p.read_bytes() for p in (root / "collected").iterdir()} == files
    assert len(collect(tmp_path, write=False).runs) == 3
