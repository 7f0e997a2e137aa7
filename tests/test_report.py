"""bench.report: paper figures and tables from small generated run tables (TNNLS Figs. 4–8)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from bench.report import style
from bench.errors import BenchError
from bench.report import load_results, make_report, network_quality_figure
from bench.report.aggregate import bootstrap_band, mean_band, relative_to_random
from bench.report.build import FIG4_FILES, FIG4_PANELS, FIG8_FILES, FIG8_PANELS
from bench.protocols import Figure as Declared
from bench.protocols.aopc import CURVE_COLUMNS as OWN_CURVE_COLUMNS
from bench.report.figures import (box_figures, curve_figures, fraction_figures, heatmap_grid_figures, relative_figures,
                                  scatter_figures)
from bench.report.table import holm, summary_table, to_latex, to_markdown, wilcoxon_p
from bench.engine.stats import bootstrap_ci
from bench.run.tables import PROVENANCE, with_provenance, write_parquet

CURVE_COLUMNS = PROVENANCE + OWN_CURVE_COLUMNS

# Method → per-step drop of the MoRF curve (random order drops 0.2 per step); bigger = better heatmap.
SLOPES = {"random": 0.2, "sensitivity": 0.5, "lrp_eps": 0.8, "my_method": 0.35}


def provenance(method, dataset="toyset", patch=4, seed=0, L=10, params=None, **kw):
    prov = dict(method=method, method_params=json.dumps(params or {}, sort_keys=True),
                pooling="l2" if method.startswith("sensitivity") else "sum", dataset=dataset, preprocessing="",
                model="toy_cnn", model_params="{}", perturbation="uniform", perturbation_params="{}", patch=patch,
                regions="tiles", regions_params='{"score": "sum"}', steps=L, L=L, n_regions=49, repeats=2,
                orders="morf,random", target="predicted", score="logit",
                precision="fp32", seed=seed, device="cpu", bench_version="0.1.0", torch_version="x",
                torchvision_version="x", numpy_version="x", python_version="x", wall_time_s=1.0,
                run_key=f"{method}-{dataset}-{patch}-{seed}", images=12, model_sha="w", data_sha="", equal_regions=True,
                bootstrap=1000, metrics="aopc", protocol_settings='{"aopc": {}}', code_sha="c", device_name="cpu",
                scipy_version="x", skimage_version="x", pandas_version="x", randomise_layers=0, input_noise=0.0)
    prov.update(kw)
    return prov


def make_run(run_dir, method, dataset="toyset", patch=4, seed=0, n_images=12, L=10, orders=("morf", "random"),
             complexity=True, heatmaps="parquet", params=None, hw=(8, 8), images=False):
    """Write a run folder like `python -m bench` does: curves.parquet (+ complexity, heatmaps)."""
    run_dir = Path(run_dir)
    prov = provenance(method, dataset, patch, seed, L, params)
    # replacement draws depend on (dataset, seed, image) only, as in the suite: paired across methods
    base = np.random.default_rng([seed, len(dataset), patch])
    noise = base.normal(0, 0.3, (n_images, L + 1))
    own = np.random.default_rng([seed, sum(map(ord, method)), patch])
    f0 = 10 + base.normal(0, 1, n_images)
    ids = [f"{dataset}-{i:03d}" for i in range(n_images)]
    rows = []
    for o in orders:
        slope = {"random": 0.2, "morf": SLOPES.get(method, 0.3), "lerf": 0.05}[o]
        per_img = slope * (1 + own.normal(0, 0.2, (n_images, 1))) if o == "morf" else slope
        k = np.arange(L + 1)
        f = f0[:, None] - per_img * k[None, :] + np.where(k > 0, noise, 0)
        aopc = np.cumsum(f0[:, None] - f, axis=1) / (k + 1)
        for i in range(n_images):
            rows.append(pd.DataFrame({"image_id": ids[i], "label": i % 10, "target_class": i % 10, "order": o,
                                      "step": k, "fraction_perturbed": k / 49, "score_value": f[i],
                                      "score_std": 0.1, "aopc": aopc[i], "nonfinite": 0}))
    curves = with_provenance(pd.concat(rows, ignore_index=True), prov)
    assert list(curves.columns) == CURVE_COLUMNS
    write_parquet(curves, run_dir / "curves.parquet")
    hm = np.random.default_rng([seed, sum(map(ord, method))]).normal(0, 1, (n_images, *hw))
    if complexity:
        from bench.protocols.complexity import complexity as cx
        table = cx(hm, image_keys=ids).rename(columns={"image": "image_id"})
        write_parquet(with_provenance(table, prov), run_dir / "complexity.parquet")
    if heatmaps == "parquet":
        table = pd.DataFrame({"image_id": ids, "height": hw[0], "width": hw[1],
                              "heatmap": list(hm.reshape(n_images, -1).astype(np.float32))})
        if images:  # grey inputs in a raw range of [0, 2]
            raw = np.random.default_rng(5).uniform(0, 2, (n_images, hw[0] * hw[1])).astype(np.float32)
            table = table.assign(channels=1, image=list(raw), raw_low=0.0, raw_high=2.0)
        write_parquet(with_provenance(table, prov), run_dir / "heatmaps.parquet")
    elif heatmaps == "npz":
        np.savez(run_dir / "heatmaps.npz", **{i: h for i, h in zip(ids, hm)})
    return run_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two datasets × three methods at patch 4, plus patch 2 for Fig. 8; npz heatmaps in one run."""
    root = tmp_path_factory.mktemp("multirun")
    n = 0
    for dataset in ("toyset", "otherset"):
        for method in ("random", "sensitivity", "lrp_eps"):
            make_run(root / f"{n}_method={method},dataset={dataset}", method, dataset,
                     heatmaps="npz" if (method, dataset) == ("lrp_eps", "otherset") else "parquet")
            n += 1
    for method in ("random", "sensitivity", "lrp_eps"):
        make_run(root / f"{n}_method={method},patch=2", method, "toyset", patch=2, complexity=False, heatmaps=None)
        n += 1
    return root


