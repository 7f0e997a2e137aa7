"""Simple Taylor decomposition: R = x ⊙ ∂f_c/∂x (tutorial Sec. 4.2), summed over channels."""

import torch

from bench.interfaces import Method


class GradientXInput(Method):
    pooling = "sum"  # the default channel pooling (DEFINITIONS §2); `method.pooling=...` overrides it

    def attribute(self, model, x, target, ctx):
        """x: (B, C, H, W) model inputs, target: (B,) classes → relevance of x's shape."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            score = model(x).gather(1, target.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, x)  # never .backward(): the model's .grad stays untouched
        return (x * grad).detach()
