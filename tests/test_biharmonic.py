"""Biharmonic inpainting on the device (bench/engine/biharmonic.py) against scikit-image's ``inpaint_biharmonic``,
its stencils against ``scipy.ndimage.laplace``, batch invariance, the sparse fallback, and
``perturbation=inpaint`` with both solvers in the engine."""

import numpy as np
import pytest
import torch
from scipy.ndimage import laplace
from skimage.restoration import inpaint_biharmonic as skimage_inpaint

import bench.engine.biharmonic as bh
from bench.engine.curves import sequential_scores
from bench.errors import BenchError
from bench.engine.replacement import make_replacement
from test_imputation import masks as road_masks


@pytest.mark.parametrize("shape", [(7, 9), (1, 6), (2, 3), (4, 4)])
def test_stencils_are_laplace_of_laplace_on_the_clipped_window(shape):
    h, w = shape
    got = bh.stencils(h, w)
    for i in range(h):
        for j in range(w):
            lo, hi = (max(i - 2, 0), max(j - 2, 0)), (min(i + 3, h), min(j + 3, w))
            delta = np.zeros((hi[0] - lo[0], hi[1] - lo[1]))
            delta[i - lo[0], j - lo[1]] = 1
            window = got[i, j, lo[0] - i + 2:hi[0] - i + 2, lo[1] - j + 2:hi[1] - j + 2]
            assert np.array_equal(window, laplace(laplace(delta)))  # reflect mode, as skimage
            assert np.abs(got[i, j]).sum() == np.abs(window).sum()  # nothing outside the window
    if h >= 5 and w >= 5:  # inside: the 13-point biharmonic stencil
        inner = got[2, 2]
        assert inner[2, 2] == 20 and inner[1, 2] == inner[2, 3] == -8 and inner[1, 1] == 2 and inner[0, 2] == 1


def masks(h, w, rng):
    """ROAD's test masks (border, isolated pixels, random 30 % and 90 %, all but 3 pixels, a block to the border)
    and a corner tile and one pixel."""
    named = road_masks(h, w, rng)
    corner = np.zeros((h, w), bool)
    corner[:4, :4] = True
    return {**named, "corner tile": corner, "one pixel": np.eye(1, h * w, 40, dtype=bool).reshape(h, w)}


def skimage_reference(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.moveaxis(skimage_inpaint(np.moveaxis(x, 0, -1), m, channel_axis=-1), -1, 0)


def test_equals_scikit_image_in_float64():
    """Same system, both float64: equal to rounding (measured ≤ 2e-12 relative to the value range)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 13, 17))
    named = masks(13, 17, rng)
    got = bh.inpaint_biharmonic(torch.tensor(x).expand(len(named), 3, 13, 17),
                                torch.tensor(np.stack(list(named.values())))[:, None]).numpy()
    for t, (name, m) in enumerate(named.items()):
        ref = skimage_reference(x, m)
        assert np.abs(got[t] - ref).max() <= 1e-10 * np.ptp(x), name
        assert np.array_equal(got[t][:, ~m], x[:, ~m]), name


def test_agrees_with_scikit_image_in_float32():
    """skimage solves a float32 image in float32 (SuperLU); ours solves in float64 and rounds once. The
    difference is skimage's own rounding: measured ≤ 1.5e-5 for values of unit spread, so 1e-4 × the
    value range is the stated tolerance (the systems' condition numbers reach ~1e3 for 200 unknowns)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 13, 17)).astype(np.float32)
    named = masks(13, 17, rng)
    got = bh.inpaint_biharmonic(torch.tensor(x).expand(len(named), 3, 13, 17),
                                torch.tensor(np.stack(list(named.values())))[:, None]).numpy()
    for t, (name, m) in enumerate(named.items()):
        assert np.abs(got[t] - skimage_reference(x, m)).max() <= 1e-4 * np.ptp(x), name


def test_clipped_to_the_range_of_the_known_pixels_like_scikit_image():
    x = np.zeros((1, 12, 12))
    x[0, :, 6:] = 1.0  # a step edge: the biharmonic fill overshoots it and is clipped to [0, 1]
    m = np.zeros((12, 12), bool)
    m[3:9, 3:9] = True
    got = bh.inpaint_biharmonic(torch.tensor(x)[None], torch.tensor(m)[None, None])[0].numpy()
    assert got.min() == 0.0 and got.max() == 1.0
    assert np.abs(got - skimage_reference(x, m)).max() <= 1e-12


def test_batch_invariant_sparse_fallback_and_nothing_to_inpaint(monkeypatch):
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.normal(size=(6, 2, 20, 20)), dtype=torch.float32)
    m = torch.tensor(rng.random((6, 1, 20, 20)) < 0.4)
    m[4] = False  # nothing to inpaint
    m[5] = True   # nothing to inpaint from
    together = bh.inpaint_biharmonic(x, m)
    alone = torch.cat([bh.inpaint_biharmonic(x[i:i + 1], m[i:i + 1]) for i in range(6)])
    assert torch.equal(together, alone)
    assert torch.equal(together[4], x[4]) and torch.equal(together[5], x[5])
    monkeypatch.setattr(bh, "DENSE_MAX", 10)  # every system through SciPy's sparse solver
    assert (bh.inpaint_biharmonic(x, m) - together).abs().max() <= 1e-6
    monkeypatch.setattr(bh, "DENSE_BYTES", 1)  # one dense system per solve
    monkeypatch.setattr(bh, "DENSE_MAX", 2048)
    assert torch.equal(bh.inpaint_biharmonic(x, m), together)


def test_inpaint_solvers_give_the_same_curves_in_the_engine():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 12, 12)
    ids = torch.arange(144).view(12, 12) // 12 // 4 * 3 + torch.arange(12) // 4  # 4×4 tiles, 9 regions
    ranks = torch.stack([torch.randperm(9)[ids] for _ in range(6)]).view(3, 2, 12, 12)
    weights = torch.randn(2 * 144, 4)

    def score(inputs, target):
        return (inputs.flatten(1) @ weights).gather(1, target.view(-1, 1))[:, 0]

    target = torch.tensor([0, 1, 2])
    curves = {solver: sequential_scores(score, x, ranks, make_replacement("inpaint", solver=solver).step, target,
                                        9, batch_size=4) for solver in ("device", "host")}
    assert curves["device"].shape == (3, 2, 1, 9)
    assert (curves["device"] - curves["host"]).abs().max() <= 1e-4
    with pytest.raises(BenchError, match="perturbation.params.solver"):
        make_replacement("inpaint", solver="gpu")
