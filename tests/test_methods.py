"""The method catalogue (methods/, conf/method/): every config runs, is batched and seeded per image,
leaves the model untouched, and the non-LRP methods match their definitions on small examples."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bench import plugins
from bench.interfaces import Context, Normalization
from bench.errors import BenchError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
CATALOGUE = ["random", "sensitivity", "sensitivity_linf", "sensitivity_sq", "gradient_x_input", "deconvnet",
             "guided_backprop", "lrp_0", "lrp_eps", "lrp_eps_0.01", "lrp_eps_100", "lrp_a2b1", "lrp_a1b0",
             "lrp_gamma", "deep_taylor", "lrp_composite", "integrated_gradients", "smoothgrad", "occlusion",
             "translation"]
NORM = Normalization(raw_range=(0.0, 1.0), mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))


def load(name, **overrides):
    """(method object, default pooling) from conf/method/<name>.yaml, params overridden."""
    cfg = OmegaConf.load(ROOT / "conf" / "method" / f"{name}.yaml")
    params = {} if cfg.get("params") is None else OmegaConf.to_container(cfg.params, resolve=True)
    params = {**params, **overrides}
    method = plugins.load_class("methods", cfg.plugin)(**params)
    return method, cfg.get("pooling") or method.pooling


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(), nn.Linear(24, 5),
    ).eval()


def ctx(ids, seed=0):
    return Context(image_ids=list(ids), seed=seed, normalization=NORM)


def images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return NORM.normalize(torch.rand(n, 3, 12, 12, generator=g))


FAST = {"integrated_gradients": dict(steps=8), "smoothgrad": dict(samples=6)}


def test_the_catalogue_is_complete():
    assert set(CATALOGUE) <= set(CONFIGS)


class ThreeImages:
    """The ids and shape of ``images()`` as a dataset, for the methods that read files by image id."""
    image_shape = (3, 12, 12)

    def image_id(self, index):
        return "abc"[index]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_runs_batched_and_leaves_the_model_untouched(name, tmp_path):
    params = dict(FAST.get(name, {}))
    if name == "precomputed":  # heatmaps from a file: one C×H×W and two H×W
        arrays = {"a": np.random.default_rng(0).normal(size=(3, 12, 12)), "b": np.ones((12, 12)),
                  "c": np.arange(144.0).reshape(12, 12)}
        np.savez(tmp_path / "h.npz", **arrays)
        params["path"] = str(tmp_path / "h.npz")
    model = tiny()
    model[8].train()  # a mixed-mode model: one dropout layer in training mode
    model[2].register_forward_hook(lambda m, i, o: None)  # a hook of the user's
    state = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    hooks = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]
    method, pooling = load(name, **params)
    method.prepare(ThreeImages(), 3, "three images")
    x = images()
    target = torch.tensor([0, 3, 4])
    r = method.attribute(model, x, target, ctx(["a", "b", "c"]))
    assert r.shape == x.shape and r.dtype == x.dtype and torch.isfinite(r).all() and r.abs().sum() > 0
    assert pooling in ("sum", "l2", "linf", "l2sq", "abs_sum")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert all(p.grad is None for p in model.parameters())


SEEDED = {"smoothgrad": dict(samples=5, chunk=4), "integrated_gradients": dict(steps=6, baseline="uniform", chunk=5),
          "random": {}, "occlusion": dict(window=4, stride=3, chunk=7)}


@pytest.mark.parametrize("name", list(SEEDED))
def test_results_do_not_depend_on_the_batch(name):
    """An image's heatmap is the same alone or in a batch, in any position and chunking (per-image
    seeding, bench/engine/seeding.py)."""
    model = tiny()
    x = images(4)
    target = torch.tensor([1, 2, 3, 4])
    ids = ["w", "x", "y", "z"]
    method, _ = load(name, **SEEDED[name])
    batch = method.attribute(model, x, target, ctx(ids))
    other, _ = load(name, **{**SEEDED[name], **({"chunk": 64} if "chunk" in SEEDED[name] else {})})
    for i in (3, 0):
        alone = other.attribute(model, x[i:i + 1], target[i:i + 1], ctx(ids[i:i + 1]))
        torch.testing.assert_close(alone[0], batch[i], rtol=1e-5, atol=1e-6)
    seeded = method.attribute(model, x[:1], target[:1], ctx(ids[:1], seed=1))
    if name in ("smoothgrad", "random"):
        assert not torch.allclose(seeded[0], batch[0])


def hand_net():
    # x = (1, 2); W1 = [[1, −1], [2, 1], [−1, 3]] → z1 = (−1, 4, 5); W2 = [[1, 1, −0.5]]
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0], [-1.0, 3.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, 1.0, -0.5]]))
    return net


@pytest.mark.parametrize("mode, expected", [("deconvnet", [3.0, 0.0]), ("guided", [2.0, 1.0])])
def test_deconvnet_and_guided_backprop_by_hand(mode, expected):
    # signal at the hidden layer: W2ᵀ = (1, 1, −0.5); the gradient would mask it with 1[z1 > 0] = (0, 1, 1)
    # deconvnet: relu(signal) = (1, 1, 0) → W1ᵀ (1, 1, 0) = (3, 0)
    # guided:    relu(signal) · 1[z1 > 0] = (0, 1, 0) → W1ᵀ (0, 1, 0) = (2, 1)
    method = plugins.load_class("methods", "relu_backward")(mode=mode)
    r = method.attribute(hand_net(), torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0]), ctx("a"))
    assert r[0].tolist() == pytest.approx(expected)


class FunctionalReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_deconvnet_refuses_relus_it_cannot_modify():
    method = plugins.load_class("methods", "relu_backward")(mode="guided")
    with pytest.raises(BenchError, match=r"activations outside nn\.ReLU modules \(1× ReluBackward0\)"):
        method.attribute(FunctionalReLU(), torch.rand(2, 3), torch.tensor([0, 1]), ctx("ab"))
    gelu = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    with pytest.raises(BenchError, match=r"layer '1' \(GELU\) is another activation"):
        method.attribute(gelu, torch.rand(2, 3), torch.tensor([0, 1]), ctx("ab"))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in gelu.modules())


def test_integrated_gradients_is_complete():
    """Σ_i R_i = f_c(x) − f_c(x̄) up to the quadrature error (Sundararajan et al., completeness)."""
    model = tiny().double()
    x = images(2).double()
    target = torch.tensor([1, 2])
    for baseline in ("zero", "black"):
        method, _ = load("integrated_gradients", steps=128, baseline=baseline, chunk=100)
        r = method.attribute(model, x, target, ctx("ab"))
        base = method.baseline_of(x, ctx("ab"))
        with torch.no_grad():
            gap = (model(x) - model(base)).gather(1, target[:, None]).squeeze(1)
        torch.testing.assert_close(r.sum((1, 2, 3)), gap, rtol=2e-2, atol=1e-3)


def test_occlusion_of_a_linear_model_is_gradient_times_input():
    """f = Σ w ⊙ x: occluding one pixel (all channels, value 0) drops f by Σ_c w_c x_c at that pixel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 2)).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    method, _ = load("occlusion", window=1, stride=1, chunk=10)
    r = method.attribute(model, x, torch.tensor([0, 1]), ctx("ab"))
    w = model[1].weight.view(2, 3, 6, 6)
    torch.testing.assert_close(r.sum(1), (w * x).sum(1))


