"""Region perturbation (DEFINITIONS §3–4) and AOPC (TNNLS eq. 12) on models whose outputs are known by hand."""

import torch

from bench.interfaces import Normalization
from bench.engine.curves import perturbed_scores
from bench.protocols.aopc import aopc_curve
from bench.engine.replacement import Uniform
from bench.engine.regions import n_regions, pixel_ranks, region_relevance, seeded_orders, tile_ids


def sum_model(inputs, target):
    return inputs.flatten(1).sum(1)


def test_aopc_equals_hand_computed_value():
    # 1×4×4 image whose four 2×2 regions sum to 4, 3, 2, 1; f(x) = sum of pixels; g = zero.
    x = torch.tensor([[1.0, 1, 0.75, 0.75], [1, 1, 0.75, 0.75], [0.5, 0.5, 0.25, 0.25], [0.5, 0.5, 0.25, 0.25]])
    x = x.view(1, 1, 4, 4)
    ids = tile_ids(4, 4, 2)
    order = seeded_orders(region_relevance(x[:, 0], ids, 4), ["a"], seed=0)["morf"]
    assert order.tolist() == [[0, 1, 2, 3]]
    ranks = pixel_ranks(order, ids).unsqueeze(1)
    zeros = torch.zeros(1, 1, 1, 4, 4)
    scores = perturbed_scores(sum_model, x, ranks, zeros, torch.zeros(1, dtype=torch.long), 4, batch_size=3)
    assert scores.flatten().tolist() == [6.0, 3.0, 1.0, 0.0]
    curve = torch.cat([torch.tensor([[10.0]]), scores[:, 0, 0]], 1)
    aopc = aopc_curve(torch.tensor([10.0]), curve)
    # AOPC(L) = 1/(L+1) Σ_{k≤L} (f0 − f_k): drops 0, 4, 7, 9, 10
    assert torch.allclose(aopc[0], torch.tensor([0.0, 4 / 2, 11 / 3, 20 / 4, 30 / 5]))


def test_step_k_replaces_exactly_the_first_k_regions_with_fixed_draws():
    torch.manual_seed(0)
    b, c, h, w, m = 2, 3, 7, 9, 3
    x = torch.randn(b, c, h, w)
    ids = tile_ids(h, w, m)
    count = n_regions(h, w, m)
    orders = seeded_orders(torch.randn(b, count), ["a", "b"], seed=3)
    ranks = torch.stack([pixel_ranks(orders[o], ids) for o in ("morf", "random")], 1)
    draws = Uniform().draw(x, ["a", "b"], repeats=2, seed=0, norm=Normalization((0, 1), (0.5,) * 3, (0.2,) * 3))
    seen = {}

    def recorder(inputs, target):
        seen.setdefault("inputs", []).append(inputs.clone())
        return inputs.flatten(1).sum(1)

    perturbed_scores(recorder, x, ranks, draws, torch.zeros(b, dtype=torch.long), count, batch_size=5)
    inputs = torch.cat(seen["inputs"]).view(b, 2, 2, count, c, h, w)
    for i in range(b):
        for oi, o in enumerate(("morf", "random")):
            for j in range(2):
                for k in range(1, count + 1):
                    xi = inputs[i, oi, j, k - 1]
                    changed = (xi != x[i]).any(0)
                    first_k = torch.isin(ids, orders[o][i, :k])
                    assert torch.equal(changed, first_k)  # exactly the first k regions, no other pixel
                    assert torch.equal(xi[:, first_k], draws[i, j][:, first_k])  # the region's one draw


