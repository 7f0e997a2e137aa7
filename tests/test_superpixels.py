"""Superpixel regions (``regions=slic``) and IROF (``metrics=[aopc,irof]``), DEFINITIONS §9: the segments are
scikit-image's, ragged regions by hand, the curves against NumPy on a linear model, IROF against Quantus 0.6,
batch-size and shard invariance, one-line errors."""

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.segmentation import slic

import bench
from bench.run.collect import collect
from bench.errors import BenchError
from bench.engine.regions import Regions
from bench.run.job import run
from bench.run.spec import build_spec
from bench.protocols.irof import irof_quantities
from bench.engine.superpixels import slic_labels

from conftest import FAST_MODEL, composed, heatmaps_and_targets, quantus_scores


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def colour_images(n=5, size=16, seed=0):
    """Smooth random RGB images in [0, 1]: SLIC finds a different number of segments in each."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * fine + 0.2 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


SLIC = {"n_segments": 12, "compactness": 10.0, "sigma": 0.0, "max_num_iter": 10}


def test_slic_labels_are_scikit_images_segments_and_do_not_depend_on_the_batch():
    raw = colour_images()
    ids, counts = slic_labels(raw, (0.0, 1.0), **SLIC)
    assert len(set(counts)) > 1  # (the ragged case is exercised)
    for i in range(len(raw)):
        seg = slic(raw[i].permute(1, 2, 0).double().numpy(), start_label=0, channel_axis=-1, **SLIC)
        assert counts[i] == len(np.unique(seg))
        np.testing.assert_array_equal(ids[i].numpy(), np.unique(seg, return_inverse=True)[1].reshape(seg.shape))
        alone, c = slic_labels(raw[i:i + 1], (0.0, 1.0), **SLIC)
        assert c == [counts[i]] and torch.equal(alone[0], ids[i])
    scaled, _ = slic_labels(raw * 255, (0.0, 255.0), **SLIC)  # the raw range is scaled to [0, 1] first
    assert torch.equal(scaled, ids)


def test_ragged_regions_by_hand():
    ids = torch.tensor([[[0, 0, 1], [2, 2, 1]], [[0, 1, 2], [3, 4, 4]]])  # 3 and 5 regions
    regions = Regions.per_image(ids, [3, 5], aggregate="mean")
    heat = torch.tensor([[[1.0, 3.0, 5.0], [0.0, 2.0, 7.0]], [[4.0, 1.0, 9.0], [2.0, 3.0, 5.0]]])
    expected = torch.tensor([[2.0, 6.0, 1.0, 0, 0], [4.0, 1.0, 9.0, 2.0, 4.0]])
    assert torch.equal(regions.relevance(heat), expected)
    assert regions.sizes.tolist() == [[2, 2, 2, 0, 0], [1, 1, 1, 1, 2]]
    orders = regions.orders(heat, ["a", "b"], seed=0)
    assert orders["morf"][0].tolist()[:3] == [1, 0, 2] and sorted(orders["morf"][0, 3:].tolist()) == [3, 4]
    assert orders["morf"][1].tolist() == [2, 0, 4, 3, 1]
    assert orders["lerf"][0].tolist()[:3] == [2, 0, 1] and orders["lerf"][1].tolist() == [1, 3, 4, 0, 2]
    assert sorted(orders["random"][0, :3].tolist()) == [0, 1, 2] and orders["random"][0, 3:].tolist() == [3, 4]
    # each image's orders are its own, whatever the batch
    alone = Regions.per_image(ids[:1, :, :], [3]).orders(heat[:1], ["a"], seed=0)
    assert alone["random"][0].tolist() == orders["random"][0, :3].tolist()
    ranks = regions.ranks(orders["morf"])
    assert ranks[0].tolist() == [[1, 1, 0], [2, 2, 0]]
    assert regions.fraction(orders["morf"], 5)[0].tolist() == pytest.approx([2 / 6, 4 / 6, 1, 1, 1])
    per_step = torch.tensor([[10.0, 20, 30, 99, 99], [1.0, 2, 3, 4, 5]])
    assert regions.extend(per_step, 7).tolist() == [[10, 20, 30, 30, 30, 30, 30], [1, 2, 3, 4, 5, 5, 5]]


def linear_model(channels=3, size=16, classes=4, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * size * size, classes)).eval()


def test_superpixel_curves_equal_numpy_on_a_linear_model():
    """f = W x + b, heatmap = sensitivity (‖W_c‖₂ over channels per pixel); MoRF/LeRF by the mean heatmap of
    scikit-image's segments, black replacement, against a NumPy loop; the curve stays after R steps."""
    raw = colour_images()
    model = linear_model()
    steps = 20
    tables = bench.evaluate_explanations(model, raw, mean=0, std=1, method="sensitivity", perturbation="zero",
                                         steps=steps,
                                         repeats=1, bootstrap=20, orders=["morf", "lerf", "random"],
                                         regions={"kind": "slic", **SLIC})
    curves = tables["curves"]
    assert set(curves.regions) == {"slic"} and set(curves.n_regions) == {0} and set(curves.L) == {steps}
    w = model[1].weight.detach().double().numpy().reshape(4, 3, 256)
    b = model[1].bias.detach().double().numpy()
    x = raw.double().numpy().reshape(5, 3, 256)
    for i in range(5):
        c = int(np.argmax(w.reshape(4, -1) @ x[i].reshape(-1) + b))
        seg = slic(raw[i].permute(1, 2, 0).double().numpy(), start_label=0, channel_axis=-1, **SLIC).reshape(-1)
        labels = np.unique(seg)
        heat = np.sqrt((w[c] ** 2).sum(0))
        means = np.array([heat[seg == s].mean() for s in labels])
        morf = labels[np.argsort(-means)]
        for order, sequence in (("morf", morf), ("lerf", morf[::-1])):
            perturbed, values = x[i].copy(), [w[c].ravel() @ x[i].ravel() + b[c]]
            for k in range(steps):
                if k < len(sequence):
                    perturbed[:, seg == sequence[k]] = 0.0
                values.append(w[c].ravel() @ perturbed.ravel() + b[c])
            sizes = [(seg == s).sum() for s in sequence] + [0] * steps
            got = curves[(curves.image_id == curves.image_id.unique()[i]) & (curves.order == order)]
            np.testing.assert_allclose(got.score_value, values, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got.fraction_perturbed, np.cumsum([0] + sizes)[:steps + 1] / 256, rtol=1e-6)
            assert got.fraction_perturbed.iloc[-1] == 1.0  # (R < steps: the curve stays after R)


