"""Every LRP rule checked against numbers computed by hand on a 2-layer network, then against a plain
numpy re-implementation of the rule's formula on random networks with biases and mixed-sign inputs."""

import numpy as np
import pytest
import torch
from torch import nn

from bench.lrp import AlphaBeta, Composite, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus, lrp

F64 = torch.float64


def approx(expected):
    return pytest.approx(expected, rel=1e-9, abs=1e-8)  # the rules' stabiliser ε = 1e-9


def net2(w1, w2, b1=None, b2=None):
    """Linear → ReLU → Linear in float64 with the given weights (biases zero unless given)."""
    w1, w2 = np.asarray(w1, float), np.asarray(w2, float)
    net = nn.Sequential(nn.Linear(w1.shape[1], w1.shape[0]), nn.ReLU(), nn.Linear(w2.shape[1], w2.shape[0])).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1))
        net[2].weight.copy_(torch.tensor(w2))
        net[0].bias.copy_(torch.tensor(np.zeros(len(w1)) if b1 is None else b1))
        net[2].bias.copy_(torch.tensor(np.zeros(len(w2)) if b2 is None else b2))
    return net.eval()


# The hand example: x = (1, 2);  W1 = [[1, −1], [2, 1], [−1, 3]] → z1 = (−1, 4, 5), a1 = (0, 4, 5);
# W2 = [[1, 1, −0.5]] → f = z2 = 4 − 2.5 = 1.5 = R2.
HAND = dict(w1=[[1, -1], [2, 1], [-1, 3]], w2=[[1, 1, -0.5]])
X = torch.tensor([[1.0, 2.0]], dtype=F64)
C0 = torch.tensor([0])


def hand(rules, **kw):
    return lrp(net2(**HAND), X, C0, rules, **kw)[0].tolist()


def test_lrp_0_by_hand():
    # layer 2: R1_k = a_k w_k R2 / z2 = (0, 4, −2.5)
    # layer 1: R0_i = Σ_j x_i w_ji R1_j / z1_j: j=2 ratio 4/4 = 1, j=3 ratio −2.5/5 = −0.5
    #   R0_1 = 1·2·1 + 1·(−1)·(−0.5) = 2.5;  R0_2 = 2·1·1 + 2·3·(−0.5) = −1   (sum 1.5 = f)
    assert hand(Zero()) == approx([2.5, -1.0])


def test_lrp_epsilon_by_hand():
    # ε = 1. layer 2: R1 = a·w·1.5/(1.5 + 1) = (0, 2.4, −1.5)
    # layer 1: ratios R1_j/(z1_j + 1): j=2 2.4/5 = 0.48, j=3 −1.5/6 = −0.25
    #   R0_1 = 2·0.48 + (−1)(−0.25) = 1.21;  R0_2 = 2·(1·0.48 + 3·(−0.25)) = −0.54
    assert hand(Epsilon(1.0)) == approx([1.21, -0.54])


