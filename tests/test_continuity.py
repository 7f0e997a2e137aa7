"""bench.continuity (DEFINITIONS §6, tutorial Sec. 7.1) — including the tutorial's Fig. 6 toy, f(x) = max(x1, x2)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.protocols.continuity import continuity, continuity_ratio, shift_right

# ---------------------------------------------------------------------------------------------------
# Tutorial Sec. 7.1: max(x1, x2) on R²₊ as the two-layer ReLU network
#   f(x) = max(0, 0.5 max(0, x1 − x2) + 0.5 max(0, x2 − x1) + 0.5 max(0, x1 + x2)).
# Explanations written out explicitly for this net (no library, no autograd).
W1 = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # hidden j × input i
W2 = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)


def toy_f(x):  # x: (N, 2)
    return torch.relu(torch.relu(x @ W1.T) @ W2)


def toy_sensitivity(x):
    """∂f/∂x = 1[f>0] · (W2 ⊙ 1[W1 x > 0]) W1 (ReLU derivative taken as 0 at 0)."""
    gate = (x @ W1.T > 0).double() * W2
    return (toy_f(x) > 0).double()[:, None] * (gate @ W1)


def toy_simple_taylor(x):
    """x ⊙ ∂f/∂x (tutorial Sec. 5.1, simple Taylor at the root 0)."""
    return x * toy_sensitivity(x)


def toy_deep_taylor(x):
    """Deep-Taylor LRP, z⁺ rule in both layers (inputs in R²₊, tutorial Table 2 / eq. z⁺).

    Top: z_j = a_j w_j ≥ 0 with Σ_j z_j = f, so R_j = a_j w_j.
    Bottom: R_i = Σ_j x_i w⁺_ij / (Σ_i' x_i' w⁺_i'j) · R_j (0/0 := 0; it only occurs where a_j = 0).
    """
    a = torch.relu(x @ W1.T)  # (N, 3)
    r_hidden = a * W2
    z = x[:, None, :] * W1.clamp(min=0)[None]  # (N, j, i)
    zs = z.sum(-1, keepdim=True)
    share = torch.where(zs > 0, z / torch.where(zs > 0, zs, torch.ones_like(zs)), torch.zeros_like(z))
    return (share * r_hidden[:, :, None]).sum(1)


def _as_image_attr(fn):
    """Wrap an (N, 2) explanation as a continuity() callable on (N, 2, 1, 1) 'images'."""
    return lambda xs, idx: fn(xs.reshape(-1, 2)).reshape(xs.shape)


def _path_max_ratio(fn, h):
    """Max consecutive-pair ratio along x(s) = (1 + s, 1 − s), s = (k + ½)h ∈ [−½, ½]: crosses x1 = x2."""
    s = (torch.arange(-round(0.5 / h), round(0.5 / h), dtype=torch.float64) + 0.5) * h
    x = torch.stack([1 + s, 1 - s], 1)
    r = fn(x)
    return continuity_ratio(r[1:], r[:-1], x[1:], x[:-1]).max().item()


def test_toy_network_is_max_and_deep_taylor_conserves():
    x = torch.rand(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close(toy_f(x), x.max(1).values)
    torch.testing.assert_close(toy_deep_taylor(x).sum(1), toy_f(x))  # conservation
    assert (toy_deep_taylor(x) >= 0).all()  # positivity
    # closed form for x1 > x2: R = (x1 − x2/2, x2/2); symmetric at x1 = x2
    x1 = torch.tensor([[2.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(toy_deep_taylor(x1), torch.tensor([[1.5, 0.5], [0.5, 0.5]], dtype=torch.float64))
    # gradient check of the explicit sensitivity against autograd away from the kinks
    xg = x[(x[:, 0] - x[:, 1]).abs() > 1e-3].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(toy_f(xg).sum(), xg)
    torch.testing.assert_close(toy_sensitivity(xg.detach()), g)


def test_toy_path_deep_taylor_continuous_gradient_methods_jump():
    steps = [0.1, 0.01, 0.001]
    dt = [_path_max_ratio(toy_deep_taylor, h) for h in steps]
    sa = [_path_max_ratio(toy_sensitivity, h) for h in steps]
    st = [_path_max_ratio(toy_simple_taylor, h) for h in steps]
    # deep Taylor is piecewise linear and continuous: the ratio is the slope √2, whatever the step
    for v in dt:
        assert v == pytest.approx(math.sqrt(2), rel=1e-6)
    # gradient jumps from (0, 1) to (1, 0) across x1 = x2: ‖ΔR‖₁ = 2, ‖Δx‖₂ = √2 h → √2 / h
    for h, v in zip(steps, sa):
        assert v == pytest.approx(math.sqrt(2) / h, rel=1e-6)
    # simple Taylor jumps from (0, 1 + h/2) to (1 + h/2, 0): ratio (2 + h) / (√2 h)
    for h, v in zip(steps, st):
        assert v == pytest.approx((2 + h) / (math.sqrt(2) * h), rel=1e-6)
    assert sa[-1] > 100 * dt[-1] and st[-1] > 100 * dt[-1]
    assert sa[0] < sa[1] < sa[2] and st[0] < st[1] < st[2]


def test_toy_noise_neighbourhood_on_the_diagonal():
    """continuity(kind='noise') around points on x1 = x2: deep Taylor ≤ √2 (its Lipschitz constant
    for L1/L2), gradient methods grow like 1/σ."""
    x = torch.tensor([[1.0, 1.0], [2.0, 2.0], [0.5, 0.5]], dtype=torch.float64).reshape(3, 2, 1, 1)
    res = {}
    for name, fn in [("dt", toy_deep_taylor), ("sa", toy_sensitivity), ("st", toy_simple_taylor)]:
        res[name] = [
            continuity(_as_image_attr(fn), x, kind="noise", sigma=s, n_samples=16, seed=1)["continuity_max"].max()
            for s in (1e-1, 1e-2, 1e-3)
        ]
    assert max(res["dt"]) <= math.sqrt(2) + 1e-9
    for name in ("sa", "st"):
        assert res[name][0] < res[name][1] < res[name][2]
        assert res[name][2] > 50 * max(res["dt"])


# ---------------------------------------------------------------------------------------------------
# Generic behaviour


def _x(b=3, c=2, h=4, w=6, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind", ["translate", "noise"])
def test_constant_attribution_has_zero_continuity(kind):
    df = continuity(lambda xs, idx: torch.ones_like(xs), _x(), kind=kind, max_shift=3, n_samples=5)
    assert (df["continuity_max"] == 0).all() and (df["continuity_mean"] == 0).all()
    assert (df["n_pairs"] == (3 if kind == "translate" else 5)).all()


def test_translate_compares_in_shifted_frame():
    x = _x()
    # an exactly translation-equivariant explanation (R = x², pointwise) scores 0 in the shifted frame,
    # although R(shift_{t+1} x) ≠ R(shift_t x) on the same grid
    df = continuity(lambda xs, idx: xs**2, x, kind="translate", max_shift=3)
    assert (df["continuity_max"] == 0).all()
    # a position-dependent explanation is not equivariant → positive
    df2 = continuity(lambda xs, idx: xs * torch.arange(6.0, dtype=xs.dtype), x, kind="translate", max_shift=3)
    assert (df2["continuity_max"] > 0).all()
    # hand check of one pair: R = column-index weight, x = ramp; compare with explicit crop formula
    x1 = torch.arange(6.0, dtype=torch.float64).reshape(1, 1, 1, 6)
    fn = lambda xs, idx: xs * torch.arange(1.0, 7.0, dtype=xs.dtype)  # noqa: E731
    r0, r1 = fn(x1, None), fn(shift_right(x1, 1), None)
    expected = (r1[..., 1:] - r0[..., :-1]).abs().sum() / (shift_right(x1, 1) - x1).norm()
    got = continuity(fn, x1, kind="translate", max_shift=1)["continuity_max"][0]
    assert got == pytest.approx(expected.item())


def test_shift_right_replicates_left_edge():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert shift_right(x, 0).tolist() == [[1, 2, 3, 4]]
    assert shift_right(x, 2).tolist() == [[1, 1, 1, 2]]
    assert torch.equal(shift_right(shift_right(x, 1), 2), shift_right(x, 3))


def test_translate_zero_shift_is_handled():
    calls = []
    df = continuity(lambda xs, idx: calls.append(1) or xs, _x(), kind="translate", max_shift=0)
    assert len(df) == 3 and df["continuity_max"].isna().all() and (df["n_pairs"] == 0).all()
    assert calls == [] and (df["max_shift"] == 0).all()


def test_zero_distance_pairs_are_skipped():
    x = torch.ones(1, 1, 3, 5)  # shifting a constant image does not change it
    df = continuity(lambda xs, idx: xs, x, kind="translate", max_shift=2)
    assert df["n_pairs"][0] == 0 and np.isnan(df["continuity_max"][0])


def _nonlinear_attr(weights):
    """Per-image, per-target toy explanation: R = tanh(3x)·w[idx] − x² (sample-wise, no batch coupling)."""
    return lambda xs, idx: torch.tanh(3 * xs) * weights[idx].reshape(-1, 1, 1, 1) - xs**2


@pytest.mark.parametrize("kind", ["translate", "noise"])
def test_single_batched_call_and_chunking_invariance(kind):
    x, w = _x(b=4), torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    seen = []

    def attr(xs, idx):
        seen.append(len(xs))
        return _nonlinear_attr(w)(xs, idx)

    ref = continuity(attr, x, kind=kind, max_shift=3, n_samples=5, sigma=0.1)
    assert seen == [4 * (4 if kind == "translate" else 6)]  # all neighbours of all images in ONE call
    for bs in (1, 5, 7):
        seen.clear()
        df = continuity(attr, x, kind=kind, max_shift=3, n_samples=5, sigma=0.1, batch_size=bs)
        assert max(seen) <= bs and len(seen) == math.ceil(sum(seen) / bs)
        pd.testing.assert_frame_equal(df, ref, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("kind", ["translate", "noise"])
def test_per_image_target_and_batch_composition(kind):
    """Rows of a sub-batch (same keys, same per-image target) equal those of the full batch."""
    x, w = _x(b=4), torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    keys = ["img7", "img3", "img9", "img1"]
    full = continuity(_nonlinear_attr(w), x, kind=kind, n_samples=4, sigma=0.05, seed=3, image_keys=keys)
    sub = [2, 0]
    part = continuity(
        _nonlinear_attr(w[sub]), x[sub], kind=kind, n_samples=4, sigma=0.05, seed=3, image_keys=[keys[i] for i in sub]
    )
    pd.testing.assert_frame_equal(part, full.iloc[sub].reset_index(drop=True), check_exact=False, rtol=1e-12)
    if kind == "noise":  # another seed gives other draws
        other = continuity(_nonlinear_attr(w), x, kind=kind, n_samples=4, sigma=0.05, seed=4, image_keys=keys)
        assert not np.allclose(other["continuity_max"], full["continuity_max"])


def test_idx_maps_rows_to_their_image_and_output_columns():
    x = _x(b=3)
    checked = []

    def attr(xs, idx):
        assert idx.dtype == torch.int64 and idx.tolist() == sorted(idx.tolist())
        # every noisy row is near its own source image
        assert ((xs - x[idx]).abs().amax(dim=(1, 2, 3)) < 1.0).all()
        checked.append(True)
        return xs

    df = continuity(attr, x, kind="noise", sigma=0.01, n_samples=3)
    assert checked and len(df) == 3
    assert {"image", "kind", "neighbourhood", "max_shift", "sigma", "n_samples", "n_pairs",
            "continuity_max", "continuity_mean"} <= set(df.columns)
    assert (df["neighbourhood"] == "noise(sigma=0.01,n_samples=3)").all() and (df["sigma"] == 0.01).all()
    assert (df["continuity_mean"] <= df["continuity_max"] + 1e-12).all()
    # identity explanation: ‖Δx‖₁ / ‖Δx‖₂ ∈ [1, √d]
    d = x[0].numel()
    assert ((df["continuity_mean"] >= 1) & (df["continuity_max"] <= math.sqrt(d))).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        continuity(lambda xs, idx: xs, _x(), kind="rotate")
    with pytest.raises(ValueError):
        continuity(lambda xs, idx: xs[:, :1], _x(), kind="noise")
    with pytest.raises(ValueError):
        continuity(lambda xs, idx: xs, _x(), kind="translate", max_shift=-1)
