"""LRP for vision transformers (bench/lrp/rules.py's transformer rules, bench/lrp/transformer.py): on a random
torchvision ViT, CP-LRP equals LXT 2.1's own (``lxt.efficient``, its torchvision-ViT map), also with LRP-γ on the
patch embedding and the Linear layers (LXT's ViT example, its Zennit patch), and AttnLRP equals LXT's attention rules
(``divide_gradient`` on q, k, v), to float64 precision and with the same share of the logit reaching the pixels;
each rule equals its formula (the softmax rule with and without its bias term, the uniform rule with and without ε,
identity, LayerNorm/RMSNorm with σ constant); CP-LRP, and AttnLRP without the softmax bias, conserve relevance where
nothing absorbs it; timm's ViT (fused and explicit attention) gives the heatmaps of the same weights in
torchvision's; nn.MultiheadAttention called every way keeps its values; the model is left as it was; the methods
run end to end and check their settings; what the rules cannot see is refused by name."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.lrp import Composite, Epsilon, Gamma, attnlrp, cp_lrp, lrp, lrp_hooks
from bench.lrp.rules import Constant, ConstantScale, Identity, Softmax, Uniform
from bench.lrp.transformer import product, softmax

from conftest import scaled


def tiny_vit(seed: int = 0, biases: bool = True) -> nn.Module:
    """torchvision's ViT on 28×28 grey images: 7×7 patches, 2 layers of width 16, 2 heads, a head of std 0.5 (not
    torchvision's zeros); random non-zero biases, class token and position embedding (or all zero: ``biases=False``),
    LayerNorm weights in [0.5, 1.5]."""
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


# LXT 2.1 in a subprocess (its patches replace torchvision's classes' methods for the whole process), patched as
# bench/perf/attnlrp.py patches it for the speed benchmark (``lxt_patch``: its torchvision map, CP-LRP inside the
# attention; Gradient × Input); "cp_gamma" adds its example's Zennit LRP-γ composite through its Zennit patch; for
# "attnlrp" (LXT's torchvision map has none) the attention with LXT's own rules on q, k and v
# (``lxt_attnlrp_attention``). One process computes the three, in this order.
LXT = textwrap.dedent("""
    import sys, torch
    from torchvision.models import vision_transformer as tv
    from zennit.composites import LayerMapComposite
    import zennit.rules as zr
    from bench.perf.attnlrp import lxt_attnlrp_attention, lxt_patch

    lxt_patch(zennit=True)
    model = tv.VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                                 num_classes=10)
    model.conv_proj = torch.nn.Conv2d(1, 16, kernel_size=7, stride=7)
    model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
    model = model.double().eval()
    x0 = torch.load(sys.argv[2], weights_only=True)

    def explain():
        x = x0.clone().requires_grad_(True)
        out = model(x)
        target = out.argmax(1)
        out.gather(1, target[:, None]).sum().backward()
        return {"R": (x * x.grad).detach(), "target": target, "logit": out.gather(1, target[:, None])[:, 0].detach()}

    results = {"cp": explain()}
    gamma = LayerMapComposite([(torch.nn.Conv2d, zr.Gamma(0.25)), (torch.nn.Linear, zr.Gamma(0.05))])
    gamma.register(model)
    results["cp_gamma"] = explain()
    gamma.remove()
    tv.nn.MultiheadAttention.forward = lxt_attnlrp_attention
    results["attnlrp"] = explain()
    torch.save(results, sys.argv[3])
