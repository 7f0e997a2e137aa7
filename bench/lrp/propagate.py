"""One mechanism for every LRP rule: value-preserving forward hooks whose gradient is the rule.

Convention: every tensor a of the forward pass carries relevance R_a = a ⊙ g_a, where g is the
(modified) gradient. Starting from g = one-hot(c) at the logits, R = f_c(x) on class c and 0 elsewhere
(DEFINITIONS §2). Under this convention plain autograd is already the right LRP step for ReLU (relevance passes
unchanged), winner-take-all max-pooling, flatten/dropout, average pooling (the gradient of a sum with
positive weights and no bias *is* the z-rule: relevance in proportion to the summands, as Zennit's
``Norm`` rule) and residual additions (which split relevance in proportion to the summands). What needs
a rule:

- Conv2d / Linear (merged with the BatchNorm that follows them, bench/lrp/canonizers.py): the layer's
  output is replaced by ``_Relay(x, z)``, which has the value z in the forward pass and whose backward
  computes, from the output relevance R = z ⊙ g, the rule's redistribution (bench/lrp/rules.py) and
  returns the gradient g_x with x ⊙ g_x = R_x. The modified layers z_p that the rule needs are only
  evaluated in the backward pass, and only those that can matter: for a non-negative input (any layer
  after a ReLU) the x⁻ parts vanish, a term restricted to outputs z_j < 0 is skipped when they carry no
  relevance, and the unmodified layer's denominator is the forward output itself. So LRP-ε costs one
  forward and one backward pass like the gradient, and z⁺/γ one more convolution per layer. With the
  transformer rules, LRP-ε on a layer that no BatchNorm follows (``_PlainStep``) computes its factor
  |z| / (|z| + ε) in the forward pass instead, so that its output goes downstream uncopied, and LRP-0 is the
  layer's own gradient (as LXT's Gradient × Input): the layer gets no hook.
- the first layer's constant-input rules (z^B, w², flat): their relevance is not of the form x ⊙ g; the
  relay adds it to the input relevance directly.
- max-pooling in proportion to the activations (tutorial 5.3), when asked for.
- a BatchNorm that cannot be merged: bypassed (relevance passes unchanged).
- with a composite's rules of transformer operations: element-wise non-linearities, LayerNorm / RMSNorm and the
  attention of torchvision's and timm's vision transformers (bench/lrp/transformer.py).

Everything else is refused by name: before the forward pass (leaf modules of an unknown type, modules
with parameters of their own, a BatchNorm in training mode), during it (a Conv2d/Linear/BatchNorm used
twice in one forward pass; a first-layer rule on a layer that does not receive the input) or right after
it (a convolution, matrix product or normalisation in the autograd graph that no hooked module produced:
a functional call such as F.linear inside a model's forward, which no rule could be attached to); with the
transformer rules, an attention, softmax, normalisation or element-wise non-linearity that no rule covers is
refused as it is called, by the calling module's name (transformer.py). Hooks (and transformer.py's
torch-function mode) are always removed; the model and its parameters' ``.grad`` are never modified.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BenchError
from .canonizers import BATCHNORM, batchnorm_pairs, check_batchnorm, merged_parameters
from .composites import Composite, as_composite
from .rules import SOURCES, Rule, Term, stabilize, stabilize_

LINEAR = (nn.Conv2d, nn.Linear)
PASSTHROUGH = (nn.ReLU, nn.Dropout, nn.Flatten, nn.Identity, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
SUPPORTED = "Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d/2d, Dropout, Flatten, Identity"
MAXPOOL_MODES = ("wta", "proportional")
_PLAIN = (Term(),)  # the terms of LRP-ε/0: the layer itself

# Autograd nodes that only an unhooked parametrised layer can leave in the graph (the hooked layers'
# own nodes are cut off by the relay).
_UNHOOKED = ("Convolution", "CudnnConvolution", "MkldnnConvolution", "SlowConv", "ThnnConv", "Addmm", "Mm",
             "Bmm", "Baddbmm", "Addmv", "Addbmm", "Mv", "Linear", "NativeBatchNorm", "CudnnBatchNorm",
             "MiopenBatchNorm", "NativeLayerNorm", "NativeGroupNorm", "Embedding")


class _Relay(torch.autograd.Function):
    """``step.value`` in the forward pass; in the backward pass ``step.backward(x, g)`` is the gradient of x.
    Use ``relay(x, value, step)``."""

    @staticmethod
    def forward(ctx, x, step):
        ctx.step = step
        ctx.save_for_backward(x)  # autograd then refuses if x is modified in place before the backward
        value, step.value = step.value, None
        # a step that keeps ``value`` for its backward gets it to itself: downstream gets a fresh copy, which later
        # in-place ops (ReLU, +=) may change; a step that keeps nothing passes the tensor itself
        return value.clone() if getattr(step, "keeps_value", True) else value

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return ctx.step.backward(x, g), None


def relay(x: torch.Tensor, value: torch.Tensor, step) -> torch.Tensor:
    """A tensor with ``value``'s values whose gradient is ``step.backward`` (the gradient trick)."""
    step.value = value
    return _Relay.apply(x, step)


