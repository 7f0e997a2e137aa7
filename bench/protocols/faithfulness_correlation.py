"""Faithfulness correlation (Bhatt, Weller, Moura, IJCAI 2020; DEFINITIONS §9).

Per image, ``subsets`` random pixel subsets S of ``subset_size`` pixels (seeded per image: the smallest of uniform
draws; null: 224·H·W/224², the paper's 224 on 224×224 images) and the Pearson correlation between the subset's
heatmap sum Σ_{i∈S} h_i and the score drop f_c(x) − f_c(x with S set to the substrate) (default black; score
``logit`` as Quantus's default). All subsets of all images go through the model in chunks of ``batch_size``; a
subset's mask is made in its chunk. Table ``faithfulness_correlation``: one row per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch

from bench.engine.seeding import rand_per_image
from bench.errors import BenchError
from bench.protocols.base import (SCORES, Batch, Protocol, Quantity, RunInfo, Table, choice, integer, optional,
                                  setting, substrate_settings)


@dataclass(frozen=True)
class FaithfulnessCorrelation(Protocol):
    subsets: int = setting(100, integer(low=2), "random pixel subsets per image")
    subset_size: int | None = setting(None, optional(integer(low=1)), "pixels per subset (null: 224·H·W/224²)")
    substrate: str = substrate_settings("zero")["substrate"]
    score: str = setting("logit", choice(*SCORES), "the tracked score (Quantus: logit)")
    blur_sigma: float = substrate_settings()["blur_sigma"]
    blur_kernel: int = substrate_settings()["blur_kernel"]

    title = "faithfulness correlation"
    tables = (Table("faithfulness_correlation", ("image_id", "faithfulness_correlation")),)
    quantities = (Quantity("faithfulness_correlation", +1, "faithfulness correlation", headline=True, unit="Pearson r",
                           undefined="for every image the subsets' score drops (or heatmap sums) did not vary — "
                                     "e.g. subsets that only hit pixels already equal to the substrate; raise "
                                     "faithfulness_correlation.subset_size"),)

    def check(self, run: RunInfo) -> None:
        _, h, w = run.image_shape
        if self.subset_size is not None and self.subset_size >= h * w:
            raise BenchError(f"faithfulness_correlation.subset_size={self.subset_size} must be smaller than the "
                             f"{h}×{w} = {h * w} pixels of an image")

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        run, x, target = batch.run, batch.x, batch.target
        h, w = run.image_hw
        n, size = self.subsets, self.subset_size or max(1, round(224 * h * w / 224 ** 2))
        draws = rand_per_image(run.seed, "faithfulness_subsets", list(batch.image_ids), (n, h * w), x.device)
        subsets = draws.topk(size, dim=-1, largest=False).indices  # (B, N, |S|), distinct pixels
        substrate = batch.substrate(self.substrate, self.blur_sigma, self.blur_kernel)
        score = self.score
        with torch.inference_mode():
            f_x = run.scores(x, target, score)
            total = len(x) * n
            drops = torch.empty(total, dtype=torch.float64, device=x.device)
            flat = subsets.reshape(total, size)
            for start in range(0, total, run.batch_size):
                stop = min(start + run.batch_size, total)
                b = torch.arange(start, stop, device=x.device) // n
                mask = torch.zeros(stop - start, h * w, dtype=torch.bool, device=x.device)
                mask.scatter_(1, flat[start:stop], True)
                inputs = torch.where(mask.view(-1, 1, h, w), substrate[b], x[b])
                drops[start:stop] = (f_x[b] - run.scores(inputs, target[b], score)).double()
        heat = batch.heatmap
        sums = heat.double().reshape(len(x), -1).gather(1, subsets.reshape(len(x), -1)).view(len(x), n, size).sum(-1)
        a = sums - sums.mean(1, keepdim=True)
        d = drops.view(len(x), n) - drops.view(len(x), n).mean(1, keepdim=True)
        r = (a * d).sum(1) / (a.square().sum(1) * d.square().sum(1)).sqrt()  # 0/0 → NaN: no variation to correlate
        image_ids, substrate_name = batch.image_ids, self.substrate

        def rows() -> dict[str, pd.DataFrame]:
            return {"faithfulness_correlation": pd.DataFrame({
                "image_id": image_ids, "faithfulness_correlation": r.cpu().numpy(), "fc_subsets": n,
                "fc_subset_size": size, "fc_substrate": substrate_name, "fc_score": score})}
        return rows

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        rows = tables.get("faithfulness_correlation")
        return None if rows is None else rows.set_index("image_id")[["faithfulness_correlation"]]
