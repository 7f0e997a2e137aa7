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