def test_occlusion_covers_the_border():
    from bench.plugins import load_module

    masks = load_module("methods", "occlusion").window_masks(10, 7, 4, 3, "cpu")
    assert masks.any(0).all() and masks.shape == (3 * 2, 10, 7)


def test_translation_trick_conserves_relevance_and_wraps_any_method():
    from bench.plugins import load_module

    tr = load_module("methods", "translation")
    x, r = torch.randn(2, 3, 7, 5), torch.randn(2, 3, 7, 5)
    for dy, dx in ((0, 0), (2, -1), (-3, 4)):  # translate_back is the adjoint of translate
        torch.testing.assert_close((tr.translate(x, dy, dx) * r).sum(), (x * tr.translate_back(r, dy, dx)).sum())
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3, bias=False))
    model = model.double()
    x = images(2).double()
    target = torch.tensor([0, 2])
    method, pooling = load("translation", method="lrp_0", shift=1)
    assert pooling == "sum" and len(method.shifts) == 9
    r = method.attribute(model, x, target, ctx("ab"))
    with torch.no_grad():  # LRP-0 conserves f_c on each shifted copy; the adjoint conserves the sum
        f = torch.stack([model(tr.translate(x, dy, dx)).gather(1, target[:, None]).squeeze(1)
                         for dy, dx in method.shifts]).mean(0)
    torch.testing.assert_close(r.sum((1, 2, 3)), f)
    same, _ = load("translation", method="sensitivity_linf", shift=0)
    assert same.pooling == "linf"
    inner, _ = load("sensitivity")
    torch.testing.assert_close(same.attribute(model, x, target, ctx("ab")), inner.attribute(model, x, target, ctx("ab")))


@pytest.mark.parametrize("name, params, message", [
    ("lrp_eps", dict(rule="nonsense"), "unknown LRP rule 'nonsense'"),
    ("lrp_eps", dict(rule="zbox"), "only applies to the first layer"),
    ("lrp_a2b1", dict(alpha=2.0, beta=2.0), "α − β = 1"),
    ("lrp_eps", dict(maxpool="average"), "maxpool must be one of"),
    ("deconvnet", dict(mode="backprop"), "mode must be one of"),
    ("integrated_gradients", dict(baseline="gray"), "baseline must be one of"),
    ("occlusion", dict(window=0), "window must be a positive integer"),
    ("translation", dict(method="nonexistent"), "no config 'nonexistent.yaml' in conf/method/"),
])
def test_bad_parameters_are_one_clear_error(name, params, message):
    with pytest.raises(BenchError, match=message):
        load(name, **params)


def test_cli_accepts_dotted_names_and_the_translation_wrapper(run_cli, tmp_path):
    small = ["n_images=3", "steps=3", "repeats=1", "bootstrap=50"]
    proc, run_dir = run_cli("method=lrp_eps_0.01", *small, run_dir=tmp_path / "eps")
    assert proc.returncode == 0, proc.stderr
    assert (pd.read_csv(run_dir / "summary.csv").method == "lrp_eps_0.01").all()
    proc, run_dir = run_cli("method=translation", "method.params.method=sensitivity_linf", *small,
                            run_dir=tmp_path / "tr")
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(run_dir / "summary.csv")
    assert (summary.method == "translation_sensitivity_linf").all() and (summary.pooling == "linf").all()
