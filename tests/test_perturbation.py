"""Replacement functions g, orders, and the Evaluator's invariants (DEFINITIONS §3–4, issue: engine)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bench.interfaces import Method, Normalization
from bench.engine.curves import perturbed_scores, sequential_scores
from bench.protocols.aopc import aopc_curve
from bench.errors import BenchError
from bench.run.evaluate import Evaluator
from bench.engine.replacement import Blur, Inpaint, Mean, Uniform, Zero, make_replacement
from bench.engine.regions import n_regions, pixel_ranks, region_relevance, seeded_orders, tile_ids

NORM = Normalization((0.0, 1.0), (0.5, 0.4), (0.25, 0.2))


def test_constant_replacements_in_raw_units():
    x = torch.randn(2, 2, 5, 5)
    zero = NORM.denormalize(Zero().draw(x, ["a", "b"], 3, 0, NORM))
    mean = NORM.denormalize(Mean().draw(x, ["a", "b"], 3, 0, NORM))
    assert zero.shape == (2, 3, 2, 5, 5) and torch.allclose(zero, torch.zeros(()), atol=1e-6)
    assert torch.allclose(mean[:, :, 0], torch.tensor(0.5)) and torch.allclose(mean[:, :, 1], torch.tensor(0.4))


@pytest.mark.parametrize("g", [Blur(1.0), Inpaint()])
def test_sequential_step_changes_only_the_region(g):
    torch.manual_seed(0)
    x = torch.rand(3, 2, 9, 9)
    region = torch.zeros(3, 1, 9, 9, dtype=torch.bool)
    region[:, :, 3:6, 3:6] = True
    y = g.step(x, region)
    assert torch.equal(y[~region.expand_as(y)], x[~region.expand_as(x)])
    assert not torch.allclose(y[region.expand_as(y)], x[region.expand_as(x)])


@pytest.mark.parametrize("g", [Blur(1.5), Inpaint()])
def test_sequential_replacement_of_a_constant_image_is_constant(g):
    x = torch.full((1, 3, 8, 8), 0.3)
    region = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    region[..., :4, 4:] = True
    assert torch.allclose(g.step(x, region), x, atol=1e-5)


def test_inpaint_fills_a_linear_ramp_exactly():
    ramp = torch.linspace(0, 1, 10).view(1, 1, 1, 10).expand(1, 1, 10, 10).contiguous()
    region = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    region[..., 3:6, 4:7] = True
    assert torch.allclose(Inpaint().step(ramp, region), ramp, atol=1e-4)


def test_unknown_perturbation_and_bad_params():
    with pytest.raises(BenchError, match="unknown perturbation 'smudge'; available: uniform, zero, mean, blur"):
        make_replacement("smudge")
    with pytest.raises(BenchError, match="sigma > 0"):
        make_replacement("blur", sigma=0)
    with pytest.raises(BenchError, match="bad params"):
        make_replacement("zero", value=3)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(2, 12), w=st.integers(2, 12), m=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_step_k_has_exactly_k_regions_replaced_static_and_sequential(h, w, m, seed):
    m = min(m, h, w)
    count = n_regions(h, w, m)
    ids = tile_ids(h, w, m)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, h, w, generator=gen) + 2.0  # replacement values (≤ 1) always differ from x
    orders = seeded_orders(torch.randn(2, count, generator=gen), ["p", "q"], seed)
    ranks = pixel_ranks(orders["morf"], ids).unsqueeze(1)
    seen = []

    def record(inputs, t):
        seen.append(inputs.clone())
        return inputs.flatten(1).sum(1)

    perturbed_scores(record, x, ranks, torch.rand(2, 1, 1, h, w, generator=gen), torch.zeros(2, dtype=torch.long),
                     count, batch_size=7)
    static = torch.cat(seen).view(2, count, 1, h, w)
    seen.clear()
    sequential_scores(record, x, ranks, lambda cur, reg: torch.where(reg, torch.zeros_like(cur), cur),
                      torch.zeros(2, dtype=torch.long), count, batch_size=3)
    sequential = torch.cat(seen).view(count, 2, 1, h, w).transpose(0, 1)
    for inputs in (static, sequential):
        for k in range(1, count + 1):
            changed = (inputs[:, k - 1, 0] != x[:, 0])
            expected = torch.stack([torch.isin(ids, orders["morf"][i, :k]) for i in range(2)])
            assert torch.equal(changed, expected)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 4))
def test_oracle_morf_on_a_linear_model_beats_random(seed, m):
    """f(x) = Σ w_p x_p with zero replacement: the heatmap w ⊙ x is each pixel's true effect, so its MoRF
    order removes the most score first and its AOPC is at least that of any other order."""
    gen = torch.Generator().manual_seed(seed)
    h = w = 8
    weight = torch.randn(h * w, generator=gen)
    x = torch.rand(3, 1, h, w, generator=gen)

    def linear(inputs, t):
        return inputs.flatten(1) @ weight

    ids, count = tile_ids(h, w, m), n_regions(h, w, m)
    heat = (x[:, 0] * weight.view(h, w))
    orders = seeded_orders(region_relevance(heat, ids, count), ["a", "b", "c"], seed)
    ranks = torch.stack([pixel_ranks(orders[o], ids) for o in ("morf", "random")], 1)
    scores = perturbed_scores(linear, x, ranks, torch.zeros(3, 1, 1, h, w), torch.zeros(3, dtype=torch.long),
                              count, batch_size=16)
    f0 = linear(x, None)
    curves = torch.cat([f0.view(3, 1, 1).expand(3, 2, 1), scores[:, :, 0]], -1)
    aopc = aopc_curve(f0.view(3, 1), curves)
    assert (aopc[:, 0, :] >= aopc[:, 1, :] - 1e-5).all()


class Saliency(Method):
    def attribute(self, model, x, target, ctx):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(model(x).gather(1, target.view(-1, 1)).sum(), x)
        return g


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 3)).eval()


def evaluator(batch_size, **kw):
    opts = dict(model=tiny_model(), method=Saliency(), pooling="l2", replacement=Uniform(), normalization=NORM,
                image_hw=(10, 10), patch=3, steps=20, repeats=3, batch_size=batch_size, seed=5)
    opts.update(kw)
    return Evaluator(**opts)


def rows_for(ev, raw, ids, labels, split):
    import pandas as pd

    parts = []
    for s in range(0, len(ids), split):
        tables, _ = ev.evaluate(ids[s:s + split], raw[s:s + split], labels[s:s + split], list(range(s, s + split)))
        parts.append(tables)
    return {k: pd.concat([p[k] for p in parts], ignore_index=True) for k in parts[0]}


@pytest.mark.parametrize("replacement", [Uniform(), Blur(1.0)])
def test_same_rows_whatever_the_batch_size_and_image_split(replacement):
    raw = torch.rand(5, 2, 10, 10, generator=torch.Generator().manual_seed(0))
    ids, labels = [f"im{i}" for i in range(5)], torch.tensor([0, 1, 2, 0, 1])
    kw = dict(replacement=replacement, orders=("morf", "lerf"), per_repeat=True)
    ref = rows_for(evaluator(1000, **kw), raw, ids, labels, split=5)
    for bs, split in ((1, 1), (4, 2), (7, 3)):
        other = rows_for(evaluator(bs, **kw), raw, ids, labels, split=split)
        for name in ref:
            np.testing.assert_allclose(other[name].score_value, ref[name].score_value, rtol=1e-5, atol=1e-6)
    assert set(ref["curves"].order) == {"morf", "lerf", "random"}
    assert len(ref["curves_repeats"]) == 5 * 3 * (3 if replacement.random else 1) * 16


def test_lerf_follows_the_morf_order_from_its_end():
    raw = torch.rand(2, 2, 10, 10, generator=torch.Generator().manual_seed(1))
    ev = evaluator(64, replacement=Zero(), orders=("morf", "lerf"), steps=16)
    tables, _ = ev.evaluate(["a", "b"], raw, torch.tensor([0, 1]))
    c = tables["curves"]
    # with all 16 regions replaced both orders end in the same fully-replaced image
    last = c[c.step == 16].groupby("image_id").score_value.nunique()
    assert (last == 1).all()
    assert ev.repeats == 1  # a deterministic g needs no repeats


def test_bf16_precision_and_channels_last_agree_with_fp32():
    raw = torch.rand(3, 2, 10, 10, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2])
    ref, _ = evaluator(64).evaluate(["a", "b", "c"], raw, labels)
    low, _ = evaluator(64, precision="bf16", channels_last=True).evaluate(["a", "b", "c"], raw, labels)
    scale = ref["curves"].score_value.abs().max()
    assert np.abs(low["curves"].score_value - ref["curves"].score_value).max() < 0.05 * scale


def test_complexity_and_continuity_tables():
    raw = torch.rand(3, 2, 10, 10, generator=torch.Generator().manual_seed(3))
    from bench.protocols import protocol_class

    ev = evaluator(8, protocols=(protocol_class("aopc")(), protocol_class("complexity")(),
                                 protocol_class("continuity").from_config(dict(kind="noise", sigma=0.1, n_samples=3))))
    tables, _ = ev.evaluate(["a", "b", "c"], raw, torch.tensor([0, 1, 2]))
    assert list(tables["complexity"].image_id) == ["a", "b", "c"]
    assert (tables["complexity"].png_bytes > 0).all() and (tables["complexity"].entropy_bits > 0).all()
    cont = tables["continuity"]
    assert list(cont.image_id) == ["a", "b", "c"] and (cont.continuity_max >= cont.continuity_mean).all()
    assert (cont.n_pairs == 3).all()


def test_compiled_forward_sees_one_static_shape_and_gives_the_same_rows():
    """compile=true pads a short chunk to batch_size (bench/run/evaluate.py Evaluator.logits): the compiled graph
    is never recompiled for the last chunk, and the padding never reaches a number."""
    raw = torch.rand(3, 2, 10, 10, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2])
    ref, _ = evaluator(16).evaluate(["a", "b", "c"], raw, labels)
    ev = evaluator(16)
    shapes = []

    def recorded(inputs):
        shapes.append(tuple(inputs.shape))
        return ev.model(inputs)

    ev.compile, ev._forward = True, recorded  # what torch.compile(model) would be called with
    got, _ = ev.evaluate(["a", "b", "c"], raw, labels)
    assert shapes and set(shapes) == {(16, 2, 10, 10)}  # 3 unperturbed images, 3 × 2 × 3 × 16 = 288 perturbed
    np.testing.assert_allclose(got["curves"].score_value, ref["curves"].score_value, rtol=1e-6, atol=1e-6)