def test_lrp_epsilon_sign_of_denominator():
    # a negative logit: f = 1·1 − 1·3 = −2, ε = 1 → denominator −2 − 1 = −3: R = (1, −3)·(−2)/(−3)
    net = nn.Sequential(nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
    r = lrp(net, torch.tensor([[1.0, 3.0]], dtype=F64), C0, Epsilon(1.0))
    assert r[0].tolist() == approx([2 / 3, -2.0])


def test_z_plus_by_hand():
    # layer 2: positive contributions a_k w⁺_k = (0, 4, 0), Σ = 4 → R1 = (0, 1.5, 0)
    # layer 1: j=2 contributions x_i w⁺_2i = (2, 2), Σ = 4 → R0 = (0.75, 0.75)
    assert hand(ZPlus()) == approx([0.75, 0.75])
    assert hand(AlphaBeta(1.0, 0.0)) == approx([0.75, 0.75])


def test_alpha2_beta1_by_hand():
    # layer 2: z⁺ = 4 (from a_2), z⁻ = −2.5 (from a_3): R1_2 = 2·(4/4)·1.5 = 3, R1_3 = −(−2.5/−2.5)·1.5 = −1.5
    # layer 1: j=2 (R = 3): contributions (2, 2), z⁺ = 4, no negative part → (2·2/4·3, 2·2/4·3) = (3, 3)
    #          j=3 (R = −1.5): contributions (−1, 6), z⁺ = 6, z⁻ = −1 →
    #          R0_1 = −1·(−1/−1)·(−1.5) = 1.5, R0_2 = 2·(6/6)·(−1.5) = −3
    #   R0 = (4.5, 0)
    assert hand(AlphaBeta(2.0, 1.0)) == approx([4.5, 0.0])


def test_gamma_by_hand():
    # γ = 0.25, ρ(w) = w + γ w⁺. layer 2: ρ = (1.25, 1.25, −0.5), z_γ = 5 − 2.5 = 2.5
    #   R1 = a·ρ·1.5/2.5 = (0, 3, −1.5)
    # layer 1: j=2 ρ = (2.5, 1.25), contributions (2.5, 2.5), Σ = 5 → (1.5, 1.5)
    #          j=3 ρ = (−1, 3.75), contributions (−1, 7.5), Σ = 6.5 → (1.5/6.5, −11.25/6.5)
    assert hand(Gamma(0.25)) == approx([1.5 + 1.5 / 6.5, 1.5 - 11.25 / 6.5])


def test_gamma_negative_output_favours_negative_contributions():
    # f = 1·1 − 2·2 = −3 < 0: ρ(w) = w + γ w⁻ = (1, −2.5), contributions (1, −5), Σ = −4 → R = (0.75, −3.75)
    net = nn.Sequential(nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
    assert lrp(net, X, C0, Gamma(0.25))[0].tolist() == approx([0.75, -3.75])


def test_z_box_first_layer_by_hand():
    # z^B with l = −1, h = 3 in the first layer, LRP-0 above (R1 = (0, 4, −2.5) as in test_lrp_0_by_hand)
    # j=2 (w = (2, 1) ≥ 0): x_i w_i − l w⁺_i = (2 + 2, 2 + 1) = (4, 3), Σ = 7 → 4·(4, 3)/7
    # j=3 (w = (−1, 3)):    (−1 − 3·(−1), 6 + 1·3) = (2, 9), Σ = 11 → −2.5·(2, 9)/11
    r = hand(Composite(default=Zero(), first=ZBox(-1.0, 3.0)))
    assert r == approx([16 / 7 - 5 / 11, 12 / 7 - 22.5 / 11])
    assert sum(r) == approx(1.5)


def test_z_box_takes_the_bounds_of_the_data():
    r = lrp(net2(**HAND), X, C0, Composite(default=Zero(), first=ZBox()), bounds=(torch.tensor(-1.0), 3.0))
    assert r[0].tolist() == approx([16 / 7 - 5 / 11, 12 / 7 - 22.5 / 11])


def test_w_square_first_layer_by_hand():
    # w² with LRP-0 above: j=2 w² = (4, 1), Σ 5 → 4·(0.8, 0.2); j=3 w² = (1, 9), Σ 10 → −2.5·(0.1, 0.9)
    assert hand(Composite(default=Zero(), first=WSquare())) == approx([3.2 - 0.25, 0.8 - 2.25])


def test_flat_first_layer_by_hand():
    # flat: every input of a neuron gets an equal share: j=2 → (2, 2), j=3 → (−1.25, −1.25)
    assert hand(Composite(default=Zero(), first=Flat())) == approx([0.75, 0.75])


@pytest.mark.parametrize("maxpool, expected", [("wta", [0, 0, 0, 4]), ("proportional", [0.5, 1.5, 0, 2])])
def test_max_pooling_by_hand(maxpool, expected):
    # a 2×2 max-pool of (1, 3; 0, 4) = 4 = f: winner-take-all gives 4 to the maximum; proportional
    # (tutorial 5.3) gives a_i / Σ a · 4 = a_i / 2
    net = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        net[2].weight.fill_(1.0)
    x = torch.tensor([[[[1.0, 3.0], [0.0, 4.0]]]], dtype=F64)
    assert lrp(net, x, C0, Zero(), maxpool=maxpool).flatten().tolist() == approx(expected)


def test_batchnorm_is_merged_into_the_layer_before_by_hand():
    # Linear w = (1, 1) → BatchNorm1d (μ = 0, σ² = 4, γ = 1, β = 0.5, eps = 0): k = 1/2, c = 0.5
    # merged layer: w' = (0.5, 0.5), b' = 0.5; x = (1, 3) → f = 0.5·4 + 0.5 = 2.5
    # LRP-ε (ε = 1) on the merged layer: R = 2.5·(0.5, 1.5)/(2.5 + 1)
    # (bypassing the BatchNorm instead would give 2.5·(1, 3)/(4 + 1) = (0.5, 1.5))
    net = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1, eps=0.0)).double().eval()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[1].running_var.fill_(4.0)
        net[1].bias.fill_(0.5)
    r = lrp(net, torch.tensor([[1.0, 3.0]], dtype=F64), C0, Epsilon(1.0))
    assert r[0].tolist() == approx([2.5 * 0.5 / 3.5, 2.5 * 1.5 / 3.5])