@pytest.fixture(scope="module")
def results(sweep):
    return load_results(sweep)


def labelled_lines(ax):
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


# ------------------------------------------------------------------------------------------------ loading


def test_load_finds_every_run_with_keys_and_side_tables(sweep, results):
    assert len(results.runs) == 9 and results.runs.run.is_unique
    assert "0_method=random,dataset=toyset" in set(results.runs.run)
    assert set(results.curves.run) == set(results.runs.run)
    assert not results.runs.duplicate.any() and results.warnings == []
    # complexity: 6 runs (patch-2 runs have none); heatmaps: parquet and npz both read
    assert results.tables["complexity"].run.nunique() == 6
    h = results.heatmaps
    assert h.run.nunique() == 6 and all(a.shape == (8, 8) for a in h.heatmap)
    npz_run = "5_method=lrp_eps,dataset=otherset"
    assert set(h[h.run == npz_run].method) == {"lrp_eps"} and set(h[h.run == npz_run].dataset) == {"otherset"}


def test_duplicates_keep_last_error(tmp_path):
    for d in ("a", "b"):
        make_run(tmp_path / d, "lrp_eps", complexity=False, heatmaps=None)
    make_run(tmp_path / "c", "sensitivity", complexity=False, heatmaps=None)
    kept = load_results(tmp_path)
    assert len(kept.runs) == 3 and kept.runs.duplicate.sum() == 2 and "duplicate" in kept.warnings[0]
    table = summary_table(kept, n_boot=50)
    assert {"LRP-ε [a]", "LRP-ε [b]", "Sensitivity (ℓ₂)"} == set(table.label)
    last = load_results(tmp_path, duplicates="last")
    assert sorted(last.runs.run) == ["b", "c"] and "dropped a" in last.warnings[0]
    with pytest.raises(BenchError, match="more than once"):
        load_results(tmp_path, duplicates="error")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no curves.parquet"):
        load_results(tmp_path / "empty")


def test_collected_sweeps_unfinished_and_failed_jobs(tmp_path):
    sweep, runs = tmp_path / "sweep", tmp_path / "runs"
    for name, m in (("0_sens", "sensitivity"), ("1_lrp", "lrp_eps")):
        make_run(sweep / name, m, complexity=False)
        (sweep / name / "job.json").write_text("{}")
        (sweep / name / "DONE").write_text("{}")
    merged = {t: pd.concat([pd.read_parquet(sweep / j / f"{t}.parquet") for j in ("0_sens", "1_lrp")])
              for t in ("curves", "heatmaps")}
    for t, df in merged.items():
        write_parquet(df, sweep / "collected" / f"{t}.parquet")
    (sweep / "collected" / "collection.json").write_text(json.dumps({"root": str(sweep)}))
    os.utime(sweep / "1_lrp" / "DONE", (2e9, 2e9))  # finished after the collection
    make_run(runs / "legacy", "random", complexity=False, heatmaps=None)
    for name, marker in (("killed", "job.json"), ("failed", "FAILED")):
        make_run(runs / name, "gradient_x_input", complexity=False, heatmaps=None)
        (runs / name / marker).write_text("{}")
    res = load_results([sweep, runs])
    assert list(res.runs.run) == ["runs/legacy", "sweep/collected/sensitivity,pooling=l2",
                               "sweep/collected/lrp_eps,pooling=sum"]
    assert not res.runs.duplicate.any()  # the job folders of the collected sweep are not read again
    assert any("collect again" in w for w in res.warnings)
    assert any("unfinished or failed" in w and "killed" in w and "failed" in w for w in res.warnings)
    h = res.heatmaps
    assert h.groupby("run").image_id.nunique().to_dict() == {"sweep/collected/lrp_eps,pooling=sum": 12,
                                                              "sweep/collected/sensitivity,pooling=l2": 12}
    t = summary_table(res, n_boot=20)
    assert list(t.method) == ["random", "sensitivity", "lrp_eps"] and (t.n_images == 12).all()


