"""Sensitivity-n (Ancona, Ceolini, Öztireli, Gross, ICLR 2018; DEFINITIONS §9).

A heatmap is sensitive-n when Σ_{i∈S} h_i = f_c(x) − f_c(x with S set to the substrate) for every set S of n pixels.
Per image and size n of the grid ``n``, ``subsets`` random sets S of n distinct pixels (the k-th of size n: the n
pixels of smallest uniform draw, ties to the lower index, keyed fold(fold(key(seed, "sensitivity_n_subsets", image),
n), k) — the same whatever the batch, shard, device or rest of the grid) and the Pearson correlation over them

    r_n = corr_S( Σ_{i∈S} h_i ,  f_c(x) − f_c(x_{S ← substrate}) )        (NaN when a side does not vary)

Default grid (``n`` null): geomspace(0.01, 0.8, 10) · H·W rounded, clamped to 1 … H·W − 1, distinct (28×28: 8, 13,
21, 34, 55, 89, 146, 237, 385, 627); substrate black; score ``logit`` (the paper's pre-softmax output). Per image:
``sensitivity_n`` = the mean of the finite r_n over the grid (NaN when none is), ``sensitivity_n_random`` the same
for a seeded uniform random heatmap against the same score drops (no extra forward pass), and their difference. All
images × sizes × subsets go through the model in chunks of ``batch_size``, a set's mask made in its chunk. Table
``sensitivity_n``: one row per image × n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.engine import counter_rng
from bench.engine.seeding import keys_of, rand_per_image
from bench.errors import BenchError
from bench.protocols.base import (SCORES, Batch, Protocol, Quantity, RunInfo, Table, choice, grid_frame, integer,
                                  integers, optional, setting, substrate_settings)

SUBSETS, RANDOM_HEATMAP = "sensitivity_n_subsets", "sensitivity_n_random_heatmap"


def default_sizes(pixels: int) -> tuple[int, ...]:
    """The default grid: geomspace(0.01, 0.8, 10) · H·W rounded, clamped to 1 … H·W − 1, distinct, increasing."""
    sizes = np.clip(np.rint(np.geomspace(0.01, 0.8, 10) * pixels), 1, pixels - 1).astype(np.int64)
    return tuple(int(n) for n in np.unique(sizes))


def subset_keys(seed: int, image_ids: list[str], sizes: tuple[int, ...], subsets: int, device) -> torch.Tensor:
    """int64 (B·len(sizes)·subsets,) generator keys of the subsets, image-major then size then subset: the k-th
    subset of size n of an image is keyed fold(fold(key(seed, SUBSETS, image), n), k)."""
    images = keys_of(seed, SUBSETS, list(image_ids)).to(device)
    n = torch.tensor(sizes, dtype=torch.int64, device=device)
    rows = counter_rng.fold(images.repeat_interleave(len(sizes)), n.repeat(len(images)))
    k = torch.arange(subsets, dtype=torch.int64, device=device)
    return counter_rng.fold(rows.repeat_interleave(subsets), k.repeat(len(rows)))


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Pearson correlation of a and b along ``dim``; NaN where either side is constant (exactly)."""
    da, db = a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True)
    r = (da * db).sum(dim) / (da.square().sum(dim) * db.square().sum(dim)).sqrt()
    flat = (a.amax(dim) == a.amin(dim)) | (b.amax(dim) == b.amin(dim))
    return r.masked_fill(flat, float("nan"))