""")


@pytest.fixture(scope="module")
def lxt(tmp_path_factory):
    pytest.importorskip("lxt")
    pytest.importorskip("zennit")
    tmp = tmp_path_factory.mktemp("lxt")
    (tmp / "lxt_run.py").write_text(LXT)
    torch.save(tiny_vit().state_dict(), tmp / "model.pt")
    torch.save(images(), tmp / "x.pt")
    proc = subprocess.run([sys.executable, str(tmp / "lxt_run.py"), str(tmp / "model.pt"), str(tmp / "x.pt"),
                           str(tmp / "out.pt")], capture_output=True, text=True, timeout=scaled(120),
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    return torch.load(tmp / "out.pt", weights_only=True)


def lxt_gamma_example() -> Composite:
    """LXT's ViT example on torchvision: Zennit's LRP-γ (stabiliser 1e-6) on the Conv2d and the Linear layers that
    run as modules; the attention's projections are functional calls inside torchvision's attention, which Zennit's
    hooks never see, so they keep Gradient × Input (LRP-0) there — named here to get the same rules."""
    model = tiny_vit()
    names = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            names[f"{name}.in_proj"] = names[f"{name}.out_proj"] = Epsilon(0.0)
    base = cp_lrp(0.0)
    return Composite(default=base.default, conv=Gamma(0.25, 1e-6), dense=Gamma(0.05, 1e-6), names=names,
                     elementwise=base.elementwise, norm=base.norm, softmax=base.softmax, product=base.product)


@pytest.mark.parametrize("mode", ["cp", "cp_gamma", "attnlrp"])
def test_equal_to_lxt_on_a_torchvision_vit(mode, lxt, capsys):
    """ε = 0: LXT computes Gradient × Input, i.e. LRP-0 on the linear layers. What remains are stabilisers: LXT's
    identity rule divides by x + 1e-10 (ours by x), its Zennit patch divides each layer's input relevance by
    x + 1e-10·sign(x); measured: below 1e-8 of the heatmap's largest value."""
    composite = {"cp": cp_lrp(0.0), "cp_gamma": lxt_gamma_example(), "attnlrp": attnlrp(0.0)}[mode]
    ref = lxt[mode]
    model, x = tiny_vit(), images()
    ours = lrp(model, x, ref["target"], composite)
    scale = ref["R"].abs().amax(dim=(1, 2, 3), keepdim=True)
    rel = ((ours - ref["R"]).abs() / scale).max().item()
    # conservation as each reports it: the share of the explained logit that reaches the pixels (the rest went to
    # biases, the class token and the position embedding — and, for AttnLRP, to the softmax's bias term)
    logit, ours_sum, lxt_sum = ref["logit"], ours.sum((1, 2, 3)), ref["R"].sum((1, 2, 3))
    with capsys.disabled():
        shares = [np.round((t / logit).numpy(), 6).tolist() for t in (ours_sum, lxt_sum)]
        print(f"\n[{mode}] max |ours − LXT| / max |LXT| = {rel:.1e}; Σ R / logit: ours {shares[0]}, LXT {shares[1]}")
    assert rel <= 1e-5
    assert ((ours_sum - logit).abs() <= (lxt_sum - logit).abs() + 1e-6 * logit.abs()).all()


# ------------------------------------------------------------------------------------------ each rule's formula

def _stab(t: torch.Tensor, epsilon: float) -> torch.Tensor:
    """t + ε·sign(t), sign(0) = +1 (TNNLS eq. 7)."""
    return t + epsilon * torch.where(t >= 0, 1.0, -1.0).to(t.dtype)


def _jacobians(a: torch.Tensor) -> torch.Tensor:
    """J = diag(a) − a aᵀ for every row of a (…, n) → (…, n, n)."""
    return torch.diag_embed(a) - a[..., :, None] * a[..., None, :]


