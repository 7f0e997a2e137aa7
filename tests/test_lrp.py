"""LRP mechanism (bench/lrp): hand-computed values, conservation, refusal, and the model left untouched."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from bench.errors import BenchError
from bench.lrp import Epsilon, Zero, lrp


def two_layer(w1, b1, w2, b2):
    net = nn.Sequential(nn.Linear(len(w1[0]), len(w1)), nn.ReLU(), nn.Linear(len(w2[0]), len(w2)))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1, dtype=torch.float64))
        net[0].bias.copy_(torch.tensor(b1, dtype=torch.float64))
        net[2].weight.copy_(torch.tensor(w2, dtype=torch.float64))
        net[2].bias.copy_(torch.tensor(b2, dtype=torch.float64))
    return net.double()


def test_epsilon_rule_by_hand():
    # x = (1, 2); z1 = W1 x = (-1, 4), a1 = (0, 4); z2 = 4 = R2.
    # R1 = a1 · w2 · R2 / (z2 + ε) = (0, 4·1·4/5) = (0, 3.2)
    # R0_i = x_i · w1_{2i} · R1_2 / (z1_2 + ε) = (1·2·3.2/5, 2·1·3.2/5) = (1.28, 1.28)
    net = two_layer([[1, -1], [2, 1]], [0, 0], [[1, 1]], [0])
    r = lrp(net, torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0]), lambda n, m: Epsilon(1.0))
    assert torch.allclose(r, torch.tensor([[1.28, 1.28]], dtype=torch.float64))


def explicit_epsilon(net, x, c, eps):
    """Matrix re-implementation of LRP-ε (TNNLS eq. 7) for Linear-ReLU-Linear, numpy float64."""
    w1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    w2, b2 = net[2].weight.detach().numpy(), net[2].bias.detach().numpy()
    stab = lambda z: z + eps * np.where(z >= 0, 1.0, -1.0)  # noqa: E731
    z1 = w1 @ x + b1
    a1 = np.maximum(z1, 0)
    z2 = w2 @ a1 + b2
    r2 = np.zeros_like(z2)
    r2[c] = z2[c]
    r1 = a1 * (w2.T @ (r2 / stab(z2)))
    return x * (w1.T @ (r1 / stab(z1)))


@pytest.mark.parametrize("eps", [0.0, 0.01, 1.0, 100.0])
def test_epsilon_matches_matrix_implementation(eps):
    rng = np.random.default_rng(0)
    net = two_layer(rng.normal(size=(6, 4)), rng.normal(size=6), rng.normal(size=(3, 6)), rng.normal(size=3))
    x = rng.normal(size=(5, 4))
    target = torch.tensor([0, 1, 2, 1, 0])
    r = lrp(net, torch.tensor(x), target, lambda n, m: Epsilon(eps)).numpy()
    for i in range(5):
        np.testing.assert_allclose(r[i], explicit_epsilon(net, x[i], int(target[i]), eps), rtol=1e-9, atol=1e-12)


def conv_net(bias: bool):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=bias), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, bias=bias), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 8, bias=bias), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3, bias=bias),
    ).double().eval()


@pytest.mark.parametrize("maxpool", ["wta", "proportional"])
@pytest.mark.parametrize("rule", [Zero(), Epsilon(1e-9)])
def test_conservation_on_bias_free_relu_net(rule, maxpool):
    net = conv_net(bias=False)
    x = torch.rand(4, 2, 12, 12, dtype=torch.float64)
    logits = net(x)
    target = logits.argmax(1)
    r = lrp(net, x, target, lambda n, m: rule, maxpool=maxpool)
    assert r.shape == x.shape
    torch.testing.assert_close(r.sum((1, 2, 3)), logits.gather(1, target[:, None]).squeeze(1),
                               rtol=1e-6, atol=1e-9)


def test_large_epsilon_absorbs_relevance():
    net = conv_net(bias=False)
    x = torch.rand(3, 2, 12, 12, dtype=torch.float64)
    logits = net(x)
    target = logits.argmax(1)
    f = logits.gather(1, target[:, None]).squeeze(1)
    r = lrp(net, x, target, lambda n, m: Epsilon(100.0)).sum((1, 2, 3))
    assert (r.abs() < f.abs()).all()


def test_model_comes_back_unchanged():
    net = conv_net(bias=True)
    net[9].train()  # a mixed-mode model: the dropout layer in training mode
    before = copy.deepcopy(net.state_dict())
    modes = [m.training for m in net.modules()]
    lrp(net, torch.rand(2, 2, 12, 12, dtype=torch.float64), torch.tensor([0, 1]), lambda n, m: Epsilon())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [m.training for m in net.modules()] == modes
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert all(p.grad is None for p in net.parameters())


def test_unsupported_layer_is_refused_by_name():
    net = nn.Sequential(nn.Linear(3, 3), nn.Sigmoid(), nn.Linear(3, 2))
    with pytest.raises(BenchError, match=r"'1' \(Sigmoid\)"):
        lrp(net, torch.rand(1, 3), torch.tensor([0]), lambda n, m: Epsilon())
    assert all(not m._forward_hooks for m in net.modules())


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


def test_module_used_twice_is_refused():
    net = Twice()
    with pytest.raises(BenchError, match="'fc' .* used twice"):
        lrp(net, torch.rand(1, 3), torch.tensor([0]), lambda n, m: Epsilon())
    assert not net.fc._forward_hooks


# --- torchvision architectures (random weights) -------------------------------------------------------

import torchvision  # noqa: E402

from bench.lrp import AlphaBeta, Composite, Gamma, WeightCache, WSquare, ZBox, ZPlus, deep_taylor, epsilon_gamma_box
from bench.lrp.canonizers import batchnorm_pairs, merged_parameters  # noqa: E402

SIZES = {"alexnet": 64, "vgg11": 32, "vgg11_bn": 32, "resnet18": 32, "resnet50": 32}
_MODELS, _CACHES = {}, {}


def cache_of(model):
    """One WeightCache per model, as a method object keeps it (VGG's dense layers dominate the run time)."""
    return _CACHES.setdefault(id(model), WeightCache())


def tv_model(name, bias_free=False):
    """A torchvision model with random weights (built once per session), float32, eval mode. With
    ``bias_free`` every effective bias is zero (conv/dense biases and the BatchNorm shifts); otherwise
    biases and BatchNorm statistics are randomised so that merging them matters."""
    key = (name, bias_free)
    if key not in _MODELS:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                    m.bias.zero_() if bias_free else m.bias.uniform_(-0.05, 0.05)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    if not bias_free:
                        m.running_mean.uniform_(-0.1, 0.1)
                        m.bias.uniform_(-0.1, 0.1)
        _MODELS[key] = model
    return _MODELS[key]


def tv_input(name, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIZES[name], SIZES[name], generator=g)


def explained(model, x):
    logits = model(x)
    target = logits.argmax(1)
    return target, logits.gather(1, target[:, None]).squeeze(1)


CONSERVING = {"lrp_0": Zero(), "lrp_eps_tiny": Epsilon(1e-9), "z_plus": ZPlus(),
              "deep_taylor": deep_taylor(), "w2_z_plus": deep_taylor(WSquare())}
# VGG's 25088 × 4096 dense layer makes every call cost ~1 s: fewer rules there
CONSERVING_ON = {"vgg11": ["lrp_0", "w2_z_plus"], "vgg11_bn": ["lrp_eps_tiny", "deep_taylor"]}


@pytest.mark.parametrize("name", list(SIZES))
def test_conservation_on_bias_free_torchvision_models(name):
    """Σ_i R_i = f_c(x) for LRP-0/ε and the deep Taylor rules on bias-free nets (BatchNorm merged;
    residual additions split relevance in proportion, ResNet)."""
    model = tv_model(name, bias_free=True)
    x = tv_input(name)
    target, f = explained(model, x)
    for rule_name in CONSERVING_ON.get(name, CONSERVING):
        r = lrp(model, x, target, CONSERVING[rule_name], bounds=(-2.5, 2.5), cache=cache_of(model))
        torch.testing.assert_close(r.sum((1, 2, 3)), f, rtol=2e-4, atol=1e-6, msg=lambda m: f"{rule_name}: {m}")


@pytest.mark.parametrize("name, rules", [("alexnet", (ZPlus(), deep_taylor(), deep_taylor(WSquare()))),
                                         ("vgg11", (deep_taylor(),)), ("vgg11_bn", (ZPlus(),))],
                         ids=["alexnet", "vgg11", "vgg11_bn"])
def test_z_plus_and_z_box_heatmaps_are_non_negative(name, rules):
    """Deep Taylor Fig. 6 / Table 1: positive heatmaps for positive outputs (biases and BatchNorm
    statistics random, positive biases count in the denominators)."""
    model = tv_model(name)
    x = tv_input(name, n=3)
    target, f = explained(model, x)
    assert (f > 0).all()
    for rules in rules:
        r = lrp(model, x, target, rules, bounds=(-2.5, 2.5), cache=cache_of(model))
        assert (r >= 0).all(), rules
        assert (r.sum((1, 2, 3)) <= f * (1 + 1e-4)).all()  # positive biases absorb, nothing is created


def fold_batchnorm(model):
    """A copy of ``model`` with each mergeable BatchNorm folded into the layer before and replaced by
    Identity — the physical version of the canonizer, as a reference."""
    folded = copy.deepcopy(model)
    names = {m: n for n, m in folded.named_modules()}
    for bn, layer in batchnorm_pairs(folded).items():
        w, b = merged_parameters(layer, bn)
        with torch.no_grad():
            layer.weight.copy_(w)
        layer.bias = nn.Parameter(b)
        parent_name, _, attr = names[bn].rpartition(".")
        setattr(folded.get_submodule(parent_name), attr, nn.Identity())
    return folded


@pytest.mark.parametrize("name, rules", [
    ("resnet18", (Epsilon(0.1), AlphaBeta(2.0, 1.0), Gamma(0.25), deep_taylor(), epsilon_gamma_box())),
    ("vgg11_bn", (AlphaBeta(2.0, 1.0), epsilon_gamma_box()))], ids=["resnet18", "vgg11_bn"])
def test_batchnorm_merge_equals_folded_model(name, rules):
    model = tv_model(name)
    folded = fold_batchnorm(model)
    x = tv_input(name)
    target, _ = explained(model, x)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    for rules in rules:
        a = lrp(model, x, target, rules, bounds=(-2.5, 2.5))
        b = lrp(folded, x, target, rules, bounds=(-2.5, 2.5))
        assert (a - b).abs().max() <= 1e-3 * b.abs().max(), rules


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "resnet50"])
def test_every_rule_runs_on_torchvision_models(name):
    model = tv_model(name)
    x = tv_input(name)
    target, _ = explained(model, x)
    combos = [(AlphaBeta(2.0, 1.0), "proportional"), (epsilon_gamma_box(), "wta"),
              (deep_taylor(ZBox(-3.0, 3.0)), "proportional"), (Gamma(0.25), "wta")]
    for rules, maxpool in combos[:2] if name == "vgg11_bn" else combos:
        r = lrp(model, x, target, rules, maxpool=maxpool, bounds=(-2.5, 2.5), cache=cache_of(model))
        assert r.shape == x.shape and torch.isfinite(r).all() and r.abs().sum() > 0


