"""The metric report card (DEFINITIONS §10): its statistics against independent implementations and hand cases,
each criterion on constructed metrics with a known answer, the card's runs (randomised models, noisy inputs, the
sweep and its refusals) and the report's files end to end."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import kendalltau, rankdata, spearmanr

from bench.errors import BenchError
from bench.report import card_stats as cs
from conftest import FAST_MODEL, bench_main

# ------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize("trial", range(4))
def test_krippendorff_ordinal_agrees_with_the_krippendorff_package_resamples_included(trial):
    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(trial)
    n, units = int(rng.integers(3, 40)), int(rng.integers(2, 7))
    ranks = rankdata(rng.integers(0, 4, size=(n, units)), axis=1)   # images × methods, ties included
    w = cs.weights(n, 3, trial)
    got = cs.krippendorff_ordinal(ranks, w)
    want = [krippendorff.alpha(reliability_data=np.repeat(ranks, w[r].astype(int), axis=0),
                               level_of_measurement="ordinal") for r in range(len(w))]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("trial", range(3))
def test_cronbach_alpha_agrees_with_pingouin_resamples_included(trial):
    pingouin = pytest.importorskip("pingouin")
    rng = np.random.default_rng(trial)
    n = int(rng.integers(5, 60))
    items = rng.normal(size=(n, 6)) + rng.normal(size=(n, 1)) * (trial + 1)
    w = cs.weights(n, 3, trial)
    got = cs.cronbach(items, w)
    want = [pingouin.cronbach_alpha(pd.DataFrame(np.repeat(items, w[r].astype(int), axis=0)))[0]
            for r in range(len(w))]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_kendall_tau_b_and_spearman_agree_with_scipy_ties_included():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = rankdata(rng.integers(0, 3, 6)), rankdata(rng.integers(0, 4, 6))
        want = kendalltau(a, b).statistic
        got = cs.tau_b(a, b)
        assert (np.isnan(got) and np.isnan(want)) or np.isclose(got, want)
        y = rng.normal(size=5)
        assert np.isclose(cs.spearman(np.arange(5.0), y[None])[0], spearmanr(np.arange(5), y).statistic)


def test_kendall_w_closed_form_by_hand():
    # 3 raters, 4 objects: two agree, one reverses. Rank sums 6, 7, 8, 9 around m(n+1)/2 = 7.5: S = 5,
    # W = 12·5 / (3²·(4³ − 4)) = 1/9
    r = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [4, 3, 2, 1]], float)
    assert np.isclose(cs.kendall_w(r), 1 / 9)
    assert np.isclose(cs.kendall_w(np.array([[1, 2, 3, 4]] * 3, float)), 1.0)
    # a tie: rater 3 ranks objects 1 and 2 equal (1.5, 1.5): T = 2³ − 2 = 6; rank sums 3.5, 5.5, 9, 12;
    # S = (−4)² + (−2)² + 1.5² + 4.5² = 42.5; W = 12·42.5 / (9·60 − 3·6) = 510 / 522
    t = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1.5, 1.5, 3, 4]])
    assert np.isclose(cs.kendall_w(t), 12 * ((3.5 - 7.5) ** 2 + (5.5 - 7.5) ** 2 + 1.5 ** 2 + 4.5 ** 2) / (9 * 60 - 18))


def test_weights_row_zero_is_the_images_themselves_and_resamples_are_seeded():
    w = cs.weights(7, 5, seed=3)
    assert w.shape == (6, 7) and (w[0] == 1).all() and (w.sum(1) == 7).all()
    np.testing.assert_array_equal(w, cs.weights(7, 5, seed=3))
    assert not np.array_equal(w, cs.weights(7, 5, seed=4))


def test_ranking_is_one_for_the_best_with_mean_ranks_for_ties():
    np.testing.assert_array_equal(cs.ranking(np.array([0.1, 0.5, 0.5, -1.0])), [3, 1.5, 1.5, 4])


# ------------------------------------------------------------------------------------ constructed metrics

METHODS = ["random", "a", "b", "c"]


def synthetic(values: dict, seeds=(0, 1, 2), layers=(1, 2, 3), noise=0.05, classes_changed=()) -> pd.DataFrame:
    """A per-image table as the report builds it: ``values[quantity](method, seed, k, noisy, n)`` → n values."""
    from bench.report.card import IDENTITY

    n, rows = 200, []
    base = dict(run_key="", method_params="{}", pooling="sum", dataset="d", data_sha="", images=n, model="m",
                model_sha="",
                perturbation="uniform", regions="tiles", regions_params="{}", patch=4, steps=10, repeats=1,
                target="predicted", score="logit", bootstrap=200, metrics="aopc", protocol_settings="{}",
                equal_regions=True)
    runs = [(m, s, 0, 0.0) for m in METHODS for s in seeds]
    runs += [(m, seeds[0], k, 0.0) for m in METHODS[1:] for k in layers]
    if noise:
        runs += [(m, seeds[0], 0, noise) for m in METHODS]
    for m, s, k, sigma in runs:
        for q, f in values.items():
            from bench import protocols
            d = protocols.quantities()[q][1].direction
            v = np.asarray(f(m, s, k, sigma > 0, n), float)
            cls = [1 if (sigma and i in classes_changed) else 0 for i in range(n)]
            rows.append(pd.DataFrame({**base, "run": f"{m}-{s}-{k}-{sigma}", "method": m, "seed": s,
                                      "randomise_layers": k, "input_noise": sigma,
                                      "image_id": [f"i{i:03d}" for i in range(n)], "target_class": cls,
                                      "quantity": q, "value": d * v, "direction": d}))
    df = pd.concat(rows, ignore_index=True)
    return df[IDENTITY + ["image_id", "target_class", "quantity", "value", "direction"]]


def criteria(card_rows, quantity):
    r = card_rows[card_rows.quantity == quantity].set_index("criterion")
    return r


def test_a_metric_that_is_a_fixed_function_of_the_method_is_perfectly_reliable():
    from bench.report.card import metric_card

    strength = {"random": 0.0, "a": 1.0, "b": 2.0, "c": 3.0}
    fixed = {"aopc_morf_minus_random": lambda m, s, k, noisy, n: np.full(n, strength[m] / (1 + k)),
             "deletion_auc_morf": lambda m, s, k, noisy, n: np.full(n, strength[m] / (1 + k))}
    card = metric_card(synthetic(fixed))
    r = criteria(card, "aopc_morf_minus_random")
    assert r.loc["reliability", "value"] == pytest.approx(1.0)
    assert r.loc["noise_floor", "value"] == 0.0 and r.loc["rank_stability", "value"] == pytest.approx(1.0)
    assert r.loc["discriminative_power", "value"] == 1.0 and r.loc["win_rate", "value"] == 1.0
    assert r.loc["reactivity", "value"] == pytest.approx(-1.0)          # falls steadily with k
    assert r.loc["gap_closed", "value"] == pytest.approx(0.75)          # 1 − 1/(1+3) of the gap to random
    assert r.loc["resilience", "value"] == pytest.approx(1.0)
    assert r.loc["images_needed", "value"] == 10 and r.loc["stability_at_200", "value"] == 1.0
    assert r.loc["agreement", "value"] == pytest.approx(1.0)
    w = card[card.criterion == "kendall_w"]
    assert w.value.iloc[0] == pytest.approx(1.0)
    assert r.loc["reliability", "ci_low"] == pytest.approx(1.0)         # every resample agrees too
    from bench.report.card_report import card_figure
    fig = card_figure(card, card.condition.iloc[0], ["aopc_morf_minus_random", "deletion_auc_morf"])
    assert tuple(fig.get_size_inches())[0] == pytest.approx(3.5)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["AOPC − random", "deletion AUC"]
    assert len(ax.get_xticklabels()) == 11 and fig._suptitle is None


def test_a_metric_that_is_pure_noise_has_alpha_near_zero_and_no_reactivity():
    from bench.report.card import metric_card

    def noise(m, s, k, noisy, n):
        seed = abs(hash((m, s, k, noisy))) % 2**32
        return np.random.default_rng(seed).normal(size=n)

    card = metric_card(synthetic({"aopc_morf_minus_random": noise}, layers=(1, 2, 3, 4, 5, 6)))
    r = criteria(card, "aopc_morf_minus_random")
    lo, hi = r.loc["reliability", "ci_low"], r.loc["reliability", "ci_high"]
    assert abs(r.loc["reliability", "value"]) < 0.05 and lo < 0 < hi
    assert abs(r.loc["reactivity", "value"]) < 0.6                        # no steady trend with k
    assert r.loc["discriminative_power", "value"] <= 1 / 3
    assert 0.3 < r.loc["win_rate", "value"] < 0.7
    assert r.loc["noise_floor", "value"] > 0.3                           # seeds move the means as much as methods


def test_images_whose_class_changes_under_noise_are_left_out_of_both_sides():
    from bench.report.card import metric_card

    strength = {"random": 0.0, "a": 1.0, "b": 2.0, "c": 3.0}
    card = metric_card(synthetic({"aopc_morf_minus_random": lambda m, s, k, noisy, n: np.full(n, strength[m])},
                                 classes_changed=range(50)))
    r = criteria(card, "aopc_morf_minus_random").loc["resilience"]
    assert r.n == 150 and "50 image(s)" in r.note


def test_criteria_without_their_runs_say_what_they_need():
    from bench.report.card import metric_card

    card = metric_card(synthetic({"aopc_morf_minus_random": lambda m, s, k, noisy, n: np.arange(n) * 0.01},
                                 seeds=(0,), layers=(), noise=0))
    r = criteria(card, "aopc_morf_minus_random")
    for c in ("noise_floor", "rank_stability", "reactivity", "gap_closed", "resilience"):
        assert np.isnan(r.loc[c, "value"]) and "needs" in r.loc[c, "note"]


def test_a_protocol_some_methods_did_not_run_is_carded_over_those_that_did():
    from bench.report.card import metric_card

    strength = {"random": 0.0, "a": 1.0, "b": 2.0, "c": 3.0}
    df = synthetic({"aopc_morf_minus_random": lambda m, s, k, noisy, n: np.full(n, strength[m]),
                    "deletion_auc_morf": lambda m, s, k, noisy, n: np.full(n, strength[m])})
    df = df[~((df.method == "c") & (df.quantity == "deletion_auc_morf"))]
    card = metric_card(df)
    r = criteria(card, "deletion_auc_morf")
    assert r.loc["reliability", "value"] == pytest.approx(1.0) and r.loc["discriminative_power", "value"] == 1.0
    assert np.isnan(criteria(card, "aopc_morf_minus_random").loc["agreement", "value"])   # 4 vs 3 methods
    assert (card.criterion == "kendall_w").sum() == 0
    two = df[~((df.method.isin(["b", "c"])) & (df.quantity == "deletion_auc_morf"))]
    r = criteria(metric_card(two), "deletion_auc_morf")
    assert r.value.isna().all() and "fewer than 3 methods" in r.loc["reliability", "note"]


def test_no_card_without_three_methods_and_random():
    from bench.report.card import cards

    df = synthetic({"aopc_morf_minus_random": lambda m, s, k, noisy, n: np.zeros(n)})
    assert cards(df[df.method.isin(["random", "a"])]) == []
    assert cards(df[df.method != "random"]) == []


# ------------------------------------------------------------------------------------ declarations

def test_every_declared_curve_step_names_a_declared_table_and_aopc_is_the_mean_of_its_steps():
    from bench import protocols
    from bench.report.card import step_items

    for name, (cls, q) in protocols.quantities().items():
        if q.steps is not None:
            assert q.steps.table in {t.name for c in protocols.catalogue() for t in c.tables}, name
    rng = np.random.default_rng(0)
    rows = [dict(image_id=f"i{i}", order=o, step=k, score_value=float(rng.normal()))
            for i in range(5) for o in ("morf", "random") for k in range(7)]
    curves = pd.DataFrame(rows)
    for i in range(5):  # every order starts at the same unperturbed score
        f0 = curves[(curves.image_id == f"i{i}") & (curves.step == 0)].score_value.iloc[0]
        curves.loc[(curves.image_id == f"i{i}") & (curves.step == 0), "score_value"] = f0
    declared = protocols.quantities()
    items = step_items(curves, declared["aopc_morf"][1].steps)
    f0 = curves[(curves.step == 0) & (curves.order == "morf")].set_index("image_id").score_value
    fk = curves[curves.order == "morf"].pivot(index="image_id", columns="step", values="score_value")
    np.testing.assert_allclose(items.sum(axis=1) / 7, (f0.to_numpy()[:, None] - fk.to_numpy()).mean(1))
    diff = step_items(curves, declared["aopc_morf_minus_random"][1].steps)
    fr = curves[curves.order == "random"].pivot(index="image_id", columns="step", values="score_value")
    np.testing.assert_allclose(diff.to_numpy(), (fr - fk).to_numpy()[:, 1:])


# ------------------------------------------------------------------------------------ the card's runs

class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.b = torch.nn.Linear(3, 3)
        self.a = torch.nn.Linear(4, 3)   # declared second, called first
        self.act = torch.nn.ReLU()

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def test_randomised_reinitialises_the_last_k_layers_in_forward_order_seeded_and_leaves_the_model_alone():
    from bench.models.randomise import parameterised_layers, randomised

    torch.manual_seed(0)
    model, x = TwoLayers(), torch.randn(2, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert parameterised_layers(model, x) == ["a", "b"]
    one = randomised(model, 1, seed=5, example=x)
    assert torch.equal(one.a.weight, model.a.weight) and not torch.equal(one.b.weight, model.b.weight)
    two = randomised(model, 2, seed=5, example=x)
    assert not torch.equal(two.a.weight, model.a.weight) and torch.equal(two.b.weight, one.b.weight)
    assert torch.equal(randomised(model, 2, seed=5, example=x).a.weight, two.a.weight)
    assert not torch.equal(randomised(model, 2, seed=6, example=x).a.weight, two.a.weight)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert randomised(model, 0, seed=5, example=x) is model
    with pytest.raises(BenchError, match="randomise_layers=3 but the model has only 2"):
        randomised(model, 3, seed=5, example=x)
    with pytest.raises(BenchError, match="no layer"):
        randomised(torch.nn.ReLU(), 1, seed=5, example=x)


def test_the_sweep_expands_each_method_into_the_cards_runs():
    from bench.run.card_sweep import card_jobs

    jobs = card_jobs([["method=random", "patch=4"], ["method=lrp_eps", "patch=4"]], [0, 1], [1, 2], "auto")
    assert jobs == [["method=random", "patch=4", "seed=0"], ["method=random", "patch=4", "seed=1"],
                    ["method=random", "patch=4", "seed=0", "input_noise=auto"],
                    ["method=lrp_eps", "patch=4", "seed=0"], ["method=lrp_eps", "patch=4", "seed=1"],
                    ["method=lrp_eps", "patch=4", "seed=0", "randomise_layers=1"],
                    ["method=lrp_eps", "patch=4", "seed=0", "randomise_layers=2"],
                    ["method=lrp_eps", "patch=4", "seed=0", "input_noise=auto"]]


CARD = ["-m", *FAST_MODEL, "experiment=metric_card", "n_images=10", "steps=4", "repeats=1", "bootstrap=100",
        "metrics=[aopc,deletion]", "deletion.steps=3", "hydra.sweeper.seeds=[0,1]", "hydra.sweeper.layers=[1,3]",
        "save_heatmaps=0"]


@pytest.mark.parametrize("extra, message", [
    (["method=random,lrp_eps"], "needs at least 3 methods, random among them"),
    (["method=sensitivity,lrp_eps,lrp_0"], "needs at least 3 methods, random among them"),
    (["method=random,sensitivity,lrp_eps", "hydra.sweeper.seeds=[0]"], "at least 2 seeds"),
    (["method=random,sensitivity,lrp_eps", "seed=3"], "sets seed itself"),
    (["method=random,sensitivity,lrp_eps", "hydra.sweeper.layers=[9]"], "randomise_layers=9 but the model has only 4"),
])
def test_a_request_the_card_cannot_use_is_refused_in_one_line_before_any_job(extra, message, capsys, cache_dir,
                                                                              tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = bench_main([*CARD, *extra], capsys)
    lines = [line for line in err.strip().splitlines() if not line.startswith("[20")]   # log records aside
    assert code == 2 and message in err and len(lines) == 1 and "Traceback" not in err, err
    assert not list(tmp_path.glob("results/multirun/*/*/DONE"))


def test_a_protocol_without_a_direction_is_refused():
    from bench import protocols
    from bench.run.card_sweep import check_request

    jobs = [[f"method={m}"] for m in ("random", "a", "b")]
    plain = [c.name for c in protocols.catalogue() if not any(q.direction for q in c.quantities if not q.diagnostic)]
    if plain:  # the catalogue may hold none: then the check is exercised by a stand-in below
        with pytest.raises(BenchError, match="no quantity with a direction"):
            check_request(jobs, [0, 1], [1], plain)

    class Flat:
        name = "flat"
        quantities = ()
    orig = protocols.protocol_class
    try:
        protocols.protocol_class = lambda n: Flat if n == "flat" else orig(n)
        available = protocols.available
        protocols.available = lambda: (*available(), "flat")
        with pytest.raises(BenchError, match="protocol 'flat' declares no quantity with a direction"):
            check_request(jobs, [0, 1], [1], ["aopc", "flat"])
    finally:
        protocols.protocol_class, protocols.available = orig, available


def test_metric_card_sweep_and_report_end_to_end(capsys, cache_dir, tmp_path, monkeypatch):
    """The experiment runs every card run once (random is not rerun on randomised models), the report writes the
    card, its figure and per_image.parquet, and every criterion has a value."""
    from bench.report.build import make_report

    monkeypatch.chdir(tmp_path)
    code, out, err = bench_main([*CARD, "method=random,sensitivity,lrp_eps"], capsys)
    assert code == 0, err
    assert "metric report card (DEFINITIONS §10)" in out and "Kripp. α" in out   # the sweep ends with the card
    sweep = next(tmp_path.glob("results/multirun/*"))
    done = sorted(p.parent.name for p in sweep.glob("*/DONE"))
    assert len(done) == 3 * 2 + 2 * 2 + 3, done       # seeds; randomised (not random); noisy
    assert not any("randomise_layers" in d and "method=random" in d for d in done)
    curves = pd.read_parquet(sweep / "collected" / "curves.parquet")
    noisy = curves[curves.input_noise > 0]
    assert set(noisy.input_noise) <= {0.005, 0.01, 0.02, 0.05, 0.1}
    written = make_report([sweep / "collected"], tmp_path / "report", formats=("png",), show_progress=False)
    assert {"per_image", "metric_card", "metric_card_figure"} <= set(written)
    per_image = pd.read_parquet(tmp_path / "report" / "per_image.parquet")
    assert {"run", "method", "seed", "randomise_layers", "input_noise", "image_id", "quantity", "value",
            "direction"} <= set(per_image.columns)
    assert per_image.groupby("run").image_id.nunique().eq(10).all()
    card = pd.read_csv(tmp_path / "report" / "metric_card.csv")
    from bench.report.card import CRITERIA
    head = card[card.quantity == "aopc_morf_minus_random"].set_index("criterion")
    assert set(CRITERIA) <= set(head.index)
    for c in ("noise_floor", "rank_stability", "discriminative_power", "win_rate", "reliability", "agreement",
              "reactivity", "resilience", "consistency"):
        assert np.isfinite(head.loc[c, "value"]), c
    assert (tmp_path / "report" / "metric_card.png").stat().st_size > 0
    assert "Metric report card" in (tmp_path / "report" / "metric_card.caption.txt").read_text()
    assert "Kendall's W" in (tmp_path / "report" / "metric_card.md").read_text()
    assert r"\begin{tabular}" in (tmp_path / "report" / "metric_card.tex").read_text()
