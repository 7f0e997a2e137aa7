"""Infidelity (``metrics=[aopc,infidelity]``, DEFINITIONS §9): the known answers of a linear model (its gradient has
infidelity 0, gradient × input has σ² Σ_p W_cp² (x_p − 1)² in expectation) and a NumPy float64 re-implementation from
perturbations rebuilt from the seeding primitives; against Captum 0.9 ``captum.metrics.infidelity`` and Quantus 0.6
``Infidelity`` handed the suite's own perturbations; batch-size and shard invariance; one-line errors; the CLI's
summary.csv."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

import bench
from bench.engine.counter_rng import fold, normal, uniform
from bench.engine.seeding import keys_of, rand_per_image
from bench.errors import BenchError
from bench.protocols.infidelity import Infidelity, infidelities
from bench.report.load import load_results
from bench.run.job import run
from bench.run.spec import build_spec

from conftest import (FAST_MODEL, assert_one_job, batch_sizes_and_two_shards, bench_main, composed,
                      heatmaps_and_targets, quantus_scores)

MEAN, STD, S, SIGMA = 0.1307, 0.3081, 40, 0.1
QUANTITIES = ("infidelity", "infidelity_random", "infidelity_minus_random")
BLACK = np.float32((0.0 - MEAN) / STD)


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


# ------------------------------------------------------------------------------------ by hand

def sample_keys_by_hand(image_id, stream, samples):
    """The k-th perturbation's key of one image, from the seeding primitives (not the protocol's helper)."""
    return fold(keys_of(0, stream, [image_id]).repeat(samples), torch.arange(samples))


def noise_by_hand(image_id, samples=S, sigma=SIGMA):
    """(samples, 784) float32: the perturbations I_p ~ N(0, σ²) of one image, as applied to the model input."""
    return (normal(sample_keys_by_hand(image_id, "infidelity_noise", samples), (784,), "cpu") * sigma).numpy()


def squares_by_hand(image_id, size, samples=S, side=28):
    """(samples, 784) bool: one image's squares of side ``size``, top-left corner ⌊u·(side − size + 1)⌋."""
    u = uniform(sample_keys_by_hand(image_id, "infidelity_square", samples), (2,), "cpu").numpy().astype(np.float64)
    masks = np.zeros((samples, side, side), bool)
    for k, (top, left) in enumerate(np.floor(u * (side - size + 1)).astype(int)):
        masks[k, top:top + size, left:left + size] = True
    return masks.reshape(samples, -1)


def infidelity_by_hand(a, d, normalize):
    """mean_k (β a_k − d_k)², β = mean(a d) / mean(a²) when normalising, else 1 (float64)."""
    a, d = np.asarray(a, np.float64), np.asarray(d, np.float64)
    beta = (a * d).mean() / (a * a).mean() if normalize else 1.0
    return ((beta * a - d) ** 2).mean()


def digits(n=4):
    from bench.plugins import build

    data = build("datasets", {"plugin": "mnist_embedded", "params": {}}, "dataset")
    items = [data.get(i) for i in range(n)]
    return [i for i, _, _ in items], torch.stack([r for _, r, _ in items]).float()


def linear_run(heatmaps=None, **infidelity):
    """Four digits, f = W x + b explained by gradient × input (or the given heatmaps), and the suite's tables."""
    ids, raw = digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    x = ((raw.numpy() - MEAN) / STD).astype(np.float32)
    with torch.no_grad():
        target = model(torch.from_numpy(x)).argmax(1).numpy()
    settings = dict(image_ids=ids, mean=MEAN, std=STD, steps=2, repeats=1, bootstrap=20,
                    metrics=["aopc", "infidelity"], infidelity={"samples": S, **infidelity})
    if heatmaps is None:
        tables = bench.evaluate_explanations(model, raw, method="gradient_x_input", **settings)
    else:
        tables = bench.evaluate_explanations(model, raw, heatmaps=heatmaps(model, x, target), **settings)
    return model, ids, x, target, tables


def gradient(model, x, target):
    return model[1].weight.detach().numpy()[target].reshape(-1, 28, 28)


# ------------------------------------------------------------------------------------ known answers