def test_chunk_inputs_are_the_same_bits_per_group_and_gathered(monkeypatch):
    """bench.engine.chunk_inputs: broadcast where per (image, order, repeat) group, or one gathered where."""
    import bench.engine.curves as engine

    torch.manual_seed(2)
    b, c, h, w, m = 3, 2, 6, 5, 2
    x = torch.randn(b, c, h, w)
    ids = tile_ids(h, w, m)
    count = n_regions(h, w, m)
    orders = seeded_orders(torch.randn(b, count), ["a", "b", "c"], seed=1)
    ranks = torch.stack([pixel_ranks(orders[o], ids) for o in ("morf", "random")], 1)
    draws = torch.randn(b, 3, c, h, w)

    monkeypatch.setattr(engine, "MIN_GROUP_NUMEL", 0)

    def inputs_of(groups, steps, batch_size):
        monkeypatch.setattr(engine, "GROUPS_PER_CHUNK", groups)
        seen = []
        perturbed_scores(lambda inp, t: seen.append(inp.clone()) or inp.flatten(1).sum(1), x, ranks, draws,
                         torch.zeros(b, dtype=torch.long), steps, batch_size)
        return torch.cat(seen)

    for steps in (1, 4, count):
        ref = inputs_of(0, steps, 1000)  # all gathered, one chunk
        assert len(ref) == b * 2 * 3 * steps
        for groups in (0, 1, 16, 10_000):
            for batch_size in (1, 3, 7, 64):
                assert torch.equal(inputs_of(groups, steps, batch_size), ref), (steps, groups, batch_size)


def test_uniform_draws_cover_raw_range_and_depend_only_on_image_id():
    norm = Normalization((0.0, 1.0), (0.5,), (0.25,))
    x = torch.zeros(3, 1, 8, 8)
    a = Uniform().draw(x, ["p", "q", "r"], 4, 0, norm)
    b = Uniform().draw(x[:1], ["q"], 4, 0, norm)
    assert torch.equal(a[1], b[0])
    raw = norm.denormalize(a)
    assert raw.min() >= 0 and raw.max() <= 1 and raw.std() > 0.2


def test_scores_do_not_depend_on_batch_size():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    x = torch.randn(3, 3, 4, 4)
    ids = tile_ids(4, 4, 3)
    count = n_regions(4, 4, 3)
    orders = seeded_orders(torch.randn(3, count), ["a", "b", "c"], seed=0)
    ranks = torch.stack([pixel_ranks(orders[o], ids) for o in ("morf", "random")], 1)
    draws = torch.randn(3, 4, 3, 4, 4)
    target = torch.tensor([0, 3, 4])

    def fn(inputs, t):
        return model(inputs).gather(1, t.view(-1, 1)).squeeze(1)

    ref = perturbed_scores(fn, x, ranks, draws, target, count, batch_size=1)
    for bs in (2, 7, 1000):
        assert torch.allclose(perturbed_scores(fn, x, ranks, draws, target, count, batch_size=bs), ref,
                              rtol=1e-6, atol=1e-6)


def test_morf_curve_equals_quantus_region_perturbation():
    """Independent implementation: Quantus 0.6's RegionPerturbation (one model call per step, NumPy
    perturbations) on the same model, images, heatmaps and a deterministic replacement (the constant 0 in
    model-input units) gives the same curve f(x) − f(x⁽ᵏ⁾) for every step. Only sizes divisible by the
    patch are compared: for the others Quantus centres its grid (padding both sides), DEFINITIONS §3 starts the
    tiles at the top-left corner."""
    import numpy as np
    import quantus

    from bench.models import embedded_cnn
    from bench.engine.scoring import score_of

    torch.manual_seed(0)
    model = embedded_cnn().eval()
    b, h, w, patch = 5, 28, 28, 4
    x = torch.randn(b, 1, h, w)
    heat = torch.rand(b, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(x).argmax(1)
    ids = tile_ids(h, w, patch)
    count = n_regions(h, w, patch)
    order = seeded_orders(region_relevance(heat, ids, count), [str(i) for i in range(b)], seed=0)["morf"]
    ranks = pixel_ranks(order, ids).unsqueeze(1)
    L = 20

    def score_fn(inputs, t):
        return score_of(model(inputs), t, "logit")

    with torch.no_grad():
        ours = perturbed_scores(score_fn, x, ranks, torch.zeros(b, 1, 1, h, w), target, L, batch_size=16)
        drop = (score_fn(x, target).view(-1, 1) - ours[:, 0, 0]).numpy()
    metric = quantus.RegionPerturbation(patch_size=patch, order="morf", regions_evaluation=L, perturb_baseline=0.0,
                                        normalise=False, abs=False, disable_warnings=True,
                                        display_progressbar=False)
    theirs = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=heat[:, None].numpy(),
                               softmax=False, batch_size=b, device="cpu"))
    assert theirs.shape == (b, L)
    np.testing.assert_allclose(drop, theirs, rtol=1e-5, atol=1e-5)
