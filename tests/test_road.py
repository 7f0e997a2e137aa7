"""The ROAD protocol (``metrics=[aopc,road]``, DEFINITIONS §9): rows against an independent computation on a
linear model (Quantus's imputation, scores by hand), AUC and gap by hand, batch-size and shard invariance,
one-line errors for bad settings."""

import numpy as np
import pandas as pd
import pytest
import torch

from bench.run.collect import collect
from bench.errors import BenchError
from bench.run.evaluate import Evaluator
from bench.engine.regions import seeded_orders
from bench.run.job import run
from bench.run.spec import build_spec
from bench.protocols.road import road_auc, road_quantities

from conftest import FAST_MODEL, composed

JOB = [*FAST_MODEL, "metrics=[aopc,road]", "n_images=6", "steps=3", "repeats=2", "bootstrap=50", "block_size=2"]


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def test_rows_equal_an_independent_computation_on_a_linear_model():
    from quantus.functions.perturb_func import noisy_linear_imputation

    spec = build_spec(composed([*JOB, "method=sensitivity", "road.noise=0", "road.fractions=[0.1,0.5,0.9]"]))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    evaluator = Evaluator.from_spec(spec, model)
    items = [spec.dataset.obj.get(i) for i in range(3)]
    ids, raw, labels = [i for i, _, _ in items], torch.stack([r for _, r, _ in items]).float(), \
        torch.tensor([lab for _, _, lab in items])
    tables, skipped = evaluator.evaluate(ids, raw, labels)
    road = tables["road"]
    assert not skipped and len(road) == 3 * 3 * 4 and (road.road_repeats == 1).all()

    x = evaluator.normalization.normalize(raw).numpy()
    w, bias = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    worst = 0.0
    for i, image_id in enumerate(ids):
        c = int(road[road.image_id == image_id].target_class.iloc[0])
        assert c == int(np.argmax(w @ x[i].ravel() + bias))
        relevance = np.abs(w[c])  # sensitivity of a linear model: |∂f_c/∂x| = |w_c|, one channel
        morf = np.argsort(-relevance, kind="stable")
        for order, ranking in (("morf", morf), ("lerf", morf[::-1])):
            for step, frac in enumerate((0.1, 0.5, 0.9), start=1):
                k = int(round(frac * 784))
                imputed = noisy_linear_imputation(x[i].copy(), ranking[:k], noise=0.0)
                want = float(w[c] @ imputed.ravel() + bias[c])
                row = road[(road.image_id == image_id) & (road.order == order) & (road.step == step)].iloc[0]
                assert row.fraction_removed == pytest.approx(k / 784)
                worst = max(worst, abs(row.score_value - want))
                assert row.score_value == pytest.approx(want, rel=1e-4, abs=1e-4), (image_id, order, frac)
        first = road[(road.image_id == image_id) & (road.step == 0)].score_value
        assert np.allclose(first, w[c] @ x[i].ravel() + bias[c], rtol=1e-5)
    assert worst > 0


def test_auc_and_gap_by_hand():
    rows = []
    for image, curves in (("a", {"morf": [2, 1, 0], "lerf": [2, 2, 2], "random": [2, 1.5, 1]}),
                          ("b", {"morf": [1, 0, 0], "lerf": [1, 1, 0], "random": [1, 1, 1]})):
        for order, values in curves.items():
            rows += [dict(image_id=image, order=order, step=s, fraction_removed=a, score_value=v)
                     for s, (a, v) in enumerate(zip((0.0, 0.5, 1.0), values))]
    table = pd.DataFrame(rows).sample(frac=1, random_state=0)  # any row order
    auc = road_auc(table.sort_values("image_id", kind="stable"))
    # a: ½(2+1)·½ + ½(1+0)·½ = 1; b: ½(1+0)·½ = 0.25
    assert auc.loc["a", "morf"] == pytest.approx(1.0) and auc.loc["b", "morf"] == pytest.approx(0.25)
    q = road_quantities(table.sort_values("image_id", kind="stable"))
    assert q.loc["a", "road_gap"] == pytest.approx(2.0 - 1.0) and q.loc["b", "road_gap"] == pytest.approx(0.75 - 0.25)
    assert q.loc["a", "road_auc_morf_minus_random"] == pytest.approx(1.0 - 1.5)


