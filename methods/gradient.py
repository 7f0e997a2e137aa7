"""Sensitivity analysis: R = ∂f_c/∂x (TNNLS Sec. II-A, tutorial 4.1); pooled with the l2 norm over
channels by default (TNNLS eq. 3). conf/method/sensitivity_linf.yaml pools with ℓ∞ ([26] of TNNLS) and
sensitivity_sq.yaml with the squared norm Σ_c (∂f/∂x_c)² (tutorial Sec. 4.1)."""

import torch

from bench.interfaces import Context, Method


def input_gradient(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """∂f_c/∂x for each row's class c, without touching the parameters' ``.grad``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        (grad,) = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), x)
    return grad.detach()


class Sensitivity(Method):
    pooling = "l2"

    def attribute(self, model, x, target, ctx: Context) -> torch.Tensor:
        return input_gradient(model, x, target)