@pytest.mark.parametrize("normalize", [False, True])
def test_linear_model_gradient_has_infidelity_zero(normalize):
    """f = W x + b: f_c(x) − f_c(x − I) = W_cᵀ I exactly, so the gradient W_c has infidelity 0 (up to float32
    rounding of the logits) and β = 1; gradient × input W_c ⊙ x does not: its error Σ_p W_cp (x_p − 1) I_p has the
    expectation σ² Σ_p W_cp² (x_p − 1)² squared — checked within 4 standard errors of a mean of 400 χ²₁ draws."""
    _, _, _, _, grad = linear_run(gradient, normalize=normalize)
    model, ids, x, target, gxi = linear_run(normalize=False, samples=400)
    g = grad["infidelity"]
    assert (g.infidelity < 1e-10).all(), g.infidelity.max()
    np.testing.assert_allclose(g.infidelity_beta, 1.0, rtol=1e-5)
    t = gxi["infidelity"]
    w = model[1].weight.detach().double().numpy()[target]
    expected = SIGMA**2 * (w**2 * (x.reshape(4, -1).astype(np.float64) - 1) ** 2).sum(1)
    assert (t.infidelity > 1e6 * g.infidelity.max()).all()
    np.testing.assert_allclose(t.infidelity, expected, rtol=4 * np.sqrt(2 / 400))
    assert set(t.infidelity_perturbation) == {"noise"} and set(t.infidelity_sigma) == {SIGMA}
    assert set(t.infidelity_samples) == {400} and set(t.infidelity_score) == {"logit"}
    assert t.infidelity_size.isna().all() and set(t.infidelity_normalize) == {False}


@pytest.mark.parametrize("perturbation, normalize", [("noise", False), ("noise", True), ("square", True),
                                                      ("square_binary", False)])
def test_equals_numpy_float64_from_the_same_draws(perturbation, normalize):
    """The linear model explained by gradient × input: the suite's table against NumPy float64 from perturbations
    rebuilt from the seeding primitives, f computed in float64, and the seeded uniform random heatmap."""
    model, ids, x, target, tables = linear_run(perturbation=perturbation, normalize=normalize)
    table = tables["infidelity"]
    assert list(table.image_id) == ids and list(table.target_class) == list(target)
    w = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    random = rand_per_image(0, "infidelity_random_heatmap", ids, (784,)).double().numpy()
    for i, image_id in enumerate(ids):
        flat, c = x[i].reshape(-1), target[i]
        h = w[c] * flat.astype(np.float64)  # gradient × input
        if perturbation == "noise":
            noise = noise_by_hand(image_id)
            perturbed, i_p = flat - noise, noise.astype(np.float64)  # the model sees float32 x − I
        else:
            masks = squares_by_hand(image_id, 4)
            assert (masks.sum(1) == 16).all() and len({m.tobytes() for m in masks}) > S // 2
            perturbed = np.where(masks, BLACK, flat)
            i_p = masks.astype(np.float64) if perturbation == "square_binary" else flat - perturbed.astype(np.float64)
        drops = (w[c] @ flat.astype(np.float64) + b[c]) - (perturbed.astype(np.float64) @ w[c] + b[c])
        ours = table.iloc[i]
        assert ours.infidelity == pytest.approx(infidelity_by_hand(i_p @ h, drops, normalize), rel=1e-5)
        assert ours.infidelity_random == pytest.approx(infidelity_by_hand(i_p @ random[i], drops, normalize),
                                                       rel=1e-5)
        a = i_p @ h
        assert ours.infidelity_beta == pytest.approx((a * drops).mean() / (a * a).mean(), rel=1e-5)
    # the per-image quantities and the summary
    per_image = Infidelity.per_image(tables)
    assert list(per_image.index) == ids and list(per_image.columns) == list(QUANTITIES)
    np.testing.assert_allclose(per_image.infidelity_minus_random, table.infidelity - table.infidelity_random)
    summary = tables["summary"].set_index("quantity")
    assert summary.loc["infidelity", "mean"] == pytest.approx(table.infidelity.mean())
    assert Infidelity.per_image({}) is None


def test_normalised_infidelity_does_not_depend_on_the_heatmaps_scale():
    """Yeh et al.: infidelity is not invariant to the explanation's scale; with ``normalize`` the least-squares β
    absorbs it (β of 3h is β(h)/3), without it 3h is worse."""
    def tripled(model, x, target):
        return 3 * gradient(model, x, target) * x.reshape(-1, 28, 28)

    def once(model, x, target):
        return gradient(model, x, target) * x.reshape(-1, 28, 28)

    one, three = (linear_run(h, normalize=True)[-1]["infidelity"] for h in (once, tripled))
    np.testing.assert_allclose(three.infidelity, one.infidelity, rtol=1e-5)
    np.testing.assert_allclose(three.infidelity_beta, one.infidelity_beta / 3, rtol=1e-5)
    np.testing.assert_allclose(three.infidelity_random, one.infidelity_random, rtol=1e-12)
    one, three = (linear_run(h, normalize=False)[-1]["infidelity"] for h in (once, tripled))
    assert (three.infidelity > 2 * one.infidelity).all()