def test_same_tables_for_any_batch_size_and_for_two_shards(tmp_path):
    road = {}
    for bs in (3, 64):
        run(composed([*JOB, "method=sensitivity", f"batch_size={bs}"]), tmp_path / f"bs{bs}")
        road[bs] = pd.read_parquet(tmp_path / f"bs{bs}" / "road.parquet")
    a, b = road[3], road[64]
    assert list(a.columns) == list(b.columns) and (a.order.unique().tolist() == ["morf", "lerf", "random"])
    # the model's convolutions may round differently at another batch shape; ROAD's own work does not
    np.testing.assert_allclose(a.score_value, b.score_value, rtol=1e-5, atol=1e-5)
    assert (a[a.step > 0].score_std > 0).all()  # noise 0.01, two repeats drawn apart

    for shard in (0, 1):
        run(composed([*JOB, "method=sensitivity", "batch_size=64", f"shard={shard}", "num_shards=2"]),
            tmp_path / "shards" / f"s{shard}")
    merged = collect(tmp_path / "shards", write=False).tables["road"]
    keep = [c for c in b.columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(merged[keep].reset_index(drop=True), b[keep].reset_index(drop=True),
                                  check_exact=True)
    summary = pd.read_csv(tmp_path / "bs64" / "summary.csv").set_index("quantity")
    assert {"road_auc_morf", "road_auc_lerf", "road_auc_random", "road_gap"} <= set(summary.index)
    assert summary.loc["road_gap", "n_images"] == 6


@pytest.mark.parametrize("override, message", [
    ("road.fractions=[0.5,0.2]", "road.fractions must be strictly increasing"),
    ("road.fractions=[0,0.5]", "road.fractions[0] must be a number > 0, got 0"),
    ("road.fractions=[0.5,1.5]", "road.fractions[1] must be a number"),
    ("road.fractions=[]", "road.fractions must be a non-empty list"),
    ("road.noise=-0.1", "road.noise must be a number ≥ 0"),
])
def test_bad_settings_are_one_line(override, message):
    with pytest.raises(BenchError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_spec(composed([*JOB, override]))


def test_agrees_with_quantus_road_where_the_definitions_coincide():
    """Quantus 0.6 ``ROAD`` records whether the predicted class survives (argmax == y) at int(p·HW/100)
    pixels, ranked by argsort(−a), imputed without noise. With two classes whose logits are (z, −z), the class
    survives iff our score (the logit of the explained class) is > 0; fractions chosen so that our rounding and
    Quantus's truncation give the same pixel counts; a continuous heatmap, so no ties to break."""
    import warnings

    import quantus

    torch.manual_seed(0)

    class TwoClass(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(28 * 28, 1)

        def forward(self, x):
            z = self.lin(x.flatten(1))
            return torch.cat([z, -z], 1)

    model = TwoClass().eval()
    spec = build_spec(composed([*JOB, "road.noise=0", "road.fractions=[0.25,0.5,0.75]"]))
    evaluator = Evaluator.from_spec(spec, model)
    x = torch.randn(6, 1, 28, 28)
    heat = torch.rand(6, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(x).argmax(1)
        f0 = model(x).gather(1, target.view(-1, 1))[:, 0]
    ids = [f"img{i}" for i in range(6)]
    ours = evaluator.run_protocol(spec.protocol("road"), x, heat, target, ids)["road"]
    ours = ours[(ours.order == "morf") & (ours.step > 0)].sort_values(["image_id", "step"])
    metric = quantus.ROAD(noise=0.0, percentages=[25, 50, 75], abs=False, normalise=False, disable_warnings=True,
                          display_progressbar=False)
    agree, decisions = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(6):
            theirs = metric(model=model, x_batch=x[i:i + 1].numpy(), y_batch=target[i:i + 1].numpy(),
                            a_batch=heat[i:i + 1, None].numpy(), device="cpu")
            mine = ours[ours.image_id == ids[i]].score_value.to_numpy() > 0
            agree.append(np.array([theirs[p] for p in (25, 50, 75)], dtype=bool) == mine)
            decisions += list(mine)
    assert np.all(agree), agree
    assert 0 < sum(decisions) < len(decisions), decisions  # both outcomes occur: the comparison can fail
    assert set(ours.fraction_removed.round(6)) == {0.25, 0.5, 0.75}
