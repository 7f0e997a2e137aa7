"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci, ICML 2022; DEFINITIONS §9).

The pixels are ranked by the pooled heatmap (ties and the paired random order seeded per image); at each
removal fraction (``fractions``, default 10 %, 20 %, …, 90 %) the top pixels of the MoRF, LeRF and random orders
are removed from the *original* image by noisy linear imputation (bench/engine/imputation.py: each removed pixel
the 8-neighbour weighted mean of its neighbours, 1/6 direct and 1/12 diagonal, plus Gaussian noise of σ =
``noise`` in model-input units, ``repeats`` draws; σ = 0: one deterministic pass). All images × orders ×
fractions × repeats of a batch go through the solver and the model in chunks of ``batch_size``.

Per image: the AUC of each score curve over the fraction removed (trapezoids from 0 to the last fraction), the
gap AUC(LeRF) − AUC(MoRF) (large: the heatmap separates what matters from what does not, whatever the imputation
does to the image) and AUC(MoRF) − AUC(random). Table ``road``: image × order × step (0 = the unperturbed image,
then each fraction) with ``fraction_removed``, ``score_value`` (mean over the noise draws), ``score_std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.engine.curves import imputed_scores
from bench.engine.regions import pixel_order_ranks
from bench.engine.replacement import Road as NoisyLinearImputation
from bench.protocols.base import (AREA, Batch, Figure, Protocol, Quantity, Steps, Table, curve_auc, grid_frame,
                                  increasing_fractions, number, setting)

AREAS = "per image (trapezoidal areas over the fractions of pixels changed)"


@dataclass(frozen=True)
class ROAD(Protocol):
    fractions: tuple[float, ...] = setting((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), increasing_fractions,
                                           "removal fractions, each imputed from the original image")
    noise: float = setting(0.01, number(0), "σ of the Gaussian noise on imputed pixels (model-input units)")

    title = "ROAD"
    needs = ("pixel_orders",)
    own_table = True
    tables = (Table("road", ("image_id", "order", "step", "fraction_removed", "score_value")),)
    quantities = (
        Quantity("road_auc_morf", -1, "ROAD AUC(MoRF)", AREAS, unit=AREA, steps=Steps("road", "morf")),
        Quantity("road_auc_lerf", +1, "ROAD AUC(LeRF)", AREAS, unit=AREA, steps=Steps("road", "lerf")),
        Quantity("road_auc_random", 0, "ROAD AUC(random)", AREAS, unit=AREA, steps=Steps("road", "random")),
        Quantity("road_gap", +1, "ROAD gap AUC(LeRF) − AUC(MoRF)", AREAS, headline=True, unit=AREA,
            steps=Steps("road", "lerf", "morf")),
        Quantity("road_auc_morf_minus_random", -1, "ROAD AUC(MoRF) − AUC(random)", AREAS, unit=AREA,
            steps=Steps("road", "morf", "random")),
    )
    figures = (Figure("road_curves", "fraction", x="fraction_removed",
                      panels=(("road", "morf", "ROAD MoRF", "pixels removed (%)"),
                              ("road", "lerf", "ROAD LeRF", "pixels removed (%)"))),)

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        run, x = batch.run, batch.x
        h, w = run.image_hw
        pixel_orders = batch.pixel_orders
        orders = {"morf": pixel_orders["morf"], "lerf": pixel_orders["morf"].flip(1), "random": pixel_orders["random"]}
        ranks = pixel_order_ranks(list(orders.values()), h, w)
        fractions = torch.tensor((0.0, *self.fractions), dtype=torch.float64)
        counts = (fractions[1:] * h * w).round().long().clamp(1, h * w)
        road = NoisyLinearImputation(noise=self.noise)
        repeats = run.requested_repeats if road.random else 1  # (noise 0: deterministic)
        draws = road.draw(x, batch.image_ids, repeats, run.seed, run.normalization)
        scores = imputed_scores(run.scores, x, ranks, road.fill, draws, batch.target, counts, run.batch_size)
        first = batch.f0.view(-1, 1, 1).expand(-1, len(orders), 1)
        curve = torch.cat([first, scores.mean(2)], -1)
        spread = torch.cat([torch.zeros_like(first), scores.std(2, correction=0)], -1)
        removed = torch.cat([torch.zeros(1), counts.double() / (h * w)]).float()
        removed = removed.view(1, 1, -1).expand_as(curve)
        per_image, noise = batch.per_image(), self.noise

        def rows() -> dict[str, pd.DataFrame]:
            table = grid_frame(per_image, order=list(orders), step=np.arange(len(fractions)),
                               values=dict(fraction_removed=removed, score_value=curve, score_std=spread))
            table["road_noise"], table["road_repeats"] = noise, repeats
            return {"road": table}
        return rows

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        road = tables.get("road")
        return None if road is None else road_quantities(road)


def road_auc(road: pd.DataFrame) -> pd.DataFrame:
    """Per image and order, the AUC of the ROAD score curve over the fraction of pixels removed (DEFINITIONS §9)."""
    return curve_auc(road, "fraction_removed")


def road_quantities(road: pd.DataFrame) -> pd.DataFrame:
    """road_auc_{morf,lerf,random}, the MoRF/LeRF gap road_gap = AUC(LeRF) − AUC(MoRF) and
    road_auc_morf_minus_random (paired, per image)."""
    auc = road_auc(road)
    out = pd.DataFrame({f"road_auc_{o}": auc[o] for o in ("morf", "lerf", "random")}, index=auc.index)
    out["road_gap"] = auc["lerf"] - auc["morf"]
    out["road_auc_morf_minus_random"] = auc["morf"] - auc["random"]
    return out
