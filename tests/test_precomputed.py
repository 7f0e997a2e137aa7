"""``method=precomputed``: heatmaps written by one run and read back (parquet, .npz, a folder of .npy) give exactly
that run's curves; ids, shapes and files that do not fit end in one line naming the first offender; the
heatmaps read are part of the job's identity."""

import json

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.run.identity import incompatibility
from bench.run.job import run
from bench.run.spec import build_spec

from conftest import FAST_MODEL, composed

JOB = [*FAST_MODEL, "n_images=6", "steps=4", "repeats=2", "bootstrap=50", "block_size=4", "save_heatmaps=6"]
NUMBERS = ["image_id", "order", "step", "fraction_perturbed", "score_value", "score_std", "aopc", "nonfinite"]


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


@pytest.fixture(scope="module")
def source(tmp_path_factory, cache_dir):
    """A sensitivity run that kept all its heatmaps; the same heatmaps as .npz and as a folder of .npy."""
    import os

    os.environ["BENCH_CODE_VERSION"] = "tests"
    root = tmp_path_factory.mktemp("precomputed")
    run(composed([*JOB, "method=sensitivity"]), root / "sensitivity")
    heat = pd.read_parquet(root / "sensitivity" / "heatmaps.parquet")
    arrays = {i: np.asarray(h, np.float32).reshape(hh, ww) for i, hh, ww, h in
              zip(heat.image_id, heat.height, heat.width, heat.heatmap)}
    np.savez(root / "heat.npz", **arrays)
    for i, a in arrays.items():
        (root / "npy").mkdir(exist_ok=True)
        np.save(root / "npy" / f"{i}.npy", a[None])  # C×H×W relevance this time
    return root, arrays


@pytest.mark.parametrize("where", ["sensitivity/heatmaps.parquet", "heat.npz", "npy"])
def test_read_back_heatmaps_give_exactly_the_runs_curves(source, where, tmp_path):
    root, _ = source
    run(composed([*JOB, "method=precomputed", f"method.params.path={root / where}"]), tmp_path / "run")
    theirs = pd.read_parquet(root / "sensitivity" / "curves.parquet")[NUMBERS]
    ours = pd.read_parquet(tmp_path / "run" / "curves.parquet")
    assert set(ours.method) == {"precomputed"}
    pd.testing.assert_frame_equal(ours[NUMBERS], theirs, check_exact=True)


def test_bad_heatmap_files_are_one_line(source, tmp_path):
    root, arrays = source
    ids = list(arrays)

    def refused(path, *extra):
        with pytest.raises(BenchError) as err:
            build_spec(composed([*JOB, "method=precomputed", f"method.params.path={path}", *extra]))
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "needs method.params.path" in refused("null")
    assert "does not exist" in refused(tmp_path / "nope.npz")
    (tmp_path / "heat.txt").write_text("1 2 3")
    assert "unknown format '.txt'" in refused(tmp_path / "heat.txt")
    np.savez(tmp_path / "missing.npz", **{i: a for i, a in list(arrays.items())[1:]})
    assert f"no heatmap for image '{ids[0]}' of dataset 'mnist_embedded' (1 of its first 6" in refused(
        tmp_path / "missing.npz")
    np.savez(tmp_path / "shape.npz", **{**arrays, ids[2]: arrays[ids[2]][:27]})
    assert f"heatmap '{ids[2]}' is float32 (27, 28)" in refused(tmp_path / "shape.npz")
    np.savez(tmp_path / "nan.npz", **{**arrays, ids[1]: np.full((28, 28), np.nan, np.float32)})
    assert f"heatmap '{ids[1]}' has non-finite values" in refused(tmp_path / "nan.npz")
    (tmp_path / "obj").mkdir()
    np.save(tmp_path / "obj" / f"{ids[0]}.npy", np.array([{}], dtype=object), allow_pickle=True)
    for i in ids[1:]:
        np.save(tmp_path / "obj" / f"{i}.npy", arrays[i])
    assert f"heatmap '{ids[0]}' cannot be read" in refused(tmp_path / "obj")  # never unpickled
    both = pd.read_parquet(root / "sensitivity" / "heatmaps.parquet")
    both = pd.concat([both, both.assign(method="lrp_eps")])
    both.to_parquet(tmp_path / "two.parquet")
    assert "several methods (lrp_eps, sensitivity); choose one with method.params.source_method" in refused(
        tmp_path / "two.parquet")
    assert "source_method=gradient" in refused(tmp_path / "two.parquet", "method.params.source_method=gradient")
    assert "has heatmaps of the images themselves only" in refused(root / "heat.npz", "metrics=[aopc,continuity]")
    spec = build_spec(composed([*JOB, "method=precomputed", f"method.params.path={tmp_path / 'two.parquet'}",
                                "method.params.source_method=sensitivity"]))
    assert sorted(spec.method.obj.heatmaps) == sorted(ids)


def test_the_heatmaps_read_are_part_of_the_jobs_identity(source, tmp_path):
    from bench.run.identity import manifest_of
    from bench.models import load_model

    root, arrays = source
    manifests = []
    for k, scale in enumerate((1.0, 2.0)):
        np.savez(tmp_path / f"h{k}.npz", **{i: a * scale for i, a in arrays.items()})
        spec = build_spec(composed([*JOB, "method=precomputed", f"method.params.path={tmp_path / f'h{k}.npz'}"]))
        manifests.append(json.loads(json.dumps(manifest_of(spec, load_model(spec)), default=str)))
    a, b = manifests
    a["run_config"] = b["run_config"]  # the same settings but for the file's name
    assert a["run_key"] != b["run_key"]
    assert incompatibility(a, b) == "results computed from different inputs (the precomputed heatmaps or the images in memory changed)"