def test_labels_name_what_differs(tmp_path):
    make_run(tmp_path / "e1", "lrp_eps", params={"epsilon": 1.0}, complexity=False, heatmaps=None)
    make_run(tmp_path / "e2", "lrp_eps", params={"epsilon": 0.1}, complexity=False, heatmaps=None)
    make_run(tmp_path / "s1", "my_method", seed=1, complexity=False, heatmaps=None)
    res = load_results(tmp_path)
    assert res.warnings == []  # different parameters are no duplicates
    [(_, fig)] = relative_figures(res, FIG4_PANELS, FIG4_FILES, n_boot=20)
    lines = labelled_lines(fig.axes[0])
    assert [ln.get_label() for ln in lines] == ["LRP-ε (epsilon=0.1)", "LRP-ε (epsilon=1.0)", "my_method"]
    assert [ln.get_linestyle() for ln in lines[:2]] == ["-", "--"] and lines[0].get_color() == lines[1].get_color()
    assert lines[2].get_color() == style.method_style("my_method").color


# ------------------------------------------------------------------------------------------- statistics


def test_relative_curve_is_paired_difference_with_bootstrap_band(results):
    run = "2_method=lrp_eps,dataset=toyset"
    curves = results.run_table(run)
    diff = relative_to_random(curves, "aopc")
    morf = curves[curves.order == "morf"].pivot(index="image_id", columns="step", values="aopc")
    rnd = curves[curves.order == "random"].pivot(index="image_id", columns="step", values="aopc")
    np.testing.assert_allclose(diff.values, (morf - rnd).loc[list(diff.image_ids)].to_numpy())
    band = mean_band(diff, n_boot=200, seed=0)
    np.testing.assert_allclose(band["mean"], diff.values.mean(0))
    lo, hi = bootstrap_ci(diff.values[:, -1], n_boot=200, seed=0)
    assert band.ci_low.iloc[-1] == pytest.approx(lo) and band.ci_high.iloc[-1] == pytest.approx(hi)
    assert (band.ci_low <= band["mean"] + 1e-12).all() and (band["mean"] <= band.ci_high + 1e-12).all()


def test_bootstrap_band_chunks_equal_one_call(monkeypatch):
    import bench.report.aggregate as agg
    v = np.random.default_rng(1).normal(size=(30, 17))
    whole = bootstrap_ci(v, n_boot=100, seed=3)
    monkeypatch.setattr(agg, "MAX_BOOT_VALUES", 100 * 30 * 4)  # chunks of 4 steps
    lo, hi = bootstrap_band(v, n_boot=100, seed=3)
    np.testing.assert_allclose(lo, whole[0], rtol=1e-12)
    np.testing.assert_allclose(hi, whole[1], rtol=1e-12)


def test_wilcoxon_and_holm():
    from scipy.stats import wilcoxon
    d = np.array([0.5, -0.2, 1.1, 0.9, 0.3, 0.0, 1.4, 0.8])
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d[d != 0]).pvalue)
    assert wilcoxon_p(np.zeros(5)) == 1.0 and np.isnan(wilcoxon_p(np.array([1.0])))
    ties = np.array([0.5, 0.5, -0.2, 1.1, 0.0, 1.1, 0.8, 0.5])   # ties: the normal approximation, as documented
    assert wilcoxon_p(ties) == pytest.approx(wilcoxon(ties[ties != 0], method="approx").pvalue)
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, np.nan, 0.03])), [0.03, 0.06, np.nan, 0.06])


def test_summary_table_best_ci_and_paired_test(results):
    t = summary_table(results, n_boot=200)
    assert len(t) == 9 and set(t.column) == {"toyset · patch 4", "otherset · patch 4", "toyset · patch 2"}
    for _, g in t.groupby("column"):
        assert g.is_best.sum() == 1 and g.loc[g.is_best, "method"].item() == "lrp_eps"
        assert g.loc[g.is_best, "mean"].item() == g["mean"].max()
        worse = g[~g.is_best]
        assert (worse.n_paired == 12).all() and (worse.p_value > 0).all() and (worse.p_holm >= worse.p_value).all()
        assert g.loc[g.method == "random", "p_holm"].item() < 0.05  # random is clearly worse
    # the mean at L is the per-image paired difference of the final AOPCs
    run = t[t.method == "sensitivity"].iloc[0]
    c = results.run_table(run.run)
    last = c[c.step == c.step.max()].pivot(index="image_id", columns="order", values="aopc")
    assert run["mean"] == pytest.approx((last.morf - last.random).mean())
    assert (t.ci_low <= t["mean"]).all() and (t["mean"] <= t.ci_high).all()
    md, tex = to_markdown(t), to_latex(t)
    assert md.count("**") == 6 and "Wilcoxon signed-rank" in md and md.splitlines()[0].count("|") == 5
    assert tex.count(r"\textbf{") == 3 and r"\toprule" in tex and r"LRP-$\varepsilon$" in tex
    morf_only = summary_table(results, quantity="aopc_morf", n_boot=50)
    assert (morf_only["mean"] > t.set_index("run").loc[morf_only.run, "mean"].to_numpy()).all()


# -------------------------------------------------------------------------------------------- figures


