"""Sensitivity-n (``metrics=[aopc,sensitivity_n]``, DEFINITIONS §9): against SciPy's Pearson correlation of sums and score
drops computed by NumPy from subsets reproduced from the seeding primitives; the known answer r = 1 of a linear
model explained by gradient × input with a substrate at 0 in model-input units; against Quantus 0.6 ``SensitivityN``
where the two definitions coincide; batch-size and shard invariance; one-line errors; the CLI's summary.csv."""

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr

import bench
from bench.engine.counter_rng import fold, uniform
from bench.engine.seeding import keys_of, rand_per_image
from bench.errors import BenchError
from bench.protocols.sensitivity_n import SensitivityN, default_sizes, pearson
from bench.report.load import load_results
from bench.run.job import run
from bench.run.spec import build_spec

from conftest import (FAST_MODEL, assert_one_job, batch_sizes_and_two_shards, bench_main, composed,
                      quantus_scores)

MEAN, STD, K = 0.1307, 0.3081, 20
SIZES = (7, 10, 49, 98, 200, 392)   # 7, 49, 98 and 392 divide 784 (Quantus needs features_in_step | H·W)
QUANTITIES = ("sensitivity_n", "sensitivity_n_random", "sensitivity_n_minus_random")


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def by_hand_orders(ids, sizes, subsets, pixels=784):
    """{(image index, n): (subsets, pixels)} the pixels in the order of their seeded uniform draws (ties: the lower
    index first), whose first n are the subsets of size n, rebuilt one image and one size at a time from the seeding
    primitives (not from the protocol's helper) and ordered by NumPy."""
    out = {}
    for i, image_id in enumerate(ids):
        key = keys_of(0, "sensitivity_n_subsets", [image_id])
        for n in sizes:
            draws = uniform(fold(fold(key, torch.tensor([n])).repeat(subsets), torch.arange(subsets)), (pixels,), "cpu")
            out[i, n] = np.argsort(draws.numpy(), axis=1, kind="stable")
    return out


def linear_run(mean, std, sizes=SIZES, order=None):
    """Four digits and a blank image, f = W x + b, heatmap gradient × input = W_c ⊙ x, and the suite's tables."""
    from bench.plugins import build

    data = build("datasets", {"plugin": "mnist_embedded", "params": {}}, "dataset")
    items = [data.get(i) for i in range(4)]
    raw = torch.cat([torch.stack([r for _, r, _ in items]).float(), torch.zeros(1, 1, 28, 28)])
    ids = [i for i, _, _ in items] + ["blank"]
    if order is not None:
        raw, ids = raw[order], [ids[i] for i in order]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    tables = bench.evaluate_explanations(
        model, raw, method="gradient_x_input", image_ids=ids, mean=mean, std=std, steps=2, repeats=1, bootstrap=20,
        metrics=["aopc", "sensitivity_n"], sensitivity_n={"subsets": K, "n": list(sizes)})
    x = ((raw.numpy().astype(np.float64) - mean) / std).astype(np.float32)
    with torch.no_grad():
        target = model(torch.from_numpy(x)).argmax(1).numpy()
    w = model[1].weight.detach().numpy()
    heat = (w[target] * x.reshape(len(x), -1)).reshape(len(x), 1, 28, 28)
    return model, ids, x, target, heat, tables


@pytest.fixture(scope="module")
def linear_case():
    return linear_run(MEAN, STD)


def correlations_by_hand(model, ids, x, target, heat, substrate, sizes=SIZES):
    """{(image index, n): (r of the heatmap, r of the random heatmap)}, in float64 NumPy and scipy.stats.pearsonr."""
    w = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    random = rand_per_image(0, "sensitivity_n_random_heatmap", ids, (784,)).double().numpy()
    perms = by_hand_orders(ids, sizes, K)
    out = {}
    for i in range(len(ids)):
        flat, c, h = x[i].reshape(-1).astype(np.float64), target[i], heat[i].reshape(-1).astype(np.float64)
        for n in sizes:
            subsets = perms[i, n][:, :n]
            assert all(len(set(s)) == n for s in subsets) and len({tuple(sorted(s)) for s in subsets}) == K
            drops, sums, sums_random = [], [], []
            for s in subsets:
                perturbed = flat.copy()
                perturbed[s] = np.float32(substrate)  # as x: the blank image's drops are exactly 0
                drops.append((w[c] @ flat + b[c]) - (w[c] @ perturbed + b[c]))
                sums.append(h[s].sum())
                sums_random.append(random[i, s].sum())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the blank image: constant drops, pearsonr warns and gives NaN
                out[i, n] = (pearsonr(sums, drops)[0], pearsonr(sums_random, drops)[0])
    return out