def test_beta_is_zero_for_a_zero_heatmap():
    """Iᵀh ≡ 0: β = 0 (Captum's safe division), and the infidelity is the mean squared score change."""
    sums, drops = torch.zeros(1, 5, 1, dtype=torch.float64), torch.arange(5.0, dtype=torch.float64).view(1, 5, 1)
    infd, beta = infidelities(sums, drops, normalize=True)
    assert beta.item() == 0 and infd.item() == pytest.approx(6.0)


# ------------------------------------------------------------------------------------ reference libraries

def small_cnn():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 8, 3, stride=2),
                               torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 5 * 5, 10)).eval()


def cnn_case(**infidelity):
    """Four digits, a small random one-channel CNN explained by gradient × input: (model, x, ids, heatmaps (N, 1,
    28, 28), random heatmaps (N, 1, 28, 28), targets, the suite's infidelity table)."""
    ids, raw = digits()
    model = small_cnn()
    tables = bench.evaluate_explanations(model, raw, method="gradient_x_input", image_ids=ids, mean=MEAN, std=STD,
                                         steps=2, repeats=1, bootstrap=20, metrics=["aopc", "infidelity"],
                                         infidelity={"samples": S, **infidelity})
    order, heat, target = heatmaps_and_targets(tables, "infidelity")
    assert order == ids
    x = ((raw.numpy() - MEAN) / STD).astype(np.float32)
    random = rand_per_image(0, "infidelity_random_heatmap", ids, (784,)).numpy().reshape(4, 1, 28, 28)
    return model, x, ids, heat, random, target, tables["infidelity"].set_index("image_id").loc[ids]


def suite_perturbations(perturbation, x, ids):
    """(I (N·S, 1, 28, 28) float64, x − I (N·S, 1, 28, 28) float32), image-major as Captum expands its inputs."""
    perturbations, perturbed = [], []
    for i, image_id in enumerate(ids):
        flat = x[i].reshape(-1)
        if perturbation == "noise":
            noise = noise_by_hand(image_id)
            perturbations.append(noise.astype(np.float64))
            perturbed.append(flat - noise)
        else:
            masks = squares_by_hand(image_id, 4)
            moved = np.where(masks, BLACK, flat)
            perturbed.append(moved)
            perturbations.append(masks.astype(np.float64) if perturbation == "square_binary"
                                 else (flat - moved).astype(np.float64))
    shape = (len(ids) * S, 1, 28, 28)
    return (torch.from_numpy(np.concatenate(perturbations).reshape(shape)),
            torch.from_numpy(np.concatenate(perturbed).reshape(shape)))


@pytest.mark.parametrize("perturbation", ["noise", "square", "square_binary"])
@pytest.mark.parametrize("normalize", [False, True])
def test_agrees_with_captum_given_the_same_perturbations(perturbation, normalize):
    """Captum 0.9 ``infidelity`` with a ``perturb_func`` that returns the suite's own perturbations and perturbed
    inputs (it calls it once on the N·S image-major copies when ``max_examples_per_batch`` is None). With one input
    channel Captum's Σ_{c,p} I_cp R_cp is the suite's Σ_p I_p h_p exactly; its ``normalize`` is the suite's β.
    Captum's own helper for binary I (``infidelity_perturb_func_decorator(True)``) would set I = (x − x̃)/(x −
    baseline), i.e. 0 on square pixels already at the substrate, where Yeh's (and this suite's) indicator is 1 — so
    the suite's indicator is handed over directly. The perturbations and attributions are handed over in float64 (the
    exact float32 values): Captum then sums Iᵀh in float64 as the suite does."""
    from captum.metrics import infidelity

    model, x, ids, heat, random, target, table = cnn_case(perturbation=perturbation, normalize=normalize)
    perturbations, perturbed = suite_perturbations(perturbation, x, ids)
    calls = []

    def perturb_func(inputs):
        assert inputs.shape == perturbed.shape
        np.testing.assert_array_equal(inputs[::S].numpy(), x)
        calls.append(1)
        return perturbations, perturbed

    largest = 0.0
    for attributions, column in ((heat, "infidelity"), (random, "infidelity_random")):
        theirs = infidelity(model, perturb_func, torch.from_numpy(x),
                            torch.from_numpy(attributions.astype(np.float64)), target=torch.tensor(target),
                            n_perturb_samples=S, normalize=normalize).numpy()
        ours = table[column].to_numpy()
        largest = max(largest, float(np.abs(theirs / ours - 1).max()))
    assert len(calls) == 2
    print(f"{perturbation}, normalize={normalize}: largest relative difference from Captum {largest:.1e}")
    assert largest <= 1e-5, largest


