"""Faithfulness correlation (``metrics=[aopc,faithfulness_correlation]``, DEFINITIONS §9): against SciPy's Pearson
correlation of scores computed by NumPy, and against Quantus 0.6 ``FaithfulnessCorrelation`` given the same
subsets; batch-size invariance; one-line errors."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

import bench
from bench.errors import BenchError
from bench.engine.seeding import rand_per_image
from bench.run.spec import build_spec

from conftest import FAST_MODEL, assert_one_job, batch_sizes_and_two_shards, composed

MEAN, STD, N, SIZE = 0.1307, 0.3081, 20, 10


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


@pytest.fixture(scope="module")
def linear_case():
    """Four digits, f = W x + b, heatmap gradient × input = W_c ⊙ x, and the suite's table for them."""
    from bench.plugins import build

    data = build("datasets", {"plugin": "mnist_embedded", "params": {}}, "dataset")
    items = [data.get(i) for i in range(4)]
    raw = torch.stack([r for _, r, _ in items]).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    ids = [i for i, _, _ in items]
    tables = bench.evaluate_explanations(
        model, raw, method="gradient_x_input", image_ids=ids, mean=MEAN, std=STD, steps=2, repeats=1,
        bootstrap=20, metrics=["aopc", "faithfulness_correlation"],
        faithfulness_correlation={"subsets": N, "subset_size": SIZE})
    x = ((raw.numpy() - MEAN) / STD).astype(np.float32)
    with torch.no_grad():
        target = model(torch.from_numpy(x)).argmax(1).numpy()
    w = model[1].weight.detach().numpy()
    heat = (w[target] * x.reshape(4, -1)).reshape(4, 1, 28, 28)
    subsets = rand_per_image(0, "faithfulness_subsets", ids, (N, 784)).topk(SIZE, dim=-1, largest=False).indices
    return model, x, target, heat, subsets.numpy(), tables["faithfulness_correlation"]


def test_equals_pearson_of_scores_by_hand(linear_case):
    model, x, target, heat, subsets, table = linear_case
    w = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    for i in range(4):
        flat, c = x[i].reshape(-1).astype(np.float64), target[i]
        drops, sums = [], []
        for s in subsets[i]:
            perturbed = flat.copy()
            perturbed[s] = (0.0 - MEAN) / STD  # black
            drops.append((w[c] @ flat + b[c]) - (w[c] @ perturbed + b[c]))
            sums.append(heat[i].reshape(-1)[s].astype(np.float64).sum())
        assert len({tuple(sorted(s)) for s in subsets[i]}) == N and all(len(set(s)) == SIZE for s in subsets[i])
        assert table.faithfulness_correlation.iloc[i] == pytest.approx(pearsonr(sums, drops)[0], abs=1e-5)
    assert set(table.fc_subsets) == {N} and set(table.fc_subset_size) == {SIZE}


def test_agrees_with_quantus_given_the_same_subsets(linear_case, monkeypatch):
    """Quantus draws each subset with ``np.random.choice(n_features, subset_size, replace=False)``, run by run
    and image by image; handing it the suite's subsets in that order makes the definitions coincide (one
    channel: its features are the pixels; its 'black' is the image's minimum, the normalised 0 of MNIST)."""
    import quantus

    model, x, target, heat, subsets, table = linear_case
    assert np.allclose(x.reshape(4, -1).min(1), (0.0 - MEAN) / STD, rtol=1e-6)
    queue = [subsets[b, run] for run in range(N) for b in range(4)]
    monkeypatch.setattr(np.random, "choice", lambda n, size, replace=False: queue.pop(0))
    metric = quantus.FaithfulnessCorrelation(nr_runs=N, subset_size=SIZE, perturb_baseline="black", abs=False,
                                             normalise=False, return_aggregate=False, disable_warnings=True,
                                             display_progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric(model=model, x_batch=x, y_batch=target, a_batch=heat, device="cpu", softmax=False)
    assert not queue
    diff = np.abs(np.asarray(theirs) - table.faithfulness_correlation.to_numpy()).max()
    print(f"largest difference from Quantus: {diff:.1e}")
    assert diff <= 1e-5, diff


def test_same_numbers_for_any_batch_size_and_for_two_shards(tmp_path):
    job = [*FAST_MODEL, "metrics=[aopc,faithfulness_correlation]", "n_images=4", "steps=2", "repeats=1",
           "bootstrap=20", "faithfulness_correlation.subsets=12", "method=sensitivity", "block_size=2"]
    got, merged = batch_sizes_and_two_shards(job, "faithfulness_correlation", tmp_path)
    np.testing.assert_allclose(got[1].faithfulness_correlation, got[64].faithfulness_correlation, rtol=1e-5)
    np.testing.assert_allclose(got[7].faithfulness_correlation, got[64].faithfulness_correlation, rtol=1e-5)
    whole = got[64]
    assert set(whole.fc_subset_size) == {4}
    assert_one_job(merged, whole)


@pytest.mark.parametrize("override, message", [
    ("faithfulness_correlation.subset_size=784", "subset_size=784 must be smaller than the 28×28 = 784 pixels"),
    ("faithfulness_correlation.subsets=1", "faithfulness_correlation.subsets must be"),
])
def test_bad_settings_are_one_line(override, message):
    with pytest.raises(BenchError, match=message):
        build_spec(composed([*FAST_MODEL, "metrics=[aopc,faithfulness_correlation]", override]))
