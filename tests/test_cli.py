"""End-to-end: ``python -m bench`` on the embedded default, its tables, and one-line errors."""

import os
import textwrap

import pandas as pd
import pytest

from bench.protocols.aopc import CURVE_COLUMNS as OWN_CURVE_COLUMNS
from bench.run.tables import PROVENANCE, SUMMARY_COLUMNS

CURVE_COLUMNS = PROVENANCE + OWN_CURVE_COLUMNS

SMALL = ["n_images=4", "steps=5", "repeats=2", "batch_size=16", "bootstrap=200"]


def test_run_writes_both_tables(run_cli):
    proc, run_dir = run_cli(*SMALL, "method=sensitivity")
    assert proc.returncode == 0, proc.stderr
    assert "sensitivity" in proc.stdout and "AOPC − random" in proc.stdout
    curves = pd.read_parquet(run_dir / "curves.parquet")
    summary = pd.read_csv(run_dir / "summary.csv")
    assert list(curves.columns) == CURVE_COLUMNS and list(summary.columns) == SUMMARY_COLUMNS
    assert len(curves) == 4 * 2 * 6 and set(curves.order) == {"morf", "random"}
    assert curves.groupby(["image_id", "order"]).step.apply(list).map(lambda s: s == list(range(6))).all()
    assert set(summary.quantity) == {"aopc_morf", "aopc_random", "aopc_morf_minus_random", "aopc_area_morf",
                                     "aopc_area_random", "aopc_area_morf_minus_random"}
    assert set(summary.unit) == {"logit"} and (summary.protocol == "aopc").all()
    assert (summary.n_images == 4).all() and (summary.L == 5).all() and (curves.method == "sensitivity").all()
    # the summary is the mean over images of the per-image AOPC(L) of the curve table
    final = curves[curves.step == 5].pivot(index="image_id", columns="order", values="aopc")
    s = summary.set_index("quantity")["mean"]
    assert s["aopc_morf"] == pytest.approx(final["morf"].mean())
    assert s["aopc_morf_minus_random"] == pytest.approx((final["morf"] - final["random"]).mean())
    # steps 0: nothing perturbed, both orders share f(x0); fraction grows to L regions of 16 px
    first = curves[curves.step == 0]
    assert (first.fraction_perturbed == 0).all() and (first.aopc == 0).all()
    assert curves[curves.step == 5].fraction_perturbed.eq(5 * 16 / 784).all()
    assert (run_dir / "config.yaml").is_file()


def test_lrp_eps_patch_9_and_same_numbers_for_any_batch_size(cache_dir, capsys, tmp_path):
    from conftest import FAST_MODEL, bench_main

    a = bench_main([*FAST_MODEL, *SMALL, "method=lrp_eps", "patch=9", f"hydra.run.dir={tmp_path / 'a'}"], capsys)
    b = bench_main([*FAST_MODEL, *SMALL[:3], "batch_size=3", "bootstrap=200", "method=lrp_eps", "patch=9",
                    f"hydra.run.dir={tmp_path / 'b'}"], capsys)
    assert a[0] == 0 and b[0] == 0, a[2] + b[2]
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    ca, cb = pd.read_parquet(dir_a / "curves.parquet"), pd.read_parquet(dir_b / "curves.parquet")
    assert (ca.n_regions == 16).all() and (ca.L == 5).all()
    # the same numbers up to float32 rounding: convolutions of other batch shapes sum in another order
    pd.testing.assert_series_equal(ca.score_value, cb.score_value, rtol=1e-5, atol=1e-5)
    pd.testing.assert_series_equal(ca.aopc, cb.aopc, rtol=1e-5, atol=1e-5)


# Bad input (every key, wrong types, out-of-range values, unknown keys, plug-in names): tests/test_spec.py.


