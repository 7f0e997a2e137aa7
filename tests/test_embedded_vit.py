"""The embedded vision transformer (``model=embedded_vit``, bench/models/embedded_vit.py): shipped weights checked by
digest and loaded without training, a trained model (its accuracy on the embedded test digits), and AttnLRP /
CP-LRP runs on it offline."""

import hashlib

import pandas as pd
import pytest
import torch

from bench import plugins
from bench.errors import BenchError
from bench.models import embedded_vit
from bench.models.embedded import accuracy
from bench.run.config import compose
from bench.run.job import run

from conftest import composed


def _default():
    conf = compose(["model=embedded_vit"])
    return plugins.build("datasets", conf["dataset"], "dataset"), dict(conf["model"]["params"])


def test_the_shipped_vit_matches_its_digest_and_loads_without_training(tmp_path, monkeypatch):
    (key, digest), = embedded_vit.SHIPPED.items()
    path = embedded_vit.shipped_file(key)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest and path.stat().st_size < 1_000_000
    monkeypatch.setattr(embedded_vit, "_train", lambda *a, **k: pytest.fail("the shipped ViT was retrained"))
    dataset, params = _default()
    model = embedded_vit.load_embedded_vit(dataset, str(tmp_path / "cache"), **params)
    assert not (tmp_path / "cache").exists()
    x = dataset.normalization.normalize(torch.stack([dataset.get(i)[1] for i in range(len(dataset))]))
    y = torch.tensor([dataset.get(i)[2] for i in range(len(dataset))])
    assert accuracy(model, x, y) >= 0.85  # a trained transformer (measured: README, "Vision transformers")


def test_bad_vit_settings_are_one_line():
    dataset, params = _default()
    with pytest.raises(BenchError, match="dim=30 must be a multiple of heads=4"):
        embedded_vit.load_embedded_vit(dataset, "/nonexistent", **{**params, "dim": 30})
    with pytest.raises(BenchError, match="patch=5 must divide the image side 28"):
        embedded_vit.load_embedded_vit(dataset, "/nonexistent", **{**params, "patch": 5})


@pytest.mark.parametrize("method", ["attnlrp"])  # (cp_lrp end to end: tests/test_attnlrp.py)
def test_attnlrp_runs_on_the_embedded_vit(method, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")
    summary = run(composed(["model=embedded_vit", f"method={method}", "n_images=6", "steps=4", "repeats=1",
                            "bootstrap=100", "save_heatmaps=6"]), tmp_path / method)
    assert summary.set_index("quantity").loc["aopc_morf_minus_random", "n_images"] == 6
    heat = pd.read_parquet(tmp_path / method / "heatmaps.parquet")
    assert (heat.heatmap.map(lambda h: abs(h).sum()) > 0).all()
