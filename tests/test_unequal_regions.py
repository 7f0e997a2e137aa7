"""DEFINITIONS §4 "Unequal regions": the area-matched AOPC, checked against an independent integration and on the case
that motivates it (a random heatmap at a patch that does not divide the image)."""

import logging

import numpy as np
import pandas as pd
import pytest

from conftest import FAST_MODEL, composed
from bench.protocols.aopc import area_aopc_curve, area_integral, area_matched_aopc


def _reference_area(fraction, score, upper):
    """∫₀^upper of the piecewise-linear curve np.interp(·, fraction, score) by SciPy's adaptive quadrature, told
    where the knots are (an independent integration)."""
    from scipy.integrate import quad

    knots = [k for k in np.unique(fraction) if 0 < k < upper]
    return quad(lambda a: np.interp(a, fraction, score), 0.0, upper, points=knots or None, limit=500,
                epsabs=1e-12, epsrel=1e-12)[0]


def test_area_integral_by_hand():
    # F: (0, 4) → (0.5, 2) → (1, 2); ∫₀^1 = 0.5·(4+2)/2 + 0.5·2 = 2.5; ∫₀^0.25 = 0.25·(4 + 3)/2 = 0.875
    fraction, score = np.array([0.0, 0.5, 1.0]), np.array([4.0, 2.0, 2.0])
    assert area_integral(fraction, score, np.array(1.0)) == pytest.approx(2.5)
    assert area_integral(fraction, score, np.array(0.25)) == pytest.approx(0.875)
    # AOPC_area over [0, 1]: 4 − 2.5 = 1.5; against a random curve ending at 0.5: both over [0, 0.5]
    own, base, a_max = area_matched_aopc(fraction[None], score[None], np.array([[0.0, 0.25, 0.5]]),
                                         np.array([[4.0, 4.0, 4.0]]))
    assert a_max[0] == 0.5
    assert own[0] == pytest.approx(4 - 0.5 * (4 + 2) / 2 / 0.5) and base[0] == pytest.approx(0.0)


def test_area_integral_agrees_with_an_independent_integration():
    rng = np.random.default_rng(0)
    n, k = 20, 17
    steps = rng.integers(1, 60, size=(n, k))  # unequal regions: 1 … 59 pixels each, some steps of zero width
    steps[:, 3] = 0
    fraction = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, 1)], 1) / 1000
    score = rng.normal(size=(n, k + 1))
    upper = fraction[:, -1] * rng.uniform(0.2, 1.0, n)
    got = area_integral(fraction, score, upper)
    want = [_reference_area(fraction[i], score[i], upper[i]) for i in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    grid = np.linspace(0.01, 1.0, 25)
    curve = area_aopc_curve(fraction, score, grid)
    for i in (0, 7):
        for j, a in enumerate(grid):
            if a <= fraction[i, -1]:
                assert curve[i, j] == pytest.approx(score[i, 0] - _reference_area(fraction[i], score[i], a) / a,
                                                    rel=1e-9)
            else:
                assert np.isnan(curve[i, j])


def test_equal_tiles_give_the_trapezoid_of_plain_aopc():
    """With equal steps of the fraction, AOPC_area is the trapezoid version of AOPC(L) (TNNLS eq. 12 weights
    every step 1/(L+1); the trapezoid weights the ends ½): on a linear drop both equal half the final drop."""
    fraction = np.linspace(0, 1, 11)[None]
    score = 5 - 3 * fraction
    own, base, _ = area_matched_aopc(fraction, score, fraction, np.full_like(fraction, 5.0))
    assert own[0] == pytest.approx(1.5) and base[0] == pytest.approx(0.0)


def _summary(tmp_path, name, *overrides):
    from bench.run.job import run

    return run(composed([*FAST_MODEL, "bootstrap=200", *overrides]), tmp_path / name).set_index("quantity")


def test_random_heatmap_is_unbiased_area_matched_at_a_patch_that_does_not_divide(tmp_path, caplog):
    """28 = 9 + 9 + 9 + 1: summed relevance favours the large tiles for any heatmap, so plain AOPC − random of a
    random heatmap is > 0 with a 95% interval above 0; the area-matched difference contains 0."""
    with caplog.at_level(logging.WARNING, logger="bench.run.job"):
        s = _summary(tmp_path, "r9", "method=random", "patch=9", "n_images=50", "repeats=4")
    plain, area = s.loc["aopc_morf_minus_random"], s.loc["aopc_area_morf_minus_random"]
    assert plain.ci_low > 0, plain
    assert area.ci_low < 0 < area.ci_high, area
    assert abs(area["mean"]) < plain["mean"] / 3
    assert (s.equal_regions == False).all()
    assert "patch 9 does not divide the 28×28 image" in caplog.text and "aopc_area_morf_minus_random" in caplog.text
    assert set(s.unit[s.index.str.startswith("aopc")]) == {"logit"}
    # a sweep's comparison reports the area-matched difference for this run, and says so
    from bench.run.summary import comparison_table

    table = comparison_table(s.reset_index())
    assert "area-matched AOPC − random [logit] ↑" in table and "AOPC is area-matched" in table
    assert f"{area['mean']:.3g} [{area['ci_low']:.3g}, {area['ci_high']:.3g}]" in table


def test_equal_tiles_rank_methods_alike_and_print_one_aopc(tmp_path, capsys):
    from bench.run.summary import format_table

    means = {}
    for method in ("random", "sensitivity", "gradient_x_input", "lrp_eps"):
        s = _summary(tmp_path, method, f"method={method}", "patch=4", "n_images=12", "repeats=2")
        assert (s.equal_regions == True).all()
        means[method] = s.loc[["aopc_morf_minus_random", "aopc_area_morf_minus_random"], "mean"].to_numpy()
    table = pd.DataFrame(means, index=["plain", "area"]).T
    assert list(table.plain.rank()) == list(table.area.rank()), table
    printed = format_table(s.reset_index())
    assert "AOPC − random" in printed and "area-matched" not in printed


def test_steps_that_stop_early_are_said(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bench.run.job"):
        _summary(tmp_path, "p2", "method=random", "patch=2", "n_images=2", "repeats=1", "steps=98")
    assert "steps=98 < 196 regions at patch 2" in caplog.text and "(at 50% of the pixels)" in caplog.text