def _accumulate(total: Optional[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    return t if total is None else total.add_(t)


def _add(total: Optional[torch.Tensor], t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """total + t, in place when ``total`` is a fresh tensor of the result's shape (never ``keep``)."""
    if total is None:
        return t
    if total is keep or total.shape != torch.broadcast_shapes(total.shape, t.shape):
        return total + t
    return total.add_(t)


def _layer(module: nn.Module, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
    return module._conv_forward(x, w, b) if isinstance(module, nn.Conv2d) else F.linear(x, w, b)


def _input_vjp(module: nn.Module, x: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Wᵀ s for the layer with weight w at input x (the backward of the unmodified layer)."""
    if isinstance(module, nn.Linear):
        return s @ w
    if module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return torch.ops.aten.convolution_backward(
            s, x, w, None, module.stride, module.padding, module.dilation, False, [0, 0], module.groups,
            [True, False, False])[0]
    with torch.enable_grad():
        v = x.detach().requires_grad_(True)
        return torch.autograd.grad(_layer(module, v, w, None), v, s)[0]


def _bias_of(module: nn.Module, b: Optional[torch.Tensor], part_bias) -> Optional[torch.Tensor]:
    if b is None or part_bias is False:
        return None
    return b if part_bias is None else part_bias(b)


def _as_output(module: nn.Module, b: torch.Tensor) -> torch.Tensor:
    """A bias vector shaped to broadcast over the layer's output."""
    return b.view(-1, 1, 1) if isinstance(module, nn.Conv2d) else b


class WeightCache:
    """Modified weights ρ(w) (and BatchNorm-merged parameters) kept between calls, so that a method object
    reused batch after batch does not recompute w⁺ etc. of large layers each time (it costs one extra copy
    of the weights per modifier). An entry is recomputed when one of the tensors it was computed from
    changes version counter, storage, dtype or device (in-place updates, ``load_state_dict``, ``.to()``);
    edits through ``.data`` bypass the version counter — call ``clear()`` after them."""

    def __init__(self) -> None:
        self._store: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()

    def clear(self) -> None:
        self._store = weakref.WeakKeyDictionary()

    def cached(self, module: nn.Module, key, sources: tuple, build: Callable[[], object]):
        """``build()``, from the cache when the tensors in ``sources`` are unchanged since it was built."""
        stamp = tuple(None if t is None else (id(t), t._version, t.data_ptr(), t.dtype, t.device) for t in sources)
        entries = self._store.setdefault(module, {})
        hit = entries.get(key)
        if hit is None or hit[0] != stamp:
            with torch.no_grad():
                hit = entries[key] = (stamp, build())
        return hit[1]

    def get(self, module: nn.Module, modifier) -> torch.Tensor:
        """``modifier(module.weight)``, from the cache when the weight is unchanged."""
        return self.cached(module, modifier, (module.weight,), lambda: modifier(module.weight.detach()))


class _State:
    """Per-call bookkeeping shared by the hooks of one ``lrp_hooks`` block."""

    def __init__(self, model: nn.Module, composite, maxpool: str, x: Optional[torch.Tensor], bounds,
                 cache: Optional[WeightCache], named: Optional[list] = None) -> None:
        self.model, self.composite, self.maxpool, self.x, self.bounds = model, composite, maxpool, x, bounds
        self.cache = cache
        self.names = {m: n for n, m in (model.named_modules() if named is None else named)}
        self.calls: dict[nn.Module, int] = {}
        self.outputs: dict[nn.Module, torch.Tensor] = {}  # linear layer → its relayed output (this pass)
        self.steps: dict[nn.Module, "_LinearStep"] = {}
        self.first_seen = False
        self.input_relevance: Optional[torch.Tensor] = None
        self.stack: list[nn.Module] = []  # the modules whose forward is running (transformer rules only)
        self.paired: set = set()
        self.layer_weights: set = set()  # ids of the Conv2d/Linear modules' weights (transformer rules only)
        self.watching = 0  # how many watched modules are running (TransformerOps is active while > 0)

    def describe(self, module: nn.Module) -> str:
        return f"'{self.names.get(module, '?')}' ({type(module).__name__})"

    def count(self, module: nn.Module) -> None:
        self.calls[module] = self.calls.get(module, 0) + 1
        if self.calls[module] > 1:
            raise BenchError(f"layer {self.describe(module)} is used twice in one forward pass; LRP needs one "
                             "module object per layer (define a separate module for each use)")

    def is_model_input(self, t: torch.Tensor) -> bool:
        """``t`` is the model's input, or a contiguous reshape of it (e.g. Flatten before a Linear)."""
        x = self.x
        if x is None:
            return False
        return t is x or (t._base is x and t.numel() == x.numel() and t.is_contiguous() and x.is_contiguous())

    def source(self, kind: str, rule: Rule, like: torch.Tensor) -> torch.Tensor:
        """The constant input ``low``/``high``/``ones`` of a first-layer rule, shaped like the layer input
        ``like`` — with batch size 1 when it is the same for every image (it then costs one image)."""
        one = (1,) + tuple(like.shape[1:])
        if kind == "ones":
            return like.new_ones(one)
        value = getattr(rule, kind, None)
        if value is not None:
            return like.new_full(one, float(value))
        if self.bounds is None:
            raise BenchError(f"rule {rule} needs the data's pixel bounds (bounds=...); none were given")
        bound = torch.as_tensor(self.bounds[0 if kind == "low" else 1], dtype=like.dtype, device=like.device)
        if bound.dim() < self.x.dim() or bound.shape[0] == 1:  # no per-image bounds
            return bound.expand((1,) + tuple(self.x.shape[1:])).reshape(one)
        return bound.expand_as(self.x).reshape(like.shape)

    def add_input_relevance(self, r: torch.Tensor) -> None:
        r = r.expand((len(self.x),) + tuple(r.shape[1:])).reshape(self.x.shape)
        self.input_relevance = r if self.input_relevance is None else self.input_relevance + r

    def release(self) -> None:
        """Drop the forward pass's tensors (they would keep the graph alive through a reference cycle)."""
        self.outputs.clear()
        self.steps.clear()
        self.stack.clear()

    def finish_forward(self, out: torch.Tensor) -> None:
        """Checks that need the whole forward pass: the first layer was found, no unhooked layer ran."""
        self.release()
        if self.composite.first is not None and not self.first_seen:
            raise BenchError("the composite has a first-layer rule, but no Conv2d/Linear layer of the model "
                             "receives the model's input directly (is the input transformed inside the model?)")
        if self.composite.transformer:  # transformer.py's mode refuses these as they are called, by name
            return
        found = unhooked_nodes(out, _UNHOOKED + (("MaxPool",) if self.maxpool == "proportional" else ()))
        if found:
            listing = ", ".join(f"{n}× {name}" for name, n in sorted(found.items()))
            raise BenchError(f"LRP found operations that no module hook covers: {listing} — functional calls "
                             "(F.conv2d, F.linear, torch.matmul, F.batch_norm, F.max_pool2d with proportional "
                             "max-pooling, …) inside the model's forward cannot get a rule; use the nn modules "
                             f"({SUPPORTED})")


def unhooked_nodes(out: torch.Tensor, prefixes: tuple[str, ...]) -> dict[str, int]:
    """Autograd node types (name starting with one of ``prefixes``) reachable from ``out``, with counts."""
    found: dict[str, int] = {}
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = type(node).__name__
        if name.startswith(prefixes):
            found[name] = found.get(name, 0) + 1
        stack.extend(n for n, _ in node.next_functions)
    return found


class _PlainStep:
    """LRP-ε on a Conv2d/Linear layer with the transformer rules (no BatchNorm follows there): s = g ⊙ |z| / (|z| + ε),
    with the factor computed in the forward pass, so that the layer's output goes downstream uncopied and the
    backward is one pass over the output before the layer's transposed product. ε = 0: s = g, the layer's gradient
    (as LXT's Gradient × Input; it differs from ``_plain_ratio``'s LRP-0 only where z_j is exactly 0, where
    R_j = z_j g_j = 0 and the inputs' shares x_i w_ij g_j sum to 0)."""

    keeps_value = False

    def __init__(self, module: nn.Module, epsilon: float, z: torch.Tensor) -> None:
        self.module, self.done, self.factor = module, False, None
        if epsilon != 0:
            with torch.no_grad():
                self.factor = z.abs()
                self.factor.div_(self.factor + epsilon)

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.done:
            raise RuntimeError("an LRP step ran twice (backward through the same graph twice)")
        factor, self.factor, self.done = self.factor, None, True
        return _input_vjp(self.module, x, self.module.weight.detach(), g if factor is None else factor.mul_(g))


class _LinearStep:
    """The backward of one Conv2d/Linear layer (merged with its BatchNorm when one follows)."""

    def __init__(self, state: _State, module: nn.Module, rule: Rule, z: torch.Tensor) -> None:
        self.state, self.module, self.rule, self.z = state, module, rule, z
        self.bn: Optional[nn.Module] = None      # set by the BatchNorm hook when it merges
        self.merged: Optional[torch.Tensor] = None
        self.expected: Optional[torch.Tensor] = None

    def _merged_sources(self) -> tuple:
        bn = self.bn
        return (self.module.weight, self.module.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)

    def parameters(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.bn is not None:
            cache = self.state.cache
            if cache is None:
                return merged_parameters(self.module, self.bn)
            return cache.cached(self.module, ("merged", self.bn, self.bn.eps), self._merged_sources(),
                                lambda: merged_parameters(self.module, self.bn))
        b = self.module.bias
        return self.module.weight.detach(), None if b is None else b.detach()

    def modified(self, w: torch.Tensor, modifier) -> torch.Tensor:
        cache = self.state.cache
        if modifier is None:
            return w
        if cache is None:
            return modifier(w)
        if self.bn is None:
            return cache.get(self.module, modifier)
        return cache.cached(self.module, ("merged", self.bn, self.bn.eps, modifier), self._merged_sources(),
                            lambda: modifier(w))

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        module, rule = self.module, self.rule
        if self.bn is not None and not (g is self.expected or torch.equal(g, self.expected)):
            raise BenchError(f"the output of {self.state.describe(module)} feeds its BatchNorm and something "
                             "else; the BatchNorm cannot be merged (DEFINITIONS §2) — LRP refuses this model")
        # ``out`` is the layer's own output tensor (downstream got the relay's copy): this step may reuse
        # its memory, so it runs once
        out = self.z if self.bn is None else self.merged
        if out is None:
            raise RuntimeError("an LRP step ran twice (backward through the same graph twice)")
        self.z = self.merged = None
        w, b = self.parameters()
        if rule.terms == _PLAIN:
            return _input_vjp(module, x, w, _plain_ratio(out, g, rule.epsilon))
        nonneg: list = []  # x ≥ 0, computed once when a term asks
        grad = None
        for term in rule.terms:
            if term.where == "neg" and not _carries(out, g, term.where):
                continue  # outputs with z_j < 0 hold no relevance (the usual case below a ReLU)
            parts = self._resolve(term, x, w, nonneg)
            if not parts:
                continue
            s = self._ratio(term, parts, out, g, w, b)
            for (kind, v, _, _), gv in zip(parts, self._vjps(parts, s, x)):
                if kind in ("x", "identity"):
                    grad = _accumulate(grad, gv)
                elif kind == "pos":
                    grad = _accumulate(grad, gv.mul_(x > 0))
                elif kind == "neg":
                    grad = _accumulate(grad, gv.mul_(x < 0))
                else:
                    self.state.add_input_relevance(gv.mul_(v))
        return torch.zeros_like(x) if grad is None else grad

    def _resolve(self, term, x: torch.Tensor, w: torch.Tensor, nonneg: list) -> list:
        """The term's parts as (kind, input, modified weight, bias modifier); kind ``identity`` = the
        unmodified weight on x, whose value the forward pass already computed. For x ≥ 0 the x⁻ parts
        vanish and x⁺ = x."""
        parts = []
        for part in term.parts:
            kind = part.input
            if kind in ("pos", "neg"):
                if not nonneg:
                    nonneg.append(bool(x.min() >= 0))
                if nonneg[0]:
                    if kind == "neg":
                        continue  # x⁻ = 0
                    kind = "x"
            if kind == "x" and part.weight is None:
                kind = "identity"
            parts.append((kind, self._input(kind, x), self.modified(w, part.weight), part.bias))
        return parts

    def _ratio(self, term, parts, out, g, w, b) -> torch.Tensor:
        """s_j = c_t · R_j / stab(z_tj) on the outputs the term applies to, R_j = z_j g_j — in a fresh
        buffer, with as few passes over the output as the term allows."""
        module, eps = self.module, self.rule.epsilon
        sign = term.sign if eps != 0 else None
        bias = None  # Σ_p ρ_p(b) − n_identity·b (+ σε), added once
        for kind, _, _, bmod in parts:
            pb = _bias_of(module, b, bmod)
            if kind == "identity" and b is not None:
                pb = -b if pb is None else pb - b
            bias = pb if bias is None else (bias + pb if pb is not None else bias)
        if sign is not None:
            bias = (w.new_full((w.shape[0],), sign * eps) if bias is None else bias + sign * eps)
        images = [(v, wp) for kind, v, wp, _ in parts if kind in ("x", "pos", "neg")]
        z = _sum_layers(module, images, bias) if images else None  # the bias goes in here when it can
        bias_out = _as_output(module, bias) if bias is not None and z is None else None
        n_identity = sum(kind == "identity" for kind, _, _, _ in parts)
        if n_identity:
            if z is None:
                z = out * n_identity if n_identity != 1 else out.clone()
            else:
                z.add_(out, alpha=n_identity)
        for kind, v, wp, _ in parts:
            if kind in SOURCES:
                zc = _layer(module, v, wp, None)
                z = zc if z is None else _add(z, zc, out)
        if bias_out is not None:
            z = _add(z, bias_out, out)
        if sign is None:
            stabilize_(z, eps)
        one_sided = term.where is not None and sign == (1 if term.where == "pos" else -1)
        if one_sided:  # z_t is on the term's side of zero (|z_t| ≥ ε) where it applies: put it there
            z.clamp_(min=eps) if sign > 0 else z.clamp_(max=-eps)  # everywhere, so z_j / z_tj > 0 exactly
        s = torch.div(out, z, out=z) if z.shape == out.shape else out / z  # where the term applies
        if one_sided:
            s.clamp_(min=0)
        s.mul_(g)
        if term.where is not None and not one_sided:
            s.masked_fill_(out <= 0 if term.where == "pos" else out >= 0, 0)
        if term.coefficient != 1:
            s.mul_(term.coefficient)
        return s

    def _vjps(self, parts, s: torch.Tensor, x: torch.Tensor) -> list:
        """ρ_p(W)ᵀ s for every part, in one call with the weights stacked along the input dimension where
        the layer allows (one pass over s instead of one per part)."""
        module, weights, batch = self.module, [wp for _, _, wp, _ in parts], len(s)
        if len(parts) == 1:
            v = parts[0][1]
            return [_input_vjp(module, v.expand((batch,) + tuple(v.shape[1:])), weights[0], s)]
        if _stackable(module):
            stacked = torch.cat(weights, 1)
            if isinstance(module, nn.Linear):
                return list((s @ stacked).chunk(len(parts), -1))
            shape = (batch, stacked.shape[1]) + tuple(x.shape[2:])
            proxy = x.new_empty((1,) * len(shape)).expand(shape)  # only its shape is read
            return list(_input_vjp(module, proxy, stacked, s).chunk(len(parts), 1))
        return [_input_vjp(module, v.expand((batch,) + tuple(v.shape[1:])), wp, s)
                for (_, v, _, _), wp in zip(parts, weights)]

    def _input(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        if kind in ("x", "identity"):
            return x
        if kind == "pos":
            return x.clamp(min=0)
        if kind == "neg":
            return x.clamp(max=0)
        return self.state.source(kind, self.rule, x)


def _stackable(module: nn.Module) -> bool:
    """Parts of this layer can be evaluated as one layer with weights stacked along the input dimension."""
    if isinstance(module, nn.Linear):
        return True
    return module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)


def _sum_layers(module: nn.Module, parts: list, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Σ_p layer(v_p; w_p) + bias — one evaluation with inputs and weights stacked along the input
    dimension where the layer allows (the first layer's 3 pixel channels cost about as much as 6)."""
    if len(parts) == 1:
        v, wp = parts[0]
        return _layer(module, v, wp, bias)
    if _stackable(module):
        dim = -1 if isinstance(module, nn.Linear) else 1
        v = torch.cat([v for v, _ in parts], dim)
        return _layer(module, v, torch.cat([wp for _, wp in parts], 1), bias)
    z = _layer(module, parts[0][0], parts[0][1], bias)
    for v, wp in parts[1:]:
        z.add_(_layer(module, v, wp, None))
    return z


def _plain_ratio(out: torch.Tensor, g: torch.Tensor, epsilon: float) -> torch.Tensor:
    """LRP-ε/0: s = R / stab(z) = g · |z| / (|z| + ε), in place in ``out`` (the step's own buffer):
    |z|/(|z|+ε) = 1/(1 + ε/|z|), which is 0 at z = 0 and has no cancellation."""
    if epsilon == 0:
        return g.masked_fill(out == 0, 0)
    return out.abs_().reciprocal_().mul_(epsilon).add_(1).reciprocal_().mul_(g)


def _carries(out: torch.Tensor, g: torch.Tensor, where: str) -> bool:
    """Some output on the term's side of zero (z_j > 0 / z_j < 0) carries relevance (g_j ≠ 0)."""
    side = out > 0 if where == "pos" else out < 0
    return bool(side.logical_and_(g != 0).any())


class _MergedNormStep:
    """A BatchNorm merged into the layer before it: the gradient passes through unchanged, and that
    layer's step redistributes the BatchNorm's output relevance with the merged parameters."""

    def __init__(self, step: _LinearStep) -> None:
        self.step = step

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        self.step.expected = g
        return g


class _BypassStep:
    """A normalisation that cannot be merged: R_x = R_y (x ⊙ g_x = y ⊙ g_y)."""

    def __init__(self, y: torch.Tensor) -> None:
        self.y = y

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g * self.y / stabilize(x, 1e-9)


class _ProportionalPoolStep:
    """Max-pooling redistributed in proportion to the activations (tutorial Sec. 5.3):
    R_i = Σ_j x_i / (Σ_{i'∈window j} x_i') · R_j, i.e. the z-rule on sum-pooling."""

    def __init__(self, module: nn.MaxPool2d, y: torch.Tensor) -> None:
        self.module, self.y = module, y

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        m = self.module
        with torch.enable_grad():
            v = x.detach().requires_grad_(True)
            sums = F.avg_pool2d(v, m.kernel_size, m.stride, m.padding, m.ceil_mode, count_include_pad=True,
                                divisor_override=1)
        return torch.autograd.grad(sums, v, self.y * g / stabilize(sums.detach(), 1e-9))[0]


@contextmanager
def lrp_hooks(model: nn.Module, rules: Union[Rule, Composite, Callable], maxpool: str = "wta",
              x: Optional[torch.Tensor] = None, bounds=None, cache: Optional[WeightCache] = None
              ) -> Iterator[_State]:
    """Attach the rules to ``model`` for the duration of the block; always removes them afterwards.

    ``rules``: a Rule (every layer), a Composite, or a ``rule_for(name, module)`` function. ``x`` is the
    tensor that will be the model's input (to find the first layer); ``bounds`` = (low, high), the input
    bounds for z^B, broadcastable to ``x``. Yields the state; call ``state.finish_forward(output)`` after
    the forward pass for the checks that need it. ``cache``: a WeightCache to reuse modified weights.
    """
    if maxpool not in MAXPOOL_MODES:
        raise BenchError(f"maxpool must be 'wta' or 'proportional', got '{maxpool}'")
    from . import transformer as tf

    composite = as_composite(rules)
    named = list(model.named_modules())
    state = _State(model, composite, maxpool, x, bounds, cache, named)
    pairs = batchnorm_pairs(model) if any(isinstance(m, BATCHNORM) for _, m in named) else {}
    state.paired = set(pairs.values())  # layers a BatchNorm may be merged into (their step keeps their output)
    handles = []
    attentions = tf.attention_classes()
    uncovered = (() if composite.softmax is not None else attentions) + \
        (() if composite.norm is not None else tf.NORMS) + (() if composite.elementwise is not None else tf.ELEMENTWISE)
    # a transformer: named before anything else (its embeddings would be refused first)
    found = next((m for _, m in named if isinstance(m, uncovered)), None) if uncovered else None
    if found is not None:
        raise BenchError(f"LRP cannot propagate through layer {state.describe(found)} with these rules; for "
                         "transformers use method=attnlrp or method=cp_lrp (bench/lrp/transformer.py)")
    ops = tf.TransformerOps(state, relay_linear) if composite.transformer else None
    known, containers = tf.known_containers(), tf.vit_containers()
    rule_leaves = tf.ELEMENTWISE + tf.NORMS + BATCHNORM + (nn.MaxPool2d,)
    try:
        for name, module in named:
            leaf = not any(m is not None for m in module._modules.values())
            # TransformerOps watches the forward of the attention modules and of modules of types it does not know (the
            # layers and containers of known types call nothing it watches themselves); ``state.stack``: the chain of
            # running modules it names, with the layers whose own calls it lets through
            tracked = ops is not None and not (leaf and isinstance(module, LINEAR + PASSTHROUGH)) and \
                type(module) not in known
            watching = tracked and not isinstance(module, rule_leaves)
            check = rule = None  # what runs before the module's forward, the forward hook that applies its rule
            if isinstance(module, attentions):
                check = _check_attention
            elif isinstance(module, tf.ELEMENTWISE):
                rule = _elementwise_hook
            elif isinstance(module, tf.NORMS):
                rule = _norm_hook
            elif ops is not None and (isinstance(module, containers) or tf.is_drop_path(module)):
                pass
            elif isinstance(module, LINEAR):
                state.layer_weights.add(id(module.weight))
                if ops is None or composite.first is not None or not is_gradient(composite.rule(name, module, False)):
                    rule = _linear_hook(state, name)
                # else: LRP-0 is the layer's gradient under R = a ⊙ g (as LXT's): autograd's own backward is the rule
            elif isinstance(module, BATCHNORM):
                check_batchnorm(name, module)
                rule = _batchnorm_hook(state, pairs.get(module))
            elif isinstance(module, nn.MaxPool2d):
                if maxpool == "proportional":
                    if module.dilation not in (1, (1, 1)):
                        raise BenchError(f"proportional max-pooling does not support dilation "
                                         f"({state.describe(module)}); use maxpool=wta")
                    rule = _pool_hook(state)
            elif leaf and not isinstance(module, PASSTHROUGH):
                raise BenchError(f"LRP cannot propagate through layer {state.describe(module)}; supported: "
                                 f"{SUPPORTED} — use a gradient-based method for this model")
            elif not leaf and any(p is not None for p in module._parameters.values()):
                raise BenchError(f"module {state.describe(module)} has parameters of its own, used by its "
                                 "forward outside any supported layer; LRP cannot attach a rule to them")
            if tracked:
                handles.append(module.register_forward_pre_hook(_enter(state, ops if watching else None, check)))
                handles.append(module.register_forward_hook(_leave(state, ops if watching else None, rule),
                                                            always_call=True))
            elif rule is not None:
                handles.append(module.register_forward_hook(rule))
        yield state
    finally:
        if state.watching:  # (the hooks leave it balanced; this is for the unforeseen)
            ops.__exit__(None, None, None)
            state.watching = 0
        state.release()
        for h in handles:
            h.remove()


def is_gradient(rule) -> bool:
    """LRP-0 on a linear layer: its gradient is the rule (a layer with transformer rules needs no hook then)."""
    return isinstance(rule, Rule) and rule.epsilon == 0 and rule.terms == _PLAIN


def _enter(state: _State, ops=None, check: Optional[Callable] = None):
    """Forward pre-hook of a tracked module: it joins the chain of running modules; ``ops`` (TransformerOps): it is
    watched — the mode is active from the outermost watched module's start …; ``check(state, module)``: refusals."""
    def hook(module, inputs):
        state.stack.append(module)
        if ops is not None:
            if not state.watching:
                ops.__enter__()
            state.watching += 1
        if check is not None:
            check(state, module)
    return hook


def _leave(state: _State, ops=None, rule: Optional[Callable] = None):
    """… to its end (a forward hook with ``always_call``: also when the forward pass raises); then the module's rule."""
    def hook(module, inputs, output):
        if state.stack and state.stack[-1] is module:
            state.stack.pop()
        if ops is not None and state.watching:
            state.watching -= 1
            if not state.watching:
                ops.__exit__(None, None, None)
        if rule is not None and output is not None:
            return rule(module, inputs, output)
    return hook


def _check_attention(state: _State, module: nn.Module) -> None:
    from . import transformer as tf

    state.count(module)
    if not isinstance(module, nn.MultiheadAttention):
        tf.check_timm_attention(state, module)


def _elementwise_hook(module, inputs, output):
    from .transformer import IdentityStep

    return relay(inputs[0], output.detach(), IdentityStep(inputs[0], output.detach()))


def _norm_hook(module, inputs, output):
    from .transformer import NormStep

    return relay(inputs[0], output.detach(), NormStep(module, output))


def relay_linear(state: _State, name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` (a Linear layer that is not called as a module, e.g. an attention's input projection) with the
    composite's rule for ``name``."""
    rule = state.composite.rule(name, module, False)
    if not isinstance(rule, Rule) or rule.first_layer_only:
        raise BenchError(f"no LRP rule for layer '{name}' ({type(module).__name__}) (got {rule!r})")
    if is_gradient(rule):
        return F.linear(x, module.weight, module.bias)
    with torch.no_grad():
        z = F.linear(x, module.weight, module.bias)
    step = _PlainStep(module, rule.epsilon, z) if rule.terms == _PLAIN else _LinearStep(state, module, rule, z)
    return relay(x, z, step)


def _linear_hook(state: _State, name: str):
    def hook(module, inputs, output):
        state.count(module)
        inp = inputs[0]
        first = state.is_model_input(inp)
        state.first_seen |= first and state.composite.first is not None
        rule = state.composite.rule(name, module, first)
        if not isinstance(rule, Rule):
            raise BenchError(f"no LRP rule for layer {state.describe(module)} (got {rule!r})")
        if rule.first_layer_only and not first:
            raise BenchError(f"rule {type(rule).__name__} is a first-layer rule (it needs the pixel input), but "
                             f"layer {state.describe(module)} does not receive the model's input directly")
        if state.bounds is None and any(p.input in ("low", "high") and getattr(rule, p.input, None) is None
                                        for t in rule.terms for p in t.parts):
            raise BenchError(f"rule {rule} needs the data's pixel bounds (bounds=...); none were given")
        if state.composite.transformer and module not in state.paired and rule.terms == _PLAIN:
            return relay(inp, output.detach(), _PlainStep(module, rule.epsilon, output.detach()))
        step = _LinearStep(state, module, rule, output.detach())
        out = relay(inp, output.detach(), step)
        state.outputs[module], state.steps[module] = out, step
        return out
    return hook


def _batchnorm_hook(state: _State, linear: Optional[nn.Module]):
    def hook(module, inputs, output):
        state.count(module)
        inp = inputs[0]
        if linear is not None and state.outputs.get(linear) is inp:  # the data flow confirms the pair
            step = state.steps[linear]
            step.bn, step.merged = module, output.detach()
            return relay(inp, output.detach(), _MergedNormStep(step))
        return relay(inp, output.detach(), _BypassStep(output.detach()))
    return hook


def _pool_hook(state: _State):
    def hook(module, inputs, output):
        state.count(module)
        return relay(inputs[0], output.detach(), _ProportionalPoolStep(module, output.detach()))
    return hook


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor, rules: Union[Rule, Composite, Callable],
        maxpool: str = "wta", bounds=None, cache: Optional[WeightCache] = None) -> torch.Tensor:
    """Input relevance R (x's shape) for class ``target`` (B,), relevance at the output = f_c(x).

    ``rules``: a Rule for every layer, a Composite, or ``rule_for(name, module) -> Rule``; ``maxpool``:
    ``wta`` or ``proportional``; ``bounds``: (low, high) input bounds for z^B, broadcastable to x;
    ``cache``: a WeightCache kept by the caller between calls (None: modified weights are recomputed).
    """
    x = x.detach().requires_grad_(True)
    with lrp_hooks(model, rules, maxpool, x=x, bounds=bounds, cache=cache) as state, torch.enable_grad():
        out = model(x)
        state.finish_forward(out)
        seed = torch.zeros_like(out)
        seed.scatter_(1, target.view(-1, 1).to(out.device), 1.0)
        (grad,) = torch.autograd.grad(out, x, seed, allow_unused=True)
    relevance = torch.zeros_like(x) if grad is None else x * grad
    if state.input_relevance is not None:
        relevance = relevance + state.input_relevance
    return relevance.detach()