def test_equals_pearson_of_sums_and_drops_by_hand(linear_case):
    model, ids, x, target, heat, tables = linear_case
    table = tables["sensitivity_n"]
    assert list(table.image_id.unique()) == ids and list(table.n[:len(SIZES)]) == list(SIZES)
    np.testing.assert_allclose(table.fraction, table.n / 784)
    by_hand = correlations_by_hand(model, ids, x, target, heat, (0.0 - MEAN) / STD)
    got = table.set_index(["image_id", "n"])
    for (i, n), (r, r_random) in by_hand.items():
        row = got.loc[(ids[i], n)]
        np.testing.assert_allclose([row.correlation, row.correlation_random], [r, r_random], atol=1e-5, rtol=0)
    blank = got.loc["blank"]
    assert blank.correlation.isna().all() and blank.correlation_random.isna().all()  # no score drop varies
    assert table.correlation.notna().sum() == 4 * len(SIZES)
    assert set(table.sensitivity_n_subsets) == {K} and set(table.sensitivity_n_substrate) == {"zero"}
    assert set(table.sensitivity_n_score) == {"logit"}
    # the per-image quantities: the means over n, and their difference
    per_image = SensitivityN.per_image(tables)
    assert list(per_image.index) == ids and list(per_image.columns) == list(QUANTITIES)
    mean = table.groupby("image_id", sort=False)[["correlation", "correlation_random"]].mean()
    np.testing.assert_allclose(per_image.sensitivity_n, mean.correlation)
    np.testing.assert_allclose(per_image.sensitivity_n_minus_random, mean.correlation - mean.correlation_random)
    assert math.isnan(per_image.sensitivity_n["blank"])
    summary = tables["summary"].set_index("quantity")
    assert summary.loc["sensitivity_n", "n_images"] == 4  # the blank image has no value
    assert summary.loc["sensitivity_n", "mean"] == pytest.approx(per_image.sensitivity_n.iloc[:4].mean())


def test_linear_model_gradient_x_input_is_sensitive_n_exactly():
    """f = W x + b and h = W_c ⊙ x: f_c(x) − f_c(x_S←0) = Σ_{i∈S} W_ci x_i = Σ_{i∈S} h_i for every S when the
    substrate is 0 in model-input units (mean 0, std 1: black is 0), so r_n = 1 for every image and n. With the
    MNIST normalisation black is −μ/σ: the drop gains (μ/σ) Σ_{i∈S} W_ci, which varies with S, and r_n < 1. A random
    heatmap is far from 1."""
    model, ids, x, target, heat, tables = linear_run(0.0, 1.0)
    table = tables["sensitivity_n"].set_index("image_id").drop(index="blank")
    assert (table.correlation > 1 - 1e-6).all(), table.correlation.min()
    assert (table.correlation_random.abs() < 0.9).all()
    by_hand = correlations_by_hand(model, ids, x, target, heat, 0.0, sizes=(49,))
    assert all(abs(r - 1) < 1e-9 for (i, _), (r, _) in by_hand.items() if ids[i] != "blank")
    with_offset = linear_run(MEAN, STD, sizes=(49,))[-1]["sensitivity_n"].set_index("image_id").drop(index="blank")
    assert (with_offset.correlation < 1 - 1e-3).all()


def test_subsets_do_not_depend_on_the_grid_or_the_batch():
    tables = linear_run(MEAN, STD, sizes=(49,), order=[4, 2, 0, 3, 1])[-1]
    tables_all = linear_run(MEAN, STD)[-1]
    one = tables["sensitivity_n"].set_index("image_id")
    whole = tables_all["sensitivity_n"].set_index(["image_id", "n"]).xs(49, level="n").loc[one.index]
    np.testing.assert_allclose(one[["correlation", "correlation_random"]], whole[["correlation", "correlation_random"]],
                               atol=1e-6, equal_nan=True)


class _NumpyWithOrders:
    """NumPy as Quantus's sensitivity_n module sees it, except ``argsort``: the given (batch, features) orders."""

    def __init__(self, orders):
        self.orders = orders

    def __getattr__(self, name):
        return getattr(np, name)

    def argsort(self, a, axis=-1, **kwargs):
        assert a.shape == self.orders.shape and axis == 1, (a.shape, axis)
        return self.orders