def test_agrees_with_quantus_where_the_definitions_coincide(monkeypatch):
    """Where Quantus 0.6 ``Infidelity`` differs from the paper and from this suite:

    * its perturbations are not random: for each patch size it walks the grid of non-overlapping patch×patch tiles
      in raster order and removes them *cumulatively* (tile k's input has tiles 0 … k set to the baseline, and its
      I = x − x̃ covers all of them), so it averages over nested removals, not over random squares; the
      ``n_perturb_samples`` runs repeat the same deterministic walk (identical numbers unless the baseline is random);
    * its loss is the plain MSE of (Σ a ⊙ (x − x̃) − Δf) over those tiles and runs: there is no β — its
      ``normalise`` (default on) rescales the attributions by their maximum, not by the least-squares β of Yeh;
    * I is x − x̃ (the suite's ``square``), never the binary indicator nor Gaussian noise; 'black' is each image's
      minimum (here the normalised 0 of MNIST, as asserted); a patch size must divide H and W.

    So the two coincide for ``perturbation=square``, ``normalize=false``, ``substrate=zero`` when Quantus's tile
    generator (``quantus.helpers.utils.get_block_indices``) yields, in run k, one block only: each image's k-th
    seeded square of the suite (its flat indices per image, as Quantus's blocks are). Its MSE over that one block is
    the squared error of sample k, and its mean over the runs is the suite's infidelity."""
    import quantus
    from quantus.helpers import utils

    model, x, ids, heat, random, target, table = cnn_case(perturbation="square", normalize=False)
    assert np.allclose(x.reshape(4, -1).min(1), BLACK, rtol=1e-6)
    masks = np.stack([squares_by_hand(image_id, 4) for image_id in ids])  # (N, S, 784)
    blocks = [np.stack([np.flatnonzero(masks[i, k]) for i in range(4)]) for k in range(S)]  # (N, 16) per run
    largest = 0.0
    for a, column in ((heat, "infidelity"), (random, "infidelity_random")):
        queue = list(blocks)
        monkeypatch.setattr(utils, "get_block_indices", lambda x_batch, patch_size: iter([queue.pop(0)]))
        metric = quantus.Infidelity(perturb_patch_sizes=[4], n_perturb_samples=S, perturb_baseline="black",
                                    abs=False, normalise=False, return_aggregate=False, disable_warnings=True,
                                    display_progressbar=False)
        theirs = quantus_scores(metric, model, x, target, a.astype(np.float64), False, monkeypatch)
        assert not queue
        largest = max(largest, float(np.abs(theirs / table[column].to_numpy() - 1).max()))
    print(f"largest relative difference from Quantus: {largest:.1e}")
    assert largest <= 1e-5, largest


# ------------------------------------------------------------------------------------ runs

JOB = [*FAST_MODEL, "metrics=[aopc,infidelity]", "n_images=4", "steps=2", "repeats=1", "bootstrap=20",
       "infidelity.samples=12", "method=sensitivity", "block_size=2"]