def snapshot(model):
    return (copy.deepcopy(model.state_dict()), [m.training for m in model.modules()],
            [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for m in model.modules()],
            [p.requires_grad for p in model.parameters()])


def assert_unchanged(model, before):
    state, modes, hooks, requires = before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
            for m in model.modules()] == hooks
    assert [p.requires_grad for p in model.parameters()] == requires
    assert all(p.grad is None for p in model.parameters())


def test_resnet_comes_back_unchanged_even_after_a_refusal():
    model = copy.deepcopy(tv_model("resnet18"))
    model.layer1.register_forward_hook(lambda m, i, o: None)  # the user's own hook stays
    before = snapshot(model)
    x = tv_input("resnet18")
    lrp(model, x, torch.tensor([1, 2]), epsilon_gamma_box(), bounds=(-2.0, 2.0))
    assert_unchanged(model, before)
    model.layer2[0].bn1.train()  # refused in the middle of attaching the hooks
    before = snapshot(model)
    with pytest.raises(BenchError, match=r"'layer2\.0\.bn1' is in training mode"):
        lrp(model, x, torch.tensor([1, 2]), Epsilon())
    assert_unchanged(model, before)


class FunctionalLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return torch.nn.functional.linear(torch.relu(self.conv(x)).flatten(1), self.fc.weight)


