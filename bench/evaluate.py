"""Per batch of images: heatmaps → region orders → perturbation curves → per-image tidy rows.

``Evaluator`` holds what is fixed for a run (model, method, regions, replacement, settings) and turns one
batch of raw images into rows of the curve table (without the run's provenance columns, which
bench/tables.py adds). It knows nothing of files, shards or resuming; bench/run.py does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .api import Context, Method, Normalization
from .engine import aopc_curve, perturbed_scores
from .pooling import pool_channels
from .regions import n_regions, pixel_ranks, region_scores, seeded_orders, tile_ids
from .scoring import choose_target, score_of

ORDERS = ("morf", "random")


@dataclass
class Evaluator:
    model: nn.Module
    method: Method
    pooling: str
    replacement: object
    normalization: Normalization
    image_hw: tuple[int, int]
    patch: int
    steps: int
    repeats: int
    batch_size: int
    seed: int
    target: str = "predicted"
    score: str = "logit"
    device: torch.device = torch.device("cpu")
    save_heatmaps: int = 0  # keep the pixel heatmaps of the images at dataset positions < this

    def __post_init__(self) -> None:
        h, w = self.image_hw
        self.regions = n_regions(h, w, self.patch)
        self.L = min(self.steps, self.regions)
        self.ids_map = tile_ids(h, w, self.patch, device=self.device)
        self.region_sizes = torch.bincount(self.ids_map.flatten(), minlength=self.regions)

    def score_fn(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return score_of(self.model(inputs), target, self.score)

    def heatmaps(self, x: torch.Tensor, target: torch.Tensor, image_ids: list[str]) -> torch.Tensor:
        """(B, H, W) pixel heatmaps h of the method, pooled over channels (SPEC §2)."""
        ctx = Context(image_ids=image_ids, seed=self.seed, normalization=self.normalization)
        return pool_channels(self.method.attribute(self.model, x, target, ctx), self.pooling)

    def evaluate(self, image_ids: list[str], raw: torch.Tensor, labels: torch.Tensor,
                 indices: list[int] | None = None) -> tuple[dict[str, pd.DataFrame] | None, list[str]]:
        """Tidy rows of one batch by table name, and the ids of the images skipped because their heatmap
        is not finite. Tables: ``curves`` always; ``heatmaps`` (image_id, height, width, heatmap as a
        flat float32 array) for images whose dataset position ``indices[i] < save_heatmaps``."""
        indices = list(range(len(image_ids))) if indices is None else list(indices)
        x = self.normalization.normalize(raw.to(self.device, non_blocking=True).float())
        with torch.inference_mode():
            logits = self.model(x)
        target = choose_target(logits, labels, self.target)
        f0 = score_of(logits, target, self.score)
        heat = self.heatmaps(x, target, image_ids)
        finite = torch.isfinite(heat).flatten(1).all(1)
        skipped = [image_ids[i] for i in torch.nonzero(~finite).flatten().tolist()]
        if skipped:
            keep = finite.nonzero().flatten()
            x, heat, target, f0 = x[keep], heat[keep], target[keep], f0[keep]
            labels = labels[keep.cpu()]
            image_ids = [image_ids[i] for i in keep.tolist()]
            indices = [indices[i] for i in keep.tolist()]
            if not image_ids:
                return None, skipped

        orders = seeded_orders(region_scores(heat.float(), self.ids_map, self.regions), image_ids, self.seed)
        ranks = torch.stack([pixel_ranks(orders[o], self.ids_map) for o in ORDERS], 1)
        draws = self.replacement.draw(x, image_ids, self.repeats, self.seed, self.normalization)
        scores = perturbed_scores(self.score_fn, x, ranks, draws, target, self.L, self.batch_size)  # B,O,J,L

        first = f0.view(-1, 1, 1).expand(-1, len(ORDERS), 1)
        curve = torch.cat([first, scores.mean(2)], -1)
        spread = torch.cat([torch.zeros_like(first), scores.std(2, correction=0)], -1)
        aopc = aopc_curve(f0.view(-1, 1), curve)
        sizes = self.region_sizes.to(curve.dtype)
        replaced = torch.stack([sizes[orders[o][:, :self.L]].cumsum(1) for o in ORDERS], 1) / self.ids_map.numel()
        fraction = torch.cat([torch.zeros_like(first), replaced], -1)
        tables = {"curves": self._rows(image_ids, labels, target, curve, spread, aopc, fraction)}
        saved = [i for i, index in enumerate(indices) if index < self.save_heatmaps]
        if saved:
            h, w = self.image_hw
            tables["heatmaps"] = pd.DataFrame({
                "image_id": [image_ids[i] for i in saved], "height": h, "width": w,
                "heatmap": list(heat[saved].float().cpu().numpy().reshape(len(saved), -1))})
        return tables, skipped

    def _rows(self, image_ids, labels, target, curve, spread, aopc, fraction) -> pd.DataFrame:
        """Per-image arrays (B, O, L+1) → tidy rows ordered by (image, order, step)."""
        n, n_ord, n_step = curve.shape
        img, order, step = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n_ord), np.arange(n_step),
                                                           indexing="ij"))
        return pd.DataFrame({
            "image_id": np.asarray(image_ids, dtype=object)[img],
            "label": np.asarray(labels.cpu())[img],
            "target_class": target.cpu().numpy()[img],
            "order": np.asarray(ORDERS, dtype=object)[order],
            "step": step,
            "fraction_perturbed": fraction.cpu().numpy().ravel(),
            "score_value": curve.cpu().numpy().ravel(),
            "score_std": spread.cpu().numpy().ravel(),
            "aopc": aopc.cpu().numpy().ravel(),
        })
