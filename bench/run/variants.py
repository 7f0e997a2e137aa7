"""The metric report card's variants of a run (DEFINITIONS §10): the explained model f⁽ᵏ⁾ (``randomise_layers``)
and the σ of the input noise (``input_noise``, ``auto``: chosen from :data:`NOISE_GRID`)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import BenchError
from ..models.randomise import randomised
from .spec import RunSpec

log = logging.getLogger(__name__)

#: The σ that ``input_noise=auto`` chooses from (model-input units): the largest that keeps the predicted class of
#: ≥ :data:`KEEP` of the run's images.
NOISE_GRID = (0.005, 0.01, 0.02, 0.05, 0.1)   # minor noise: at most a tenth of a standardised input's SD
KEEP = 0.95


def explained_model(spec: RunSpec, model: nn.Module) -> nn.Module:
    """f⁽ᵏ⁾, k = ``randomise_layers`` (bench/models/randomise.py), the layers found by a forward pass of the dataset's
    first image; the model itself when k = 0."""
    if not spec.randomise_layers:
        return model
    dataset = spec.dataset.obj
    _, raw, _ = dataset.get(0)
    example = dataset.normalization.normalize(raw.float()[None].to(next(model.parameters()).device))
    return randomised(model, spec.randomise_layers, spec.seed, example)


def input_noise(spec: RunSpec, evaluator) -> float:
    """The σ of the run: ``input_noise`` itself, or for ``auto`` the largest σ of :data:`NOISE_GRID` whose noisy
    images (the run's seeded ε, :meth:`Evaluator.noisy`) keep the predicted class of ≥ 95% of the run's
    ``n_images`` images (every shard computes it over all of them, so all shards agree)."""
    if spec.input_noise != "auto":
        return float(spec.input_noise)
    dataset, kept, n = spec.dataset.obj, torch.zeros(len(NOISE_GRID), dtype=torch.long), 0
    grid = torch.tensor(NOISE_GRID, device=evaluator.device)
    per_chunk = max(1, spec.batch_size // (len(NOISE_GRID) + 1))
    with torch.inference_mode():
        for start in range(0, spec.n_images, per_chunk):
            items = [dataset.get(i) for i in range(start, min(start + per_chunk, spec.n_images))]
            ids = [it[0] for it in items]
            x = evaluator.normalization.normalize(torch.stack([it[1].float() for it in items]).to(evaluator.device))
            clean = evaluator.logits(x).argmax(1)
            eps = evaluator.noise(x, ids)
            noisy = (x[None] + grid.view(-1, *[1] * x.dim()) * eps[None]).flatten(0, 1)
            pred = evaluator.logits(noisy).argmax(1).view(len(NOISE_GRID), len(ids))
            kept += (pred == clean[None]).sum(1).cpu()
            n += len(ids)
    share = kept.double() / n
    ok = [s for s, f in zip(NOISE_GRID, share.tolist()) if f >= KEEP]
    table = ", ".join(f"σ={s:g}: {f:.1%}" for s, f in zip(NOISE_GRID, share.tolist()))
    if not ok:
        raise BenchError(f"input_noise=auto: no σ of the grid keeps the predicted class of ≥ {KEEP:.0%} of the "
                         f"{n} images ({table}); set input_noise to a smaller σ")
    log.info("input_noise=auto: σ=%g (predictions kept: %s)", ok[-1], table)
    return ok[-1]
