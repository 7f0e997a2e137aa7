"""One mechanism for every LRP rule: value-preserving forward hooks whose gradient is the rule.

Convention: every tensor a of the forward pass carries relevance R_a = a ⊙ g_a, where g is the
(modified) gradient. Starting from g = one-hot(c) at the logits, R = f_c(x) on class c and 0 elsewhere
(SPEC §2). Under this convention plain autograd is already the right LRP step for ReLU (relevance
passes unchanged), winner-take-all max-pooling, flatten/dropout, and residual additions (which split
relevance in proportion to the summands). Only linear layers (and proportional pooling) need a rule:
their output z is replaced by

    y = z.detach() + Σ_t c_t · (T_t − T_t.detach()),   T_t = z_t · (z / stab(z_t)).detach()

which has y == z in value, while ∂y/∂x carries exactly the rule of bench/lrp/rules.py. The input
relevance is then x ⊙ g_x after a single backward pass (the "gradient trick", tutorial Sec. 6).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BenchError
from .rules import Part, Rule, stabilize

LINEAR = (nn.Conv2d, nn.Linear)
AVGPOOL = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
PASSTHROUGH = (nn.ReLU, nn.Dropout, nn.Flatten, nn.Identity)


def _evaluate(module: nn.Module, x: torch.Tensor, part: Part) -> torch.Tensor:
    """The linear layer with the part's modified input, weight and bias."""
    x = x if part.input is None else part.input(x)
    if isinstance(module, AVGPOOL):
        return module.__class__.forward(module, x)
    w = module.weight if part.weight is None else part.weight(module.weight)
    b = module.bias
    if b is not None and part.bias is not None:
        b = None if part.bias is False else part.bias(b)
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(x, w, b)
    return F.linear(x, w, b)


def rule_output(module: nn.Module, rule: Rule, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """z in value; gradient = the rule's redistribution (see module docstring)."""
    acc = None
    for term in rule.terms:
        parts = [z if p.is_identity else _evaluate(module, x, p) for p in term.parts]
        zt = parts[0] if len(parts) == 1 else sum(parts)
        t = term.coefficient * zt * (z.detach() / stabilize(zt.detach(), rule.epsilon))
        acc = t if acc is None else acc + t
    return z.detach() + (acc - acc.detach())


def proportional_pool_output(module: nn.MaxPool2d, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Max-pooling redistributed in proportion to the activations (tutorial Sec. 5.3):
    R_i = Σ_j x_i / (Σ_{i'∈window j} x_i') · R_j, i.e. the z-rule on sum-pooling."""
    if module.dilation not in (1, (1, 1)):
        raise BenchError(f"proportional max-pooling does not support dilation ({module}); use maxpool=wta")
    sums = F.avg_pool2d(x, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                        count_include_pad=True, divisor_override=1)
    t = sums * (z.detach() / stabilize(sums.detach(), 1e-9))
    return z.detach() + (t - t.detach())


def describe(model: nn.Module, module: nn.Module) -> str:
    names = {m: n for n, m in model.named_modules()}
    return f"'{names.get(module, '?')}' ({type(module).__name__})"


@contextmanager
def lrp_hooks(model: nn.Module, rule_for: Callable[[str, nn.Module], Rule | None],
              maxpool: str = "wta") -> Iterator[None]:
    """Attach the rules to ``model`` for the duration of the block; always removes them afterwards.

    ``rule_for(name, module)`` gives the rule of each linear layer (Conv2d, Linear, average pooling).
    Refuses, naming the layer, any leaf module the rules cannot handle, and any linear layer that is
    called twice in one forward pass (its relevance would be silently mixed).
    """
    if maxpool not in ("wta", "proportional"):
        raise BenchError(f"maxpool must be 'wta' or 'proportional', got '{maxpool}'")
    handles, calls = [], {}
    try:
        for name, module in model.named_modules():
            if any(True for _ in module.children()):
                continue
            if isinstance(module, LINEAR + AVGPOOL):
                rule = rule_for(name, module)
                if rule is None:
                    continue
                handles.append(module.register_forward_hook(_linear_hook(model, rule, calls)))
            elif isinstance(module, nn.MaxPool2d):
                if maxpool == "proportional":
                    handles.append(module.register_forward_hook(
                        lambda m, inp, out: proportional_pool_output(m, inp[0], out)))
            elif not isinstance(module, PASSTHROUGH):
                raise BenchError(f"LRP cannot propagate through layer {describe(model, module)}; supported: "
                                 "Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, "
                                 "Flatten, Identity — use a gradient-based method for this model")
        yield
    finally:
        for h in handles:
            h.remove()


def _linear_hook(model: nn.Module, rule: Rule, calls: dict):
    def hook(module, inputs, output):
        calls[module] = calls.get(module, 0) + 1
        if calls[module] > 1:
            raise BenchError(f"layer {describe(model, module)} is used twice in one forward pass; LRP needs "
                             "one module object per layer (define a separate module for each use)")
        return rule_output(module, rule, inputs[0], output)
    return hook


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
        rule_for: Callable[[str, nn.Module], Rule | None], maxpool: str = "wta") -> torch.Tensor:
    """Input relevance R (x's shape) for class ``target`` (B,), relevance at the output = f_c(x)."""
    x = x.detach().requires_grad_(True)
    with lrp_hooks(model, rule_for, maxpool), torch.enable_grad():
        out = model(x)
        seed = torch.zeros_like(out)
        seed.scatter_(1, target.view(-1, 1), 1.0)
        (grad,) = torch.autograd.grad(out, x, seed)
    return (x * grad).detach()
