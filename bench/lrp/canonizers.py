"""Canonizers: BatchNorm merged into the linear layer that feeds it (DEFINITIONS §2), without touching the model.

A BatchNorm in evaluation mode is an affine map per channel, y = k ⊙ z + c with k = γ / √(σ² + ε) and
c = β − k ⊙ μ, so a Conv2d/Linear followed by it is one linear layer with weight k ⊙ W and bias
k ⊙ b + c. LRP applies the layer's rule to that merged layer (otherwise the BatchNorm would either
pass relevance through untouched or, treated as its own linear layer, absorb relevance into its
shift). The merge here is *virtual*: ``merged_parameters`` returns new tensors and the mechanism
(bench/lrp/propagate.py) uses them in the backward pass while the model's forward pass runs unchanged,
so the user's model is never modified and there is nothing to restore, even after an exception.

Which BatchNorm follows which layer is found from the module tree (a BatchNorm registered right after a
Conv2d/Linear among the same parent's children, as in torchvision's VGG-BN and ResNet) and then
*checked on the data flow* of every forward pass: the BatchNorm must receive exactly that layer's output,
and that output must feed nothing else (checked on the gradients). A BatchNorm that is not merged is
bypassed: relevance passes through it unchanged (deep Taylor Sec. 6.2, tutorial Sec. 5.3).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BenchError

LINEAR = (nn.Conv2d, nn.Linear)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def out_features(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def batchnorm_pairs(model: nn.Module) -> dict[nn.Module, nn.Module]:
    """{BatchNorm: the Conv2d/Linear registered just before it in the same parent} (candidates)."""
    pairs = {}
    for parent in model.modules():
        children = list(parent.children())
        for before, after in zip(children, children[1:]):
            if isinstance(before, LINEAR) and isinstance(after, BATCHNORM) \
                    and after.num_features == out_features(before):
                pairs[after] = before
    return pairs


def check_batchnorm(name: str, bn: nn.Module) -> None:
    """A BatchNorm is an affine map only in eval mode with running statistics."""
    if bn.training or bn.running_mean is None:
        why = "is in training mode" if bn.training else "has no running statistics (track_running_stats=False)"
        raise BenchError(f"BatchNorm '{name}' {why}: it normalises with batch statistics, which LRP cannot "
                         "merge or bypass; call model.eval() (with running statistics) first")


def batchnorm_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, c) with bn(z) = k ⊙ z + c per channel, in evaluation mode."""
    k = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        k = k * bn.weight
    c = -bn.running_mean * k
    if bn.bias is not None:
        c = c + bn.bias
    return k.detach(), c.detach()


def merged_parameters(linear: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn ∘ linear`` as one layer (new tensors; the modules are not modified)."""
    with torch.no_grad():
        k, c = batchnorm_affine(bn)
        w = linear.weight * k.view(-1, *([1] * (linear.weight.dim() - 1)))
        b = c if linear.bias is None else linear.bias * k + c
    return w, b