def test_batchnorm_that_cannot_be_merged_is_bypassed():
    # a BatchNorm on the input itself (nothing to merge into): relevance passes it unchanged
    net = nn.Sequential(nn.BatchNorm1d(2, eps=0.0), nn.Linear(2, 1, bias=False)).double().eval()
    with torch.no_grad():
        net[0].running_var.fill_(4.0)
        net[0].bias.fill_(0.5)
        net[1].weight.fill_(1.0)
    x = torch.tensor([[1.0, 3.0]], dtype=F64)  # BN → (1, 2), f = 3; LRP-0: R = (1, 2)
    assert lrp(net, x, C0, Zero())[0].tolist() == approx([1.0, 2.0])


# --- numpy re-implementations of the formulas (random nets with biases, mixed-sign inputs) -----------

def stab(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def np_layer(rule, x, w, b, r_out, z_out, low=None, high=None):
    """R_in of one dense layer z = W x + b (w: out × in) for a rule, straight from its formula."""
    pos, neg = np.maximum, np.minimum
    if isinstance(rule, Epsilon) or isinstance(rule, Zero):
        z = w @ x + b
        s = r_out / np.where(stab(z, rule.epsilon) == 0, 1, stab(z, rule.epsilon))
        return x * (w.T @ s)
    if isinstance(rule, AlphaBeta):
        zp = pos(x, 0)[None] * pos(w, 0) + neg(x, 0)[None] * neg(w, 0)   # z⁺_ij (out × in)
        zn = pos(x, 0)[None] * neg(w, 0) + neg(x, 0)[None] * pos(w, 0)   # z⁻_ij
        dp, dn = zp.sum(1) + pos(b, 0), zn.sum(1) + neg(b, 0)
        sp = np.where(dp != 0, r_out / stab(dp, rule.epsilon), 0)
        sn = np.where(dn != 0, r_out / stab(dn, rule.epsilon), 0)
        return (rule.alpha * zp * sp[:, None] - rule.beta * zn * sn[:, None]).sum(0)
    if isinstance(rule, Gamma):
        g = rule.gamma
        up = lambda t: t + g * pos(t, 0)  # noqa: E731
        down = lambda t: t + g * neg(t, 0)  # noqa: E731
        zu = pos(x, 0)[None] * up(w) + neg(x, 0)[None] * down(w)     # favouring positive contributions
        zd = pos(x, 0)[None] * down(w) + neg(x, 0)[None] * up(w)     # favouring negative contributions
        su = np.where(z_out > 0, r_out / stab(zu.sum(1) + up(b), rule.epsilon), 0)
        sd = np.where(z_out < 0, r_out / stab(zd.sum(1) + down(b), rule.epsilon), 0)
        return (zu * su[:, None] + zd * sd[:, None]).sum(0)
    if isinstance(rule, ZBox):
        q = x[None] * w - low[None] * pos(w, 0) - high[None] * neg(w, 0)
        return (q * (r_out / stab(q.sum(1) + pos(b, 0), rule.epsilon))[:, None]).sum(0)
    if isinstance(rule, WSquare):
        q = w * w
        return (q * (r_out / q.sum(1))[:, None]).sum(0)
    raise NotImplementedError(rule)


def np_lrp(net, x, c, hidden, first):
    w1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    w2, b2 = net[2].weight.detach().numpy(), net[2].bias.detach().numpy()
    z1 = w1 @ x + b1
    a1 = np.maximum(z1, 0)
    z2 = w2 @ a1 + b2
    r2 = np.zeros_like(z2)
    r2[c] = z2[c]
    r1 = np_layer(hidden, a1, w2, b2, r2, z2)
    # relevance of a1 passes the ReLU unchanged onto z1 (a1 = 0 → R = 0)
    return np_layer(first, x, w1, b1, r1, z1, low=-np.full_like(x, 2.0), high=np.full_like(x, 3.0))


CASES = [(Epsilon(0.5), Epsilon(0.5)), (Zero(), Zero()), (AlphaBeta(2.0, 1.0), AlphaBeta(2.0, 1.0)),
         (ZPlus(), ZPlus()), (AlphaBeta(3.0, 2.0), AlphaBeta(3.0, 2.0)), (Gamma(0.3), Gamma(0.3)),
         (ZPlus(), ZBox(-2.0, 3.0)), (Epsilon(0.1), ZBox(-2.0, 3.0)), (ZPlus(), WSquare())]


@pytest.mark.parametrize("hidden, first", CASES, ids=lambda r: type(r).__name__)
def test_rules_match_numpy_formulas(hidden, first):
    rng = np.random.default_rng(1)
    net = net2(rng.normal(size=(7, 5)), rng.normal(size=(4, 7)), rng.normal(size=7) * 0.5, rng.normal(size=4) * 0.5)
    x = rng.uniform(-2, 3, size=(6, 5))
    target = torch.tensor([0, 1, 2, 3, 1, 2])
    rules = Composite(default=hidden, first=first)
    r = lrp(net, torch.tensor(x), target, rules).numpy()
    for i in range(len(x)):
        np.testing.assert_allclose(r[i], np_lrp(net, x[i], int(target[i]), hidden, first), rtol=1e-8, atol=1e-10)


def test_alpha_beta_needs_alpha_minus_beta_one():
    with pytest.raises(ValueError, match="α − β = 1"):
        AlphaBeta(2.0, 2.0)


# --- the mechanism's shortcuts ------------------------------------------------------------------------

def _part_value(part, x, w, b):
    """z_pj of one part on a dense layer, straight from its definition (x: batch × in)."""
    inp = {"x": x, "pos": x.clamp(min=0), "neg": x.clamp(max=0), "ones": torch.ones_like(x)}[part.input]
    wp = w if part.weight is None else part.weight(w)
    z = inp @ wp.T
    if part.bias is not False:
        z = z + (b if part.bias is None else part.bias(b))
    return z


@pytest.mark.parametrize("rule", [ZPlus(), AlphaBeta(2.0, 1.0), AlphaBeta(3.0, 2.0), Gamma(0.25), Gamma(2.0),
                                  WSquare(), Flat()], ids=repr)
def test_declared_term_signs_hold(rule):
    """A term's declared sign (which lets the mechanism fold ε into the bias) holds for mixed-sign inputs,
    weights and biases on every output the term applies to."""
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(40, 30, generator=gen, dtype=F64), torch.randn(40, generator=gen, dtype=F64)
    x = torch.randn(200, 30, generator=gen, dtype=F64) * 2
    z = x @ w.T + b
    assert any(t.sign is not None for t in rule.terms)
    for term in rule.terms:
        if term.sign is None:
            continue
        zt = sum(_part_value(p, x, w, b) for p in term.parts)
        applies = torch.ones_like(z, dtype=torch.bool) if term.where is None else (z > 0 if term.where == "pos" else z < 0)
        assert applies.any()
        assert bool((zt[applies] * term.sign >= 0).all())


def test_in_place_stabiliser_equals_stabiliser():
    from bench.lrp.rules import stabilize, stabilize_

    z = torch.tensor([1.0, -2.0, 0.0, -0.0, 3e-10, -3e-10, 5.0, -7e3])
    for eps in (0.0, 1e-9, 0.25, 100.0):
        expected = stabilize(z, eps)
        got = stabilize_(z.clone(), eps)
        assert torch.equal(got, expected) and torch.equal(torch.signbit(got), torch.signbit(expected))
    positive = torch.rand(1000) + 0.1  # the common case: no negative entry
    assert torch.equal(stabilize_(positive.clone(), 1e-9), stabilize(positive, 1e-9))


@pytest.mark.parametrize("rule", [AlphaBeta(2.0, 1.0), Gamma(0.25), ZPlus(), Epsilon(0.1)], ids=repr)
def test_grouped_convolution_equals_its_block_diagonal_form(rule):
    """A grouped convolution (whose parts cannot be stacked into one call) gives the relevance of the
    equivalent ungrouped convolution with zero off-diagonal blocks, on mixed-sign inputs."""
    torch.manual_seed(0)
    grouped = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
                            nn.Linear(6 * 5 * 5, 3)).double().eval()
    dense = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5 * 5, 3)).double().eval()
    with torch.no_grad():
        dense[0].weight.zero_()
        dense[0].weight[:3, :2] = grouped[0].weight[:3]
        dense[0].weight[3:, 2:] = grouped[0].weight[3:]
        dense[0].bias.copy_(grouped[0].bias)
        dense[3].load_state_dict(grouped[3].state_dict())
    x = torch.randn(5, 4, 5, 5, dtype=F64)
    target = torch.tensor([0, 1, 2, 0, 1])
    a, b = lrp(grouped, x, target, rule), lrp(dense, x, target, rule)
    assert a.abs().sum() > 0
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
