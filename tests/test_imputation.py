"""ROAD's linear imputation on the device (bench/engine/imputation.py) against a sparse direct solve of the same
system (SciPy, float64), hand-known answers, batch invariance; ``perturbation=road`` in the engine."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from bench.engine.curves import imputed_scores
from bench.errors import BenchError
from bench.engine.imputation import linear_imputation
from bench.engine.replacement import make_replacement

NEIGHBOURS = {(-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12, (0, -1): 1 / 6, (0, 1): 1 / 6, (1, -1): 1 / 12,
              (1, 0): 1 / 6, (1, 1): 1 / 12}


def spsolve_imputation(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The system of DEFINITIONS §9 written out entry by entry and solved by SciPy's sparse direct solver."""
    h, w = removed.shape
    pts = np.argwhere(removed)
    index = -np.ones((h, w), int)
    index[removed] = np.arange(len(pts))
    a = sp.lil_matrix((len(pts), len(pts)))
    b = np.zeros(len(pts))
    for k, (i, j) in enumerate(pts):
        for (di, dj), wt in NEIGHBOURS.items():
            y, z = i + di, j + dj
            if 0 <= y < h and 0 <= z < w:
                a[k, k] += wt
                if removed[y, z]:
                    a[k, index[y, z]] -= wt
                else:
                    b[k] += wt * x[y, z]
    out = x.copy()
    out[removed] = spla.spsolve(a.tocsc(), b)
    return out


def masks(h, w, rng):
    border = np.zeros((h, w), bool)
    border[0, :] = border[:, -1] = True
    isolated = np.zeros((h, w), bool)
    isolated[::3, ::3] = True
    block = np.zeros((h, w), bool)
    block[2:, 1:-3] = True
    return {"random 30%": rng.random((h, w)) < 0.3, "random 90%": rng.random((h, w)) < 0.9,
            "all but 3 pixels": ~np.isin(np.arange(h * w).reshape(h, w), [0, 17, h * w - 1]),
            "border": border, "isolated pixels": isolated, "block to the border": block}


def test_equals_a_sparse_direct_solve_in_float32():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 13, 17))  # 3 channels, every mask on the same image
    named = masks(13, 17, rng)
    removed = torch.tensor(np.stack(list(named.values())))[:, None]
    xs = torch.tensor(x, dtype=torch.float32).expand(len(named), 3, 13, 17)
    got = linear_imputation(xs, removed).numpy()
    worst = 0.0
    for i, (name, m) in enumerate(named.items()):
        for c in range(3):
            ref = spsolve_imputation(x[c].astype(np.float32).astype(np.float64), m)
            err = np.abs(got[i, c] - ref).max() / np.abs(ref).max()
            assert err <= 1e-6, (name, c, err)  # DEFINITIONS §9: ≤ 1e-4 relative in float32; the solve reaches float32's rounding
            assert np.array_equal(got[i, c][~m], x[c].astype(np.float32)[~m]), name  # kept pixels untouched
            worst = max(worst, err)
    assert worst > 0  # (the comparison compares something)


def test_agrees_with_quantus_noisy_linear_imputation():
    from quantus.functions.perturb_func import noisy_linear_imputation  # ROAD's authors' system, SciPy spsolve

    rng = np.random.default_rng(2)
    worst = 0.0
    for h, w, frac in ((13, 17, 0.3), (13, 17, 0.9), (28, 28, 0.5)):
        x = rng.normal(size=(3, h, w)).astype(np.float32)
        m = rng.random((h, w)) < frac
        theirs = noisy_linear_imputation(x.copy(), np.flatnonzero(m), noise=0.0)
        ours = linear_imputation(torch.tensor(x)[None], torch.tensor(m)[None, None])[0].numpy()
        worst = max(worst, float(np.abs(theirs - ours).max()))
    assert worst <= 1e-6, worst  # measured: 1.2e-7, float32 rounding


def test_known_answers():
    # a linear ramp is its own 8-neighbour weighted mean away from the border: a hole is filled exactly
    i, j = np.meshgrid(np.arange(12.0), np.arange(10.0), indexing="ij")
    ramp = torch.tensor(0.5 * i - 0.25 * j + 1, dtype=torch.float64)[None, None]
    hole = torch.zeros(1, 1, 12, 10, dtype=torch.bool)
    hole[..., 3:9, 2:7] = True
    torch.testing.assert_close(linear_imputation(ramp, hole), ramp, rtol=0, atol=1e-9)
    # an isolated removed pixel: the weighted mean of its 8 kept neighbours
    x = torch.arange(25.0, dtype=torch.float64).view(1, 1, 5, 5) ** 2
    one = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    one[..., 2, 2] = True
    want = sum(wt * float(x[0, 0, 2 + di, 2 + dj]) for (di, dj), wt in NEIGHBOURS.items())
    assert float(linear_imputation(x, one)[0, 0, 2, 2]) == pytest.approx(want, rel=1e-12)
    # nothing removed: x; everything removed: nothing to impute from, 0 (the dataset mean in model units)
    assert torch.equal(linear_imputation(x, torch.zeros_like(one)), x)
    assert torch.equal(linear_imputation(x, torch.ones_like(one)), torch.zeros_like(x))


