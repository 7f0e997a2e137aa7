"""Pixel-flipping with recomputed heatmaps (Montavon, Samek, Müller 2018, tutorial Sec. 7.2, Fig. 8; DEFINITIONS §9).

At step k the heatmap of the *current* image x⁽ᵏ⁻¹⁾ is computed, its most relevant remaining region (the tiles
of ``patch``, or the image's superpixels with ``regions=slic``; ties by a seeded permutation) is set to the
substrate (default black) and f_c(x⁽ᵏ⁾) (the run's score) is recorded, until every region is gone or ``steps``
are done (null: every region with tiles, the run's ``steps`` with superpixels, whose count differs per image;
after its own R an image's curve stays, ``region`` −1). All images advance together, one batched attribution
and one batched forward per step. A seeded method draws afresh at each step (id ``<image_id>~pf<k>``).
Alongside, the paired random order of the regions with the same substrate (no heatmap).

Per image the AUC over the fraction perturbed (low = selective) and its difference to the random order's.
Table ``pixel_flipping``: image × order (``morf``, ``random``) × step with ``fraction_perturbed``,
``score_value``, the ``region`` removed, ``pixel_flipping_substrate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.engine.curves import perturbed_scores
from bench.engine.regions import morf_order
from bench.engine.seeding import randperm_ragged
from bench.protocols.base import (AREA, Batch, Figure, Protocol, Quantity, Steps, Table, curve_auc, grid_frame, integer,
                                  optional, setting, substrate_settings)

AREAS = "per image (trapezoidal areas over the fractions of pixels changed)"


@dataclass(frozen=True)
class PixelFlipping(Protocol):
    steps: int | None = setting(None, optional(integer(low=1)), "regions removed (null: all of them)")
    substrate: str = substrate_settings("zero")["substrate"]
    blur_sigma: float = substrate_settings()["blur_sigma"]
    blur_kernel: int = substrate_settings()["blur_kernel"]

    title = "pixel-flipping"
    needs = ("regions", "region_orders")
    attributes_inputs = True
    tables = (Table("pixel_flipping", ("image_id", "order", "step", "fraction_perturbed", "score_value")),)
    quantities = (
        Quantity("pixel_flipping_auc", -1, "pixel-flipping AUC", AREAS, headline=True, unit=AREA,
            steps=Steps("pixel_flipping", "morf")),
        Quantity("pixel_flipping_auc_random", 0, "pixel-flipping AUC (random order)", AREAS, unit=AREA,
            steps=Steps("pixel_flipping", "random")),
        Quantity("pixel_flipping_auc_minus_random", -1, "pixel-flipping AUC − random", AREAS, unit=AREA,
            steps=Steps("pixel_flipping", "morf", "random")),
    )
    figures = (Figure("pixel_flipping_curves", "fraction", x="fraction_perturbed",
                      panels=(("pixel_flipping", "morf", "Pixel-flipping", "pixels flipped (%)"),)),)

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        run, regions, x, target = batch.run, batch.regions, batch.x, batch.target
        image_ids, random_order = batch.image_ids, batch.region_orders["random"]
        total = run.L if run.superpixels else run.n_regions
        steps = min(self.steps or total, total)
        done = min(steps, regions.count)  # steps computed; the rest repeat each image's last
        n = len(x)
        substrate = batch.substrate(self.substrate, self.blur_sigma, self.blur_kernel)
        tiebreak = randperm_ragged(run.seed, "pixel_flipping_tiebreak", list(image_ids), regions.counts,
                                   regions.count, x.device)
        counts = torch.tensor(regions.counts, device=x.device).view(-1, 1)
        removed = torch.arange(regions.count, device=x.device).expand(n, -1) >= counts  # padding: never chosen
        chosen = torch.empty(n, done, dtype=torch.long, device=x.device)
        scores = torch.empty(n, done, dtype=torch.float32, device=x.device)
        current, h = x, batch.heatmap
        for k in range(done):
            if k:  # the heatmap of the current image (step 0: the image's own, already computed)
                h = run.heatmap(current, target, [f"{i}~pf{k}" for i in image_ids]).detach()
            rs = regions.relevance(h.float()).masked_fill(removed, float("-inf"))
            pick = morf_order(rs, tiebreak)[:, 0]
            removed[torch.arange(n, device=x.device), pick] = True
            chosen[:, k] = pick
            current = torch.where(regions.pixel_mask(removed).unsqueeze(1), substrate, x).detach()
            with torch.no_grad():  # (not inference mode: the next step attributes ``current``)
                scores[:, k] = torch.cat([run.scores(current[s:s + run.batch_size], target[s:s + run.batch_size])
                                          for s in range(0, n, run.batch_size)])
        ranks = regions.ranks(random_order).unsqueeze(1)
        rnd = perturbed_scores(run.scores, x, ranks, substrate[:, None], target, done, run.batch_size)[:, 0, 0]
        real = torch.arange(steps, device=x.device) < counts  # (B, steps): a region was removed at this step
        chosen = torch.where(real, regions.extend(chosen, steps), -1)
        first = batch.f0.view(-1, 1)
        curve = torch.stack([torch.cat([first, regions.extend(scores, steps)], 1),
                             torch.cat([first, regions.extend(rnd, steps)], 1)], 1)
        zero = torch.zeros(n, 1, dtype=torch.float64, device=x.device)
        sizes = regions.sizes.gather(1, chosen.clamp(min=0)) * real
        flipped = torch.cat([zero, sizes.cumsum(1).double() / (run.image_hw[0] * run.image_hw[1])], 1)
        rnd_flipped = torch.cat([zero, regions.extend(regions.fraction(random_order, done), steps)], 1)
        fraction = torch.stack([flipped, rnd_flipped], 1).float()
        rnd_region = torch.where(real, regions.extend(random_order[:, :done], steps), -1)
        region = torch.stack([torch.cat([torch.full((n, 1), -1, device=x.device), chosen], 1),
                              torch.cat([torch.full((n, 1), -1, device=x.device), rnd_region], 1)], 1)
        per_image, substrate_name = batch.per_image(), self.substrate

        def rows() -> dict[str, pd.DataFrame]:
            table = grid_frame(per_image, order=["morf", "random"], step=np.arange(steps + 1),
                               values=dict(fraction_perturbed=fraction, score_value=curve))
            table["region"] = region.cpu().numpy().ravel()
            table["pixel_flipping_substrate"] = substrate_name
            return {"pixel_flipping": table}
        return rows

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        rows = tables.get("pixel_flipping")
        if rows is None:
            return None
        auc = curve_auc(rows, "fraction_perturbed")
        return pd.DataFrame({"pixel_flipping_auc": auc["morf"], "pixel_flipping_auc_random": auc["random"],
                             "pixel_flipping_auc_minus_random": auc["morf"] - auc["random"]})
