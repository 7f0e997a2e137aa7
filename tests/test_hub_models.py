"""``model=timm`` and ``model=huggingface`` (bench/models/hub.py): local files only, the preprocessing from the
model's own configuration, end-to-end runs of tiny random models, one-line errors for missing files."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.errors import BenchError
from bench.models.hub import hf_input, timm_input
from bench.models import load_model
from bench.run.job import run
from bench.run.spec import build_spec

from conftest import composed

SMALL = ["steps=3", "repeats=1", "bootstrap=20", "metrics=[aopc,road]", "road.fractions=[0.5]", "method=sensitivity"]
TINY_TIMM = ["model=timm", "model.params.arch=vit_tiny_patch16_224", "+model.params.img_size=28",
             "+model.params.patch_size=7", "+model.params.in_chans=1", "model.params.num_classes=10",
             "+model.params.depth=2"]


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def test_timm_preprocessing_from_its_pretrained_config():
    assert [timm_input("vit_tiny_patch16_224", k) for k in ("resize", "crop")] == [248, 224]  # floor(224 / 0.9)
    assert timm_input("vit_tiny_patch16_224", "mean") == [0.5, 0.5, 0.5]
    assert timm_input("resnet18", "resize") == 235 and timm_input(None, "crop") is None  # crop_pct 0.95
    cfg = composed(["model=timm", "model.params.arch=convnext_atto"])
    assert cfg.model.name == "convnext_atto" and cfg.model.input.crop == 224


def test_a_timm_model_from_a_safetensors_file_end_to_end(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    reference = timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=7, in_chans=1, num_classes=10,
                                  depth=2).eval()
    save_file(reference.state_dict(), str(tmp_path / "model.safetensors"))
    conf = composed([*TINY_TIMM, f"model.params.weights={tmp_path / 'model.safetensors'}", "n_images=4", *SMALL])
    spec = build_spec(conf)
    model = load_model(spec)
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(model(x), reference(x)) and not torch.allclose(model(x)[0], model(x)[1])
    run(conf, tmp_path / "run")
    curves = pd.read_parquet(tmp_path / "run" / "curves.parquet")
    assert set(curves.model) == {"vit_tiny_patch16_224"} and np.isfinite(curves.score_value).all()
    assert len(pd.read_parquet(tmp_path / "run" / "road.parquet")) == 4 * 3 * 2

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))  # weights: null → the local cache only
    with pytest.raises(BenchError, match="put model.safetensors of the Hugging Face repo timm/vit_tiny_patch16_224"):
        load_model(build_spec(composed([*TINY_TIMM, "n_images=4"])))
    for bad, message in ((["model=timm"], "model=timm needs model.params.arch"),
                         (["model=timm", "model.params.arch=vit_nosuch", "model.params.weights=random"],
                          "model.params.arch=vit_nosuch is not a timm architecture; e.g. vit_")):
        with pytest.raises(BenchError, match=message):
            load_model(build_spec(composed([*bad, "n_images=4"])))


def hf_folder(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(4)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=2)
    model = ViTForImageClassification(config).eval()
    folder = tmp_path / "tiny-vit"
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                      image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    return folder, model


def images(tmp_path, n=4):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / ("a" if i % 2 else "b") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return root


def test_a_local_hugging_face_folder_end_to_end(tmp_path):
    folder, reference = hf_folder(tmp_path)
    assert hf_input(str(folder), "resize") == [32, 32] and hf_input(str(folder), "crop") is None
    assert hf_input(str(folder), "std") == [0.2, 0.25, 0.3] and hf_input(str(tmp_path / "none"), "mean") is None
    conf = composed(["model=huggingface", f"model.params.path={folder}", "dataset=imagefolder",
                     f"dataset.params.root={images(tmp_path)}", "dataset.params.num_classes=2", "n_images=4", "patch=8",
                     *SMALL])
    spec = build_spec(conf)
    assert spec.dataset.obj.image_shape == (3, 32, 32) and "(0.4, 0.5, 0.6)" in spec.dataset.obj.preprocessing
    model = load_model(spec)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), reference(pixel_values=x).logits) and not torch.allclose(model(x)[0], model(x)[1])
    run(conf, tmp_path / "run")
    curves = pd.read_parquet(tmp_path / "run" / "curves.parquet")
    assert set(curves.model) == {"huggingface"} and np.isfinite(curves.score_value).all()
    assert json.loads(curves.model_params.iloc[0])["path"] == str(folder)

    (folder / "model.safetensors").unlink()
    for path, message in ((folder, "no weights in"), (tmp_path / "nowhere", "config.json does not exist; put a Hugging")):
        with pytest.raises(BenchError, match=message):
            load_model(build_spec(composed(["model=huggingface", f"model.params.path={path}", "dataset=imagefolder",
                                            f"dataset.params.root={tmp_path / 'imgs'}", "n_images=4"])))


@pytest.mark.parametrize("kind, module, extra, params", [
    ("timm", "timm", "timm", {"arch": "resnet18", "weights": "random"}),
    ("huggingface", "transformers", "huggingface", None)])
def test_a_missing_library_is_one_line_naming_the_extra(kind, module, extra, params, monkeypatch, tmp_path):
    import sys

    from bench.models import MODELS

    if params is None:
        folder, _ = hf_folder(tmp_path)
        params = {"path": str(folder)}
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(BenchError, match=rf"needs the {module} package: pip install 'bench\[{extra}\]'"):
        MODELS[kind](None, **params)
