"""The gradient with a modified ReLU backward: deconvnet and guided backprop.

- ``deconvnet`` (Zeiler & Fergus 2014; TNNLS Sec. II-B): the backward signal is passed through a ReLU,
  g_in = max(0, g_out), whatever the forward activation was; linear layers are transposed and
  max-pooling uses the forward switches (exactly as in the gradient).
- ``guided`` backprop (Springenberg et al. 2015): the gradient's mask and the deconvnet's rectification,
  g_in = g_out · 1[x > 0] · 1[g_out > 0].

Pooled over channels with the l2 norm by default (TNNLS eq. 3; ``method.pooling=linf`` for ℓ∞).

The ReLU backward is replaced through hooks on the model's ``nn.ReLU`` modules (in-place or not,
reused several times as in torchvision's ResNet — they are stateless), removed afterwards. A ReLU
applied *functionally* (``F.relu``/``torch.relu`` inside a model's forward) cannot be hooked; it would
silently keep the plain gradient's mask, so the method inspects the autograd graph of every call and
refuses such a model, as it refuses any other activation module (GELU, ReLU6, …), by name.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.interfaces import Context, Method
from bench.checks import choice
from bench.errors import BenchError
from bench.lrp.propagate import unhooked_nodes

MODES = ("deconvnet", "guided")
# autograd nodes of activations that a hook on nn.ReLU does not reach
_ACTIVATION_NODES = ("Relu", "Threshold", "LeakyRelu", "Hardtanh", "Elu", "Selu", "Celu", "Gelu", "Silu",
                     "Mish", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh", "Softplus", "Prelu", "Rrelu")


class _ModifiedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mode):
        out = x.clamp(min=0)
        ctx.mode = mode
        if mode == "guided":
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        g = g.clamp(min=0)
        if ctx.mode == "guided":
            (out,) = ctx.saved_tensors
            g = g * (out > 0)
        return g, None


def activation_nodes(out: torch.Tensor) -> dict[str, int]:
    """Activation autograd nodes reachable from ``out`` (functional ReLUs and the like), with counts."""
    return unhooked_nodes(out, _ACTIVATION_NODES)


def modified_relu_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    """∂f_c/∂x with every nn.ReLU's backward replaced (``mode`` = deconvnet | guided)."""
    if mode not in MODES:
        raise BenchError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
    for name, module in model.named_modules():
        if type(module).__module__ == "torch.nn.modules.activation" and not isinstance(module, nn.ReLU):
            raise BenchError(f"{mode} is defined for ReLU networks; layer '{name}' ({type(module).__name__}) is "
                             "another activation")
    pending: dict[nn.Module, list[torch.Tensor]] = {}

    def pre_hook(module, inputs):
        pending.setdefault(module, []).append(inputs[0])
        return (inputs[0].detach(),)  # the module's own ReLU runs outside autograd …

    def hook(module, inputs, output):
        return _ModifiedReLU.apply(pending[module].pop(), mode)  # … and is replaced by the modified one

    x = x.detach().requires_grad_(True)
    handles = []
    try:
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                handles += [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(hook)]
        with torch.enable_grad():
            out = model(x)
            found = activation_nodes(out)
            if found:
                listing = ", ".join(f"{n}× {k}" for k, n in sorted(found.items()))
                raise BenchError(f"{mode}: the model applies activations outside nn.ReLU modules ({listing}), "
                                 "e.g. F.relu/torch.relu inside its forward; their backward cannot be modified "
                                 "— use nn.ReLU modules")
            (grad,) = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), x)
    finally:
        for h in handles:
            h.remove()
    return grad.detach()


class ModifiedReLUBackward(Method):
    pooling = "l2"

    def __init__(self, mode: str = "deconvnet") -> None:
        self.mode = choice("method.params.mode", mode, MODES)

    def attribute(self, model, x, target, ctx: Context) -> torch.Tensor:
        return modified_relu_gradient(model, x, target, self.mode)