def test_agrees_with_quantus_where_the_definitions_coincide(linear_case, monkeypatch):
    """Where Quantus 0.6 ``SensitivityN`` differs from the paper and from this suite:

    * it samples nothing: its subsets are nested prefixes of one order per image, ``np.argsort(-a)`` (most
      relevant first), removed cumulatively — step j sets features 0 … (j+1)·s − 1 of the order (s =
      ``features_in_step``) to the baseline; this suite draws ``subsets`` independent uniform subsets per n;
    * its attribution side at step j is the sum over the j-th chunk of s features only, while the score drop is that
      of all (j+1)·s removed features — so for j ≥ 1 it does not compare Σ_{i∈S} h_i with the drop for S;
    * it correlates across the *images* of a batch at each step (one r per step for the batch; and only the first
      batch of ``batch_size`` images enters), this suite across the subsets of *one* image at each n;
    * n runs over s, 2s, … up to 80 % of the features (s must divide H·W), here over a log-spaced grid;
    * 'black' is each image's minimum (here the normalised 0 of MNIST, as asserted); ``softmax`` defaults to on (here
      off: logits, the suite's default); ``normalise`` (default on) divides the whole batch by its largest |a|, one
      positive factor that no Pearson correlation sees (off here).

    So the two coincide at Quantus's first step when its batch is ``subsets`` copies of one image whose 'orders' are
    the suite's seeded orders of the pixels for size n (handed to it through ``argsort``) and s = n: its r at step 0
    is then this suite's r_n of that image. At step 1 it is the chunk-only correlation, checked here by hand."""
    from quantus.metrics.faithfulness import sensitivity_n as module
    import quantus

    model, ids, x, target, heat, tables = linear_case
    assert np.allclose(x[:4].reshape(4, -1).min(1), (0.0 - MEAN) / STD, rtol=1e-6)
    got = tables["sensitivity_n"].set_index(["image_id", "n"])
    random = rand_per_image(0, "sensitivity_n_random_heatmap", ids, (784,)).numpy().reshape(len(ids), 1, 28, 28)
    sizes = [n for n in SIZES if 784 % n == 0 and n > 7]  # (n = 7: 112 steps of Quantus, slow and the same test)
    perms = by_hand_orders(ids, sizes, K)
    w = model[1].weight.detach().double().numpy()
    largest, checked = 0.0, 0
    for i in range(len(ids)):
        for n in sizes:
            copies = np.repeat(x[i:i + 1], K, 0)
            monkeypatch.setattr(module, "np", _NumpyWithOrders(perms[i, n]))
            for a, column in ((heat, "correlation"), (random, "correlation_random")):
                metric = quantus.SensitivityN(features_in_step=n, n_max_percentage=0.8, abs=False, normalise=False,
                                              perturb_baseline="black", return_aggregate=False,
                                              disable_warnings=True, display_progressbar=False)
                theirs = quantus_scores(metric, model, copies, np.repeat(target[i:i + 1], K),
                                        np.repeat(a[i:i + 1], K, 0), False, monkeypatch)
                ours = got.loc[(ids[i], n), column]
                if ids[i] == "blank":
                    assert math.isnan(ours) and math.isnan(theirs[0])
                    continue
                largest, checked = max(largest, abs(theirs[0] - ours)), checked + 1
                if len(theirs) > 1:  # step 1: the second chunk's sum against the drop of both chunks
                    order, flat = perms[i, n], a[i].reshape(-1).astype(np.float64)
                    chunk = flat[order[:, n:2 * n]].sum(1)
                    x0 = x[i].reshape(-1).astype(np.float64)
                    drop = (w[target[i]][order[:, :2 * n]] * (x0[order[:, :2 * n]] - x0.min())).sum(1)
                    assert theirs[1] == pytest.approx(pearsonr(chunk, drop)[0], abs=1e-5)
    print(f"largest difference from Quantus over {checked} (image, n, heatmap) cases: {largest:.1e}")
    assert checked == 4 * len(sizes) * 2 and largest <= 1e-5, largest


def test_per_image_means_over_the_finite_r():
    rows = pd.DataFrame({"image_id": ["z", "z", "z", "a", "a", "m", "m"], "n": [1, 2, 3, 1, 2, 1, 2],
                         "correlation": [0.5, np.nan, 0.7, np.nan, np.nan, 0.2, 0.4],
                         "correlation_random": [0.1, 0.3, np.nan, 0.0, np.nan, np.nan, np.nan]})
    got = SensitivityN.per_image({"sensitivity_n": rows})
    assert list(got.index) == ["z", "a", "m"] and list(got.columns) == list(QUANTITIES)
    np.testing.assert_allclose(got.sensitivity_n, [0.6, np.nan, 0.3])
    np.testing.assert_allclose(got.sensitivity_n_random, [0.2, 0.0, np.nan])
    np.testing.assert_allclose(got.sensitivity_n_minus_random, [0.4, np.nan, np.nan])
    assert SensitivityN.per_image({}) is None
    note, = SensitivityN.notes({"sensitivity_n": rows})
    assert "for 3 of 7 image × n rows" in note and "1 image(s) have none defined" in note, note
    assert SensitivityN.notes({"sensitivity_n": rows.fillna(0.0)}) == []


