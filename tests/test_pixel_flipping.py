"""Pixel-flipping with recomputed heatmaps (``metrics=[aopc,pixel_flipping]``, tutorial Sec. 7.2, DEFINITIONS §9): rows
against an independent NumPy loop on a linear model, batch-size invariance, refusal for fixed heatmaps."""

import numpy as np
import pandas as pd
import pytest
import torch

import bench
from bench.run.collect import collect
from bench.errors import BenchError
from bench.run.job import run
from bench.run.spec import build_spec

from conftest import FAST_MODEL, composed, heatmaps_and_targets, quantus_scores

MEAN, STD = 0.1307, 0.3081


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def test_rows_equal_an_independent_loop_on_a_linear_model():
    """f = W x + b, gradient × input = W_c ⊙ x of the *current* image: at each step the 7×7 tile with the largest
    sum among those left goes black (distinct sums: no tie-break needed)."""
    from bench.plugins import build

    data = build("datasets", {"plugin": "mnist_embedded", "params": {}}, "dataset")
    raw = torch.stack([data.get(i)[1] for i in range(3)]).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    tables = bench.evaluate_explanations(model, raw, method="gradient_x_input", mean=MEAN, std=STD, patch=7,
                                         steps=2, repeats=1, bootstrap=20, metrics=["aopc", "pixel_flipping"])
    t = tables["pixel_flipping"]
    w, b = model[1].weight.detach().double().numpy(), model[1].bias.detach().double().numpy()
    tiles = (np.arange(28)[:, None] // 7) * 4 + np.arange(28)[None, :] // 7
    black = (0.0 - MEAN) / STD
    for i in range(3):
        x = ((raw[i, 0].double().numpy() - MEAN) / STD)
        c = int(np.argmax(w @ x.ravel() + b))
        current, left, expected, regions = x.copy(), set(range(16)), [w[c] @ x.ravel() + b[c]], [-1]
        for _ in range(16):
            heat = (w[c].reshape(28, 28) * current)
            sums = {r: heat[tiles == r].sum() for r in left}
            pick = max(sums, key=sums.get)
            left.remove(pick)
            current[tiles == pick] = black
            expected.append(w[c] @ current.ravel() + b[c])
            regions.append(pick)
        got = t[(t.image_id == t.image_id.unique()[i]) & (t.order == "morf")].sort_values("step")
        assert list(got.region) == regions
        np.testing.assert_allclose(got.score_value, expected, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got.fraction_perturbed, np.arange(17) / 16, rtol=1e-6)
    rnd = t[t.order == "random"]
    for _, r in rnd.groupby("image_id"):  # the paired random order removes every tile once
        assert sorted(r.sort_values("step").region.iloc[1:]) == list(range(16))
    summary = tables["summary"].set_index("quantity")
    assert {"pixel_flipping_auc", "pixel_flipping_auc_random", "pixel_flipping_auc_minus_random"} <= set(summary.index)


def test_agrees_with_quantus_where_the_heatmap_does_not_change(monkeypatch):
    """Quantus 0.6 ``PixelFlipping`` keeps the first heatmap; ours recomputes it. They coincide where recomputing
    gives the same ranking: f = W x + b with sensitivity (the gradient W_c, the same at every step), one pixel per
    step (patch 1, ``features_in_step=1``), the same black (handed to Quantus as the normalised 0) and logits."""
    import quantus
    from bench.plugins import build

    data = build("datasets", {"plugin": "mnist_embedded", "params": {}}, "dataset")
    raw = torch.stack([data.get(i)[1] for i in range(3)]).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    tables = bench.evaluate_explanations(model, raw, method="sensitivity", mean=MEAN, std=STD, patch=1, steps=2,
                                         repeats=1, bootstrap=20, metrics=["aopc", "pixel_flipping"],
                                         save_heatmaps=3)
    t = tables["pixel_flipping"]
    morf = t[t.order == "morf"].sort_values(["image_id", "step"], kind="stable")
    ids, a, target = heatmaps_and_targets(tables, "pixel_flipping")
    x = ((raw.numpy() - MEAN) / STD).astype(np.float32)
    metric = quantus.PixelFlipping(features_in_step=1, perturb_baseline=(0.0 - MEAN) / STD, abs=False,
                                   normalise=False, return_aggregate=False, disable_warnings=True,
                                   display_progressbar=False)
    theirs = quantus_scores(metric, model, x, target, a, False, monkeypatch)
    ours = morf[morf.step > 0].score_value.to_numpy().reshape(3, 784)
    diff = np.abs(theirs - ours).max()
    print(f"largest difference from Quantus PixelFlipping: {diff:.1e} (logits up to {np.abs(theirs).max():.1f})")
    assert diff <= 1e-4, diff


def test_same_numbers_for_any_batch_size(tmp_path):
    job = [*FAST_MODEL, "metrics=[aopc,pixel_flipping]", "n_images=5", "steps=3", "repeats=1", "bootstrap=20",
           "patch=7", "pixel_flipping.steps=6", "method=lrp_eps", "block_size=3"]
    got = {}
    for bs in (1, 7, 64):
        run(composed([*job, f"batch_size={bs}"]), tmp_path / f"bs{bs}")
        got[bs] = pd.read_parquet(tmp_path / f"bs{bs}" / "pixel_flipping.parquet")
    assert got[64].step.max() == 6 and set(got[64].order) == {"morf", "random"}
    for bs in (1, 7):
        assert list(got[bs].region) == list(got[64].region)
        np.testing.assert_allclose(got[bs].score_value, got[64].score_value, rtol=1e-5, atol=1e-5)
    for shard in (0, 1):
        run(composed([*job, "batch_size=64", f"shard={shard}", "num_shards=2"]),
            tmp_path / "shards" / f"s{shard}")
    merged = collect(tmp_path / "shards", write=False).tables["pixel_flipping"]
    keep = [c for c in got[64].columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(merged[keep].reset_index(drop=True), got[64][keep].reset_index(drop=True),
                                  check_exact=True)


def test_refused_for_heatmaps_that_cannot_be_recomputed(tmp_path):
    np.savez(tmp_path / "h.npz", **{f"mnist5k-{i:04d}": np.zeros((28, 28)) for i in range(5000)})
    with pytest.raises(BenchError, match=r"metrics=\[…, pixel_flipping\] attributes perturbed copies"):
        build_spec(composed([*FAST_MODEL, "metrics=[aopc,pixel_flipping]", "method=precomputed",
                             f"method.params.path={tmp_path / 'h.npz'}"]))
