"""Region-perturbation curves, batched over images × orders × repeats × steps (TNNLS Sec. III-A).

Static replacements (bench/engine/replacement.py): for every image b, order o, repeat j and step k = 1..L

    x⁽ᵏ⁾ = where(rank_o[b] < k, replacement[b, j], x[b])            (eq. 11 with cumulative masks)

is built on the device for a whole chunk of work items at once, so the only cost per chunk besides the
model's forward pass is one gather and one elementwise select. Sequential replacements apply
g(x⁽ᵏ⁻¹⁾, r_k) step after step to all (image, order) pairs of the batch at once. Imputed ones (ROAD) fill
each item's removed pixels from the original image, a chunk of items at once. The unperturbed score
f_c(x⁽⁰⁾) is computed once per image by the caller and shared by all orders and repeats.
"""

from __future__ import annotations

from typing import Callable

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def perturbed_scores(score_fn: ScoreFn, x: torch.Tensor, ranks: torch.Tensor, replacement: torch.Tensor,
                     target: torch.Tensor, steps: int, batch_size: int) -> torch.Tensor:
    """Scores f_c(x⁽ᵏ⁾), k = 1..steps, for a static replacement.

    Args:
        score_fn: ``(inputs (N,C,H,W), targets (N,)) -> scores (N,)``, the model and score of DEFINITIONS §1.
        x: (B, C, H, W) unperturbed inputs.
        ranks: (B, O, H, W) per order, the position of each pixel's region (``bench.regions.pixel_ranks``).
        replacement: (B, J, C, H, W) replacement values per repeat.
        target: (B,) explained class.
        steps: L, at most the number of regions.
        batch_size: model inputs per forward pass.

    Returns:
        (B, O, J, L) scores. Item (b, o, j, k) does not depend on the chunk it was computed in.
    """
    n_img, n_ord = ranks.shape[:2]
    n_rep = replacement.shape[1]
    total = n_img * n_ord * n_rep * steps
    out = torch.empty(total, dtype=torch.float32, device=x.device)
    buffer = torch.empty((min(batch_size, total), *x.shape[1:]), dtype=x.dtype, device=x.device)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        inputs = chunk_inputs(x, ranks, replacement, steps, start, stop, buffer[:stop - start])
        b = work_items(start, stop, steps, n_rep, n_ord, x.device)[0]
        out[start:stop] = score_fn(inputs, target[b]).float()
    return out.view(n_img, n_ord, n_rep, steps)


def work_items(start: int, stop: int, steps: int, n_rep: int, n_ord: int, device) -> tuple[torch.Tensor, ...]:
    """(image b, order o, repeat j, step index s) of work items start … stop−1, image-, order-, repeat-,
    step-major: item = ((b·O + o)·J + j)·steps + s."""
    item = torch.arange(start, stop, device=device)
    return (item // (steps * n_rep * n_ord), item // (steps * n_rep) % n_ord, item // steps % n_rep,
            item % steps)


GROUPS_PER_CHUNK = 16
MIN_GROUP_NUMEL = 4096  # smaller images: the gathers are cheaper than one more op per group


def chunk_inputs(x: torch.Tensor, ranks: torch.Tensor, replacement: torch.Tensor, steps: int, start: int,
                 stop: int, out: torch.Tensor) -> torch.Tensor:
    """Work items start … stop−1 (image-, order-, repeat-, step-major) as model inputs, written into ``out``.

    Item (b, o, j, k): ``where(ranks[b, o] < k, replacement[b, j], x[b])``. When the chunk spans few
    (b, o, j) groups (≤ GROUPS_PER_CHUNK: the usual case, L ≥ batch_size / 16) of images of at least
    MIN_GROUP_NUMEL values, each group is one broadcast ``where`` straight into ``out`` — only the inputs are
    written, nothing is gathered; otherwise one gathered ``where`` for the whole chunk (for small images the
    gathers cost less than the operations per group). Both select the same values, bit for bit."""
    n_ord, n_rep = ranks.shape[1], replacement.shape[1]
    first, last = start // steps, (stop - 1) // steps
    if last - first + 1 <= GROUPS_PER_CHUNK and x[0].numel() >= MIN_GROUP_NUMEL:
        k = torch.arange(1, steps + 1, device=x.device, dtype=ranks.dtype).view(-1, 1, 1, 1)
        for group in range(first, last + 1):
            lo, hi = max(start, group * steps), min(stop, (group + 1) * steps)
            b, o, j = group // (n_rep * n_ord), group // n_rep % n_ord, group % n_rep
            mask = ranks[b, o].unsqueeze(0) < k[lo - group * steps:hi - group * steps]  # (n, 1, H, W)
            torch.where(mask, replacement[b, j], x[b], out=out[lo - start:hi - start])
        return out
    b, o, j, s = work_items(start, stop, steps, n_rep, n_ord, x.device)
    mask = (ranks[b, o] < (s + 1).view(-1, 1, 1)).unsqueeze(1)
    return torch.where(mask, replacement[b, j], x[b], out=out)


@torch.inference_mode()
def sequential_scores(score_fn: ScoreFn, x: torch.Tensor, ranks: torch.Tensor, step_fn, target: torch.Tensor,
                      steps: int, batch_size: int) -> torch.Tensor:
    """Scores f_c(x⁽ᵏ⁾), k = 1..steps, for a sequential replacement x⁽ᵏ⁾ = step_fn(x⁽ᵏ⁻¹⁾, region r_k).

    All (image, order) pairs advance together one step at a time, so memory is that of B·O images.
    Returns (B, O, 1, L) scores (one "repeat": sequential replacements are deterministic).
    """
    n_img, n_ord = ranks.shape[:2]
    current = x.repeat_interleave(n_ord, 0)
    flat_ranks = ranks.reshape(n_img * n_ord, 1, *ranks.shape[2:])
    targets = target.repeat_interleave(n_ord, 0)
    out = torch.empty(n_img * n_ord, steps, dtype=torch.float32, device=x.device)
    for k in range(steps):
        current = step_fn(current, flat_ranks == k)
        for start in range(0, len(current), batch_size):
            out[start:start + batch_size, k] = score_fn(current[start:start + batch_size],
                                                        targets[start:start + batch_size]).float()
    return out.view(n_img, n_ord, 1, steps)


@torch.inference_mode()
def imputed_scores(score_fn: ScoreFn, x: torch.Tensor, ranks: torch.Tensor, fill, draws: torch.Tensor,
                   target: torch.Tensor, counts: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Scores f_c(x⁽ᵏ⁾) for an imputed replacement x⁽ᵏ⁾ = fill(x, first counts[k] regions, draw_j)
    (``road``; counts = 1..L for the region-perturbation curve, the pixel counts of the removal fractions for
    the ROAD protocol): every step from the original image, so the work items are batched as for a static
    replacement, one ``fill`` per chunk. Returns (B, O, J, len(counts)) scores; item (b, o, j, k) does not
    depend on the chunk it was computed in (``fill`` solves each item's system on its own)."""
    n_img, n_ord = ranks.shape[:2]
    n_rep, steps = draws.shape[1], len(counts)
    counts = counts.to(device=x.device, dtype=ranks.dtype)
    total = n_img * n_ord * n_rep * steps
    out = torch.empty(total, dtype=torch.float32, device=x.device)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        b, o, j, s = work_items(start, stop, steps, n_rep, n_ord, x.device)
        removed = (ranks[b, o] < counts[s].view(-1, 1, 1)).unsqueeze(1)
        out[start:stop] = score_fn(fill(x[b], removed, draws[b, j]), target[b]).float()
    return out.view(n_img, n_ord, n_rep, steps)
