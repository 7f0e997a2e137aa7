"""The Python API (``bench.evaluate_explanations``, bench/run/python_api.py): the same tables as the CLI for the same
settings, heatmaps given in memory, one-line errors as exceptions, and the README's example, executed."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bench
from bench.errors import BenchError
from bench.models import load_model
from bench.run.job import run
from bench.run.spec import build_spec

from conftest import FAST_MODEL, composed

SETTINGS = dict(steps=4, repeats=2, bootstrap=50, block_size=3, save_heatmaps=6, metrics=["aopc", "road"],
                road={"fractions": [0.3, 0.7]})
CLI = [*FAST_MODEL, "n_images=6", "steps=4", "repeats=2", "bootstrap=50", "block_size=3", "save_heatmaps=6",
       "metrics=[aopc,road]", "road.fractions=[0.3,0.7]"]
NOT_NUMBERS = {"dataset", "model", "model_params", "preprocessing", "wall_time_s", "method", "method_params",
               "label", "device", "run_key", "data_sha"}  # (other inputs objects: their own key and digest)


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, cache_dir):
    """A CLI run of LRP-ε on the embedded default, its model, and its images as tensors."""
    import os

    os.environ["BENCH_CODE_VERSION"] = "tests"
    folder = tmp_path_factory.mktemp("cli")
    conf = composed([*CLI, "method=lrp_eps"])
    run(conf, folder)
    spec = build_spec(conf)
    items = [spec.dataset.obj.get(i) for i in range(6)]
    data = dict(images=torch.stack([r for _, r, _ in items]), labels=[lab for _, _, lab in items],
                image_ids=[i for i, _, _ in items], mean=spec.dataset.obj.normalization.mean,
                std=spec.dataset.obj.normalization.std)
    return folder, load_model(spec), data


def same_numbers(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    cols = [c for c in theirs.columns if c not in NOT_NUMBERS]
    assert set(cols) <= set(ours.columns)
    pd.testing.assert_frame_equal(ours[cols].reset_index(drop=True), theirs[cols].reset_index(drop=True),
                                  check_exact=True)


def test_the_api_gives_the_clis_tables(cli_run):
    folder, model, data = cli_run
    tables = bench.evaluate_explanations(model, data["images"], data["labels"], method="lrp_eps",
                                         image_ids=data["image_ids"], mean=data["mean"], std=data["std"], **SETTINGS)
    for name in ("curves", "road"):
        same_numbers(tables[name], pd.read_parquet(folder / f"{name}.parquet"))
    same_numbers(tables["summary"], pd.read_csv(folder / "summary.csv"))
    assert set(tables["curves"].dataset) == {"in_memory"} and set(tables["curves"].model) == {type(model).__name__}
    assert (tables["curves"].label.to_numpy() == pd.read_parquet(folder / "curves.parquet").label.to_numpy()).all()


def test_heatmaps_given_in_memory_give_the_runs_curves(cli_run, tmp_path):
    folder, model, data = cli_run
    saved = pd.read_parquet(folder / "heatmaps.parquet")
    heat = np.stack([np.asarray(h, np.float32).reshape(28, 28) for h in saved.heatmap])
    assert list(saved.image_id) == data["image_ids"]
    tables = bench.evaluate_explanations(model, data["images"], data["labels"], heatmaps=torch.from_numpy(heat),
                                         image_ids=data["image_ids"], mean=data["mean"], std=data["std"],
                                         out=tmp_path / "given", **SETTINGS)
    same_numbers(tables["curves"], pd.read_parquet(folder / "curves.parquet"))
    assert (tmp_path / "given" / "run" / "DONE").is_file()  # out= keeps the job folder


def test_bad_input_is_the_clis_one_line_message(cli_run):
    _, model, data = cli_run
    x = data["images"]
    cases = [(dict(method="lrp_eps", heatmaps=np.zeros((6, 28, 28))), "either method=<name"),
             (dict(), "either method=<name"),
             (dict(method="lrp_eps", patchsize=3), "unknown setting 'patchsize'"),
             (dict(method="lrp_eps", patch=40), "patch=40 is larger than the 28×28 images"),
             (dict(method="nosuch"), "nosuch"),
             (dict(method="lrp_eps", images=x * 255), "raw pixels in raw_range=[0, 1]"),
             (dict(method="lrp_eps", images=x[:, 0]), "images must be a float array (N, C, H, W)"),
             (dict(method="lrp_eps", labels=[1, 2]), "labels must hold one class per image: 6 images, 2 labels"),
             (dict(heatmaps=np.zeros((5, 28, 28))), "heatmaps must be (N, H, W) or (N, C, H, W) for the 6 images"),
             (dict(heatmaps={"x": np.zeros((28, 28))}), "no heatmap for image 'image-00000'")]
    for kwargs, message in cases:
        kwargs = {"images": x, **kwargs}
        with pytest.raises(BenchError) as err:
            bench.evaluate_explanations(model, kwargs.pop("images"), **{"mean": 0, "std": 1, **kwargs}, steps=2,
                                        repeats=1)
        assert message in str(err.value) and "\n" not in str(err.value), (kwargs, str(err.value))


def test_the_readme_example_runs():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("### Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    summary = scope["tables"]["summary"]
    assert {"aopc_morf", "aopc_morf_minus_random"} <= set(summary.quantity)
