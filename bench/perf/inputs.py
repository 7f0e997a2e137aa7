"""The inputs of a protocol benchmark (``bench.perf.road``, ``bench.perf.inpaint``): a composed and checked run,
its model and evaluator, and its first images with their explained class, unperturbed score and pooled
heatmap, computed once outside any timing."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RunInputs:
    spec: object
    model: torch.nn.Module
    evaluator: object
    ids: list[str]
    x: torch.Tensor       # (N, C, H, W) model inputs on the run's device
    target: torch.Tensor  # (N,) explained class (the prediction)
    f0: torch.Tensor      # (N,) its logit on the unperturbed image
    heat: torch.Tensor    # (N, H, W) pooled heatmaps of the run's method


def evaluator_of(overrides: list[str]):
    """(spec, model, evaluator) of a run composed from ``overrides`` as the CLI would."""
    from ..run.evaluate import Evaluator
    from ..run.config import compose
    from ..models import load_model
    from ..run.spec import build_spec

    spec = build_spec(compose(overrides))
    model = load_model(spec).to(spec.device).eval()
    return spec, model, Evaluator.from_spec(spec, model)


def prepare(overrides: list[str], n_images: int) -> RunInputs:
    from ..engine.pooling import pool_channels

    spec, model, ev = evaluator_of([f"n_images={n_images}", *overrides])
    items = [spec.dataset.obj.get(i) for i in range(n_images)]
    ids = [i for i, _, _ in items]
    x = ev.normalization.normalize(torch.stack([r for _, r, _ in items]).float().to(spec.device))
    with torch.no_grad():
        logits = ev.logits(x)
    target = logits.argmax(1)
    f0 = logits.gather(1, target.view(-1, 1))[:, 0]
    heat = pool_channels(ev.attribute(x, target, ids), ev.pooling).detach()
    return RunInputs(spec, model, ev, ids, x, target, f0, heat)
