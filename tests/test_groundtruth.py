"""Ground truth: the share of positive relevance inside the true region (bench/run/groundtruth.py) on the
two-digit dataset whose relevant region is known (datasets/mnist_twodigit.py)."""

import math

import pandas as pd
import pytest
import torch

from bench.interfaces import Method
from bench.run.groundtruth import groundtruth_table, main, relevance_inside
from bench.models import embedded_cnn
from bench.plugins import load_class


def test_relevance_inside_counts_positive_relevance_only():
    h = torch.tensor([[1.0, -5.0], [3.0, 0.0]])
    mask = torch.tensor([[True, True], [False, False]])
    assert float(relevance_inside(h, mask)) == pytest.approx(0.25)  # 1 of 1 + 3; the −5 does not count
    batch = torch.stack([h, -h.abs(), torch.ones(2, 2)])
    shares = relevance_inside(batch, mask)
    assert shares[0] == pytest.approx(0.25) and math.isnan(shares[1]) and shares[2] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        relevance_inside(h, torch.ones(3, 3, dtype=torch.bool))


class Oracle(Method):
    """Relevance exactly on a region the dataset names (mask or distractor), or spread evenly."""

    def __init__(self, dataset, where):
        self.dataset, self.where = dataset, where

    def attribute(self, model, x, target, ctx):
        if self.where == "even":
            return torch.ones_like(x)
        get = self.dataset.get_mask if self.where == "mask" else self.dataset.get_distractor_mask
        index = [int(i.split("-")[1]) for i in ctx.image_ids]
        return torch.stack([get(i)[None].float() for i in index]).to(x)


def test_table_on_known_heatmaps():
    ds = load_class("datasets", "mnist_twodigit")(n_test=12, n_train=8)
    model = embedded_cnn(1, 4, 28, image_width=56).eval()
    for where, inside, distractor in (("mask", 1.0, 0.0), ("distractor", 0.0, 1.0), ("even", 0.5, 0.5)):
        table = groundtruth_table(model, Oracle(ds, where), "sum", ds, 12, batch_size=5)
        assert len(table) == 12 and table.mask_fraction.eq(0.5).all()
        assert table.share_inside.eq(inside).all() and table.share_distractor.eq(distractor).all()


def test_cli_lrp_puts_more_relevance_on_the_true_digit_than_sensitivity(tmp_path, cache_dir, capsys):
    out = tmp_path / "gt.csv"
    code = main(["method=lrp_eps,sensitivity", "n_images=100", "dataset.params.n_train=800",
                 "dataset.params.n_test=100", "model.params.epochs=2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "lrp_eps (sum): share of positive relevance inside the true region" in printed
    table = pd.read_csv(out)
    assert len(table) == 200 and set(table.method) == {"lrp_eps", "sensitivity"}
    mean = table.groupby("method").share_inside.mean()
    assert table.share_inside.between(0, 1).all() and table.mask_fraction.eq(0.5).all()
    # trained on 800 canvases for 2 epochs: both find the target, LRP-ε much more so (full numbers: README)
    assert mean["lrp_eps"] > 0.55 and mean["lrp_eps"] > mean["sensitivity"] + 0.04