def assert_same_numbers(got, want):
    """Two infidelity tables of the same images: equal settings and ids; infidelities equal to float32 rounding of
    the logits. Normalised infidelity is a least-squares residual: a change δ of Δf (the rounding of the logits,
    ~1e-6 here, which the batch's composition changes) moves it by ~2·√INFD·δ, i.e. by 2e-5 … 4e-5 relative on
    this model (measured), so √INFD (the RMS residual, in logits) is compared to 1e-5 absolute; β = mean(a Δf) /
    mean(a²) carries δ / rms(a), large where few squares touch the digit."""
    exact = [c for c in want.columns if c not in ("wall_time_s", "infidelity", "infidelity_random", "infidelity_beta")]
    pd.testing.assert_frame_equal(got[exact], want[exact], check_exact=True)
    for column in ("infidelity", "infidelity_random"):
        np.testing.assert_allclose(np.sqrt(got[column]), np.sqrt(want[column]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.infidelity_beta, want.infidelity_beta, rtol=1e-3)


@pytest.mark.parametrize("perturbation", ["noise", "square"])
def test_same_numbers_for_any_batch_size_and_for_two_shards(tmp_path, perturbation):
    job = [*JOB, f"infidelity.perturbation={perturbation}"]
    got, merged = batch_sizes_and_two_shards(job, "infidelity", tmp_path)
    whole = got[64]
    assert len(whole) == 4 and whole.infidelity.notna().all() and whole.infidelity_random.notna().all()
    assert (whole.infidelity > 1e-4).all() and (whole.infidelity_random > 1e-4).all()
    for bs in (1, 7):
        assert_same_numbers(got[bs], whole)
    assert_one_job(merged, whole)


@pytest.mark.parametrize("override, message", [
    ("infidelity.sigma=0", "infidelity.sigma must be a number > 0, got 0"),
    ("infidelity.sigma=-0.5", "infidelity.sigma must be a number > 0, got -0.5"),
    ("infidelity.samples=1", "infidelity.samples must be an integer ≥ 2, got 1"),
    ("infidelity.size=0", "infidelity.size must be an integer ≥ 1"),
    ("infidelity.normalize=yes", "infidelity.normalize must be true or false, got 'yes'"),
    ("infidelity.perturbation=blur", "infidelity.perturbation must be one of noise, square, square_binary"),
    ("infidelity.score=probability", "infidelity.score must be one of"),
    ("+infidelity.foo=1", "unknown setting 'infidelity.foo'; valid infidelity keys: perturbation, sigma, size"),
])
def test_bad_settings_are_one_line(override, message):
    with pytest.raises(BenchError, match=re.escape(message)) as error:
        build_spec(composed([*FAST_MODEL, "metrics=[aopc,infidelity]", override]))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("perturbation", ["square", "square_binary"])
def test_a_square_as_large_as_the_image_is_one_line(perturbation):
    for size in (28, 40):
        with pytest.raises(BenchError, match=re.escape(f"infidelity.size={size} must be smaller than the shorter "
                                                       f"side of the 28×28 images")) as error:
            build_spec(composed([*FAST_MODEL, "metrics=[aopc,infidelity]", f"infidelity.perturbation={perturbation}",
                                 f"infidelity.size={size}"]))
        assert "\n" not in str(error.value)
    build_spec(composed([*FAST_MODEL, "metrics=[aopc,infidelity]", f"infidelity.perturbation={perturbation}",
                         "infidelity.size=27"]))
    build_spec(composed([*FAST_MODEL, "metrics=[aopc,infidelity]", "infidelity.size=28"]))  # noise: no square


def test_unknown_key_on_the_command_line_is_one_line(capsys):
    code, _, err = bench_main([*FAST_MODEL, "metrics=[aopc,infidelity]", "infidelity.foo=1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "infidelity.foo" in err, err


def test_cli_run_lands_the_three_quantities_in_summary_csv(tmp_path):
    run(composed([*FAST_MODEL, "metrics=[aopc,infidelity]", "n_images=4", "steps=2", "repeats=1", "bootstrap=20",
                  "batch_size=64", "infidelity.samples=5"]), tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("quantity")
    assert set(QUANTITIES) <= set(summary.index)
    rows = summary.loc[list(QUANTITIES)]
    assert (rows.n_images == 4).all() and np.isfinite(rows["mean"]).all(), rows
    assert rows.loc["infidelity_minus_random", "mean"] == pytest.approx(
        rows.loc["infidelity", "mean"] - rows.loc["infidelity_random", "mean"], abs=1e-9)
    table = pd.read_parquet(tmp_path / "infidelity.parquet")
    assert len(table) == 4 and set(table.infidelity_samples) == {5} and set(table.infidelity_normalize) == {True}
    assert set(table.infidelity_perturbation) == {"noise"} and set(table.infidelity_sigma) == {0.1}
    results = load_results([tmp_path])
    run_name, = results.runs.run
    assert len(results.run_table(run_name, "infidelity")) == len(table)
    reread = results.run_quantities(run_name)[list(QUANTITIES)]
    np.testing.assert_allclose(reread.mean().to_numpy(), rows["mean"].to_numpy(), rtol=1e-12)
