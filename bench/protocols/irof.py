"""IROF: iterative removal of features (Rieger & Hansen 2020; DEFINITIONS §9).

Each image's SLIC superpixels (this block's own settings, so IROF combines with any ``regions``; the run's own
superpixels are reused when they are SLIC of the same settings) are ranked by their *mean* relevance (ties
seeded) and removed one after another until none is left — set to the substrate (default the image's
per-channel mean), static, so every step of every image is batched like the AOPC curve — with the paired random
order of the same superpixels. The score (default the class probability) is taken relative to the unperturbed
one, p_k = f_c(x⁽ᵏ⁾)/f_c(x), and per image

    irof_morf = 1/(R+1) Σ_{k=0..R} (1 − p_k)        (the AOPC-style area over the curve; high = faithful)

with ``irof_random`` and ``irof_morf_minus_random``, and ``irof_aoc`` = R − Σ_{k=1..R} p_k + ½(p_1 + p_R) =
R − trapezoid(p_1 … p_R), Quantus 0.6's un-normalised form (unit-width trapezoids).

Table ``irof``: steps 0 … R of each image (R = ``irof_regions``), ``fraction_perturbed``, ``score_value``,
``relative_score`` and the settings (``irof_n_segments`` … ``irof_score``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.engine.curves import perturbed_scores
from bench.engine.superpixels import SLIC_DEFAULTS, compactness_for
from bench.protocols.base import (SCORES, Batch, Protocol, Quantity, Table, choice, grid_frame, integer, number,
                                  optional, setting, substrate_settings)

#: f_c(x⁽ᵏ⁾)/f_c(x) and the areas over it are ratios of the score (no unit).
RATIO = "fraction of f_c(x)"


@dataclass(frozen=True)
class IROF(Protocol):
    n_segments: int = setting(100, integer(low=2), "SLIC: the approximate number of superpixels")
    compactness: float | None = setting(None, optional(number(0, low_open=True)),
                                        "SLIC: colour vs space (lower: follows content); null: 10 for colour "
                                        "images (CIELAB), 0.1 for grayscale ones in [0, 1]")
    sigma: float = setting(0.0, number(0), "SLIC: Gaussian smoothing before segmenting")
    max_num_iter: int = setting(10, integer(low=1), "SLIC: k-means iterations")
    substrate: str = substrate_settings("image_mean")["substrate"]
    score: str = setting("softmax", choice(*SCORES), "the tracked score (the class probability)")
    blur_sigma: float = substrate_settings()["blur_sigma"]
    blur_kernel: int = substrate_settings()["blur_kernel"]

    title = "IROF"
    needs = ("regions",)
    tables = (Table("irof", ("image_id", "order", "step", "fraction_perturbed", "score_value", "relative_score",
                             "irof_regions")),)
    quantities = (
        Quantity("irof_morf", +1, "IROF", headline=True, unit=RATIO),
        Quantity("irof_random", 0, "IROF (random order)", unit=RATIO),
        Quantity("irof_morf_minus_random", +1, "IROF − random", unit=RATIO),
        Quantity("irof_aoc", +1, "IROF (Quantus AOC)", unit=RATIO + " × steps"),
    )

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        run, x, target = batch.run, batch.x, batch.target
        slic = {k: getattr(self, k) for k in SLIC_DEFAULTS}
        if run.superpixels and all(slic[k] == run.regions_settings[k] for k in SLIC_DEFAULTS):
            regions = replace(batch.regions, aggregate="mean")
        else:
            regions = run.superpixel_regions(batch.raw, slic, "mean")
        seeded = regions.orders(batch.heatmap.float(), batch.image_ids, run.seed)
        orders = {"morf": seeded["morf"], "random": seeded["random"]}
        ranks = torch.stack([regions.ranks(o) for o in orders.values()], 1)
        substrate = batch.substrate(self.substrate, self.blur_sigma, self.blur_kernel)
        score = self.score

        def score_fn(inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return run.scores(inputs, t, score)

        with torch.inference_mode():
            f_x = score_fn(x, target)
        scores = perturbed_scores(score_fn, x, ranks, substrate[:, None], target, regions.count,
                                  run.batch_size)[:, :, 0]
        first = f_x.view(-1, 1, 1).expand(-1, len(orders), 1)
        curve = torch.cat([first, scores], -1)
        zero = torch.zeros(len(x), 1, dtype=torch.float32, device=x.device)
        fraction = torch.stack([torch.cat([zero, regions.fraction(o, regions.count, torch.float32)], 1)
                                for o in orders.values()], 1)
        counts = np.asarray(regions.counts)
        settings = {f"irof_{k}": getattr(self, k) for k in ("n_segments", "compactness", "sigma", "max_num_iter",
                                                            "substrate", "score")}
        if self.compactness is None:  # the value used (the settings say null: chosen for the images)
            settings["irof_compactness"] = compactness_for(x.shape[1])
        per_image = batch.per_image()

        def rows() -> dict[str, pd.DataFrame]:
            table = grid_frame({**per_image, "irof_regions": counts},
                               order=list(orders), step=np.arange(regions.count + 1),
                               values=dict(fraction_perturbed=fraction, score_value=curve,
                                           relative_score=curve / first))
            table = table[table.step <= table.irof_regions].reset_index(drop=True)
            for k, v in settings.items():
                table[k] = v
            return {"irof": table}
        return rows

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        irof = tables.get("irof")
        return None if irof is None else irof_quantities(irof)


def irof_quantities(irof: pd.DataFrame) -> pd.DataFrame:
    """``irof_morf``, ``irof_random``, ``irof_morf_minus_random`` and ``irof_aoc`` per image (module docstring)."""
    order = irof.image_id.unique()  # (first seen, as every per-image quantity)
    irof = irof.astype({"relative_score": np.float64}).sort_values(["image_id", "order", "step"], kind="stable")
    drop = 1.0 - irof.groupby(["image_id", "order"], sort=False).relative_score.mean().unstack("order")
    p = irof[(irof.order == "morf") & (irof.step > 0)].groupby("image_id", sort=False).relative_score
    aoc = p.size() - p.sum() + (p.first() + p.last()) / 2
    return pd.DataFrame({"irof_morf": drop["morf"], "irof_random": drop["random"],
                         "irof_morf_minus_random": drop["morf"] - drop["random"], "irof_aoc": aoc}).loc[order]