def test_fig4_relative_to_random_panels_lines_bands(results):
    figs = relative_figures(results, FIG4_PANELS, FIG4_FILES, n_boot=100)
    assert [s for s, _ in figs] == ["__patch-2", "__patch-4"]
    fig = dict(figs)["__patch-4"]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["otherset", "toyset"]
    for ax in axes:
        lines = labelled_lines(ax)
        assert [ln.get_label() for ln in lines] == ["Random heatmap", "Sensitivity (ℓ₂)", "LRP-ε"]
        methods = ("random", "sensitivity", "lrp_eps")
        assert [ln.get_color() for ln in lines] == [style.method_color(m) for m in methods]
        assert [ln.get_marker() for ln in lines] == [style.method_marker(m) for m in methods]
        assert len(bands(ax)) == 3
        assert all(len(ln.get_xdata()) == 11 and ln.get_ydata()[0] == pytest.approx(0) for ln in lines)
        assert lines[2].get_ydata()[-1] > lines[1].get_ydata()[-1] > lines[0].get_ydata()[-1]
        assert ax.get_xlabel() == "pixels perturbed (%)" and "random" in ax.get_ylabel()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["Random heatmap", "Sensitivity (ℓ₂)", "LRP-ε"]
    # the line at L is the summary table's mean
    t = summary_table(results, n_boot=50)
    toy = [ax for ax in axes if ax.get_title() == "toyset"][0]
    assert labelled_lines(toy)[2].get_ydata()[-1] == pytest.approx(
        t[(t.method == "lrp_eps") & (t.column == "toyset · patch 4")]["mean"].item())


def test_fig8_per_patch_relative_to_sensitivity(results):
    figs = dict(relative_figures(results, FIG8_PANELS, FIG8_FILES, baseline="sensitivity", n_boot=50))
    fig = figs["__dataset-toyset"]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["patch 2×2", "patch 4×4"]
    for ax in axes:  # the baseline itself is not drawn
        assert [ln.get_label() for ln in labelled_lines(ax)] == ["Random heatmap", "LRP-ε"]
        assert "Sensitivity" in ax.get_ylabel()
    assert len([ax for ax in figs["__dataset-otherset"].axes if ax.get_visible()]) == 1


def test_curves_figure_morf_and_lerf_rows(tmp_path):
    for m in ("sensitivity", "lrp_eps"):
        make_run(tmp_path / m, m, orders=("morf", "random", "lerf"), complexity=False, heatmaps=None)
    res = load_results(tmp_path)
    [(suffix, fig)] = curve_figures(res, n_boot=50)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert suffix == "" and [ax.get_title() for ax in axes] == ["MoRF · toyset", "LeRF · toyset"]
    for ax in axes:
        assert [ln.get_label() for ln in labelled_lines(ax)] == ["Sensitivity (ℓ₂)", "LRP-ε", "random order (baseline)"]
        assert len(bands(ax)) == 3
    morf, lerf = (labelled_lines(ax)[1].get_ydata() for ax in axes)
    assert morf[-1] < lerf[-1] and morf[0] == pytest.approx(lerf[0])


ROAD_GAPS = {"random": 0.0, "sensitivity": 2.0, "lrp_eps": 3.0}  # per-image LeRF − MoRF slope (over fractions)


def make_road(run_dir, method, n_images=12, fractions=(0.1, 0.3, 0.5)):
    """road.parquet as a run with metrics=[aopc,road] writes it, with curves whose AUCs are known."""
    prov = provenance(method)
    a = np.array([0.0, *fractions])
    rng = np.random.default_rng(sum(map(ord, method)))
    rows = []
    for i in range(n_images):
        f0, tilt = 10 + i % 3, ROAD_GAPS[method] * (1 + 0.3 * rng.normal())
        for order, slope in (("morf", -tilt / 2), ("lerf", tilt / 2), ("random", 0.0)):
            rows.append(pd.DataFrame({"image_id": f"toyset-{i:03d}", "label": i % 10, "target_class": i % 10,
                                      "order": order, "step": np.arange(len(a)), "fraction_removed": a,
                                      "score_value": f0 + slope * a, "score_std": 0.01, "road_noise": 0.01,
                                      "road_repeats": 2}))
    write_parquet(with_provenance(pd.concat(rows, ignore_index=True), prov), Path(run_dir) / "road.parquet")


