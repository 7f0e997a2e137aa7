"""bench.report tables a reviewer can trust (issue 26, points 3, 4, 6): units in every table, column heads that
name exactly the quantity, "best" only among ≥ 2 methods with ties marked alike and the random heatmap never
best, LaTeX for people, separate columns for runs that differ in any setting, the area-matched AOPC for unequal
regions, older tables backfilled, and every declared quantity offered by ``--quantity``. Tiny tables built here."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import protocols
from bench.protocols.aopc import CURVE_COLUMNS
from bench.report import load_results
from bench.report.__main__ import parser
from bench.report.table import (family_latex, family_markdown, family_table, head, number, summary_table,
                                to_latex, to_markdown, write_tables)
from bench.run.tables import PROVENANCE, params_json, with_provenance, write_parquet

L = 4
N_BOOT = 50
N = 10  # images per run: enough for a significant paired test after Holm


def provenance(method, **kw):
    prov = dict(run_key="", method=method, method_params="{}", pooling="sum", dataset="mnist_embedded",
                preprocessing="", data_sha="", images=N, model="embedded_cnn", model_params="{}", model_sha="abc",
                perturbation="uniform", perturbation_params="{}", regions="tiles", regions_params='{"score": "sum"}',
                patch=7, equal_regions=True, steps=L, L=L, n_regions=16, repeats=2, orders="morf,random",
                target="predicted", score="logit", precision="fp32", seed=0, bootstrap=N_BOOT, metrics="aopc",
                protocol_settings=params_json({"aopc": {}}), code_sha="c0de", device="cpu", device_name="CPU",
                bench_version="0", torch_version="x", torchvision_version="x", numpy_version="x",
                scipy_version="x", skimage_version="x", pandas_version="x", python_version="x", wall_time_s=1.0,
                randomise_layers=0, input_noise=0.0)
    prov.update(kw)
    assert set(prov) == set(PROVENANCE) - {"protocol", "protocol_params"}  # (per table: with_provenance)
    return prov


def write_run(folder, method, slopes, n_images=None, random_slope=0.1, morf_area=None, **kw):
    """curves.parquet of one run: f_k = 10 − slope·k (MoRF, one slope per image) and 10 − random_slope·k (random
    order), so AOPC(L) − random = (slope − random_slope)·L/2 per image. ``morf_area``: fraction of pixels per MoRF
    step (default: the random order's 1/n_regions, equal tiles)."""
    slopes = np.broadcast_to(np.asarray(slopes, np.float64), (n_images or kw.get("images", N),))
    prov = provenance(method, **kw)
    n = prov["n_regions"]
    k = np.arange(L + 1)
    rows = []
    for i, s in enumerate(slopes):
        for order, slope, per_step in (("morf", s, morf_area or 1 / n), ("random", random_slope, 1 / n)):
            f = 10 - slope * k
            rows.append(pd.DataFrame({"image_id": f"img-{i:02d}", "label": 1, "target_class": 1, "order": order,
                                      "step": k, "fraction_perturbed": np.minimum(k * per_step, 1.0),
                                      "score_value": f, "score_std": 0.0, "aopc": np.cumsum(10 - f) / (k + 1),
                                      "nonfinite": 0}))
    curves = with_provenance(pd.concat(rows, ignore_index=True)[CURVE_COLUMNS], prov, protocol="aopc")
    write_parquet(curves, Path(folder) / "curves.parquet")
    return prov


def aopc_diff(slope, random_slope=0.1):
    return (slope - random_slope) * L / 2


SLOPES = {"random": 0.12, "sensitivity": 0.5, "lrp_eps": 0.9, "gradient_x_input": 0.6}


def noisy(method, n=N, scale=0.05):
    rng = np.random.default_rng(sum(map(ord, method)))
    return SLOPES[method] + rng.normal(0, scale, n)


# ------------------------------------------------------------------------------------------------ units


def test_units_in_caption_csv_and_heads(tmp_path):
    for m in ("random", "sensitivity", "lrp_eps"):
        write_run(tmp_path / m, m, noisy(m))
        write_run(tmp_path / f"{m}_soft", m, noisy(m), score="softmax")
    res = load_results(tmp_path)
    t = summary_table(res, n_boot=N_BOOT)
    assert set(t.unit) == {"logit", "probability"}
    assert (t[t.score == "softmax"].unit == "probability").all()
    md = to_markdown(t)
    header = md.splitlines()[0]
    assert "[logit]" in header and "[probability]" in header and "score logit" in header
    assert "Units: in each column head" in md
    one = summary_table(load_results([tmp_path / m for m in ("random", "sensitivity", "lrp_eps")]), n_boot=N_BOOT)
    assert "Unit: logit." in to_markdown(one) and "[logit]" not in to_markdown(one).splitlines()[0]


def test_heads_name_exactly_the_quantity():
    assert head("irof_morf") == "IROF (MoRF), raw"
    assert head("pixel_flipping_auc") == "pixel-flipping AUC, raw"
    assert head("deletion_auc_morf") == "deletion AUC (MoRF), raw"
    assert head("sensitivity_n") == "Sensitivity-n (mean r over n), raw"
    assert "raw" not in head("aopc_morf_minus_random") and "raw" not in head("road_gap")
    assert head("faithfulness_correlation") == "faithfulness correlation"


def write_family(folder, method, good):
    """faithfulness_correlation and irof tables of one run (values rising with ``good``)."""
    prov = provenance(method, metrics="aopc,irof,faithfulness_correlation")
    ids = [f"img-{i:02d}" for i in range(N)]
    fc = pd.DataFrame({"image_id": ids, "faithfulness_correlation": good + 0.01 * np.arange(N)})
    write_parquet(with_provenance(fc, prov, protocol="faithfulness_correlation"),
                  Path(folder) / "faithfulness_correlation.parquet")
    rows = []
    for i in ids:
        for order, drop in (("morf", good), ("random", 0.0)):
            k = np.arange(4)
            p = 1 - drop * k / 3
            rows.append(pd.DataFrame(dict(image_id=i, label=1, target_class=1, irof_regions=3, order=order, step=k,
                                          fraction_perturbed=k / 3, score_value=0.8 * p, relative_score=p)))
    write_parquet(with_provenance(pd.concat(rows, ignore_index=True), prov, protocol="irof"),
                  Path(folder) / "irof.parquet")


def test_faithfulness_table_heads_units_and_latex(tmp_path):
    for m, good in (("random", 0.0), ("sensitivity", 0.3), ("lrp_eps", 0.6)):
        write_run(tmp_path / m, m, noisy(m), metrics="aopc,irof,faithfulness_correlation")
        write_family(tmp_path / m, m, good)
    res = load_results(tmp_path)
    fam = family_table(res, n_boot=N_BOOT)
    md = family_markdown(fam)
    header = md.splitlines()[0]
    assert "IROF (MoRF), raw [fraction of f_c(x)]" in header
    assert "faithfulness correlation [Pearson r]" in header and "[logit]" in header
    assert "IROF (MoRF), raw = irof_morf: higher is better" in md and "Raw: the method's own value" in md
    tex = family_latex(fam)
    assert r"\label{tab:faithfulness}" in tex and tex.isascii() and "\\\\[" not in tex
    assert r"IROF (MoRF), raw\\{}[fraction of $f_c$(x)]" in tex
    written = write_tables(res, tmp_path / "out", n_boot=N_BOOT)
    assert written["faithfulness_table"] == [tmp_path / "out" / f"faithfulness_table.{e}" for e in ("csv", "md", "tex")]
    csv = pd.read_csv(tmp_path / "out" / "faithfulness_table.csv")
    assert {"unit", "head", "quantity", "condition"} <= set(csv.columns)


# ------------------------------------------------------------------------------------------------- best


def test_best_needs_two_methods_besides_random(tmp_path):
    write_run(tmp_path / "random", "random", 2.0)  # the random heatmap with the highest mean: never best
    write_run(tmp_path / "lrp_eps", "lrp_eps", noisy("lrp_eps"))
    t = summary_table(load_results(tmp_path), n_boot=N_BOOT)
    assert not t.is_best.any() and t.set_index("method").loc["lrp_eps", "is_top"]
    md = to_markdown(t)
    assert "**" not in md.split("\n\n")[0] and "none is marked" in md
    write_run(tmp_path / "sensitivity", "sensitivity", noisy("sensitivity"))
    t = summary_table(load_results(tmp_path), n_boot=N_BOOT).set_index("method")
    assert t.loc["lrp_eps", "is_best"] and not t.loc["random", "is_best"] and not t.loc["sensitivity", "is_best"]
    assert t.loc["random", "mean"] > t.loc["lrp_eps", "mean"] and np.isnan(t.loc["random", "rank"])
    # a quantity without a direction (the random order's own AOPC) has no best
    assert not summary_table(load_results(tmp_path), "aopc_random", n_boot=N_BOOT).is_best.any()


def test_ties_are_marked_alike(tmp_path):
    same = noisy("lrp_eps")
    write_run(tmp_path / "random", "random", SLOPES["random"])
    write_run(tmp_path / "lrp_eps", "lrp_eps", same)
    write_run(tmp_path / "lrp_z", "lrp_z", same)  # equal means: both best
    write_run(tmp_path / "sensitivity", "sensitivity", noisy("sensitivity"))
    t = summary_table(load_results(tmp_path), n_boot=N_BOOT).set_index("method")
    assert t.loc["lrp_eps", "is_best"] and t.loc["lrp_z", "is_best"] and not t.loc["sensitivity", "is_best"]
    md = to_markdown(t.reset_index())
    assert md.count("**") == 4 and "†" not in md
    # indistinguishable (a paired test cannot tell them apart on these images): marked like the top
    rng = np.random.default_rng(3)
    write_run(tmp_path / "gradient_x_input", "gradient_x_input", same + rng.normal(0, 0.05, N))
    t = summary_table(load_results(tmp_path), n_boot=N_BOOT).set_index("method")
    assert t.loc["gradient_x_input", "p_holm"] >= 0.05 and t.loc["gradient_x_input", "is_best"]
    assert t.loc["gradient_x_input", "not_significantly_worse"] or t.loc["gradient_x_input", "is_top"]


# ------------------------------------------------------------------------------------------------ LaTeX


def test_latex_heads_minus_zero_and_caption(tmp_path):
    write_run(tmp_path / "random", "random", 0.1 - 0.0004)  # mean −0.0008 (two decimals: 0.00, not -0.00)
    write_run(tmp_path / "sensitivity", "sensitivity", [0.1 - 0.6, 0.7, 0.8, 0.9, 0.75, 0.6, 0.7, 0.8, 0.9, 0.6])  # CI below 0
    write_run(tmp_path / "lrp_eps", "lrp_eps", noisy("lrp_eps"))
    write_run(tmp_path / "p2", "lrp_eps", noisy("lrp_eps"), patch=2, n_regions=196)
    t = summary_table(load_results(tmp_path), n_boot=N_BOOT)
    tex = to_latex(t)
    assert tex.isascii() and "-0.00" not in tex and "-0.00" not in to_markdown(t)
    assert "$-$" in tex and not re.search(r"--\d", tex)  # a real minus, never an en-dash before a number
    heads = next(ln for ln in tex.splitlines() if ln.startswith("Method &"))
    assert "MNIST (embedded sample)" in heads and "patch 2" in heads and "mnist\\_embedded" not in heads
    assert "\\\\[" not in tex
    cap = tex[tex.index(r"\caption{"):tex.index(r"\label")]
    for part in ("Unit: logit", f"over {N} images", "2 repeats", "95\\% percentile bootstrap interval",
                 f"{N_BOOT} resamples", "Wilcoxon signed-rank", "Holm", "model embedded\\_cnn"):
        assert part in cap, part
    assert number(-0.0004, 2) == "0.00" and number(-0.5, 2, "−") == "−0.50" and number(0.5, 1) == "0.5"


# ------------------------------------------------------------------------------------------- conditions


def test_runs_that_differ_in_any_setting_are_separate_columns(tmp_path):
    base = {"random": SLOPES["random"], "lrp_eps": noisy("lrp_eps"), "sensitivity": noisy("sensitivity")}
    variants = {"a": {}, "b": {"images": 8}, "c": {"repeats": 5}, "d": {"seed": 1},
                **{v: {"protocol_settings": params_json({"aopc": {}, "deletion": {"substrate": sub, "steps": 28}}),
                       "metrics": "aopc,deletion"} for v, sub in (("e", "blur"), ("f", "zero"))}}
    for v, kw in variants.items():
        for m, s in base.items():
            write_run(tmp_path / v / m, m, s if np.ndim(s) == 0 else noisy(m, kw.get("images", N)), **kw)
    res = load_results(tmp_path)
    t = summary_table(res, n_boot=N_BOOT)
    assert t.column.nunique() == len(variants)
    assert all(g.run.nunique() == len(base) and g.is_best.sum() >= 1 for _, g in t.groupby("column"))
    heads = set(t.column)
    assert any("8 images" in h for h in heads) and any("5 repeats" in h for h in heads)
    assert any("seed 1" in h for h in heads) and any("deletion.substrate blur" in h for h in heads)
    assert any("deletion.substrate zero" in h for h in heads) and not any("steps 28" in h for h in heads)
    assert len(t.groupby(["images", "repeats", "seed", "protocol_settings"])) == len(variants)


def test_older_tables_are_backfilled(tmp_path):
    """Tables written before the new provenance columns load, with the value they meant."""
    new = [c for c in PROVENANCE if c not in ("method", "method_params", "pooling", "dataset", "preprocessing",
                                              "model", "model_params", "perturbation", "perturbation_params",
                                              "regions", "regions_params", "patch", "steps", "L", "n_regions",
                                              "repeats", "orders", "target", "score", "precision", "seed",
                                              "device", "bench_version", "torch_version", "torchvision_version",
                                              "numpy_version", "python_version", "wall_time_s")]
    for m in ("random", "lrp_eps"):
        write_run(tmp_path / "eq" / m, m, noisy(m, 5) if m != "random" else 0.12, images=5)
        write_family(tmp_path / "eq" / m, m, 0.5)
        write_run(tmp_path / "uneq" / m, m, noisy(m) if m != "random" else 0.12, patch=9, morf_area=0.1)
    for path in tmp_path.rglob("*.parquet"):
        df = pd.read_parquet(path)
        df.drop(columns=[c for c in new if c in df.columns]).to_parquet(path)
    for m in ("random", "lrp_eps"):  # a summary.csv tells the protocols a run computed (srg: no table of its own)
        curves = pd.read_parquet(tmp_path / "uneq" / m / "curves.parquet")
        first = curves.drop(columns=[c for c in curves.columns if c not in PROVENANCE]).iloc[:1]
        pd.concat([first.assign(quantity=q) for q in ("aopc_morf", "srg")]).to_csv(
            tmp_path / "uneq" / m / "summary.csv", index=False)
    res = load_results(tmp_path)
    runs = res.runs.set_index("run")
    assert list(runs.loc[["eq/random", "eq/lrp_eps"], "images"]) == [5, 5]
    assert set(runs.loc[["uneq/random", "uneq/lrp_eps"], "images"]) == {N}
    assert set(runs.loc[["eq/random", "eq/lrp_eps"], "metrics"]) == {"aopc,irof,faithfulness_correlation"}
    assert set(runs.loc[["uneq/random", "uneq/lrp_eps"], "metrics"]) == {"aopc,srg"}
    assert set(runs.protocol_settings) == {"{}"} and set(runs.model_sha) == {""}
    assert runs.loc["eq/lrp_eps", "equal_regions"] and not runs.loc["uneq/lrp_eps", "equal_regions"]
    assert set(res.tables["irof"].run) == {"eq/random", "eq/lrp_eps"}  # side tables still join their runs
    assert set(res.tables["faithfulness_correlation"].run) == {"eq/random", "eq/lrp_eps"}
    t = summary_table(res, n_boot=N_BOOT)
    assert set(t.unit) == {"logit"}  # older runs: resolved from the declaration with the run's score
    assert t.column.nunique() == 2 and set(t[t.patch == 9].quantity) == {"aopc_area_morf_minus_random"}
    # older and newer runs of one setting: separate columns, the older one said to have no recorded settings
    write_run(tmp_path / "new" / "lrp_eps", "lrp_eps", noisy("lrp_eps", 5), images=5,
              metrics="aopc,irof,faithfulness_correlation",
              protocol_settings=params_json({"aopc": {}, "irof": {"n_segments": 100}}))
    heads = set(summary_table(load_results(tmp_path), n_boot=N_BOOT).column)
    assert len(heads) == 3 and any("protocol settings unrecorded" in h for h in heads)
    assert not any("n_segments" in h for h in heads)


# ------------------------------------------------------------------------------------------ unequal regions


def test_unequal_regions_use_the_area_matched_aopc(tmp_path):
    for m in ("random", "sensitivity", "lrp_eps"):
        write_run(tmp_path / "p4" / m, m, noisy(m))
        write_run(tmp_path / "p9" / m, m, noisy(m), patch=9, equal_regions=False, morf_area=0.1)
    res = load_results(tmp_path)
    t = summary_table(res, n_boot=N_BOOT)
    by = dict(zip(t.patch, t.quantity))
    assert by == {7: "aopc_morf_minus_random", 9: "aopc_area_morf_minus_random"}
    assert t[t.patch == 9].area_matched.all() and not t[t.patch == 7].area_matched.any()
    row = t[(t.patch == 7) & (t.method == "lrp_eps")].iloc[0]
    assert row["mean"] == pytest.approx(np.mean(aopc_diff(noisy("lrp_eps"))))
    md = to_markdown(t)
    assert "patch 9 ‡" in md.splitlines()[0] and "‡: area-matched AOPC − random in these columns" in md
    only9 = summary_table(load_results(tmp_path / "p9"), n_boot=N_BOOT)
    assert "In every column the regions differ in size" in to_markdown(only9) and "area-matched" in to_markdown(only9)
    assert to_markdown(only9).startswith("| method |") and "area-matched AOPC − random" in to_markdown(only9)
    # asked for by name: kept, with a warning and a caption note
    res.warnings.clear()
    plain = summary_table(res, "aopc_morf_minus_random", n_boot=N_BOOT)
    assert set(plain.quantity) == {"aopc_morf_minus_random"}
    assert any("biased" in w for w in res.warnings) and "is biased" in to_markdown(plain)
    fam_quantities = {"aopc_morf_minus_random", "aopc_area_morf_minus_random"}
    assert set(summary_table(res, None, n_boot=N_BOOT).quantity) == fam_quantities


# ------------------------------------------------------------------------------------------------- CLI


def test_quantity_offers_every_declared_quantity():
    action = next(a for a in parser()._actions if a.dest == "quantity")
    assert list(action.choices) == list(protocols.quantities())
    for q in ("srg", "road_gap", "irof_morf", "pixel_flipping_auc", "faithfulness_correlation", "deletion_auc_morf",
              "insertion_auc_morf", "sensitivity_n", "infidelity", "aopc_area_morf", "aopc_area_lerf",
              "aopc_area_random", "aopc_area_morf_minus_random", "aopc_area_lerf_minus_random"):
        assert q in action.choices and q in action.help, q
        assert parser().parse_args(["d", "--quantity", q]).quantity == q
    assert parser().parse_args(["d"]).quantity is None
    with pytest.raises(SystemExit):
        parser().parse_args(["d", "--quantity", "nosuch"])


def test_provenance_json_is_canonical():
    assert json.loads(provenance("x")["protocol_settings"]) == {"aopc": {}}