@pytest.fixture(scope="module")
def irof_case():
    raw = colour_images(n=6, size=24, seed=3)[:, :1]  # (Quantus IROF masks one channel only: C > 1 fails there)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 12 * 12, 5)).eval()
    tables = bench.evaluate_explanations(model, raw, mean=0, std=1, method="sensitivity", steps=2, repeats=1,
                                         bootstrap=20, save_heatmaps=6, metrics=["aopc", "irof"],
                                         irof={"compactness": 10.0})  # Quantus's (scikit-image's default)
    return raw, model, tables


def test_irof_agrees_with_quantus(irof_case, monkeypatch):
    """Quantus 0.6 ``IROF`` segments the model input with ``slic(x, start_label=0)`` (here equal to the raw image:
    mean 0, std 1, so the segments coincide), ranks segments by their mean attribution, replaces them one after
    another and reports R − trapezoid(p_1 … p_R) per image (``irof_aoc``). Its ``mean`` baseline is the mean of the
    whole current batch array, recomputed each step; the definitions coincide when it is handed the image's
    per-channel mean (one image per call)."""
    import quantus

    raw, model, tables = irof_case
    ours = irof_quantities(tables["irof"])
    ids, heat, target = heatmaps_and_targets(tables, "irof")
    x = raw.numpy()
    diffs = []
    for i, image_id in enumerate(ids):
        baseline = np.broadcast_to(x[i].mean((1, 2), keepdims=True), x[i:i + 1].shape).copy()
        metric = quantus.IROF(segmentation_method="slic", perturb_baseline=baseline, abs=False, normalise=False,
                              return_aggregate=False, disable_warnings=True, display_progressbar=False)
        theirs = quantus_scores(metric, model, x[i:i + 1], target[i:i + 1], heat[i:i + 1], True, monkeypatch)
        diffs.append(abs(theirs[0] - ours.loc[image_id, "irof_aoc"]))
    print(f"largest difference from Quantus IROF: {max(diffs):.1e}")
    assert max(diffs) <= 1e-4 * ours.irof_aoc.abs().max(), diffs


def test_irof_curve_and_summary(irof_case):
    _, _, tables = irof_case
    irof, summary = tables["irof"], tables["summary"].set_index("quantity")
    for (image_id, order), g in irof.groupby(["image_id", "order"]):
        assert g.step.tolist() == list(range(g.irof_regions.iloc[0] + 1))  # every superpixel, then the row ends
        assert g.relative_score.iloc[0] == 1.0 and g.fraction_perturbed.iloc[-1] == pytest.approx(1.0)
        np.testing.assert_allclose(g.relative_score, g.score_value / g.score_value.iloc[0], rtol=1e-6)
    per_image = irof_quantities(irof)
    morf = irof[irof.order == "morf"]
    hand = morf.groupby("image_id").relative_score.apply(lambda p: np.mean(1 - p.to_numpy(np.float64)))
    np.testing.assert_allclose(per_image.irof_morf, hand.loc[per_image.index], rtol=1e-12)
    for q in ("irof_morf", "irof_random", "irof_morf_minus_random", "irof_aoc"):
        assert summary.loc[q, "mean"] == pytest.approx(per_image[q].mean(), rel=1e-9)
    assert set(irof.irof_substrate) == {"image_mean"} and set(irof.irof_score) == {"softmax"}