def test_road_curves_and_road_table(tmp_path):
    from bench.protocols.road import road_quantities

    for m in ("random", "sensitivity", "lrp_eps"):
        make_run(tmp_path / m, m, complexity=False, heatmaps=None)
        make_road(tmp_path / m, m)
    make_run(tmp_path / "no_road", "my_method", complexity=False, heatmaps=None)  # a run without ROAD
    res = load_results(tmp_path)
    assert set(res.tables["road"].run) == {"random", "sensitivity", "lrp_eps"} and len(res.tables["road"]) == 3 * 12 * 3 * 4
    [(suffix, fig)] = fraction_figures(res, "road_curves", n_boot=50)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["ROAD MoRF · toyset", "ROAD LeRF · toyset"]
    for ax, sign in zip(axes, (-1, 1)):
        lines = labelled_lines(ax)
        assert [ln.get_label() for ln in lines] == ["Random heatmap", "random order (baseline)", "Sensitivity (ℓ₂)", "LRP-ε"]
        assert list(lines[2].get_xdata()) == pytest.approx([0, 10, 30, 50])  # % of pixels removed
        assert np.sign(lines[3].get_ydata()[-1] - lines[3].get_ydata()[0]) == sign
        assert len(bands(ax)) == 4
    assert "200" not in fig._suptitle.get_text() and "12 images" in fig._suptitle.get_text()

    table = summary_table(res, "road_gap", n_boot=200)
    assert list(table.method) == ["random", "sensitivity", "lrp_eps"]  # the run without ROAD is not a row
    for _, r in table.iterrows():
        gap = road_quantities(res.run_table(r.run, "road"))["road_gap"].to_numpy()
        # trapezoid of a line over [0, 0.5]: (LeRF − MoRF) slope × 0.5² / 2
        assert r["mean"] == pytest.approx(gap.mean()) and r.n_images == 12
        assert (r.ci_low, r.ci_high) == pytest.approx(bootstrap_ci(gap, n_boot=200, seed=0))
    assert table.set_index("method").loc["lrp_eps", "is_best"]
    assert table.set_index("method").loc["lrp_eps", "mean"] == pytest.approx(3.0 * 0.125, rel=0.3)
    worse = summary_table(res, "road_auc_morf_minus_random", n_boot=50).set_index("method")
    assert worse.loc["lrp_eps", "is_best"] and worse.loc["lrp_eps", "rank"] == 1  # lower is better here
    written = make_report(tmp_path, tmp_path / "report", n_boot=50, formats=("png",))
    assert {"road_curves", "road_table"} <= set(written)
    assert "ROAD gap AUC(LeRF) − AUC(MoRF) per image" in (tmp_path / "report" / "road_table.md").read_text()
    assert r"\label{tab:road}" in (tmp_path / "report" / "road_table.tex").read_text()


def make_protocols(run_dir, method, n_images=12):
    """deletion / insertion / faithfulness_correlation tables as a run writes them, with known curves."""
    prov = provenance(method)
    a = np.linspace(0, 1, 5)
    good = SLOPES.get(method, 0.3)
    rows = {"deletion": [], "insertion": [], "pixel_flipping": []}
    for i in range(n_images):
        for order, speed in (("morf", 1 + 4 * good), ("random", 1.0)):
            common = dict(image_id=f"toyset-{i:03d}", label=i % 10, target_class=i % 10, order=order,
                          step=np.arange(5), fraction_changed=a)
            rows["deletion"].append(pd.DataFrame({**common, "score_value": np.exp(-speed * 3 * a),
                                                  "deletion_substrate": "zero", "deletion_score": "softmax"}))
            rows["insertion"].append(pd.DataFrame({**common, "score_value": 1 - np.exp(-speed * 3 * a) * 0.9,
                                                   "insertion_substrate": "blur", "insertion_score": "softmax"}))
            flip = {k: v for k, v in common.items() if k != "fraction_changed"}
            rows["pixel_flipping"].append(pd.DataFrame({**flip, "fraction_perturbed": a, "region": [-1, 3, 0, 2, 1],
                                                        "score_value": 5 - speed * 4 * a,
                                                        "pixel_flipping_substrate": "zero"}))
    for name, parts in rows.items():
        write_parquet(with_provenance(pd.concat(parts, ignore_index=True), prov), Path(run_dir) / f"{name}.parquet")
    fc = pd.DataFrame({"image_id": [f"toyset-{i:03d}" for i in range(n_images)],
                       "faithfulness_correlation": np.clip(good + 0.01 * np.arange(n_images), -1, 1),
                       "fc_subsets": 100, "fc_subset_size": 4, "fc_substrate": "zero", "fc_score": "logit"})
    write_parquet(with_provenance(fc, prov), Path(run_dir) / "faithfulness_correlation.parquet")
    irof = []  # image i has 2 + i % 3 superpixels; relative score 1 − good·k/R along MoRF, 1 along random
    for i in range(n_images):
        r = 2 + i % 3
        for order, drop in (("morf", good), ("random", 0.0)):
            k = np.arange(r + 1)
            p = 1 - drop * k / r
            irof.append(pd.DataFrame(dict(image_id=f"toyset-{i:03d}", label=i % 10, target_class=i % 10, irof_regions=r,
                                          order=order, step=k, fraction_perturbed=k / r, score_value=0.8 * p,
                                          relative_score=p)))
    write_parquet(with_provenance(pd.concat(irof, ignore_index=True), prov), Path(run_dir) / "irof.parquet")


