"""LRP for vision transformers (bench/lrp/transformer.py): CP-LRP equals LXT's own (``lxt.efficient``, its
torchvision-ViT patch map) and AttnLRP equals LXT's attention rules (``divide_gradient``, ``stop_gradient``,
``identity_rule_implicit``) on a torchvision ViT, to float64 precision, with the same share of the logit reaching
the pixels; CP-LRP conserves relevance exactly where nothing absorbs it; timm's ViT (fused and explicit attention)
gives the heatmaps of the same weights in torchvision's; the methods run end to end; what the rules cannot see is
refused by name."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from bench.errors import BenchError
from bench.lrp import attnlrp, cp_lrp, lrp

from conftest import scaled


def tiny_vit(seed: int = 0, biases: bool = True) -> nn.Module:
    """torchvision's ViT on 28×28 grey images: 7×7 patches, 2 layers of width 16, 2 heads; random weights with
    non-zero biases, class token and position embedding (or all of them zero: ``biases=False``)."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    m = VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                          num_classes=10)
    m.conv_proj = nn.Conv2d(1, 16, kernel_size=7, stride=7)
    nn.init.normal_(m.heads.head.weight, std=0.5)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1 or "class_token" in name or "pos_embedding" in name:
                p.normal_(std=0.1) if biases else p.zero_()
            if "ln" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
    return m.double().eval()


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# LXT 2.1 in a subprocess (its patches replace torchvision's classes' methods for the whole process). LXT's
# torchvision map is CP-LRP inside the attention; for AttnLRP the attention is written here with LXT's own rules
# on q, k and v (as its Hugging Face attention wrapper applies them).
LXT = textwrap.dedent("""
    import sys, torch
    import torch.nn.functional as F
    import transformers.pytorch_utils as pu
    for name in ("find_pruneable_heads_and_indices", "prune_linear_layer", "apply_chunking_to_forward"):
        if not hasattr(pu, name):
            setattr(pu, name, None)  # LXT 2.1 imports these for BERT; transformers 5 removed them
    from torchvision.models import vision_transformer as tv
    from lxt.efficient import monkey_patch
    from lxt.efficient.models.vit_torch import cp_LRP
    from lxt.efficient.rules import divide_gradient

    monkey_patch(tv, cp_LRP)
    if sys.argv[1] == "attnlrp":
        def attention(self, query, key, value, *args, **kwargs):
            e, h = self.embed_dim, self.num_heads
            w, b = self.in_proj_weight, self.in_proj_bias
            q, k, v = (F.linear(t, w[i * e:(i + 1) * e], b[i * e:(i + 1) * e])
                       for i, t in enumerate((query, key, value)))
            q, k, v = divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2)
            n, length = q.shape[:2]
            q, k, v = (t.reshape(n, length, h, e // h).transpose(1, 2) for t in (q, k, v))
            a = torch.softmax(q @ k.transpose(-2, -1) / (e // h) ** 0.5, dim=-1)
            o = (a @ v).transpose(1, 2).reshape(n, length, e)
            return F.linear(o, self.out_proj.weight, self.out_proj.bias), None
        tv.nn.MultiheadAttention.forward = attention
    model = tv.VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                                 num_classes=10)
    model.conv_proj = torch.nn.Conv2d(1, 16, kernel_size=7, stride=7)
    model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
    model = model.double().eval()
    x = torch.load(sys.argv[3], weights_only=True).requires_grad_(True)
    out = model(x)
    target = out.argmax(1)
    out.gather(1, target[:, None]).sum().backward()
    torch.save({"R": (x * x.grad).detach(), "target": target, "logit": out.gather(1, target[:, None])[:, 0].detach()},
               sys.argv[4])
""")