def test_each_system_is_solved_as_if_alone():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(6, 2, 16, 16)), dtype=torch.float32)
    removed = torch.tensor(rng.random((6, 1, 16, 16)) < np.linspace(0.1, 0.95, 6).reshape(6, 1, 1, 1))
    together = linear_imputation(x, removed)
    alone = torch.cat([linear_imputation(x[i:i + 1], removed[i:i + 1]) for i in range(6)])
    assert torch.equal(together, alone)


def test_no_convergence_is_one_line():
    x = torch.randn(1, 1, 32, 32)
    removed = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    removed[..., 0, 0] = False
    with pytest.raises(BenchError, match=r"did not converge in max_iter=3 iterations .* raise perturbation"):
        linear_imputation(x, removed, max_iter=3)


def test_road_replacement_checks_and_noise():
    with pytest.raises(BenchError, match="noise"):
        make_replacement("road", noise=-1)
    with pytest.raises(BenchError, match="max_iter"):
        make_replacement("road", max_iter=0)
    assert not make_replacement("road", noise=0).random and make_replacement("road").random
    road = make_replacement("road", noise=0.5)
    x = torch.randn(3, 2, 8, 8)
    noise = road.draw(x, ["a", "b", "c"], 2, 7, None)
    assert noise.shape == (3, 2, 2, 8, 8) and 0.3 < float(noise.std()) < 0.7
    assert torch.equal(road.draw(x[1:2], ["b"], 2, 7, None)[0], noise[1])  # per image, whatever the batch
    removed = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    removed[:, :, 2:5, 3:7] = True
    out = road.fill(x, removed, noise[:, 0])
    plain = linear_imputation(x, removed)
    assert torch.equal(out[~removed.expand_as(x)], x[~removed.expand_as(x)])
    torch.testing.assert_close(out - plain, torch.where(removed, noise[:, 0], torch.zeros_like(x)))


def test_road_scores_do_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    weights = torch.randn(2, 3, 6, 6)
    score_fn = lambda inputs, target: (inputs * weights[target]).sum((1, 2, 3))  # a linear model, per item
    x = torch.randn(3, 3, 6, 6)
    ranks = torch.stack([torch.randperm(36).view(6, 6) for _ in range(6)]).view(3, 2, 6, 6)
    road = make_replacement("road", noise=0.1)
    draws = road.draw(x, ["p", "q", "r"], 2, 0, None)
    target = torch.tensor([0, 1, 0])
    runs = [imputed_scores(score_fn, x, ranks, road.fill, draws, target, torch.arange(1, 11), bs) for bs in (1, 7, 64)]
    assert runs[0].shape == (3, 2, 2, 10)
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    # item (b, o, j, k): the linear score of x with the first k regions of order o imputed, noise j added
    b, o, j, k = 2, 1, 1, 4
    removed = (ranks[b, o] < k)[None, None]
    want = score_fn(road.fill(x[b:b + 1], removed, draws[b, j:j + 1]), target[b:b + 1])
    assert float(runs[0][b, o, j, k - 1]) == pytest.approx(float(want), rel=1e-6)


def test_a_road_run_end_to_end_at_two_batch_sizes(cache_dir, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from bench.plugins import CONF_DIR
    from bench.run.job import run

    from conftest import FAST_MODEL

    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")
    job = [*FAST_MODEL, "perturbation=road", "n_images=4", "steps=3", "repeats=2", "bootstrap=50", "block_size=2"]
    curves = []
    for bs in (3, 64):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            run(compose("config", overrides=[*job, f"batch_size={bs}"]), tmp_path / f"bs{bs}")
        curves.append(pd.read_parquet(tmp_path / f"bs{bs}" / "curves.parquet"))
    a, b = curves
    assert (a.perturbation == "road").all() and '"noise": 0.01' in a.perturbation_params.iloc[0]
    assert a.repeats.iloc[0] == 2 and len(a) == 4 * 2 * 4  # images × orders × (L + 1)
    # the model's convolutions may round differently at another batch shape; the imputation does not
    np.testing.assert_allclose(a.score_value, b.score_value, rtol=1e-5, atol=1e-5)
    assert (a[a.step > 0].score_std > 0).all()  # the noise differs between the repeats
