"""Bad input, tried as a new user and as an attacker would: every case ends in exit status 2 and one line on
stderr, no traceback, and a finished run living in the same folder is byte-identical afterwards and still
collects as finished. Most cases run in-process (the real entry point, ``bench.run.cli.main``); a dozen go
through the installed ``bench`` command. The schema of the run specification is checked against
conf/config.yaml key by key."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.run.collect import collect
from bench.errors import BenchError
from bench.run.cli import main
from bench.run.config import compose
from bench.plugins import CONF_DIR
from bench import protocols
from bench.run.spec import REGION_KEYS, SCALARS, build_spec, top_keys

from conftest import FAST_MODEL, bench_main

SMALL = [*FAST_MODEL, "n_images=4", "steps=3", "repeats=2", "bootstrap=50", "batch_size=4", "block_size=2"]

# override → a fragment the one error line must contain (it names the setting and what is allowed)
BAD = {
    # every top-level key of conf/config.yaml: a wrong type and a value out of range
    "patch=x": "patch must be an integer ≥ 1, got 'x'", "patch=1.5": "patch must be an integer",
    "patch=0": "patch must be an integer ≥ 1, got 0", "patch=-1": "patch must be", "patch=29": "patch=29 is larger",
    "steps=x": "steps must be an integer", "steps=0": "steps must be an integer ≥ 1", "steps=2.5": "steps must be",
    "repeats=x": "repeats must be an integer", "repeats=0": "repeats must be an integer ≥ 1",
    "n_images=x": "n_images must be", "n_images=0": "n_images must be an integer ≥ 1",
    "n_images=1001": "n_images=1001 but dataset 'mnist_embedded' has only 1000",
    "batch_size=x": "batch_size must be", "batch_size=0": "batch_size must be an integer ≥ 1",
    "num_workers=x": "num_workers must be", "num_workers=-1": "num_workers must be an integer between 0 and 256",
    "num_workers=1000": "num_workers must be an integer between 0 and 256",
    "device=gpu": "device must be auto, cpu, cuda or cuda:N, got 'gpu'", "device=cuda": "CUDA is not available",
    "device=cuda:0": "CUDA is not available", "device=mps": "device must be auto, cpu, cuda or cuda:N",
    "device=1": "device must be a non-empty string",
    "seed=x": "seed must be an integer", "seed=1.5": "seed must be an integer", "seed=-1": "seed must be an integer",
    "seed=99999999999999999999": "seed must be an integer",
    "target=foo": "target must be one of predicted, label, got 'foo'", "target=1": "target must be one of",
    "score=prob": "score must be one of logit, softmax, log_softmax", "score=1": "score must be one of",
    "bootstrap=x": "bootstrap must be", "bootstrap=0": "bootstrap must be an integer ≥ 1",
    "bootstrap=-5": "bootstrap must be",
    "save_heatmaps=x": "save_heatmaps must be", "save_heatmaps=-1": "save_heatmaps must be an integer ≥ 0",
    "cache_dir=5": "cache_dir must be a non-empty string", "cache_dir=''": "cache_dir must be a non-empty string",
    "orders=[foo]": "orders: unknown value 'foo'; choose from morf, lerf, random",
    "orders=[morf,sideways]": "orders: unknown value 'sideways'", "orders=[]": "orders must be a list",
    "orders=5": "orders must be a list",
    "per_repeat=maybe": "per_repeat must be true or false", "per_repeat=2": "per_repeat must be true or false",
    "precision=fp8": "precision must be one of fp32, bf16, fp16", "precision=fp16": "precision=fp16 needs a GPU",
    "precision=16": "precision must be one of",
    "channels_last=x": "channels_last must be true or false", "channels_last=2": "channels_last must be true or false",
    "compile=x": "compile must be true or false", "compile=1": "compile must be true or false",
    "metrics=[foo]": "metrics: unknown value 'foo'; choose from aopc, complexity, continuity",
    "metrics=[complexity]": "metrics must include aopc", "metrics=[]": "metrics must be a list",
    "metrics=3": "metrics must be a list",
    "complexity.jpeg_quality=500": "complexity.jpeg_quality must be an integer between 1 and 100",
    "complexity.jpeg_quality=0": "complexity.jpeg_quality must be", "complexity.jpeg_quality=x": "jpeg_quality",
    "complexity.gray=foo": "complexity.gray must be one of skimage, matlab", "complexity.gray=1": "complexity.gray",
    "continuity.kind=1": "continuity.kind must be one of", "complexity=5": "complexity",
    "method.params=5": "method.params", "model.input=5": "model.input",
    "continuity.kind=foo": "continuity.kind must be one of translate, noise",
    "continuity.max_shift=0": "continuity.max_shift must be an integer ≥ 1",
    "continuity.max_shift=x": "continuity.max_shift must be",
    "continuity.sigma=0": "continuity.sigma must be a number > 0", "continuity.sigma=-1": "continuity.sigma must be",
    "continuity.sigma=x": "continuity.sigma must be a finite number",
    "continuity.n_samples=0": "continuity.n_samples must be an integer ≥ 1", "continuity.n_samples=x": "n_samples",
    "block_size=0": "block_size must be an integer ≥ 1", "block_size=x": "block_size must be",
    "resume=maybe": "resume must be true or false", "resume=2": "resume must be true or false",
    "shard=-1": "shard must be an integer ≥ 0", "shard=1": "0 ≤ shard < num_shards=1", "shard=x": "shard must be",
    "num_shards=0": "num_shards must be an integer ≥ 1", "num_shards=x": "num_shards must be",
    "num_shards=3": "num_shards=3 but n_images=4 makes only 2 block(s)",
    # keys that do not exist
    "+foo=1": "unknown setting 'foo'; valid settings: patch, steps", "foo=1": "unknown setting 'foo'",
    "method.foo=1": "unknown setting 'method.foo': the chosen method config has no such key",
    "+method.foo=1": "unknown setting 'method.foo'; valid method keys: name, plugin, pooling, params",
    "+complexity.foo=1": "unknown setting 'complexity.foo'", "+continuity.bar=1": "unknown setting 'continuity.bar'",
    "+model.params.foo=1": "unknown setting 'model.params.foo' for a model of kind 'embedded_cnn'",
    "+model.input.foo=1": "unknown setting 'model.input.foo'",
    # config groups and plug-ins
    "method=nonexistent": "unknown method 'nonexistent'; available: ",
    "dataset=nonexistent": "unknown dataset 'nonexistent'; available: ",
    "model=nonexistent": "unknown model 'nonexistent'; available: ",
    "perturbation=nonexistent": "unknown perturbation 'nonexistent'; available: ",
    "experiment=nonexistent": "unknown experiment 'nonexistent'; available: ",
    "method.plugin=../../../x": "method.plugin must be the plain name of a file in methods/",
    "method.plugin=/tmp/x": "method.plugin must be the plain name", "dataset.plugin=../x": "dataset.plugin must be",
    "method.plugin=nope": "no method plug-in file 'nope.py'", "method.pooling=foo": "method.pooling must be one of",
    "method.params.epsilon=abc": "method.params.epsilon must be a finite number ≥ 0, got 'abc'",
    "method.params.epsilon=-1": "method.params.epsilon must be", "+method.params.foo=1": "unexpected keyword",
    "method.params.maxpool=avg": "maxpool", "method.name=''": "method.name must be a non-empty string",
    "model.kind=foo": "model.kind must be one of embedded_cnn, embedded_vit, torchvision, user, checkpoint",
    "model.params.epochs=x": "epochs", "perturbation.name=smudge": "unknown perturbation 'smudge'",
    # values of other groups' plug-ins
    "dataset=cifar10": "dataset 'cifar10' reads local files; set dataset.params.root",
    "model=user": "model 'user' needs its class", "model=alexnet": "no weights file",
    # a syntax error, and a valid configuration of another run (the folder holds this run)
    "patch=[": "cannot read the override 'patch=['", "patch=9": "already holds results of a different configuration",
    # paths that cannot be folders
    "cache_dir=/proc/no_cache": "cannot use /proc/no_cache: No such file or directory",
}
# cases that need a second override (the first selects what the second then gets wrong)
PAIRS = {
    "method=lrp_a2b1 method.params.alpha=3": "α − β = 1",
    "perturbation=blur perturbation.params.sigma=0": "perturbation.params.sigma > 0",
    "perturbation=blur perturbation.params.sigma=x": "perturbation.params.sigma",
    "perturbation=road perturbation.params.noise=-1": "perturbation.params.noise must be a number ≥ 0, got -1",
    "method=translation method.params.method=../x": "method.params.method must be the plain name of a file in conf/method/",
    "method=translation method.params.shift=-1": "method.params.shift must be an integer ≥ 0",
    # (not /nonexistent itself: daemons of users whose home it is may create it)
    "dataset=imagenet dataset.params.root=/nonexistent/bench": "/nonexistent/bench does not exist",
    "model=user model.params._target_=torch.nn.Flatten model.params.checkpoint=/gone": "checkpoint /gone does not",
    "metrics=[aopc,continuity] continuity.max_shift=28": "continuity.max_shift=28 must be smaller than the image width",
}
CASES = {**{k: ([k], v) for k, v in BAD.items()}, **{k: (k.split(), v) for k, v in PAIRS.items()}}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir):
    """One finished run (2 blocks) whose folder each bad command is then pointed at."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache_dir), "BENCH_CODE_VERSION": "tests"}
    proc = subprocess.run([sys.executable, "-m", "bench", *SMALL, f"hydra.run.dir={folder}"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=folder.parent)
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.fixture
def pinned(monkeypatch):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")  # others edit the sources while tests run


def assert_untouched(folder: Path, before: dict[str, bytes]) -> None:
    after = snapshot(folder)
    assert after.keys() == before.keys(), set(after) ^ set(before)
    assert all(after[k] == before[k] for k in before), [k for k in before if after[k] != before[k]]
    jobs = collect(folder, write=False).jobs
    assert [j.status for j in jobs] == ["finished"], [(j.status, j.reason) for j in jobs]


@pytest.mark.parametrize("where", ["hydra.run.dir={file}", "hydra.run.dir=/proc/bench_no_folder"])
def test_an_output_folder_that_cannot_be_one(where, tmp_path, capsys, pinned):
    file = tmp_path / "a_file"
    file.write_text("not a folder")
    code, out, err = bench_main([*SMALL, where.format(file=file)], capsys)
    assert code == 2 and err.startswith("error: cannot use ") and err.count("\n") == 1, err
    assert file.read_text() == "not a folder"


def test_at_least_80_cases():
    assert len(CASES) >= 80


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_leaves_a_finished_run_as_it_was(case, finished_run, capsys, pinned):
    args, fragment = CASES[case]
    before = snapshot(finished_run)
    base = SMALL[len(FAST_MODEL):] if any(a.startswith("model=") for a in args) else SMALL  # epochs: embedded CNN
    code, out, err = bench_main([*base, f"hydra.run.dir={finished_run}", *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert "Traceback" not in out + err
    assert_untouched(finished_run, before)


# ------------------------------------------------------------------------------ the installed command

#: Bad input given to the installed `bench` command (a process of its own each: ~4 s) — one of each kind: a
#: setting's check, Hydra's parser, an unknown key, a plug-in path; the rest of the kinds, in this process (below).
COMMAND = ["seed=x", "patch=[", "+foo=1", "method.plugin=../../../x"]
IN_PROCESS = ["seed=1.5", "seed=-1", "bootstrap=0", "method.params.epsilon=abc", "precision=fp16",
              "continuity.kind=foo", "num_workers=-1", "complexity.jpeg_quality=500", "save_heatmaps=-1",
              "method.params.epsilon=-1"]


def bench_command() -> str:
    found = Path(sys.executable).parent / "bench"
    return str(found) if found.is_file() else shutil.which("bench")


@pytest.mark.parametrize("override", COMMAND)
def test_the_bench_command(override, finished_run, cache_dir):
    before = snapshot(finished_run)
    proc = subprocess.run([bench_command(), *SMALL, f"hydra.run.dir={finished_run}", override], capture_output=True,
                          text=True, timeout=120, cwd=finished_run.parent,
                          env={**os.environ, "BENCH_CACHE_DIR": str(cache_dir), "BENCH_CODE_VERSION": "tests"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and proc.stdout == ""
    assert_untouched(finished_run, before)


@pytest.mark.parametrize("override", IN_PROCESS)
def test_the_entry_point_in_process(override, finished_run, capsys, pinned):
    """The same as the installed command (its entry point, ``bench.run.cli.main``), in this process."""
    before = snapshot(finished_run)
    code, out, err = bench_main([*SMALL, f"hydra.run.dir={finished_run}", override], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err and out == ""
    assert_untouched(finished_run, before)


def test_help_shell_completion_and_stdout_holds_only_the_table(finished_run, cache_dir):
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache_dir), "BENCH_CODE_VERSION": "tests"}
    help_text = subprocess.run([bench_command(), "--help"], capture_output=True, text=True, env=env).stdout
    assert help_text.startswith("bench — ") and help_text.count("\n  bench ") == 6
    assert "python -m bench.collect" in help_text and "python -m bench.report" in help_text and "README" in help_text
    comp = subprocess.run([bench_command(), "-sc", "query=bash"], capture_output=True, text=True, timeout=60,
                          env={**env, "COMP_LINE": "bench meth", "COMP_POINT": "10"}).stdout.split()
    assert "method=" in comp
    proc = subprocess.run([bench_command(), *SMALL, f"hydra.run.dir={finished_run}"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines()[0].startswith("mnist_embedded · embedded_cnn")
    assert "already finished" in proc.stderr and "INFO" in proc.stderr and "INFO" not in proc.stdout


# ------------------------------------------------------------------------------ the schema

def test_schema_covers_every_key_of_the_config():
    """conf/config.yaml holds the scalars; every protocol's block comes from its declaration (bench/protocols/),
    composed with its defaults, and nowhere else."""
    conf = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    groups = {"method", "dataset", "model", "perturbation", "regions"}
    keys = {k for k in conf if k not in ("defaults", "hydra")} | groups
    blocks = protocols.settings_blocks()
    assert set(SCALARS) == keys - groups and not set(blocks) & keys
    assert set(top_keys()) == keys | set(blocks)
    composed_conf = compose([])
    for name, defaults in blocks.items():
        assert composed_conf[name] == defaults
        assert protocols.protocol_class(name).from_config(composed_conf[name]) == protocols.protocol_class(name)()
    for kind, valid in REGION_KEYS.items():  # conf/regions/<kind>.yaml has exactly the keys its kind takes
        assert set(yaml.safe_load((CONF_DIR / "regions" / f"{kind}.yaml").read_text())) == set(valid)


def test_every_shipped_choice_builds(cache_dir):
    for group in ("method", "perturbation"):
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            if (group, path.stem) == ("method", "precomputed"):  # its own file is required (test_precomputed.py)
                with pytest.raises(BenchError, match="needs method.params.path"):
                    build_spec(compose([f"{group}={path.stem}"]))
                continue
            spec = build_spec(compose([f"{group}={path.stem}"]))
            assert spec.method.obj is not None and spec.perturbation.obj is not None
    import torch

    from bench.run.evaluate import Evaluator

    spec = build_spec(compose(["perturbation=blur"]))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    assert spec.repeats == 10 and Evaluator.from_spec(spec, model).repeats == 1  # a deterministic g runs once


def test_the_spec_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BenchError, match="precision=fp16 needs a GPU"):
        build_spec(compose(["precision=fp16"]))
    assert list(tmp_path.iterdir()) == []