JOB = [*FAST_MODEL, "regions=slic", "regions.compactness=0.1", "regions.n_segments=30", "irof.compactness=0.1",
       "irof.n_segments=20", "metrics=[aopc,srg,pixel_flipping,irof]", "orders=[morf,lerf,random]", "n_images=6",
       "steps=40", "repeats=2", "bootstrap=50", "block_size=3", "pixel_flipping.steps=6", "method=sensitivity"]
TABLES = ("curves", "pixel_flipping", "irof")


def test_same_tables_for_any_batch_size_and_for_two_shards(tmp_path):
    got = {}
    for bs in (1, 7, 64):
        run(composed([*JOB, f"batch_size={bs}"]), tmp_path / f"bs{bs}")
        got[bs] = {k: pd.read_parquet(tmp_path / f"bs{bs}" / f"{k}.parquet") for k in TABLES}
    curves = got[64]["curves"]
    counts = got[64]["irof"].groupby("image_id").irof_regions.first()
    assert counts.nunique() > 1  # superpixels differ per image
    assert curves.step.max() == 40 and (curves[curves.step == 40].fraction_perturbed == 1).all()
    for bs in (1, 7):  # the model's convolutions may round differently at another batch shape
        for k in TABLES:
            np.testing.assert_allclose(got[bs][k].score_value, got[64][k].score_value, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(got[bs][k].fraction_perturbed, got[64][k].fraction_perturbed)
        np.testing.assert_array_equal(got[bs]["pixel_flipping"].region, got[64]["pixel_flipping"].region)
    for shard in (0, 1):
        run(composed([*JOB, "batch_size=64", f"shard={shard}", "num_shards=2"]), tmp_path / "shards" / f"s{shard}")
    merged = collect(tmp_path / "shards", write=False).tables
    for k in TABLES:
        keep = [c for c in got[64][k].columns if c != "wall_time_s"]
        pd.testing.assert_frame_equal(merged[k][keep].reset_index(drop=True), got[64][k][keep].reset_index(drop=True),
                                      check_exact=True)


@pytest.mark.parametrize("override, message", [
    ("regions.kind=hexagons", "regions.kind"),
    ("regions.n_segments=1", "regions.n_segments must be"),
    ("+regions.patch=3", "unknown setting 'regions.patch'"),
    ("irof.substrate=gray", "irof.substrate"),
    ("irof.compactness=0", "irof.compactness must be"),
])
def test_bad_settings_are_one_line(override, message):
    with pytest.raises(BenchError, match=message) as err:
        build_spec(composed([*FAST_MODEL, "regions=slic", "metrics=[aopc,irof]", override]))
    assert "\n" not in str(err.value)


def test_irof_uses_the_runs_superpixels_when_the_settings_agree():
    """With ``regions=slic`` and the same SLIC settings in ``irof`` the run's segments are reused (not computed
    twice); the IROF table is the one a tiles run computes with its own segmentation."""
    raw, model = colour_images(), linear_model()
    common = dict(mean=0, std=1, method="sensitivity", steps=5, repeats=1, bootstrap=20, metrics=["aopc", "irof"],
                  irof=SLIC)
    tiles = bench.evaluate_explanations(model, raw, **common)["irof"]
    slic_run = bench.evaluate_explanations(model, raw, regions={"kind": "slic", **SLIC}, **common)["irof"]
    own = [c for c in tiles.columns
           if c not in ("run_key", "regions", "regions_params", "equal_regions", "n_regions", "L", "wall_time_s")]
    pd.testing.assert_frame_equal(slic_run[own], tiles[own], check_exact=True)


def test_default_compactness_gives_real_superpixels_on_grayscale_images():
    """DEFINITIONS §9: on the embedded MNIST default (grayscale in [0, 1]) the compactness chosen for the images
    (0.1) gives segments that follow the digits; scikit-image's 10 there gives a regular grid of rectangles."""
    from bench.engine.superpixels import compactness_for, slic_labels
    from bench.run.spec import build_spec

    spec = build_spec(composed([*FAST_MODEL, "n_images=8", "regions=slic"]))
    assert spec.regions["compactness"] is None and compactness_for(1) == 0.1 and compactness_for(3) == 10.0
    data = spec.dataset.obj
    raw = torch.stack([data.get(i)[1] for i in range(8)])

    def rectangles(compactness):
        labels, _ = slic_labels(raw, data.normalization.raw_range, 100, compactness, 0.0, 10)
        shares = []
        for image in labels.numpy():
            for s in np.unique(image):
                ys, xs = np.nonzero(image == s)
                shares.append(len(ys) == (np.ptp(ys) + 1) * (np.ptp(xs) + 1))
        return np.mean(shares)

    assert rectangles(10.0) == 1.0            # a grid
    assert rectangles(None) < 0.8             # the digits' outlines: most segments on them are not rectangles
