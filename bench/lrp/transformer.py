"""LRP through transformers on the mechanism of propagate.py: AttnLRP (Achtibat et al., ICML 2024) and CP-LRP
(Ali et al., ICML 2022), for torchvision's ``VisionTransformer`` (``nn.MultiheadAttention``) and timm's
(``timm.models.vision_transformer.Attention``, fused or not).

Convention as in propagate.py: a tensor a carries relevance R_a = a ⊙ g_a, g the modified gradient; each rule
below is a backward that returns g_x with x ⊙ g_x = R_x. Linear layers (the attention's projections included)
get the composite's rule (LRP-ε by default); residual additions split relevance in proportion to the summands
without a rule; a class token or position embedding added to the tokens absorbs its share, as a bias does.

- **Element-wise non-linearities** (GELU, SiLU, Tanh) — the identity rule (AttnLRP eq. 9): R_x = R_y, i.e.
  g_x = g_y ⊙ y / x (0 where x = 0).
- **LayerNorm / RMSNorm** — normalisation treated as a constant (AttnLRP Sec. 3.3.2; CP-LRP Sec. 4): the
  layer is linear in x with the standard deviation (RMS) held at its value, y = (x − mean(x)) / σ ⊙ w + b, and
  relevance passes this linear map's gradient (a bias absorbs its share).
- **The attention core** o = softmax(q kᵀ · s) v (s = 1/√d), per head —
  ``attnlrp``: the softmax's own rule (AttnLRP eq. 13: R_z = z ⊙ (R_A − A Σ R_A), which is its gradient under
  this convention) and the uniform rule on both matrix products (AttnLRP eq. 7: each factor of a bilinear
  product gets half its relevance): g_v = Aᵀ g_o / 2, and q, k receive the softmax's relevance halved twice
  (1/4 each, as LXT's implementation divides them);
  ``cp``: the attention weights A are constants (CP-LRP): g_v = Aᵀ g_o, and no relevance reaches q and k.

The core is one autograd Function whose backward is the rule, so no matrix product of the attention is left
for the unhooked-operation check of propagate.py; the module's output keeps its own forward value exactly (the
rules change only the backward pass). Masks, extra key/value biases, zero attention, a gate or a normalisation
inside the attention are refused by name.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BenchError

ATTENTION_MODES = ("attnlrp", "cp")
IDENTITY_RULE = (nn.GELU, nn.SiLU, nn.Tanh)
NORMS = (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def timm_attention_class() -> Optional[type]:
    try:
        from timm.models.vision_transformer import Attention
    except ImportError:
        return None
    return Attention


def vit_containers() -> tuple[type, ...]:
    """Containers whose parameters of their own are token embeddings added or concatenated to the tokens (a
    class token, position embeddings) or a per-channel scale (timm's LayerScale): relevance passes them without a
    rule (a bias's share is absorbed; a scale is linear)."""
    found: list[type] = []
    try:
        from torchvision.models.vision_transformer import Encoder, VisionTransformer

        found += [VisionTransformer, Encoder]
    except ImportError:
        pass
    try:
        from timm.models.vision_transformer import LayerScale, VisionTransformer as TimmViT

        found += [TimmViT, LayerScale]
    except ImportError:
        pass
    return tuple(found)


def is_drop_path(module: nn.Module) -> bool:
    """timm's stochastic depth: the identity in eval mode (checked: a module in training mode is refused)."""
    if type(module).__name__ != "DropPath":
        return False
    if module.training:
        raise BenchError(f"DropPath {module} is in training mode; LRP needs the model in eval mode")
    return True


# ------------------------------------------------------------------------------------------ steps

class IdentityStep:
    """Identity rule on an element-wise function y = f(x): R_x = R_y."""

    def __init__(self, y: torch.Tensor) -> None:
        self.y = y

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(x == 0, torch.zeros_like(x), self.y / torch.where(x == 0, torch.ones_like(x), x))
        return g * ratio


class NormStep:
    """LayerNorm / RMSNorm with σ (RMS) held constant: the gradient of the linear map x ↦ (x − mean) / σ ⊙ w."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        m = self.module
        dims = tuple(range(-len(m.normalized_shape), 0))
        h = g * m.weight if m.weight is not None else g
        eps = m.eps if m.eps is not None else torch.finfo(x.dtype).eps
        if isinstance(m, nn.LayerNorm):
            sigma = (x.var(dims, unbiased=False, keepdim=True) + eps).sqrt()
            return (h - h.mean(dims, keepdim=True)) / sigma
        return h / (x.pow(2).mean(dims, keepdim=True) + eps).sqrt()


class _AttentionCore(torch.autograd.Function):
    """o = softmax(q kᵀ · scale) v over the last two dimensions (…, L, d); the backward is the rule of
    ``mode`` (module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, scale: float, mode: str):
        a = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)
        ctx.save_for_backward(q, k, v, a)
        ctx.scale, ctx.mode = scale, mode
        return a @ v

    @staticmethod
    def backward(ctx, g):
        q, k, v, a = ctx.saved_tensors
        if ctx.mode == "cp":  # A constant: the value path only
            return None, None, a.transpose(-2, -1) @ g, None, None
        g_v = (a.transpose(-2, -1) @ g) / 2            # uniform rule on A·v: half to v …
        g_a = (g @ v.transpose(-2, -1)) / 2            # … half to A
        g_z = a * (g_a - (a * g_a).sum(-1, keepdim=True))  # the softmax's rule (its gradient)
        g_z = g_z * ctx.scale / 2                      # uniform rule on q·kᵀ: half to each factor
        return g_z @ k, g_z.transpose(-2, -1) @ q, g_v, None, None


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mode: str) -> torch.Tensor:
    return _AttentionCore.apply(q, k, v, scale, mode)


