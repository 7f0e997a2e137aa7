"""Region-perturbation curves, batched over images × orders × repeats × steps (TNNLS Sec. III-A).

For every image b, order o (MoRF, random baseline, ...), repeat j and step k = 1..L the perturbed input is

    x⁽ᵏ⁾ = where(rank_o[b] < k, replacement[b, j], x[b])            (eq. 11, cumulative masks)

built on the device for a whole chunk of work items at once, so the only per-chunk cost besides the
model's forward pass is one elementwise select. The unperturbed score f_c(x⁽⁰⁾) is computed once per
image by the caller and is shared by all orders and repeats.
"""

from __future__ import annotations

from typing import Callable

import torch


@torch.inference_mode()
def perturbed_scores(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    ranks: torch.Tensor,
    replacement: torch.Tensor,
    target: torch.Tensor,
    steps: int,
    batch_size: int,
) -> torch.Tensor:
    """Scores f_c(x⁽ᵏ⁾) for k = 1..steps.

    Args:
        score_fn: ``(inputs (N,C,H,W), targets (N,)) -> scores (N,)``, the model and score of SPEC §1.
        x: (B, C, H, W) unperturbed inputs.
        ranks: (B, O, H, W) per order, the position of each pixel's region (``bench.regions.pixel_ranks``).
        replacement: (B, J, C, H, W) replacement values per repeat.
        target: (B,) explained class.
        steps: L, at most the number of regions.
        batch_size: model inputs per forward pass.

    Returns:
        (B, O, J, L) scores. Item (b, o, j, k) does not depend on which chunk it was computed in.
    """
    n_img, n_ord = ranks.shape[:2]
    n_rep = replacement.shape[1]
    total = n_img * n_ord * n_rep * steps
    out = torch.empty(total, dtype=torch.float32, device=x.device)
    for start in range(0, total, batch_size):
        item = torch.arange(start, min(start + batch_size, total), device=x.device)
        k = item % steps + 1
        j = item // steps % n_rep
        o = item // (steps * n_rep) % n_ord
        b = item // (steps * n_rep * n_ord)
        mask = (ranks[b, o] < k.view(-1, 1, 1)).unsqueeze(1)
        inputs = torch.where(mask, replacement[b, j], x[b])
        out[start:start + len(item)] = score_fn(inputs, target[b])
    return out.view(n_img, n_ord, n_rep, steps)


def aopc_curve(unperturbed: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """AOPC(L') for L' = 0..L (TNNLS eq. 12, per image): 1/(L'+1) Σ_{k=0..L'} (f(x⁽⁰⁾) − f(x⁽ᵏ⁾)).

    ``unperturbed`` (...,), ``curve`` (..., L+1) with ``curve[..., 0] == unperturbed``.
    """
    drop = unperturbed.unsqueeze(-1) - curve
    count = torch.arange(1, curve.shape[-1] + 1, device=curve.device, dtype=curve.dtype)
    return drop.cumsum(-1) / count
