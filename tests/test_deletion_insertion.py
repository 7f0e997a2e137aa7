"""Deletion and insertion (``metrics=[aopc,deletion,insertion]``, DEFINITIONS §9): rows against an independent NumPy/SciPy
computation on a linear model, batch-size and shard invariance, one-line errors for bad settings."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

import bench
from bench.run.collect import collect
from bench.errors import BenchError
from bench.run.job import run
from bench.run.spec import build_spec
from bench.protocols.base import curve_auc

from conftest import FAST_MODEL, composed, heatmaps_and_targets, quantus_scores

JOB = [*FAST_MODEL, "metrics=[aopc,deletion,insertion]", "n_images=6", "steps=3", "repeats=1", "bootstrap=50",
       "block_size=2", "deletion.steps=7", "insertion.steps=7"]
MEAN, STD = 0.1307, 0.3081


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def test_rows_equal_an_independent_computation_on_a_linear_model():
    """f = W x + b on normalised MNIST digits, heatmap gradient × input = W_c ⊙ x (distinct values, so the order
    needs no tie-break); the logit after deleting / inserting the top k pixels, by NumPy in float64."""
    from bench.plugins import build

    data = build("datasets", {"plugin": "mnist_embedded", "params": {}}, "dataset")
    raw = torch.stack([data.get(i)[1] for i in range(4)]).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    steps = 8
    tables = bench.evaluate_explanations(
        model, raw, method="gradient_x_input", mean=MEAN, std=STD, steps=2, repeats=1, bootstrap=20,
        metrics=["aopc", "deletion", "insertion"], deletion={"steps": steps, "score": "logit"},
        insertion={"steps": steps, "score": "logit", "substrate": "blur"})
    w = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    x = ((raw.double().numpy() - MEAN) / STD).reshape(4, 784)
    blurred = np.stack([gaussian_filter(((raw[i, 0].double().numpy() - MEAN) / STD), sigma=5, truncate=1.0,
                                        mode="mirror") for i in range(4)]).reshape(4, 784)  # kernel 11
    black = (0.0 - MEAN) / STD
    counts = np.round(np.arange(steps + 1) * 784 / steps).astype(int)
    for i in range(4):
        c = int(np.argmax(w @ x[i] + b))
        order = np.argsort(-(w[c] * x[i]), kind="stable")
        deletion, insertion = [], []
        for k in counts:
            top = order[:k]
            d = x[i].copy()
            d[top] = black
            deletion.append(w[c] @ d + b[c])
            ins = blurred[i].copy()
            ins[top] = x[i][top]
            insertion.append(w[c] @ ins + b[c])
        for kind, expected in (("deletion", deletion), ("insertion", insertion)):
            t = tables[kind]
            got = t[(t.image_id == t.image_id.unique()[i]) & (t.order == "morf")].sort_values("step")
            np.testing.assert_allclose(got.score_value, expected, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(got.fraction_changed, counts / 784, rtol=1e-6)
    ins = tables["insertion"]
    first, last = ins[ins.step == 0], ins[ins.step == steps]
    assert (first.groupby("image_id").score_value.nunique() == 1).all()  # both orders start at the substrate
    assert (last.groupby("image_id").score_value.nunique() == 1).all()   # and end at the image
    summary = tables["summary"].set_index("quantity")
    for kind in ("deletion", "insertion"):
        auc = curve_auc(tables[kind], "fraction_changed")
        assert summary.loc[f"{kind}_auc_morf", "mean"] == pytest.approx(auc["morf"].mean(), rel=1e-6)
        assert summary.loc[f"{kind}_auc_morf_minus_random", "mean"] == pytest.approx(
            (auc["morf"] - auc["random"]).mean(), rel=1e-5, abs=1e-6)


def test_same_tables_for_any_batch_size_and_for_two_shards(tmp_path):
    tables = {}
    for bs in (1, 7, 64):
        run(composed([*JOB, "method=sensitivity", f"batch_size={bs}"]), tmp_path / f"bs{bs}")
        tables[bs] = {k: pd.read_parquet(tmp_path / f"bs{bs}" / f"{k}.parquet") for k in ("deletion", "insertion")}
    for kind in ("deletion", "insertion"):
        a = tables[64][kind]
        assert list(a.order.unique()) == ["morf", "random"] and a.step.max() == 7
        for bs in (1, 7):  # the model's convolutions may round differently at another batch shape
            np.testing.assert_allclose(tables[bs][kind].score_value, a.score_value, rtol=1e-5, atol=1e-6)
    for shard in (0, 1):
        run(composed([*JOB, "method=sensitivity", "batch_size=64", f"shard={shard}", "num_shards=2"]),
            tmp_path / "shards" / f"s{shard}")
    merged = collect(tmp_path / "shards", write=False).tables
    for kind in ("deletion", "insertion"):
        keep = [c for c in tables[64][kind].columns if c != "wall_time_s"]
        pd.testing.assert_frame_equal(merged[kind][keep].reset_index(drop=True),
                                      tables[64][kind][keep].reset_index(drop=True), check_exact=True)


@pytest.mark.parametrize("override, message", [
    ("deletion.blur_kernel=10", "deletion.blur_kernel must be an odd number of pixels"),
    ("insertion.steps=0", "insertion.steps must be"),
    ("deletion.substrate=gray", "deletion.substrate"),
    ("insertion.score=prob", "insertion.score"),
])
def test_bad_settings_are_one_line(override, message):
    with pytest.raises(BenchError, match=message) as err:
        build_spec(composed([*JOB, override]))
    assert "\n" not in str(err.value)


def test_deletion_agrees_with_quantus_pixel_flipping(monkeypatch):
    """Quantus 0.6 ``PixelFlipping`` is deletion with a fixed order: the pixels ranked by the heatmap, set to the
    baseline ``features_in_step`` at a time, the class probability after each step. With 28 pixels per step
    (``deletion.steps=28`` on 28×28 images) and the same black (the normalised 0, handed to Quantus) the curves
    are the same, on a small CNN."""
    import quantus
    from bench.plugins import build

    data = build("datasets", {"plugin": "mnist_embedded", "params": {}}, "dataset")
    raw = torch.stack([data.get(i)[1] for i in range(4)]).float()
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(6 * 12 * 12, 10)).eval()
    tables = bench.evaluate_explanations(model, raw, method="sensitivity", mean=MEAN, std=STD, steps=2, repeats=1,
                                         bootstrap=20, metrics=["aopc", "deletion"], deletion={"steps": 28},
                                         save_heatmaps=4)
    t = tables["deletion"]
    ids, a, target = heatmaps_and_targets(tables, "deletion")
    x = ((raw.numpy() - MEAN) / STD).astype(np.float32)
    metric = quantus.PixelFlipping(features_in_step=28, perturb_baseline=(0.0 - MEAN) / STD, abs=False,
                                   normalise=False, return_aggregate=False, disable_warnings=True,
                                   display_progressbar=False)
    theirs = quantus_scores(metric, model, x, target, a, True, monkeypatch)
    morf = t[(t.order == "morf") & (t.step > 0)].sort_values(["image_id", "step"], kind="stable")
    ours = morf.set_index("image_id").loc[ids].score_value.to_numpy().reshape(4, 28)
    diff = np.abs(theirs - ours).max()
    print(f"largest difference from Quantus PixelFlipping (deletion): {diff:.1e}")
    assert diff <= 1e-5, diff