def test_works_with_a_hugging_face_like_datasets_package_installed(run_cli, tmp_path):
    shadow = tmp_path / "site"
    (shadow / "datasets").mkdir(parents=True)
    (shadow / "datasets" / "__init__.py").write_text(textwrap.dedent("""
        HUGGING_FACE = True
        def load_dataset(*a, **k): raise RuntimeError("not the suite's datasets")
    """))
    env = {"PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    proc, run_dir = run_cli("n_images=2", "steps=2", "repeats=1", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "summary.csv").is_file()


def readme_blocks():
    """The ``# <path>`` code blocks of README.md's "Adding a method" section."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("## Adding a method"):text.index("## Adding a dataset")]
    return dict(re.findall(r"```(?:python|yaml)\n# (\S+)\n(.*?)```", section, re.S))


def test_readme_adding_a_method_example_runs(run_cli, tmp_path):
    from pathlib import Path

    blocks = readme_blocks()
    assert set(blocks) == {"methods/gradient_x_input.py", "conf/method/gradient_x_input.yaml"}
    root = Path(__file__).resolve().parent.parent
    for path, body in blocks.items():  # the README shows the file exactly as it is in the repository
        assert (root / path).read_text() == body
    # … and the same two files, dropped into a fresh plug-in folder under a new name, are a new method
    plugin = tmp_path / "my_plugins"
    (plugin / "methods").mkdir(parents=True)
    (plugin / "conf" / "method").mkdir(parents=True)
    (plugin / "methods" / "my_taylor.py").write_text(blocks["methods/gradient_x_input.py"])
    yaml = blocks["conf/method/gradient_x_input.yaml"].replace("gradient_x_input", "my_taylor")
    (plugin / "conf" / "method" / "my_taylor.yaml").write_text(yaml)
    proc, run_dir = run_cli("method=my_taylor", f"hydra.searchpath=[file://{plugin / 'conf'}]", *SMALL,
                            env={"BENCH_PLUGIN_PATH": str(plugin)})
    assert proc.returncode == 0, proc.stderr
    assert (pd.read_csv(run_dir / "summary.csv").method == "my_taylor").all()


def test_nan_heatmaps_are_skipped_and_reported(run_cli, tmp_path):
    plugin = tmp_path / "nan_plugin"
    (plugin / "methods").mkdir(parents=True)
    (plugin / "conf" / "method").mkdir(parents=True)
    (plugin / "methods" / "half_nan.py").write_text(textwrap.dedent("""
        import torch
        from bench.interfaces import Method

        class HalfNaN(Method):
            def attribute(self, model, x, target, ctx):
                r = torch.rand_like(x)
                r[::2] = float("nan")  # every other image of the batch
                return r
    """))
    (plugin / "conf" / "method" / "half_nan.yaml").write_text("name: half_nan\nplugin: half_nan\npooling: null\n")
    common = ["method=half_nan", f"hydra.searchpath=[file://{plugin / 'conf'}]", "steps=2", "repeats=1"]
    proc, run_dir = run_cli(*common, "n_images=4", env={"BENCH_PLUGIN_PATH": str(plugin)})
    assert proc.returncode == 0, proc.stderr
    skipped = pd.read_csv(run_dir / "skipped.csv")
    assert len(skipped) == 2 and skipped.reason.str.contains("heatmap is not finite").all()
    assert (pd.read_csv(run_dir / "summary.csv").n_images == 2).all()
    assert "2 image(s) skipped" in proc.stdout + proc.stderr
    # all images bad: one line, exit 2, and the skipped list is kept
    proc, run_dir = run_cli(*common, "n_images=1", env={"BENCH_PLUGIN_PATH": str(plugin)},
                            run_dir=tmp_path / "all_bad")
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("[")]  # the rest: INFO log lines
    assert proc.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: no image could be evaluated")
    assert (run_dir / "skipped.csv").is_file() and "Traceback" not in proc.stderr


def test_metrics_and_lerf_end_to_end(run_cli):
    proc, run_dir = run_cli("n_images=3", "steps=4", "repeats=2", "method=sensitivity", "orders=[morf,lerf]",
                            "metrics=[aopc,complexity,continuity]", "continuity.kind=noise", "continuity.n_samples=2",
                            "complexity.jpeg_quality=75", "bootstrap=100")
    assert proc.returncode == 0, proc.stderr
    comp = pd.read_parquet(run_dir / "complexity.parquet")
    cont = pd.read_parquet(run_dir / "continuity.parquet")
    assert len(comp) == 3 and (comp.jpeg_quality == 75).all() and (comp.colormap == "bwr").all()
    assert len(cont) == 3 and (cont.kind == "noise").all() and (cont.n_samples == 2).all()
    assert (comp.method == "sensitivity").all() and "preprocessing" in comp.columns
    summary = pd.read_csv(run_dir / "summary.csv").set_index("quantity")
    for q in ("aopc_lerf", "aopc_lerf_minus_random", "png_bytes", "jpeg_bytes", "entropy_bits", "continuity_max"):
        assert q in summary.index
    assert summary.loc["png_bytes", "mean"] == pytest.approx(comp.png_bytes.mean())
    assert summary.loc["continuity_max", "median"] == pytest.approx(cont.continuity_max.median())
    curves = pd.read_parquet(run_dir / "curves.parquet")
    assert set(curves.order) == {"morf", "lerf", "random"} and (curves.orders == "morf,lerf,random").all()
