"""Symmetric relevance gain (``metrics=[aopc,srg]``, DEFINITIONS §9): by hand on a small curve table, the one-line
refusal without LeRF, and a run's summary against its own curves."""

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.run.job import run
from bench.run.spec import build_spec
from bench.protocols.srg import SRG
from bench.run.summary import per_image_quantities

from conftest import FAST_MODEL, composed


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def test_srg_by_hand():
    rows = []
    # image a: MoRF 4 → 2 → 0, LeRF 4 → 4 → 3 over fractions 0, 0.25, 0.5
    for order, values in {"morf": [4, 2, 0], "lerf": [4, 4, 3], "random": [4, 3, 2]}.items():
        f0 = values[0]
        aopc = np.cumsum([f0 - v for v in values]) / np.arange(1, 4)
        rows += [dict(image_id="a", order=order, step=k, fraction_perturbed=0.25 * k, score_value=v, aopc=a)
                 for k, (v, a) in enumerate(zip(values, aopc))]
    curves = pd.DataFrame(rows).sample(frac=1, random_state=1)  # any row order
    q = per_image_quantities({"curves": curves})
    # AUC(MoRF) = ½(4+2)·¼ + ½(2+0)·¼ = 1; AUC(LeRF) = ½(4+4)·¼ + ½(4+3)·¼ = 1.875
    assert q.loc["a", "srg"] == pytest.approx(0.875)
    # AOPC at L=2: MoRF (0 + 2 + 4)/3 = 2, LeRF (0 + 0 + 1)/3 = 1/3
    assert q.loc["a", "srg_aopc"] == pytest.approx(2 - 1 / 3)
    assert "srg" not in per_image_quantities({"curves": curves[curves.order != "lerf"]})


def test_srg_needs_lerf_in_one_line():
    with pytest.raises(BenchError, match=r"metrics=\[…, srg\] needs the lerf order: add lerf to orders"):
        build_spec(composed([*FAST_MODEL, "metrics=[aopc,srg]"]))


def test_a_runs_srg_is_its_curves_srg(tmp_path):
    run(composed([*FAST_MODEL, "metrics=[aopc,srg]", "orders=[morf,lerf]", "n_images=5", "steps=6", "repeats=2",
                  "bootstrap=50", "method=gradient_x_input"]), tmp_path)
    curves = pd.read_parquet(tmp_path / "curves.parquet")
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("quantity")
    expected = SRG.per_image({"curves": curves})
    for name in ("srg", "srg_aopc"):
        assert summary.loc[name, "mean"] == pytest.approx(expected[name].mean(), rel=1e-6)  # (float32 tables)
        assert summary.loc[name, "n_images"] == 5
    assert summary.loc["srg_aopc", "mean"] == pytest.approx(summary.loc["aopc_morf", "mean"]
                                                            - summary.loc["aopc_lerf", "mean"])
