"""A vision transformer (torchvision's ``VisionTransformer``, tiny, random weights, 28×28 grey inputs) through
every gradient- and perturbation-based method, AttnLRP and CP-LRP, and every protocol, end to end; LRP's CNN rules
refuse its layers by name and point to attnlrp / cp_lrp, and those refuse a ViT whose attention they cannot see
(tests/test_attnlrp.py has the rules)."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.run.job import run
from bench.run.spec import build_spec

from conftest import composed


class TinyViT(nn.Module):
    """torchvision's ViT with 7×7 patches of one channel: 16 tokens + class token, 2 layers of width 16."""

    def __init__(self) -> None:
        from torchvision.models.vision_transformer import VisionTransformer

        super().__init__()
        torch.manual_seed(0)
        self.vit = VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=16,
                                     mlp_dim=32, num_classes=10)
        self.vit.conv_proj = nn.Conv2d(1, 16, kernel_size=7, stride=7)
        nn.init.normal_(self.vit.heads.head.weight, std=0.5)  # torchvision starts the head at 0: constant outputs

    def forward(self, x):
        return self.vit(x)


class _OwnAttention(nn.Module):
    """Self-attention of its own class (F.scaled_dot_product_attention), called as nn.MultiheadAttention is."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, query, key, value, need_weights=False):
        b, n, e = query.shape
        q, k, v = self.qkv(query).reshape(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, e)), None


class OpaqueViT(TinyViT):
    """TinyViT with an attention the LRP rules cannot see."""

    def __init__(self) -> None:
        super().__init__()
        for layer in self.vit.encoder.layers:
            layer.self_attention = _OwnAttention()


VIT = ["model=user", "model.params._target_=test_vit.TinyViT", "model.params.checkpoint=random", "n_images=4",
       "steps=4", "repeats=2", "bootstrap=20", "block_size=4", "road.fractions=[0.2,0.6]",
       "continuity.n_samples=2", "orders=[morf,lerf,random]", "deletion.steps=4", "insertion.steps=4",
       "faithfulness_correlation.subsets=6", "pixel_flipping.steps=3",
       "metrics=[aopc,complexity,continuity,road,srg,deletion,insertion,faithfulness_correlation,pixel_flipping]"]
FAST = {"integrated_gradients": ["method.params.steps=4"], "smoothgrad": ["method.params.samples=3"]}


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


@pytest.mark.parametrize("method", ["sensitivity", "gradient_x_input", "integrated_gradients", "smoothgrad",
                                    "occlusion", "random", "captum", "attnlrp", "cp_lrp"])
def test_a_vit_runs_every_protocol(method, tmp_path):
    run(composed([*VIT, f"method={method}", *FAST.get(method, [])]), tmp_path)
    curves = pd.read_parquet(tmp_path / "curves.parquet")
    assert len(curves) == 4 * 3 * 5 and np.isfinite(curves.score_value).all()
    road = pd.read_parquet(tmp_path / "road.parquet")
    assert set(road.order) == {"morf", "lerf", "random"} and np.isfinite(road.score_value).all()
    for table, n_steps in (("deletion", 5), ("insertion", 5), ("pixel_flipping", 4)):
        rows = pd.read_parquet(tmp_path / f"{table}.parquet")
        assert len(rows) == 4 * 2 * n_steps and np.isfinite(rows.score_value).all()
    for table in ("complexity", "continuity", "faithfulness_correlation"):
        assert len(pd.read_parquet(tmp_path / f"{table}.parquet")) == 4
    heat = pd.read_parquet(tmp_path / "heatmaps.parquet").heatmap
    assert all(np.abs(h).sum() > 0 for h in heat)  # real heatmaps, a model whose output moves
    assert curves.groupby("image_id").score_value.nunique().min() > 1
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("quantity")
    assert {"aopc_morf", "srg", "road_gap", "deletion_auc_morf", "insertion_auc_morf", "faithfulness_correlation",
            "pixel_flipping_auc", "png_bytes", "continuity_max"} <= set(summary.index)


@pytest.mark.parametrize("model, method, message", [
    ("TinyViT", "lrp_eps", r"LRP cannot propagate through layer 'vit.encoder.layers.encoder_layer_0.ln_1' "
                           r"\(LayerNorm\) with these rules; for transformers use method=attnlrp or method=cp_lrp"),
    ("TinyViT", "deconvnet", "deconvnet is defined for ReLU networks; layer "
                             "'vit.encoder.layers.encoder_layer_0.self_attention'"),
    ("TinyViT", "guided_backprop", "defined for ReLU networks; layer 'vit.encoder"),
    ("OpaqueViT", "attnlrp", r"LRP for transformers: 'vit.encoder.layers.encoder_layer_0.self_attention' "
                             r"\(_OwnAttention\) calls scaled_dot_product_attention, which no rule covers there"),
    ("OpaqueViT", "cp_lrp", r"'vit.encoder.layers.encoder_layer_0.self_attention' \(_OwnAttention\) calls "
                            r"scaled_dot_product_attention"),
])
def test_lrp_and_modified_relu_backward_refuse_what_they_cannot_see_by_name(model, method, message):
    from bench.run.evaluate import Evaluator
    from bench.models import load_model

    spec = build_spec(composed([*VIT, f"model.params._target_=test_vit.{model}", f"method={method}"]))
    ev = Evaluator.from_spec(spec, load_model(spec))
    x = torch.zeros(2, 1, 28, 28)
    with pytest.raises(BenchError, match=message) as err:
        ev.attribute(x, torch.tensor([0, 1]), ["a", "b"])
    assert "\n" not in str(err.value)