def _value_of(original: torch.Tensor, computed: torch.Tensor) -> torch.Tensor:
    """``original``'s values with ``computed``'s backward (the re-computation differs only in rounding)."""
    return original.detach() + (computed - computed.detach())


class _Projection(nn.Linear):
    """A slice of ``nn.MultiheadAttention``'s ``in_proj`` as a Linear layer for the rule's step (never part of the
    model: it holds references to the model's own parameters' slices)."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)


def _refuse(state, module: nn.Module, what: str) -> None:
    raise BenchError(f"LRP for transformers: attention {state.describe(module)} {what}; the attention rules "
                     "cannot see through it — use a gradient-based method for this model")


def mha_hook(state, name: str, mode: str, relay, linear_step):
    """Forward hook (with kwargs) of an ``nn.MultiheadAttention``: the attention recomputed with its own weights —
    the input projections as relayed Linear layers (the composite's rule), the core by ``mode``, the output
    projection through its own (hooked) module — with the module's output values kept."""
    def hook(module: nn.MultiheadAttention, args, kwargs, output):
        names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
                 "is_causal")
        given = {**dict(zip(names, args)), **kwargs}
        if given.get("key_padding_mask") is not None or given.get("attn_mask") is not None or \
                given.get("is_causal"):
            _refuse(state, module, "is given a mask")
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            _refuse(state, module, "has separate key/value sizes, key/value biases or zero attention")
        state.count(module)
        q_in, k_in, v_in = given["query"], given["key"], given["value"]
        if not module.batch_first:
            q_in, k_in, v_in = (t.transpose(0, 1) for t in (q_in, k_in, v_in))
        e, heads = module.embed_dim, module.num_heads
        w, b = module.in_proj_weight, module.in_proj_bias
        projected = []
        for i, t in enumerate((q_in, k_in, v_in)):
            proj = _Projection(w[i * e:(i + 1) * e], None if b is None else b[i * e:(i + 1) * e])
            with torch.no_grad():
                z = F.linear(t, proj.weight, proj.bias)
            rule = state.composite.rule(f"{name}.in_proj", proj, False)
            projected.append(relay(t, z, linear_step(state, proj, rule, z.clone())))
        bsz, length = q_in.shape[0], q_in.shape[1]
        q, k, v = (p.reshape(bsz, p.shape[1], heads, e // heads).transpose(1, 2) for p in projected)
        o = attention_core(q, k, v, (e // heads) ** -0.5, mode).transpose(1, 2).reshape(bsz, length, e)
        out = module.out_proj(o)  # hooked: the composite's rule
        if not module.batch_first:
            out = out.transpose(0, 1)
        first = output[0] if isinstance(output, tuple) else output
        kept = _value_of(first, out)
        return (kept, *output[1:]) if isinstance(output, tuple) else kept
    return hook


def timm_attention_hook(state, name: str, mode: str, relay, linear_step):
    """Forward hook (with kwargs) of timm's ``Attention``: q, k, v from its ``qkv`` layer's relayed output (that
    layer's own hook gave it the composite's rule), the core by ``mode``, and the ``proj`` layer's rule applied
    again to this core, with the module's output values kept."""
    def hook(module, args, kwargs, output):
        if kwargs.get("attn_mask") is not None or kwargs.get("is_causal") or (len(args) > 1 and args[1] is not None):
            _refuse(state, module, "is given a mask")
        if getattr(module, "gate", None) is not None:
            _refuse(state, module, "has a gate")
        for part in ("q_norm", "k_norm", "norm"):
            if not isinstance(getattr(module, part, nn.Identity()), nn.Identity):
                _refuse(state, module, f"normalises inside ({part})")
        qkv = state.outputs.get(module.qkv)
        if qkv is None:
            _refuse(state, module, "does not call its qkv layer")
        state.count(module)
        bsz, n = qkv.shape[0], qkv.shape[1]
        q, k, v = qkv.reshape(bsz, n, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        o = attention_core(q, k, v, module.scale, mode).transpose(1, 2).reshape(bsz, n, -1)
        proj = module.proj
        with torch.no_grad():
            z = F.linear(o, proj.weight, proj.bias)
        rule = state.composite.rule(f"{name}.proj", proj, False)
        out = relay(o, z, linear_step(state, proj, rule, z.clone()))
        return _value_of(output, out)
    return hook


def identity_hook(relay):
    def hook(module, inputs, output):
        return relay(inputs[0], output.detach(), IdentityStep(output.detach()))
    return hook


def norm_hook(relay):
    def hook(module, inputs, output):
        return relay(inputs[0], output.detach(), NormStep(module))
    return hook