@dataclass(frozen=True)
class SensitivityN(Protocol):
    n: tuple[int, ...] | None = setting(None, optional(integers(low=1)),
                                        "subset sizes in pixels, strictly increasing (null: 10 sizes log-spaced "
                                        "from 1% to 80% of the pixels)")
    subsets: int = setting(50, integer(low=2), "random pixel subsets per image and per n")
    substrate: str = substrate_settings("zero")["substrate"]
    score: str = setting("logit", choice(*SCORES), "the tracked score (the paper: the pre-softmax output)")
    blur_sigma: float = substrate_settings()["blur_sigma"]
    blur_kernel: int = substrate_settings()["blur_kernel"]

    title = "sensitivity-n"
    tables = (Table("sensitivity_n", ("image_id", "n", "fraction", "correlation", "correlation_random"),
                    keys=("image_id", "n")),)
    quantities = (
        Quantity("sensitivity_n", +1, "Sensitivity-n (mean r over n)", "per image (mean over the sizes n)",
                 headline=True, printed="sensitivity-n", unit="Pearson r",
                 undefined="for every image and every n the subsets' score drops (or heatmap sums) did not vary — "
                           "e.g. subsets that only hit pixels already equal to the substrate; raise sensitivity_n.n"),
        Quantity("sensitivity_n_random", 0, "Sensitivity-n (random heatmap)", "per image (mean over the sizes n)",
                 unit="Pearson r"),
        Quantity("sensitivity_n_minus_random", +1, "Sensitivity-n − random", "per image (mean over the sizes n)",
                 unit="Pearson r"),
    )

    def sizes(self, pixels: int) -> tuple[int, ...]:
        return default_sizes(pixels) if self.n is None else tuple(self.n)

    def check(self, run: RunInfo) -> None:
        _, h, w = run.image_shape
        if self.n is not None and self.n[-1] >= h * w:
            raise BenchError(f"sensitivity_n.n={list(self.n)}: every size must be smaller than the {h}×{w} = "
                             f"{h * w} pixels of an image")
        if self.n is None and h * w < 2:
            raise BenchError(f"sensitivity_n needs images of at least 2 pixels, got {h}×{w}")

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        run, x, target = batch.run, batch.x, batch.target
        h, w = run.image_hw
        pixels, sizes, k = h * w, self.sizes(h * w), self.subsets
        per_image = len(sizes) * k
        total = len(x) * per_image
        keys = subset_keys(run.seed, batch.image_ids, sizes, k, x.device)
        size_of = torch.tensor(sizes, device=x.device).repeat_interleave(k).repeat(len(x))  # (total,)
        heat = torch.stack([batch.heatmap.double().reshape(len(x), pixels),
                            rand_per_image(run.seed, RANDOM_HEATMAP, list(batch.image_ids), (pixels,),
                                           x.device).double()], 1)  # (B, 2, H·W): the heatmap, the random one
        substrate = batch.substrate(self.substrate, self.blur_sigma, self.blur_kernel)
        position = torch.arange(pixels, device=x.device)
        score = self.score
        with torch.inference_mode():
            f_x = run.scores(x, target, score)
            drops = torch.empty(total, dtype=torch.float64, device=x.device)
            sums = torch.empty(total, 2, dtype=torch.float64, device=x.device)
            for start in range(0, total, run.batch_size):
                stop = min(start + run.batch_size, total)
                b = torch.arange(start, stop, device=x.device) // per_image
                draws = counter_rng.uniform(keys[start:stop], (pixels,), x.device)
                order = torch.sort(draws, dim=1, stable=True).indices  # ties: the lower pixel index first
                mask = torch.zeros(stop - start, pixels, dtype=torch.bool, device=x.device)
                mask.scatter_(1, order, position < size_of[start:stop, None])  # the n smallest draws
                inputs = torch.where(mask.view(-1, 1, h, w), substrate[b], x[b])
                drops[start:stop] = (f_x[b] - run.scores(inputs, target[b], score)).double()
                sums[start:stop] = (heat[b] * mask[:, None]).sum(-1)
        sums = sums.view(len(x), len(sizes), k, 2)
        drops = drops.view(len(x), len(sizes), k, 1).expand_as(sums)
        r = pearson(sums, drops, dim=2)  # (B, n, 2)
        rows_of, settings = batch.per_image(), (k, self.substrate, score)

        def rows() -> dict[str, pd.DataFrame]:
            table = grid_frame(rows_of, {}, n=list(sizes))
            table["n"] = table["n"].astype(np.int64)
            table["fraction"] = table["n"] / pixels
            table["correlation"] = r[..., 0].cpu().numpy().ravel()
            table["correlation_random"] = r[..., 1].cpu().numpy().ravel()
            for name, value in zip(("subsets", "substrate", "score"), settings):
                table[f"sensitivity_n_{name}"] = value
            return {"sensitivity_n": table}
        return rows

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        rows = tables.get("sensitivity_n")
        if rows is None:
            return None
        mean = rows.groupby("image_id", sort=False)[["correlation", "correlation_random"]].mean()  # NaN skipped
        out = pd.DataFrame({"sensitivity_n": mean["correlation"], "sensitivity_n_random": mean["correlation_random"]},
                           index=mean.index)
        out["sensitivity_n_minus_random"] = out["sensitivity_n"] - out["sensitivity_n_random"]
        return out

    @classmethod
    def notes(cls, tables) -> list[str]:
        rows = tables.get("sensitivity_n")
        if rows is None or rows["correlation"].notna().all():
            return []
        missing = rows["correlation"].isna()
        none = rows.groupby("image_id", sort=False)["correlation"].count().eq(0).sum()
        return [f"sensitivity_n: r_n undefined (the subsets' score drops or heatmap sums did not vary) for "
                f"{int(missing.sum())} of {len(rows)} image × n rows, left out of the images' means over n; "
                f"{int(none)} image(s) have none defined and no sensitivity_n"]