def test_deletion_insertion_curves_and_the_family_table(tmp_path):
    from bench.report.table import family_markdown, family_table
    from bench.protocols.base import curve_auc

    for m in ("random", "sensitivity", "lrp_eps"):
        make_run(tmp_path / m, m, complexity=False, heatmaps=None)
        make_protocols(tmp_path / m, m)
    res = load_results(tmp_path)
    assert set(res.tables) == {"deletion", "insertion", "faithfulness_correlation", "irof", "pixel_flipping"}
    [(_, fig)] = fraction_figures(res, "pixel_flipping_curves", n_boot=50)
    [ax] = [ax for ax in fig.axes if ax.get_visible()]
    assert ax.get_title() == "Pixel-flipping · toyset" and ax.get_xlabel() == "pixels flipped (%)"
    lines = labelled_lines(ax)
    assert [ln.get_label() for ln in lines] == ["Random heatmap", "random order (baseline)", "Sensitivity (ℓ₂)", "LRP-ε"]
    assert list(lines[2].get_ydata()) == pytest.approx(5 - (1 + 4 * SLOPES["sensitivity"]) * 4 * np.linspace(0, 1, 5))
    [(_, fig)] = fraction_figures(res, "deletion_insertion_curves", n_boot=50)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["Deletion · toyset", "Insertion · toyset"]
    assert [ax.get_ylabel() for ax in axes] == ["$f_c$ (softmax)"] * 2
    lines = labelled_lines(axes[0])
    assert [ln.get_label() for ln in lines] == ["Random heatmap", "random order (baseline)", "Sensitivity (ℓ₂)", "LRP-ε"]
    assert list(lines[2].get_xdata()) == pytest.approx([0, 25, 50, 75, 100])
    family = family_table(res, n_boot=100)
    assert list(dict.fromkeys(family.quantity)) == ["aopc_morf_minus_random", "irof_morf", "pixel_flipping_auc",
                                                   "faithfulness_correlation", "deletion_auc_morf", "insertion_auc_morf"]
    assert by_best(family, "pixel_flipping_auc") == "lrp_eps"  # lowest: the steepest fall
    by = family.set_index(["quantity", "method"])
    # IROF of an image: mean over k = 0 … R of good·k/R = good/2, whatever R
    assert by.loc[("irof_morf", "lrp_eps"), "mean"] == pytest.approx(SLOPES["lrp_eps"] / 2)
    assert by.loc[("irof_morf", "lrp_eps"), "is_best"]
    auc = curve_auc(res.run_table("lrp_eps", "deletion"), "fraction_changed")["morf"]
    assert by.loc[("deletion_auc_morf", "lrp_eps"), "mean"] == pytest.approx(auc.mean())
    assert by.loc[("deletion_auc_morf", "lrp_eps"), "is_best"]  # lowest deletion AUC
    assert by.loc[("insertion_auc_morf", "lrp_eps"), "is_best"] and by.loc[("faithfulness_correlation", "lrp_eps"),
                                                                            "is_best"]
    text = family_markdown(family)
    assert text.splitlines()[0] == (
        "| method | AOPC − random (MoRF) [logit] | IROF (MoRF), raw [fraction of f_c(x)] | pixel-flipping AUC, raw "
        "[logit × fraction of pixels] | faithfulness correlation [Pearson r] | deletion AUC (MoRF), raw [probability "
        "× fraction of pixels] | insertion AUC (MoRF), raw [probability × fraction of pixels] |")
    assert "pixel-flipping AUC, raw = pixel_flipping_auc: lower is better" in text and "over 12 images" in text
    written = make_report(tmp_path, tmp_path / "report", n_boot=50, formats=("png",))
    assert {"deletion_insertion_curves", "pixel_flipping_curves", "faithfulness_table"} <= set(written)


def test_no_road_figure_or_table_without_road_tables(results, tmp_path):
    assert "road" not in results.tables and fraction_figures(results, "road_curves") == []


def test_complexity_scatter_and_entropy_boxes(results):
    [(_, fig)] = scatter_figures(results)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4  # 2 datasets × (random, lrp_eps) against the reference, sensitivity
    for ax in axes:
        assert "Sensitivity" in ax.get_xlabel() and ax.get_ylabel() in ("Random heatmap: PNG size (bytes)",
                                                                        "LRP-ε: PNG size (bytes)")
        assert ax.xaxis.label.get_fontsize() == ax.yaxis.label.get_fontsize() == 8  # the suite's 8 pt, as elsewhere
        assert all(t.get_fontsize() == style.RC_PARAMS["xtick.labelsize"] for t in ax.get_xticklabels())
        [pts] = [c for c in ax.collections if not isinstance(c, PolyCollection)]
        assert len(pts.get_offsets()) == 12
        diag = [ln for ln in ax.get_lines() if ln.get_label() == "_diagonal"][0]
        assert list(diag.get_xdata()) == list(diag.get_ydata())
    jpeg = Declared("complexity_scatter", "scatter", table="complexity", value="jpeg_bytes", label="JPEG size (bytes)")
    [(_, fig)] = scatter_figures(results, jpeg, reference="lrp_eps")
    assert all("LRP-ε" in ax.get_xlabel() and "JPEG" in ax.get_xlabel() for ax in fig.axes if ax.get_visible())
    [(_, fig)] = box_figures(results)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["otherset", "toyset"]
    for ax in axes:
        boxes = [p for p in ax.patches if p.get_label() in ("Random heatmap", "Sensitivity (ℓ₂)", "LRP-ε")]
        assert [b.get_label() for b in boxes] == ["Random heatmap", "Sensitivity (ℓ₂)", "LRP-ε"]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["Random\nheatmap", "Sensitivity\n(ℓ₂)", "LRP-ε"]  # wrapped


