"""The rules of a transformer's operations (bench/lrp/rules.py: ``Identity``, ``ConstantScale``, ``Softmax``,
``Constant``, ``Uniform``) on the mechanism of propagate.py — AttnLRP (Achtibat et al., ICML 2024) and CP-LRP
(Ali et al., ICML 2022) for torchvision's ``VisionTransformer`` (``nn.MultiheadAttention``) and timm's
(``timm.models.vision_transformer.Attention``, fused or explicit).

Convention as in propagate.py: a tensor a carries relevance R_a = a ⊙ g_a, g the modified gradient; each rule is
a backward that returns g_x with x ⊙ g_x = R_x. Linear layers, the attention's projections included, get the
composite's rule; LRP-0 there is the layer's own gradient (as LXT's Gradient × Input), so such a layer needs no
hook. Residual additions need no rule: the gradient of a sum splits relevance in proportion to the summands, which
is LXT's ``add2`` ε-rule at ε = 0 (a class token or position embedding added to the tokens absorbs its share, as a
bias does).

- **Element-wise non-linearities** (GELU, SiLU, Tanh modules), ``Identity``: the ratio f(x) / x is computed in the
  forward pass and the backward multiplies by it.
- **LayerNorm / RMSNorm** modules, ``ConstantScale``: the gradient of x ↦ (x − mean x) / σ ⊙ w with σ constant
  (1/σ as the layer's forward pass saved it).
- **The attention**: softmax(q kᵀ · s) v is evaluated by this module's functions — the products as ``_Product``
  (``Uniform``), the softmax as ``_SoftmaxRule`` (``Softmax``; ``Constant``: without gradient). They replace the
  attention's own computation *in the explainer's forward pass only*, through a ``TorchFunctionMode``
  (``TransformerOps``, active inside the attention modules and modules of unknown types) that sees the calls the
  attention modules make: torchvision's ``nn.MultiheadAttention`` calls ``F.multi_head_attention_forward``,
  evaluated here with the module's own weights (the input projection as a linear layer with the composite's rule,
  the output projection through its own module); timm's ``Attention`` calls ``F.scaled_dot_product_attention``
  (fused) or ``@`` and ``softmax`` (explicit), each replaced by its rule. The model is never modified, and nothing
  is computed twice.

What the rules cannot see is refused by name as it is called: the mode refuses an attention, softmax, matrix
product, functional linear layer or convolution, normalisation or element-wise non-linearity called outside the
modules whose rules cover it, naming the calling module (modules of other than known types are tracked by
pre-hooks, and the mode is active inside them). Masks, extra key/value biases, zero attention, separate projection
weights and a gate are refused too.
"""

from __future__ import annotations

import functools
import weakref
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import BenchError
from .rules import Constant, Softmax, Uniform, stabilize

