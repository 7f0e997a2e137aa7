"""Deletion (Petsiuk, Das, Saenko, BMVC 2018, "RISE"; DEFINITIONS §9): the heatmap's top pixels set to the substrate.

The pixels are ranked by the pooled heatmap (ties and the paired random order seeded per image, the pixel
orders ROAD uses too); at step s = 0 … S (``steps``, default null = H, i.e. H·W/H pixels per step as RISE's 224
on 224×224 images) the top k_s = round(s·H·W/S) pixels of x are set to the substrate (default black). The score
is the protocol's own (``score``, default the class probability, as RISE). Per image the AUC over the fraction
of pixels changed, for the heatmap's order and for the random order: low deletion AUC is good. Every item of a
batch (images × orders × steps) is batched through the model like ROAD's.

Table ``deletion``: image × order (``morf``, ``random``) × step with ``fraction_changed``, ``score_value`` and
the settings ``deletion_substrate``, ``deletion_score``. Insertion (bench/protocols/insertion.py) is the same
walk from the substrate towards the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.engine.curves import imputed_scores
from bench.engine.regions import pixel_order_ranks
from bench.protocols.base import (AREA, SCORES, Batch, Figure, Protocol, Quantity, Steps, Table, choice, curve_auc,
                                  grid_frame, integer, optional, setting, substrate_settings)

AREAS = "per image (trapezoidal areas over the fractions of pixels changed)"


@dataclass(frozen=True)
class Deletion(Protocol):
    steps: int | None = setting(None, optional(integer(low=1)), "steps from 0 to all pixels (null: H)")
    substrate: str = substrate_settings("zero")["substrate"]
    score: str = setting("softmax", choice(*SCORES), "the tracked score (RISE: the class probability)")
    blur_sigma: float = substrate_settings()["blur_sigma"]
    blur_kernel: int = substrate_settings()["blur_kernel"]

    title = "deletion"
    needs = ("pixel_orders",)
    tables = (Table("deletion", ("image_id", "order", "step", "fraction_changed", "score_value")),)
    quantities = (
        Quantity("deletion_auc_morf", -1, "deletion AUC", AREAS, headline=True, unit=AREA,
            steps=Steps("deletion", "morf")),
        Quantity("deletion_auc_random", 0, "deletion AUC (random order)", AREAS, unit=AREA,
            steps=Steps("deletion", "random")),
        Quantity("deletion_auc_morf_minus_random", -1, "deletion AUC − random", AREAS, unit=AREA,
            steps=Steps("deletion", "morf", "random")),
    )
    figures = (Figure("deletion_insertion_curves", "fraction", x="fraction_changed",
                      panels=(("deletion", "morf", "Deletion", "pixels deleted (%)"),)),)
    inserts = False  # insertion: from the substrate, the top pixels of x put back

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        kind, run, x = self.name, batch.run, batch.x
        h, w = run.image_hw
        steps = self.steps or h
        orders = {"morf": batch.pixel_orders["morf"], "random": batch.pixel_orders["random"]}
        ranks = pixel_order_ranks(list(orders.values()), h, w)
        counts = (torch.arange(steps + 1, dtype=torch.float64) * (h * w) / steps).round().long()
        substrate = batch.substrate(self.substrate, self.blur_sigma, self.blur_kernel)
        base, put = (substrate, x) if self.inserts else (x, substrate)
        score = self.score

        def score_fn(inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return run.scores(inputs, t, score)

        def fill(b: torch.Tensor, chosen: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return torch.where(chosen, p, b)

        scores = imputed_scores(score_fn, base, ranks, fill, put[:, None], batch.target, counts, run.batch_size)[:, :, 0]
        changed = (counts.double() / (h * w)).float().view(1, 1, -1).expand_as(scores)
        per_image, substrate_name = batch.per_image(), self.substrate

        def rows() -> dict[str, pd.DataFrame]:
            table = grid_frame(per_image, order=list(orders), step=np.arange(steps + 1),
                               values=dict(fraction_changed=changed, score_value=scores))
            table[f"{kind}_substrate"], table[f"{kind}_score"] = substrate_name, score
            return {kind: table}
        return rows

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        rows = tables.get(cls.name)
        if rows is None:
            return None
        auc = curve_auc(rows, "fraction_changed")
        morf = f"{cls.name}_auc_morf"
        return pd.DataFrame({morf: auc["morf"], f"{cls.name}_auc_random": auc["random"],
                             f"{morf}_minus_random": auc["morf"] - auc["random"]})