def test_heatmap_grid_uses_the_suite_rendering(results):
    from bench.engine.render import render_heatmap
    figs = heatmap_grid_figures(results, n_images=5)
    assert [s for s, _ in figs] == ["__dataset-otherset", "__dataset-toyset"]
    fig = dict(figs)["__dataset-toyset"]
    grid = [ax for ax in fig.axes if ax.images]
    assert len(grid) == 3 * 5  # methods × images
    assert [ax.get_ylabel() for ax in grid[::5]] == ["Random heatmap", "Sensitivity\n(ℓ₂)", "LRP-ε"]  # wrapped
    assert [ax.get_title() for ax in grid[:2]] == ["toyset-000\nclass 0 · pred. 0", "toyset-001\nclass 1 · pred. 1"]
    assert fig.get_figwidth() == style.TEXT_WIDTH_IN  # 5 images: the page width (up to 4: one column)
    bar = [ax for ax in fig.axes if not ax.images][0]
    assert bar.get_position().width * fig.get_figwidth() <= 1.5 + 1e-9
    h = results.heatmaps
    first = h[(h.method == "random") & (h.dataset == "toyset") & (h.image_id == "toyset-000")].heatmap.item()
    np.testing.assert_array_equal(grid[0].images[0].get_array(), render_heatmap(first))


def test_heatmap_grid_has_a_row_of_the_input_images(tmp_path):
    for m in ("sensitivity", "lrp_eps"):
        make_run(tmp_path / m, m, complexity=False, images=True)
    res = load_results(tmp_path)
    [(_, fig)] = heatmap_grid_figures(res, n_images=3)
    grid = [ax for ax in fig.axes if ax.images]
    assert [ax.get_ylabel() for ax in grid[::3]] == ["input", "Sensitivity\n(ℓ₂)", "LRP-ε"]
    shown = grid[0].images[0].get_array()
    stored = pd.read_parquet(tmp_path / "sensitivity" / "heatmaps.parquet").image.iloc[0]
    np.testing.assert_allclose(shown, np.asarray(stored).reshape(8, 8) / 2.0)  # raw range [0, 2] → [0, 1]


def test_figures_name_datasets_and_say_what_the_bands_are(results):
    assert style.dataset_name("mnist_embedded") == "MNIST (embedded sample)" and style.dataset_name("x1") == "x1"
    for _, fig in relative_figures(results, FIG4_PANELS, FIG4_FILES, n_boot=20):
        assert "toy_cnn" in fig._suptitle.get_text() and "12 images" in fig._suptitle.get_text()
        assert "mean over 12 images; shaded: 95% percentile bootstrap interval" in style.caption_of(fig)
    fig = box_figures(results)[0][1]
    assert all(t.get_rotation() == 0 for ax in fig.axes for t in ax.get_xticklabels())


def test_network_quality_figure_two_axes_and_correlations():
    it = np.array([100, 200, 400, 800, 1600, 3200])
    acc = np.array([0.3, 0.5, 0.62, 0.7, 0.74, 0.76])
    df = pd.DataFrame({"iteration": np.tile(it, 2), "test_accuracy": np.tile(acc, 2),
                       "mean": np.r_[acc * 10 + [0, .1, -.1, .05, 0, .02], -acc], "label": "AOPC",
                       "method": ["lrp_eps"] * 6 + ["sensitivity"] * 6})
    df["ci_low"], df["ci_high"] = df["mean"] - 0.2, df["mean"] + 0.2
    fig, corr = network_quality_figure(df[df.method == "lrp_eps"].drop(columns="method"))
    ax, ax2 = fig.axes
    assert ax.get_ylabel() == "test accuracy" and ax2.get_ylabel() == "AOPC" and "training" in ax.get_xlabel()
    assert list(labelled_lines(ax)[0].get_ydata()) == list(acc) and len(bands(ax2)) == 1
    r = corr.iloc[0]
    from scipy.stats import pearsonr, spearmanr
    assert r.pearson_r == pytest.approx(pearsonr(acc, df["mean"][:6]).statistic) and r.spearman_rho == 1.0
    assert f"Pearson r = {r.pearson_r:.2f}" in ax.get_title() and "Spearman ρ = 1.00" in ax.get_title()
    fig, corr = network_quality_figure(df)
    assert list(corr.method) == ["sensitivity", "lrp_eps"] and corr.pearson_r.iloc[0] < 0 < corr.pearson_r.iloc[1]
    labels = [ln.get_label() for ln in labelled_lines(fig.axes[1])]
    assert labels[1].startswith("AOPC: LRP-ε (r = ") and "ρ = 1.00" in labels[1]
    _, c = network_quality_figure(df.iloc[:2].drop(columns="method"))
    assert np.isnan(c.pearson_r.iloc[0])  # two checkpoints: no correlation


# ------------------------------------------------------------------------------------- files and the CLI


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())}


NETWORK = pd.DataFrame({"iteration": [1, 2, 3, 4], "test_accuracy": [.2, .5, .6, .7], "aopc_mean": [1, 2, 2.5, 3],
                        "aopc_ci_low": [.5, 1.5, 2, 2.5], "aopc_ci_high": [1.5, 2.5, 3, 3.5], "method": "lrp_eps"})