@pytest.mark.parametrize("bias", [True, False])
def test_the_softmax_rule_is_its_formula(bias):
    """AttnLRP Prop. 3.1, with its bias term: R_z = z ⊙ (R_a − a Σ R_a) (LXT's ``softmax``); without it:
    R_z = z ⊙ Jᵀ (R_a / stab(J z)), which conserves relevance."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) * 2
    g = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    zz = z.clone().requires_grad_(True)
    a = softmax(zz, -1, Softmax(bias=bias, epsilon=1e-9))
    (gz,) = torch.autograd.grad(a, zz, g)
    r_a, r_z = a.detach() * g, z * gz
    jac = _jacobians(a.detach())
    if bias:
        expected = z * (r_a - a.detach() * r_a.sum(-1, keepdim=True))
    else:
        jz = (jac @ z[..., None])[..., 0]
        expected = z * (jac.transpose(-2, -1) @ (r_a / _stab(jz, 1e-9))[..., None])[..., 0]
        torch.testing.assert_close(r_z.sum(-1), r_a.sum(-1), rtol=1e-6, atol=1e-9)  # conservative
    torch.testing.assert_close(r_z, expected, rtol=1e-10, atol=1e-12)
    assert not softmax(zz, -1, Constant()).requires_grad  # CP-LRP: the weights are constants


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_the_uniform_rule_is_its_formula(epsilon):
    """AttnLRP eq. 7 / Prop. 3.3: R_a = a ⊙ (R_o / (2 stab(o))) bᵀ, R_b = b ⊙ aᵀ (R_o / (2 stab(o))); with ε = 0
    the gradient halved (LXT's ``divide_gradient``); a constant factor gets none, the other all."""
    gen = torch.Generator().manual_seed(0)
    a0 = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    b0 = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    g = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    o = product(a, b, Uniform(epsilon), scale=0.5)
    ga, gb = torch.autograd.grad(o, (a, b), g)
    o = o.detach()
    s = o * g / _stab(o, epsilon) / 2 * 0.5  # R_o / (2 stab(o)), through the scale
    torch.testing.assert_close(a0 * ga, a0 * (s @ b0.transpose(-2, -1)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b0 * gb, b0 * (a0.transpose(-2, -1) @ s), rtol=1e-10, atol=1e-12)
    (gb1,) = torch.autograd.grad(product(a0, b, Uniform(epsilon)), b, g)  # a held constant: b gets it all
    o1 = a0 @ b0
    torch.testing.assert_close(b0 * gb1, b0 * (a0.transpose(-2, -1) @ (o1 * g / _stab(o1, epsilon))), rtol=1e-10,
                               atol=1e-12)


def test_the_identity_and_norm_rules_are_their_formulas():
    """Identity: R_x = R_y on GELU/SiLU/Tanh. ConstantScale: LayerNorm with σ detached (LXT's ``layer_norm_forward``),
    RMSNorm with the RMS detached (LXT's ``rms_norm_forward``)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 7, 6, generator=gen, dtype=torch.float64)
    x0[0, 0, 0] = 0.0
    g = torch.randn(3, 7, 6, generator=gen, dtype=torch.float64)
    norms = [nn.LayerNorm(6).double(), nn.RMSNorm(6, eps=1e-5).double()]
    for m in norms:
        nn.init.uniform_(m.weight, 0.5, 1.5)
        if getattr(m, "bias", None) is not None:
            nn.init.normal_(m.bias)
    for m in [nn.GELU(), nn.SiLU(), nn.Tanh(), *norms]:
        model = nn.Sequential(m).eval()
        x = x0.clone().requires_grad_(True)
        with lrp_hooks(model, attnlrp(), x=x):
            y = model(x)
        (gx,) = torch.autograd.grad(y, x, g)
        if isinstance(m, nn.LayerNorm):
            ref = x0.clone().requires_grad_(True)
            mean = ref.mean(-1, keepdim=True)
            std = ((ref - mean) ** 2).mean(-1, keepdim=True).add(m.eps).sqrt()
            (expected,) = torch.autograd.grad((ref - mean) / std.detach() * m.weight + m.bias, ref, g)
        elif isinstance(m, nn.RMSNorm):
            ref = x0.clone().requires_grad_(True)
            (expected,) = torch.autograd.grad(ref * torch.rsqrt(ref.pow(2).mean(-1, keepdim=True) + m.eps).detach()
                                              * m.weight, ref, g)
        else:
            expected = torch.where(x0 == 0, 0.0, m(x0) * g / x0)  # R_x = R_y, 0 where x = 0
        torch.testing.assert_close(gx, expected, rtol=1e-10, atol=1e-12, msg=type(m).__name__)
    assert attnlrp().elementwise == Identity() and attnlrp().norm == ConstantScale()


# ------------------------------------------------------------------------------------------------ conservation

class _Block(nn.Module):
    """A pre-norm transformer block on the 9 pixels of 3×3 images with 8 channels as tokens: no bias anywhere, no
    class token (a zero token's query is zero: the softmax's Taylor expansion there is all bias), mean pooling."""

    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(8, bias=False).double(), nn.LayerNorm(8, bias=False).double()
        self.attn = nn.MultiheadAttention(8, 2, bias=False, batch_first=True).double()
        self.mlp = nn.Sequential(nn.Linear(8, 16, bias=False), nn.GELU(), nn.Linear(16, 8, bias=False)).double()
        self.head = nn.Linear(8, 3, bias=False).double()

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        u = self.ln_1(t)
        t = t + self.attn(u, u, u, need_weights=False)[0]
        t = t + self.mlp(self.ln_2(t))
        return self.head(t.mean(1))


def test_cp_lrp_and_attnlrp_without_the_softmax_bias_conserve_relevance_where_nothing_absorbs_it():
    """No bias, class token or position embedding, ε = 0: every rule then passes its relevance on whole, and
    Σ_pixels R = f_c(x) (float64) — for CP-LRP (A constant), and for AttnLRP with the softmax rule without its bias
    term. With the bias term (the paper's rule) the softmax absorbs relevance by design: its sum is compared with
    LXT's instead (above)."""
    model, x = tiny_vit(biases=False), images()
    with torch.no_grad():
        out = model(x)
    target = out.argmax(1)
    logit = out.gather(1, target[:, None])[:, 0]
    relevance = lrp(model, x, target, cp_lrp(0.0))
    np.testing.assert_allclose(relevance.sum((1, 2, 3)), logit, rtol=1e-9)
    # with ε > 0 on the linear layers a little is absorbed by the stabiliser, nothing created
    small = lrp(model, x, target, cp_lrp(0.1))
    assert (small.sum((1, 2, 3)).abs() <= relevance.sum((1, 2, 3)).abs() * (1 + 1e-9)).all()

    torch.manual_seed(0)
    block, x = _Block().eval(), torch.randn(4, 8, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
    target = out.argmax(1)
    logit = out.gather(1, target[:, None])[:, 0]
    no_bias = lrp(block, x, target, attnlrp(0.0, softmax=Softmax(bias=False, epsilon=1e-12)))
    np.testing.assert_allclose(no_bias.sum((1, 2, 3)), logit, rtol=1e-9)
    np.testing.assert_allclose(lrp(block, x, target, cp_lrp(0.0)).sum((1, 2, 3)), logit, rtol=1e-9)
    with_bias = lrp(block, x, target, attnlrp(0.0))
    assert ((with_bias.sum((1, 2, 3)) - logit).abs() > 1e-6 * logit.abs()).all()  # the bias term took its share


# --------------------------------------------------------------------------------------------- timm, the model

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


@pytest.mark.parametrize("epsilon", [0.0, 1e-6])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("make", [attnlrp, cp_lrp])
def test_timm_vit_gives_the_heatmaps_of_the_same_weights_in_torchvision(fused, make, epsilon):
    """timm calls F.scaled_dot_product_attention (fused) or ``@`` and ``softmax`` (explicit); torchvision calls
    F.multi_head_attention_forward: the same rules in all three."""
    tv, x = tiny_vit(), images()
    tm = timm_copy(tv, fused)
    with torch.no_grad():
        out_tv, out_tm = tv(x), tm(x)
    torch.testing.assert_close(out_tm, out_tv)  # the same function
    target = out_tv.argmax(1)
    torch.testing.assert_close(lrp(tm, x, target, make(epsilon)), lrp(tv, x, target, make(epsilon)), rtol=1e-7,
                               atol=1e-10)


def test_timm_attention_with_a_normalisation_runs_and_with_a_gate_is_refused():
    """q/k normalisation (``qk_norm``) are LayerNorm modules: their rule applies; a gate is refused by name."""
    timm = pytest.importorskip("timm")
    x = images(2)
    torch.manual_seed(0)
    m = timm.models.vision_transformer.VisionTransformer(
        img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=16, depth=1, num_heads=2,
        qk_norm=True).double().eval()
    with torch.no_grad():
        out = m(x)
    with lrp_hooks(m, attnlrp(), x=x), torch.no_grad():
        torch.testing.assert_close(m(x), out, rtol=1e-12, atol=1e-14)
    relevance = lrp(m, x, out.argmax(1), attnlrp())
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    m.blocks[0].attn.gate = nn.Linear(16, 16).double()
    with pytest.raises(BenchError, match=r"attention 'blocks.0.attn' \(Attention\) has a gate"):
        lrp(m, x, torch.tensor([0, 1]), attnlrp())


def test_the_model_is_left_as_it_was_and_its_forward_values_kept():
    """Hooks removed, no torch-function mode left active (also after a refusal), parameters untouched, and inside the
    explainer the model computes its own values (the attention by the rules' functions: the same arithmetic, up to
    rounding)."""
    model, x = tiny_vit(), images(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(x)
    lrp(model, x, out.argmax(1), attnlrp())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch._C._len_torch_function_stack() == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with lrp_hooks(model, attnlrp(), x=x), torch.no_grad():
        torch.testing.assert_close(model(x), out, rtol=1e-12, atol=1e-14)
    masked = nn.Sequential(_Masked()).eval()
    with pytest.raises(BenchError):
        lrp(masked, torch.randn(2, 4, 2, 2, dtype=torch.float64), torch.tensor([0, 1]), attnlrp())
    assert torch._C._len_torch_function_stack() == 0
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in masked.modules())


class _MHA(nn.Module):
    """nn.MultiheadAttention called as ``kind`` says: self-attention batch-first or not, unbatched, cross-attention,
    with its attention weights."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.attn = nn.MultiheadAttention(8, 2, batch_first=kind != "sequence_first").double()
        self.head = nn.Linear(8, 3).double()

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)  # (B, 9, 8)
        if self.kind == "sequence_first":
            o = self.attn(*(t.transpose(0, 1),) * 3, need_weights=False)[0].transpose(0, 1)
        elif self.kind == "unbatched":  # one image: (L, E)
            o = self.attn(t[0], t[0], t[0], need_weights=False)[0][None]
        elif self.kind == "cross":
            o = self.attn(t, t.flip(1), t * 0.5, need_weights=False)[0]
        else:
            o, self.weights = self.attn(t, t, t, need_weights=True)
        return self.head(o.mean(1))


def test_the_attention_arguments_are_torchs():
    import inspect

    from bench.lrp.transformer import _mha_arguments

    assert list(inspect.signature(_mha_arguments).parameters) == \
        list(inspect.signature(F.multi_head_attention_forward).parameters)


@pytest.mark.parametrize("make", [attnlrp, cp_lrp])
@pytest.mark.parametrize("kind", ["sequence_first", "unbatched", "cross", "weights"])
def test_multihead_attention_called_every_way(kind, make):
    """The module's outputs (and attention weights) are its own inside the explainer; the heatmap is finite."""
    torch.manual_seed(0)
    model, x = _MHA(kind).eval(), torch.randn(1 if kind == "unbatched" else 2, 8, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        weights = getattr(model, "weights", None)
    with lrp_hooks(model, make(), x=x), torch.enable_grad():
        torch.testing.assert_close(model(x.clone().requires_grad_(True)), out, rtol=1e-12, atol=1e-14)
        if weights is not None:
            torch.testing.assert_close(model.weights, weights, rtol=1e-12, atol=1e-14)
    relevance = lrp(model, x, out.argmax(1), make())
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ refusals

class _Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.head = nn.MultiheadAttention(4, 2, batch_first=True).double(), nn.Linear(4, 3).double()

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)[..., :4]
        mask = torch.zeros(t.shape[1], t.shape[1], dtype=torch.bool)
        return self.head(self.attn(t, t, t, attn_mask=mask, need_weights=False)[0].mean(1))


class _OwnAttention(nn.Module):
    """An attention module the rules do not know (its own class, F.scaled_dot_product_attention)."""

    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(4, 12).double(), nn.Linear(4, 4).double()

    def forward(self, t):
        q, k, v = self.qkv(t).unsqueeze(1).chunk(3, -1)
        return self.proj(F.scaled_dot_product_attention(q, k, v)[:, 0])


class _Opaque(nn.Module):
    def __init__(self, functional_gelu: bool = False):
        super().__init__()
        self.functional_gelu = functional_gelu
        self.norm, self.attn, self.head = nn.LayerNorm(4).double(), _OwnAttention(), nn.Linear(4, 3).double()

    def forward(self, x):
        t = self.norm(x.flatten(2).transpose(1, 2)[..., :4])
        t = F.gelu(t) if self.functional_gelu else self.attn(t)
        return self.head(t.mean(1))


def test_what_the_rules_cannot_see_is_refused_by_name():
    model, x = tiny_vit(), images(2)
    with pytest.raises(BenchError, match=r"layer '.*ln_1' \(LayerNorm\) with these rules; for transformers use "
                                         r"method=attnlrp or method=cp_lrp"):
        lrp(model, x, torch.tensor([0, 1]), Epsilon(0.1))
    x4 = torch.randn(2, 4, 2, 2, dtype=torch.float64)
    with pytest.raises(BenchError, match=r"attention 'attn' \(MultiheadAttention\) is given a mask"):
        lrp(_Masked().eval(), x4, torch.tensor([0, 1]), attnlrp())
    for model, what in ((_Opaque(), r"'attn' \(_OwnAttention\) calls scaled_dot_product_attention"),
                        (_Opaque(functional_gelu=True), r"'' \(_Opaque\) calls gelu")):
        with pytest.raises(BenchError, match=f"LRP for transformers: {what}, which no rule covers") as err:
            lrp(model.eval(), x4, torch.tensor([0, 1]), attnlrp())
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ the methods

def test_the_methods_run_end_to_end_and_check_their_settings():
    import bench
    from bench import plugins

    model = tiny_vit().float()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    for method in ("attnlrp", "cp_lrp"):
        tables = bench.evaluate_explanations(model, x, method=method, mean=0.5, std=0.25, steps=3, repeats=1,
                                             bootstrap=100, patch=7, save_heatmaps=4)
        heat = tables["heatmaps"].heatmap
        assert all(np.isfinite(np.asarray(h)).all() and np.abs(h).sum() > 0 for h in heat)
        assert set(tables["curves"].method) == {method}
    cls = plugins.load_class("methods", "transformer_lrp")
    m = cls(attention="attnlrp", conv_gamma=0.25, dense_gamma=0.05, softmax_bias=False)
    assert m.composite.conv == Gamma(0.25) and m.composite.dense == Gamma(0.05)
    assert m.composite.softmax == Softmax(bias=False) and cls(attention="cp").composite.softmax == Constant()
    for bad, message in (({"attention": "both"}, "method.params.attention must be one of attnlrp, cp"),
                         ({"dense_gamma": -1}, "method.params.dense_gamma must be a number ≥ 0"),
                         ({"attention": "cp", "softmax_bias": False}, "softmax_bias=false is AttnLRP's")):
        with pytest.raises(BenchError, match=message):
            cls(**bad)