def test_functional_linear_call_is_refused():
    with pytest.raises(BenchError, match="no module hook covers: 1× MmBackward0"):
        lrp(FunctionalLinear(), torch.rand(1, 1, 4, 3), torch.tensor([0]), Epsilon())


class FunctionalPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


def test_functional_max_pool_is_refused_only_when_proportional():
    x = torch.rand(1, 1, 4, 4)
    lrp(FunctionalPool(), x, torch.tensor([0]), Epsilon(), maxpool="wta")  # the gradient's routing is wta
    with pytest.raises(BenchError, match="MaxPool2DWithIndicesBackward0"):
        lrp(FunctionalPool(), x, torch.tensor([0]), Epsilon(), maxpool="proportional")


class Prescaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(2 * x)


def test_first_layer_rules_need_the_input_layer():
    x = torch.rand(2, 3)
    with pytest.raises(BenchError, match="no Conv2d/Linear layer of the model receives the model's input"):
        lrp(Prescaled(), x, torch.tensor([0, 1]), Composite(default=Epsilon(), first=ZBox(-1.0, 1.0)))
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(BenchError, match=r"first-layer rule .* layer '2' \(Linear\) does not receive"):
        lrp(net, x, torch.tensor([0, 1]), WSquare())


class SharedConvOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(8, 2)

    def forward(self, x):
        z = self.conv(x)
        return self.fc((self.bn(z) + z).relu().flatten(1))