def test_report_writes_every_figure_and_table(sweep, tmp_path):
    out = tmp_path / "report"
    res = load_results(sweep)
    res.network = NETWORK
    written = make_report(sweep, out, n_boot=100, show_progress=False, results=res, formats=("png",))
    names = {"aopc_vs_random__patch-2", "aopc_vs_random__patch-4", "curves__patch-2", "curves__patch-4",
             "aopc_vs_random_by_patch__dataset-toyset", "aopc_vs_random_by_patch__dataset-otherset",
             "complexity_scatter", "complexity_entropy", "heatmap_grid__dataset-toyset",
             "heatmap_grid__dataset-otherset", "network_quality"}
    assert names <= set(written)
    for name in names:  # PNG only here (time); PDF and PNG of each kind: the test below
        png, *caption = written[name]
        assert png == out / f"{name}.png" and png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
        assert caption == [out / f"{name}.caption.txt"]
    for ext in ("csv", "md", "tex"):
        assert (out / f"summary_table.{ext}").stat().st_size > 100
    table = pd.read_csv(out / "summary_table.csv")
    assert len(table) == 9 and table.is_best.sum() == 3
    assert pd.read_csv(out / "network_quality_correlations.csv").pearson_r.iloc[0] > 0.9
    assert len(pd.read_csv(out / "runs.csv")) == 9 and not (out / "warnings.txt").exists()


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())}


def test_report_is_byte_identical_across_processes(tmp_path):
    runs = tmp_path / "runs"
    for m in ("sensitivity", "lrp_eps"):
        make_run(runs / m, m, n_images=6, L=5)
    NETWORK.to_csv(runs / "network_quality.csv", index=False)
    written = make_report(runs, tmp_path / "one", n_boot=50, show_progress=False)
    assert {"aopc_vs_random", "curves", "complexity_scatter", "complexity_entropy", "heatmap_grid",
            "network_quality", "summary_table"} <= set(written)
    env = {**os.environ, "PYTHONHASHSEED": "123", "BENCH_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "bench.report", str(runs), "--out", str(tmp_path / "two"),
                           "--n-boot", "50"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "summary_table:" in proc.stdout and proc.stderr == ""  # no progress bar off a terminal
    one = _digests(tmp_path / "one")
    assert one == _digests(tmp_path / "two")  # byte-identical: another process, another hash seed
    assert b"CreationDate" not in (tmp_path / "one" / "curves.pdf").read_bytes()
    assert b"Software" not in (tmp_path / "one" / "curves.png").read_bytes()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from bench.report.__main__ import main
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no curves.parquet") and err.count("\n") == 1
    assert main([str(tmp_path / "missing")]) == 2 and "no such folder" in capsys.readouterr().err
    make_run(tmp_path / "run", "lrp_eps", n_images=3, L=2, complexity=False, heatmaps=None)
    assert main([str(tmp_path), "--baseline", "nosuch"]) == 2
    assert "baseline 'nosuch' is not a method of these runs; they have: lrp_eps" in capsys.readouterr().err


def test_method_styles_fixed_distinct_and_deterministic():
    known = list(style.METHOD_STYLES)
    wrappers = {"translation", "precomputed", "captum", "zennit"}  # their names are the user's
    shipped = {p.stem for p in (Path(__file__).parents[1] / "conf" / "method").glob("*.yaml")} - wrappers
    assert set(known) == shipped  # every shipped method has its fixed style, and no other name
    assert len({style.method_color(m) for m in known}) == len(known)
    assert len({(style.method_color(m), style.method_marker(m)) for m in known}) == len(known)
    assert not set(style.FALLBACK_COLORS) & {s.color for s in style.METHOD_STYLES.values()}
    a = style.method_style("my_method")
    assert a == style.method_style("my_method") and a.color in style.FALLBACK_COLORS and a.display == "my_method"
    d = int.from_bytes(hashlib.md5(b"my_method").digest()[:8], "big")  # not hash(): same in every process
    assert a.color == style.FALLBACK_COLORS[d % len(style.FALLBACK_COLORS)]
    assert style.sort_methods(["zeta", "lrp_eps", "random", "alpha"]) == ["random", "lrp_eps", "alpha", "zeta"]


def test_figures_are_pyplot_free(results):
    figs = relative_figures(results, FIG4_PANELS, FIG4_FILES, n_boot=20)
    assert all(isinstance(f, Figure) and f.canvas.manager is None for _, f in figs)


def by_best(table, quantity):
    rows = table[(table.quantity == quantity) & table.is_best]
    return rows.method.iloc[0]


def test_tables_of_runs_before_superpixels_load_as_tiles(tmp_path):
    """Tables written before the ``regions`` / ``regions_params`` provenance columns existed still load, as the
    tiles they were."""
    make_run(tmp_path / "old", "lrp_eps", complexity=False, heatmaps=None)
    path = tmp_path / "old" / "curves.parquet"
    pd.read_parquet(path).drop(columns=["regions", "regions_params"]).to_parquet(path)
    res = load_results(tmp_path)
    assert list(res.runs.regions) == ["tiles"] and list(res.runs.regions_params) == ['{"score": "sum"}']