ELEMENTWISE = (nn.GELU, nn.SiLU, nn.Tanh)
NORMS = (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
SUPPORTED = ("attention: torchvision's nn.MultiheadAttention, timm's vision_transformer.Attention; element-wise: "
             "GELU, SiLU, Tanh; normalisation: LayerNorm, RMSNorm")


@functools.lru_cache(maxsize=None)
def timm_attention_class() -> Optional[type]:
    try:
        from timm.models.vision_transformer import Attention
    except ImportError:
        return None
    return Attention


def attention_classes() -> tuple[type, ...]:
    timm_attention = timm_attention_class()
    return (nn.MultiheadAttention,) + ((timm_attention,) if timm_attention is not None else ())


@functools.lru_cache(maxsize=None)
def known_containers() -> tuple[type, ...]:
    """Containers whose own forward calls nothing TransformerOps watches (only their children do): not watched (the
    exact types; a subclass may have a forward of its own)."""
    found: list[type] = [nn.Sequential, nn.ModuleList]
    try:
        from torchvision.models.vision_transformer import Encoder, EncoderBlock, MLPBlock, VisionTransformer

        found += [VisionTransformer, Encoder, EncoderBlock, MLPBlock]
    except ImportError:
        pass
    try:
        from timm.layers import Mlp, PatchEmbed
        from timm.models.vision_transformer import Block, VisionTransformer as TimmViT

        found += [TimmViT, Block, Mlp, PatchEmbed]
    except ImportError:
        pass
    return tuple(found)


@functools.lru_cache(maxsize=None)
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


# ------------------------------------------------------------------------------------ element-wise and norms

class IdentityStep:
    """``Identity`` on y = f(x): g_x = g_y ⊙ f(x) / x, the ratio computed in the forward pass (0 where x = 0: the
    non-linearities here have f(0) = 0). Keeps no reference to y, so y goes downstream uncopied."""

    keeps_value = False

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            self.ratio = torch.div(y, x).nan_to_num_(0.0, 0.0, 0.0)

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        ratio, self.ratio = self.ratio, None
        if ratio is None:
            raise RuntimeError("an LRP step ran twice (backward through the same graph twice)")
        return ratio.mul_(g)


class NormStep:
    """``ConstantScale`` on LayerNorm / RMSNorm: the gradient of x ↦ (x − mean x) / σ ⊙ w (x ↦ x / rms ⊙ w) with σ
    (rms) held at its value."""

    keeps_value = False

    def __init__(self, module: nn.Module, output: torch.Tensor) -> None:
        self.module = module
        # 1/σ as the layer's own forward pass saved it for its gradient (LayerNorm), else recomputed in the backward
        node = output.grad_fn
        self.rstd = getattr(node, "_saved_result2", None) if type(node).__name__.startswith("NativeLayerNorm") \
            else None

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        m, rstd, self.rstd = self.module, self.rstd, None
        shape = tuple(m.normalized_shape)
        dims = tuple(range(-len(shape), 0))
        h = g * m.weight if m.weight is not None else g.clone()
        eps = m.eps if m.eps is not None else torch.finfo(x.dtype).eps
        if isinstance(m, nn.LayerNorm):
            if rstd is None or rstd.shape != x.shape[:x.dim() - len(shape)] + (1,) * len(shape):
                rstd = torch.native_layer_norm(x, shape, None, None, eps)[2]  # faster than var_mean
            h.sub_(h.mean(dims, keepdim=True))
        else:
            rstd = x.pow(2).mean(dims, keepdim=True).add_(eps).rsqrt_()
        return h.mul_(rstd.to(h.dtype))


# ---------------------------------------------------------------------------------------------- attention

class _Product(torch.autograd.Function):
    """o = (a @ b) · scale; backward: the ``Uniform`` rule — each factor that needs a gradient gets g' = g / n
    (ε = 0), or g ⊙ o / (n · stab(o)), through the product's own transposes."""

    @staticmethod
    def forward(ctx, a, b, rule: Uniform, scale: float):
        o = torch.matmul(a, b)
        if scale != 1.0:
            o.mul_(scale)
        ctx.n = int(ctx.needs_input_grad[0]) + int(ctx.needs_input_grad[1])
        ctx.scale, ctx.epsilon = scale, rule.epsilon
        ctx.save_for_backward(a, b, o if rule.epsilon else None)
        return o

    @staticmethod
    def backward(ctx, g):
        a, b, o = ctx.saved_tensors
        if ctx.epsilon:
            s = g * (o / stabilize(o, ctx.epsilon)) * (ctx.scale / ctx.n)
        else:
            s = g * (ctx.scale / ctx.n)
        ga = torch.matmul(s, b.transpose(-2, -1)).sum_to_size(a.shape) if ctx.needs_input_grad[0] else None
        gb = torch.matmul(a.transpose(-2, -1), s).sum_to_size(b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb, None, None


class _SoftmaxRule(torch.autograd.Function):
    """a = softmax(z); backward: the ``Softmax`` rule — with bias, Jᵀ g (the softmax's gradient); without,
    Jᵀ (a ⊙ g / stab(J z)), J = diag(a) − a aᵀ."""

    @staticmethod
    def forward(ctx, z, dim: int, rule: Softmax):
        a = torch.softmax(z, dim)
        ctx.dim, ctx.epsilon = dim, rule.epsilon
        ctx.save_for_backward(a, None if rule.bias else z)
        return a

    @staticmethod
    def backward(ctx, g):
        a, z = ctx.saved_tensors
        if z is not None:  # without the bias term: R_a / stab(J z), J z = a ⊙ (z − Σ a z)
            jz = a * (z - (a * z).sum(ctx.dim, keepdim=True))
            g = a * g / stabilize(jz, ctx.epsilon)
        return torch.ops.aten._softmax_backward_data(g, a, ctx.dim, a.dtype), None, None


class _Heads(torch.autograd.Function):
    """A packed projection's output (B, L, 3·H·d) → q, k, v as (B, H, L, d), contiguous, in one copy; the backward
    writes the three gradients into one (B, L, 3, H, d) tensor (one pass; a gradient that is None is 0)."""

    @staticmethod
    def forward(ctx, qkv, heads: int):
        ctx.set_materialize_grads(False)
        b, n, e3 = qkv.shape
        ctx.shape = (b, n, 3, heads, e3 // (3 * heads))
        return qkv.view(ctx.shape).permute(2, 0, 3, 1, 4).contiguous().unbind(0)

    @staticmethod
    def backward(ctx, *grads):
        shape = ctx.shape
        g = next(t for t in grads if t is not None)
        out = g.new_empty(shape)
        for i, t in enumerate(grads):
            if t is None:
                out[:, :, i].zero_()
            else:
                out[:, :, i].copy_(t.transpose(1, 2))
        return out.view(shape[0], shape[1], -1), None


def product(a: torch.Tensor, b: torch.Tensor, rule: Uniform, scale: float = 1.0) -> torch.Tensor:
    return _Product.apply(a, b, rule, scale)


def softmax(z: torch.Tensor, dim: int, rule) -> torch.Tensor:
    if isinstance(rule, Constant):
        with torch.no_grad():
            return torch.softmax(z, dim)
    return _SoftmaxRule.apply(z, dim, rule)


class _Attention(torch.autograd.Function):
    """o = softmax(q kᵀ · scale) v over the last two dimensions as one function, the backward by the rules: ``Uniform``
    on A v (with ``softmax`` None — A constant — v gets it all), ``Softmax`` on A, ``Uniform`` on q kᵀ — the same
    arithmetic as ``product`` ∘ ``softmax`` ∘ ``product``, with fewer steps (timm's explicit attention uses those)."""

    @staticmethod
    def forward(ctx, q, k, v, scale: float, softmax_rule: Optional[Softmax], product_rule: Uniform):
        z = torch.matmul(q, k.transpose(-2, -1)).mul_(scale)
        a = torch.softmax(z, -1)
        o = torch.matmul(a, v)
        ctx.scale, ctx.softmax, ctx.epsilon = scale, softmax_rule, product_rule.epsilon
        # A carries relevance (through the softmax to q and k): the product A v is then split between its factors
        ctx.through_a = softmax_rule is not None and (ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        keep_z = ctx.through_a and (not softmax_rule.bias or product_rule.epsilon)
        ctx.save_for_backward(q, k, v, a, z if keep_z else None, o if product_rule.epsilon else None)
        ctx.mark_non_differentiable(a)  # the weights, for need_weights: no relevance through them
        ctx.set_materialize_grads(False)
        return o, a

    @staticmethod
    def backward(ctx, g, _):
        if g is None:
            return (None,) * 6
        q, k, v, a, z, o = ctx.saved_tensors
        eps, rule, through_a = ctx.epsilon, ctx.softmax, ctx.through_a
        s = g * (o / stabilize(o, eps)) if eps else g
        if through_a:
            s = s / 2
        gv = torch.matmul(a.transpose(-2, -1), s)
        if not through_a:
            return None, None, gv, None, None, None
        ga = torch.matmul(s, v.transpose(-2, -1))
        if not rule.bias:  # without the bias term: R_a / stab(J z), J z = a ⊙ (z − Σ a z)
            jz = a * (z - (a * z).sum(-1, keepdim=True))
            ga = a * ga / stabilize(jz, rule.epsilon)
        gz = torch.ops.aten._softmax_backward_data(ga, a, -1, a.dtype)
        gz = gz * (z / stabilize(z, eps)) * (ctx.scale / 2) if eps else gz.mul_(ctx.scale / 2)
        return torch.matmul(gz, k), torch.matmul(gz.transpose(-2, -1), q), gv, None, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, composite
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(q kᵀ · scale) v, the attention weights) over the last two dimensions, by the composite's rules."""
    q, k, v = (t.contiguous() for t in (q, k, v))  # once: the products' batches are then views, forward and back
    if isinstance(composite.softmax, Constant):  # A constant: q and k get no relevance, v all of it
        q, k = q.detach(), k.detach()
    softmax_rule = None if isinstance(composite.softmax, Constant) else composite.softmax
    return _Attention.apply(q, k, v, scale, softmax_rule, composite.product)


# ------------------------------------------------------------------------------- the explainer's forward pass

_PROJECTIONS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class _Projection(nn.Linear):
    """``nn.MultiheadAttention``'s input projection (or a slice of it) as a Linear layer for a rule's step; never
    part of the model (it refers to the model's parameters, or to slices of them)."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight.detach(), False)
        if bias is None or isinstance(bias, nn.Parameter):
            self.bias = bias
        else:
            self.bias = nn.Parameter(bias.detach(), False)


def _mha_arguments(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
                   add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
                   need_weights=True, attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
                   k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                   is_causal=False) -> dict:
    """F.multi_head_attention_forward's arguments by name (its signature; tests/test_attnlrp.py checks it)."""
    return locals()


def _sdpa_arguments(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa


def _call(funcs: dict, kind: str, names: tuple[str, ...], objects: tuple = ()) -> None:
    for name in names:
        for owner in (torch, F, torch.Tensor, torch._C.TensorBase):
            if hasattr(owner, name):
                funcs[getattr(owner, name)] = kind
    for obj in objects:
        funcs[obj] = kind


_KINDS: dict = {}
_call(_KINDS, "mha", ("multi_head_attention_forward",))
_call(_KINDS, "sdpa", ("scaled_dot_product_attention",))
_call(_KINDS, "matmul", ("matmul", "bmm", "baddbmm", "einsum", "__matmul__", "__rmatmul__", "mm", "addmm", "mv",
                         "addmv", "addbmm", "tensordot", "chain_matmul", "bilinear"))
_call(_KINDS, "layer", ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                        "conv_transpose3d", "convolution"))
_call(_KINDS, "softmax", ("softmax", "_softmax", "log_softmax"))
_call(_KINDS, "elementwise", ("gelu", "silu", "tanh", "tanh_", "sigmoid", "mish", "softplus", "hardswish"))
_call(_KINDS, "norm", ("layer_norm", "rms_norm", "native_layer_norm", "group_norm", "instance_norm", "embedding"))
_call(_KINDS, "batchnorm", ("batch_norm", "native_batch_norm"))
_call(_KINDS, "maxpool", ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "adaptive_max_pool2d"))


class TransformerOps(TorchFunctionMode):
    """Active while a watched module's forward runs in the explainer — an attention module, or a module of a type
    not known to call nothing watched itself (propagate.py's hooks enter and leave it): replaces the attention
    computations of the attention modules by the rules' functions, and refuses, by the calling module's name, the
    operations of these kinds that no rule covers. ``state.stack`` is the chain of running modules."""

    def __init__(self, state, relay_linear: Callable) -> None:
        super().__init__()
        self.state, self.relay_linear = state, relay_linear
        self.timm_attention = timm_attention_class()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _KINDS.get(func)
        if kind is None:
            return func(*args, **kwargs)
        module = self.state.stack[-1]
        composite = self.state.composite
        name = getattr(func, "__name__", str(func))
        if kind == "mha" and isinstance(module, nn.MultiheadAttention) and composite.softmax is not None:
            return self._mha(module, args, kwargs)
        timm = self.timm_attention is not None and isinstance(module, self.timm_attention) and \
            composite.softmax is not None
        if kind == "sdpa" and timm:
            q, k, v, mask, dropout, causal, scale, gqa = _sdpa_arguments(*args, **kwargs)
            if mask is not None or causal:
                _refuse(self.state, module, "is given a mask")
            if dropout or gqa:
                _refuse(self.state, module, "uses attention dropout or grouped queries")
            return attention(q, k, v, q.shape[-1] ** -0.5 if scale is None else scale, composite)[0]
        if kind == "matmul" and timm and name in ("matmul", "__matmul__") and not kwargs:
            return product(args[0], args[1], composite.product)
        if kind == "softmax" and timm and name == "softmax":
            z = args[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            dtype = args[2] if len(args) > 2 else kwargs.get("dtype")
            if dim is None:
                _refuse(self.state, module, "calls softmax without a dimension")
            return softmax(z if dtype is None else z.to(dtype), dim, composite.softmax)
        if kind == "elementwise" and isinstance(module, ELEMENTWISE) and composite.elementwise is not None:
            return func(*args, **kwargs)  # the module's own function; its hook applies the rule
        if kind == "norm" and isinstance(module, NORMS) and composite.norm is not None:
            return func(*args, **kwargs)
        if kind == "maxpool" and (self.state.maxpool == "wta" or isinstance(module, nn.MaxPool2d)):
            return func(*args, **kwargs)  # winner-take-all is the gradient; proportional: the module's hook
        if kind == "batchnorm" and isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return func(*args, **kwargs)  # its hook merges or bypasses it (propagate.py)
        if kind == "layer" and len(args) > 1 and id(args[1]) in self.state.layer_weights:
            return func(*args, **kwargs)  # a Conv2d/Linear module's own call (its hook, or autograd, applies the rule)
        raise BenchError(f"LRP for transformers: {self.state.describe(module)} calls {name}, which no rule covers "
                         f"there (the rules see {SUPPORTED}) — use a gradient-based method for this model")

    def _mha(self, module: nn.MultiheadAttention, args, kwargs):
        """``F.multi_head_attention_forward`` of ``module``, by the rules: (L, B, E) inputs as torch passes them."""
        state = self.state
        try:
            p = _mha_arguments(*args, **kwargs)
        except TypeError as exc:  # a torch whose F.multi_head_attention_forward takes other arguments
            _refuse(state, module, f"is called with arguments this code does not know ({exc})")
        if p["key_padding_mask"] is not None or p["attn_mask"] is not None or p["is_causal"]:
            _refuse(state, module, "is given a mask")
        if p["bias_k"] is not None or p["bias_v"] is not None or p["add_zero_attn"] or \
                p["use_separate_proj_weight"] or p["static_k"] is not None or p["static_v"] is not None:
            _refuse(state, module, "has separate key/value sizes, key/value biases, static keys or zero attention")
        if p["training"] and p["dropout_p"] > 0:
            _refuse(state, module, "is in training mode with dropout")
        if p["in_proj_weight"] is not module.in_proj_weight or p["out_proj_weight"] is not module.out_proj.weight:
            _refuse(state, module, "is called with weights that are not its own")
        query, key, value = p["query"], p["key"], p["value"]
        same = query is key and key is value
        batched = query.dim() == 3
        # batch first inside: nn.MultiheadAttention(batch_first=True) passes its own (B, L, E) tensors transposed
        query, key, value = (t.transpose(0, 1) if batched else t.unsqueeze(0) for t in (query, key, value))
        bsz, length, e = query.shape
        heads = p["num_heads"]
        d = e // heads
        name = state.names.get(module, "?")
        constant = isinstance(state.composite.softmax, Constant)
        if same and not constant:
            # self-attention: the packed projection as one layer, then q, k, v in one copy to (3, B, H, L, d)
            qkv = self.relay_linear(state, f"{name}.in_proj", self._projection(module, None), query)
            q, k, v = _Heads.apply(qkv, heads)
        else:
            if constant:  # A constant: q and k carry no relevance (computed without gradient), v all of it
                w, b = module.in_proj_weight, module.in_proj_bias
                with torch.no_grad():
                    if same:
                        q, k = F.linear(query, w[:2 * e], None if b is None else b[:2 * e]).chunk(2, -1)
                    else:
                        q, k = (F.linear(t, w[i * e:(i + 1) * e], None if b is None else b[i * e:(i + 1) * e])
                                for i, t in ((0, query), (1, key)))
            else:
                q, k = (self.relay_linear(state, f"{name}.in_proj", self._projection(module, i), t)
                        for i, t in ((0, query), (1, key)))
            v = self.relay_linear(state, f"{name}.in_proj", self._projection(module, 2), value)
            q, k, v = (t.reshape(bsz, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
        o, a = attention(q, k, v, d ** -0.5, state.composite)
        out = module.out_proj(o.transpose(1, 2).reshape(bsz, length, e))  # hooked: the composite's rule
        weights = None
        if p["need_weights"]:
            weights = a.detach().mean(1) if p["average_attn_weights"] else a.detach()
        if not batched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return out.transpose(0, 1), weights

    @staticmethod
    def _projection(module: nn.MultiheadAttention, part: Optional[int]) -> _Projection:
        """The input projection (``part`` None) or its query/key/value slice: one object per module and weights, kept
        while the module lives (a weight cache then keeps its modified weights across batches)."""
        w, b = module.in_proj_weight, module.in_proj_bias
        stamp = tuple(None if t is None else (id(t), t._version, t.data_ptr(), t.dtype, t.device) for t in (w, b))
        entries = _PROJECTIONS.setdefault(module, {})
        hit = entries.get(part)
        if hit is None or hit[0] != stamp:
            if part is None:
                proj = _Projection(w, b)
            else:
                rows = slice(part * module.embed_dim, (part + 1) * module.embed_dim)
                proj = _Projection(w[rows], None if b is None else b[rows])
            hit = entries[part] = (stamp, proj)
        return hit[1]


def _refuse(state, module: nn.Module, what: str) -> None:
    raise BenchError(f"LRP for transformers: attention {state.describe(module)} {what}; the attention rules "
                     "cannot see through it — use a gradient-based method for this model")


def check_timm_attention(state, module: nn.Module) -> None:
    """What the rules cannot see in a timm ``Attention`` (before its forward)."""
    if getattr(module, "gate", None) is not None:
        _refuse(state, module, "has a gate")
