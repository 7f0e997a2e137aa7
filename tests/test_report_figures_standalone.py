"""Figures that stand alone (issue: comparisons a reviewer can trust): the condition inside the figure, the caption
beside it, one y scale where panels are compared, curves on the share of pixels perturbed, area-matched AOPC for
unequal regions, a heatmap grid of a column or page width with image id, class and prediction, distinct markers,
the random heatmap and the random order told apart."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from test_report import labelled_lines, make_run
from bench.report import style
from bench.report.figures import (curve_figures, fraction_figures, heatmap_grid_figures, relative_figures)
from bench.report.load import load_results
from bench.run.tables import write_parquet


@pytest.fixture(scope="module")
def patch_sweep(tmp_path_factory):
    """Three methods at patch 4 (equal tiles) and at patch 9 (unequal: a 28-pixel side): MoRF takes more pixels per
    step than the random order there, as ranking tiles by summed relevance does."""
    root = tmp_path_factory.mktemp("patches")
    for method in ("random", "sensitivity", "lrp_eps"):
        make_run(root / f"{method},patch=4", method, patch=4, images=True)
        run = make_run(root / f"{method},patch=9", method, patch=9, complexity=False, heatmaps=None)
        curves = pd.read_parquet(run / "curves.parquet")
        step = curves.step.to_numpy()
        curves["fraction_perturbed"] = np.where(curves.order == "morf", np.minimum(1, step * 0.1), step / 10 * 0.7)
        curves["equal_regions"] = False
        write_parquet(curves, run / "curves.parquet")
    return root


@pytest.fixture(scope="module")
def results(patch_sweep):
    return load_results(patch_sweep)


def test_panels_compared_share_one_y_scale_on_the_share_of_pixels(results):
    [(_, fig)] = relative_figures(results, ["patch"], ["dataset", "model", "perturbation", "target", "score"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[1])
    assert [ax.get_xlabel() for ax in axes] == ["pixels perturbed (%)"] * 2
    # patch 4: each step at its share of pixels (k/49 of the image); ends at 10/49 = 20 %: said in the panel
    line = labelled_lines(axes[0])[1]
    assert list(line.get_xdata()) == pytest.approx(100 * np.arange(11) / 49)
    assert any("curves end at 20%" in t.get_text() for t in axes[0].texts)
    # patch 9 (unequal regions): area-matched, up to the share both curves reach (70 %), and the title says so
    assert axes[1].get_title() == "patch 9×9 · area-matched" and axes[0].get_title() == "patch 4×4"
    assert max(labelled_lines(axes[1])[0].get_xdata()) == pytest.approx(70)
    assert "area-matched AOPC" in style.caption_of(fig) and "patch 9×9" in style.caption_of(fig)


def test_the_condition_is_inside_the_figure_and_the_caption_beside_it(results, patch_sweep, tmp_path):
    from bench.report.build import make_report

    [(suffix, fig)] = [f for f in relative_figures(results, ["dataset", "model"],
                                                   ["perturbation", "patch", "target", "score"]) if "4" in f[0]]
    title = fig._suptitle.get_text().replace("\n", " ")
    assert all(part in title for part in ("toyset", "toy_cnn", "patch 4×4", "uniform perturbation", "12 images"))
    assert "bootstrap" not in title  # what the bands are is the caption's, not drawn into the figure
    written = make_report(patch_sweep, tmp_path / "report", n_boot=50, formats=("png",))
    caption = tmp_path / "report" / "aopc_vs_random__patch-4.caption.txt"
    assert caption in written["aopc_vs_random__patch-4"]
    assert "95% percentile bootstrap interval" in caption.read_text() and "12 images" in caption.read_text()
    assert (tmp_path / "report" / "heatmap_grid.caption.txt").is_file()


def test_curves_random_order_unlike_the_random_heatmap(results):
    figs = curve_figures(results)
    fig = dict(figs)["__patch-4"]
    ax = [a for a in fig.axes if a.get_visible()][0]
    lines = {ln.get_label(): ln for ln in labelled_lines(ax)}
    heatmap, order = lines["Random heatmap"], lines["random order (baseline)"]
    assert heatmap.get_marker() == "x" and order.get_marker() in ("None", "", None)
    assert order.get_linestyle() == ":" and order.get_color() != heatmap.get_color()
    assert ax.get_xlabel() == "pixels perturbed (%)"


def test_every_method_has_its_own_marker():
    names = [yaml.safe_load(p.read_text()).get("name") for p in
             sorted((Path(__file__).resolve().parents[1] / "conf" / "method").glob("*.yaml"))]
    shipped = [n for n in names if n in style.METHOD_STYLES]
    assert len(shipped) >= 19
    markers = [style.method_marker(n) for n in style.METHOD_STYLES]
    assert len(set(markers)) == len(markers)


def test_heatmap_grid_is_a_page_wide_with_id_class_and_prediction(results):
    [(_, fig)] = heatmap_grid_figures(results, n_images=8)
    assert fig.get_figwidth() == pytest.approx(style.TEXT_WIDTH_IN)
    top = [ax for ax in fig.axes if ax.get_images() and ax.get_title()]
    assert len(top) == 8 and top[0].get_title() == "toyset-000\nclass 0 · pred. 0"
    # no empty margins: the cells span the width between the row labels and the right edge
    cells = [ax for ax in fig.axes if ax.get_images()]
    right = max(ax.get_position().x1 for ax in cells)
    assert right > 0.99
    [(_, small)] = heatmap_grid_figures(results, n_images=3)
    assert small.get_figwidth() == pytest.approx(style.COLUMN_WIDTH_IN)


def test_saturating_curves_get_a_log_axis(tmp_path):
    """Insertion curves that make their whole rise within the first few % get a symlog x axis; deletion curves
    that fall along the axis keep a linear one."""
    from test_report import make_protocols

    a = np.linspace(0, 1, 51)
    for method in ("random", "lrp_eps"):
        make_run(tmp_path / method, method, complexity=False, heatmaps=None)
        make_protocols(tmp_path / method, method)
        ins = pd.read_parquet(tmp_path / method / "insertion.parquet")
        prov = ins.drop(columns=["image_id", "label", "target_class", "order", "step", "fraction_changed",
                                 "score_value"]).iloc[:1]
        rows = [pd.DataFrame(dict(image_id=f"toyset-{i:03d}", label=0, target_class=0, order=o, step=np.arange(51),
                                  fraction_changed=a, score_value=1 - 0.9 * np.exp(-a / (0.01 if o == "morf" else 0.3))))
                for i in range(6) for o in ("morf", "random")]
        table = pd.concat(rows, ignore_index=True).merge(prov, how="cross")
        write_parquet(table, tmp_path / method / "insertion.parquet")
    res = load_results(tmp_path)
    [(_, fig)] = fraction_figures(res, "deletion_insertion_curves", n_boot=20)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_xscale() for ax in axes] == ["linear", "symlog"]
    assert "logarithmic" in style.caption_of(fig)
