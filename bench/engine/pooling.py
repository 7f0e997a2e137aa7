"""Channel pooling: relevance R (B, C, H, W) → pixel heatmap h (B, H, W) (DEFINITIONS §2, TNNLS eq. 3)."""

from __future__ import annotations

import torch

from ..errors import BenchError

POOLINGS = {
    "sum": lambda r: r.sum(1),                 # signed; LRP, gradient × input
    "l2": lambda r: r.norm(p=2, dim=1),         # ‖∂f/∂x_p‖₂ over channels (TNNLS eq. 3)
    "linf": lambda r: r.abs().amax(1),          # max over channels of |·|
    "l2sq": lambda r: r.square().sum(1),        # squared gradient (tutorial 4.1)
    "abs_sum": lambda r: r.abs().sum(1),
}


def pool_channels(relevance: torch.Tensor, how: str) -> torch.Tensor:
    if how not in POOLINGS:
        raise BenchError(f"unknown pooling '{how}'; available: {', '.join(POOLINGS)}")
    return POOLINGS[how](relevance)