def test_batchnorm_whose_layer_output_is_also_used_elsewhere_is_refused():
    model = SharedConvOutput().eval()
    with pytest.raises(BenchError, match="'conv' .* feeds its BatchNorm and something else"):
        lrp(model, torch.rand(1, 1, 4, 4), torch.tensor([0]), Epsilon())


def test_module_with_its_own_parameters_is_refused():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.scale = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return self.fc(x) * self.scale

    with pytest.raises(BenchError, match=r"module '' \(Scaled\) has parameters of its own"):
        lrp(Scaled(), torch.rand(1, 3), torch.tensor([0]), Epsilon())


def test_weight_cache_follows_in_place_updates():
    net = conv_net(bias=True)
    x = torch.rand(2, 2, 12, 12, dtype=torch.float64)
    cache = WeightCache()
    first = lrp(net, x, torch.tensor([0, 1]), AlphaBeta(2.0, 1.0), cache=cache)
    assert torch.equal(first, lrp(net, x, torch.tensor([0, 1]), AlphaBeta(2.0, 1.0), cache=cache))
    with torch.no_grad():
        net[3].weight.mul_(-1)
    torch.testing.assert_close(lrp(net, x, torch.tensor([0, 1]), AlphaBeta(2.0, 1.0), cache=cache),
                               lrp(net, x, torch.tensor([0, 1]), AlphaBeta(2.0, 1.0)))


def test_weight_cache_follows_batchnorm_updates():
    """BatchNorm-merged parameters and their modified copies are cached too, and recomputed when the
    layer's or the BatchNorm's parameters or statistics change."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3)).double()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    cache = WeightCache()
    for rule in (Gamma(0.25), AlphaBeta(2.0, 1.0)):
        assert torch.equal(lrp(net, x, target, rule, cache=cache), lrp(net, x, target, rule, cache=cache))
        for update in (lambda: net[1].running_var.mul_(3.0), lambda: net[1].weight.mul_(-0.5),
                       lambda: net[0].bias.add_(0.3)):
            with torch.no_grad():
                update()
            torch.testing.assert_close(lrp(net, x, target, rule, cache=cache), lrp(net, x, target, rule))


def test_no_reference_cycle_keeps_the_graph_alive(monkeypatch):
    """The backward steps (and the activations they hold) are freed with the graph, without waiting for
    Python's cycle collector."""
    import gc
    import weakref

    import bench.lrp.propagate as propagate

    steps, init = [], propagate._LinearStep.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        steps.append(weakref.ref(self))

    monkeypatch.setattr(propagate._LinearStep, "__init__", recording_init)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).eval()
    gc.disable()
    try:
        lrp(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), ZPlus())
        assert len(steps) == 2 and all(ref() is None for ref in steps)
    finally:
        gc.enable()