def test_pearson_is_nan_exactly_when_a_side_is_constant():
    """Constant drops of 0.1 leave residues of 1e-17 after the mean is subtracted: r would be 0, not undefined."""
    a = torch.full((1, 7), 0.1, dtype=torch.float64)
    b = torch.arange(7, dtype=torch.float64)[None]
    assert torch.isnan(pearson(a, b, 1)).all() and torch.isnan(pearson(b, a, 1)).all()
    g = torch.Generator().manual_seed(0)
    u, v = torch.rand(3, 9, generator=g, dtype=torch.float64), torch.rand(3, 9, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(pearson(u, v, 1), [pearsonr(p, q)[0] for p, q in zip(u.numpy(), v.numpy())], rtol=1e-12)


def test_default_grid():
    assert default_sizes(784) == (8, 13, 21, 34, 55, 89, 146, 237, 385, 627)
    assert default_sizes(224 * 224)[0] == 502 and default_sizes(224 * 224)[-1] == 40141
    assert default_sizes(16) == (1, 2, 3, 5, 8, 13) and default_sizes(2) == (1,)
    assert SensitivityN().sizes(784) == default_sizes(784) and SensitivityN(n=(3, 5)).sizes(784) == (3, 5)


JOB = [*FAST_MODEL, "metrics=[aopc,sensitivity_n]", "n_images=4", "steps=2", "repeats=1", "bootstrap=20",
       "sensitivity_n.subsets=6", "sensitivity_n.n=[10,100,400]", "method=sensitivity", "block_size=2"]


def test_same_numbers_for_any_batch_size_and_for_two_shards(tmp_path):
    got, merged = batch_sizes_and_two_shards(JOB, "sensitivity_n", tmp_path)
    whole = got[64]
    assert len(whole) == 4 * 3 and list(whole.n[:3]) == [10, 100, 400]
    assert whole.correlation.notna().all() and whole.correlation_random.notna().all()
    for bs in (1, 7):
        for column in ("correlation", "correlation_random"):
            np.testing.assert_allclose(got[bs][column], whole[column], rtol=1e-5, atol=1e-5)
    assert_one_job(merged, whole)


@pytest.mark.parametrize("override, message", [
    ("sensitivity_n.n=[100,50]", "sensitivity_n.n must be strictly increasing, got [100, 50]"),
    ("sensitivity_n.n=[10,784]", "sensitivity_n.n=[10, 784]: every size must be smaller than the 28×28 = 784 pixels"),
    ("sensitivity_n.n=[0,5]", "sensitivity_n.n[0] must be an integer ≥ 1"),
    ("sensitivity_n.n=[]", "sensitivity_n.n must be a non-empty list of integers"),
    ("sensitivity_n.subsets=1", "sensitivity_n.subsets must be an integer ≥ 2"),
    ("sensitivity_n.score=probability", "sensitivity_n.score must be one of"),
    ("sensitivity_n.substrate=grey", "sensitivity_n.substrate must be one of"),
    ("+sensitivity_n.foo=1", "unknown setting 'sensitivity_n.foo'; valid sensitivity_n keys: n, subsets"),
])
def test_bad_settings_are_one_line(override, message):
    with pytest.raises(BenchError, match=re.escape(message)) as error:
        build_spec(composed([*FAST_MODEL, "metrics=[aopc,sensitivity_n]", override]))
    assert "\n" not in str(error.value)


def test_unknown_key_on_the_command_line_is_one_line(capsys):
    code, _, err = bench_main([*FAST_MODEL, "metrics=[aopc,sensitivity_n]", "sensitivity_n.foo=1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "sensitivity_n.foo" in err, err


def test_cli_run_lands_the_three_quantities_in_summary_csv(tmp_path):
    run(composed([*FAST_MODEL, "metrics=[aopc,sensitivity_n]", "n_images=4", "steps=2", "repeats=1",
                  "bootstrap=20", "batch_size=64", "sensitivity_n.subsets=5"]), tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("quantity")
    assert set(QUANTITIES) <= set(summary.index)
    rows = summary.loc[list(QUANTITIES)]
    assert (rows.n_images == 4).all() and np.isfinite(rows["mean"]).all(), rows
    table = pd.read_parquet(tmp_path / "sensitivity_n.parquet")
    assert list(table.n.unique()) == list(default_sizes(784)) and set(table.sensitivity_n_subsets) == {5}
    assert rows.loc["sensitivity_n_minus_random", "mean"] == pytest.approx(
        rows.loc["sensitivity_n", "mean"] - rows.loc["sensitivity_n_random", "mean"], abs=1e-9)
    # the report reads every image × n row back (Table.keys) and gets the summary's per-image values
    results = load_results([tmp_path])
    run_name, = results.runs.run
    assert len(results.run_table(run_name, "sensitivity_n")) == len(table)
    reread = results.run_quantities(run_name)[list(QUANTITIES)]
    np.testing.assert_allclose(reread.mean().to_numpy(), rows["mean"].to_numpy(), rtol=1e-12)