def lxt_heatmaps(mode: str, model: nn.Module, x: torch.Tensor, tmp_path) -> dict:
    pytest.importorskip("lxt")
    (tmp_path / "lxt_run.py").write_text(LXT)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run([sys.executable, str(tmp_path / "lxt_run.py"), mode, str(tmp_path / "model.pt"),
                           str(tmp_path / "x.pt"), str(tmp_path / "out.pt")], capture_output=True, text=True,
                          timeout=scaled(120), env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    return torch.load(tmp_path / "out.pt", weights_only=True)


@pytest.mark.parametrize("mode,composite", [("cp", cp_lrp(0.0)), ("attnlrp", attnlrp(0.0))])
def test_equal_to_lxt_on_a_torchvision_vit(mode, composite, tmp_path):
    """ε = 0: LXT computes Gradient × Input, i.e. LRP-0 on the linear layers. The remaining difference is LXT's
    identity rule dividing by (x + 1e-10) where ours divides by x."""
    model, x = tiny_vit(), images()
    ref = lxt_heatmaps(mode, model, x, tmp_path)
    ours = lrp(model, x, ref["target"], composite)
    scale = ref["R"].abs().amax(dim=(1, 2, 3), keepdim=True)
    assert ((ours - ref["R"]).abs() / scale).max() <= 1e-5
    # conservation as each reports it: the share of the logit that reaches the pixels (the rest went to biases,
    # the class token and the position embedding), the same for both
    np.testing.assert_allclose(ours.sum((1, 2, 3)), ref["R"].sum((1, 2, 3)), rtol=1e-6, atol=1e-9)


def test_cp_lrp_conserves_relevance_where_nothing_absorbs_it():
    """No bias, class token or position embedding: Σ_pixels R = f_c(x) for CP-LRP (float64) — every step is
    linear then (A constant). AttnLRP's softmax rule is a linearisation with a bias term (AttnLRP eq. 13), which
    absorbs relevance by design: its sum is compared with LXT's instead (test above)."""
    model, x = tiny_vit(biases=False), images()
    with torch.no_grad():
        out = model(x)
    target = out.argmax(1)
    relevance = lrp(model, x, target, cp_lrp(0.0))
    np.testing.assert_allclose(relevance.sum((1, 2, 3)), out.gather(1, target[:, None])[:, 0], rtol=1e-9)
    # with ε > 0 on the linear layers a little is absorbed by the stabiliser, nothing created
    small = lrp(model, x, target, cp_lrp(0.1))
    assert (small.sum((1, 2, 3)).abs() <= relevance.sum((1, 2, 3)).abs() * (1 + 1e-9)).all()


def timm_copy(tv_model: nn.Module, fused: bool) -> nn.Module:
    """timm's VisionTransformer with the weights of ``tiny_vit`` (the same function, timm's modules)."""
    timm = pytest.importorskip("timm")
    m = timm.models.vision_transformer.VisionTransformer(
        img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
        qkv_bias=True, class_token=True, global_pool="token").double().eval()
    e = tv_model.encoder
    sd = {"cls_token": tv_model.class_token, "pos_embed": e.pos_embedding,
          "patch_embed.proj.weight": tv_model.conv_proj.weight, "patch_embed.proj.bias": tv_model.conv_proj.bias,
          "norm.weight": e.ln.weight, "norm.bias": e.ln.bias,
          "head.weight": tv_model.heads.head.weight, "head.bias": tv_model.heads.head.bias}
    for i, layer in enumerate(e.layers):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": layer.ln_1.weight, p + "norm1.bias": layer.ln_1.bias,
                   p + "attn.qkv.weight": layer.self_attention.in_proj_weight,
                   p + "attn.qkv.bias": layer.self_attention.in_proj_bias,
                   p + "attn.proj.weight": layer.self_attention.out_proj.weight,
                   p + "attn.proj.bias": layer.self_attention.out_proj.bias,
                   p + "norm2.weight": layer.ln_2.weight, p + "norm2.bias": layer.ln_2.bias,
                   p + "mlp.fc1.weight": layer.mlp[0].weight, p + "mlp.fc1.bias": layer.mlp[0].bias,
                   p + "mlp.fc2.weight": layer.mlp[3].weight, p + "mlp.fc2.bias": layer.mlp[3].bias})
    m.load_state_dict({k: v.detach().clone() for k, v in sd.items()})
    for block in m.blocks:
        block.attn.fused_attn = fused
    return m


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("make", [attnlrp, cp_lrp])
def test_timm_vit_gives_the_heatmaps_of_the_same_weights_in_torchvision(fused, make):
    tv, x = tiny_vit(), images()
    tm = timm_copy(tv, fused)
    with torch.no_grad():
        out_tv, out_tm = tv(x), tm(x)
    torch.testing.assert_close(out_tm, out_tv)  # the same function
    target = out_tv.argmax(1)
    torch.testing.assert_close(lrp(tm, x, target, make(1e-6)), lrp(tv, x, target, make(1e-6)), rtol=1e-7, atol=1e-10)


def test_hooks_are_removed_and_the_forward_value_is_kept():
    model, x = tiny_vit(), images(2)
    with torch.no_grad():
        out = model(x)
    lrp(model, x, out.argmax(1), attnlrp())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    from bench.lrp import lrp_hooks

    with lrp_hooks(model, attnlrp(), x=x), torch.no_grad():
        torch.testing.assert_close(model(x), out, rtol=0, atol=0)


def test_what_the_rules_cannot_see_is_refused_by_name():
    model, x = tiny_vit(), images(2)
    from bench.lrp import Epsilon

    with pytest.raises(BenchError, match=r"layer '.*ln_1' \(LayerNorm\) with these rules; for transformers use "
                                         r"method=attnlrp or method=cp_lrp"):
        lrp(model, x, torch.tensor([0, 1]), Epsilon(0.1))

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.head = nn.MultiheadAttention(4, 2, batch_first=True).double(), nn.Linear(4, 3).double()

        def forward(self, x):
            t = x.flatten(2).transpose(1, 2)[..., :4]
            mask = torch.zeros(t.shape[1], t.shape[1], dtype=torch.bool)
            return self.head(self.attn(t, t, t, attn_mask=mask, need_weights=False)[0].mean(1))

    with pytest.raises(BenchError, match=r"attention 'attn' \(MultiheadAttention\) is given a mask"):
        lrp(Masked().eval(), torch.randn(2, 4, 2, 2, dtype=torch.float64), torch.tensor([0, 1]), attnlrp())


def test_the_methods_run_end_to_end():
    import bench

    model = tiny_vit().float()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    for method in ("attnlrp", "cp_lrp"):
        tables = bench.evaluate_explanations(model, x, method=method, mean=0.5, std=0.25, steps=3, repeats=1,
                                             bootstrap=100, patch=7, save_heatmaps=4)
        heat = tables["heatmaps"].heatmap
        assert all(np.isfinite(np.asarray(h)).all() and np.abs(h).sum() > 0 for h in heat)
        assert set(tables["curves"].method) == {method}
