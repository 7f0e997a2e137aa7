"""Per batch of images: heatmaps → region orders → perturbation curves (+ complexity, continuity) → rows.

``Evaluator`` holds what is fixed for a run (model, method, regions, replacement, settings) and turns one
batch of raw images into tidy rows by table name (without the run's provenance columns, which
bench/tables.py adds). It knows nothing of files, shards or resuming; bench/run.py does.

Two phases per batch, so that a pipeline (bench/run.py) can keep the device busy: ``launch`` does the device
work (attribution, orders, draws, perturbed forward passes) and returns a ``Pending`` whose ``tables()`` does
the host work (copies to the host, tidy frames, complexity's image encoding) — in another thread while the
next batch is launched. ``evaluate`` is the two in a row.

Tables: ``curves`` (always), ``curves_repeats`` (``per_repeat``), ``heatmaps`` (first ``save_heatmaps``
images), ``complexity``, ``continuity`` and ``road`` (when listed in ``metrics``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from .api import Context, Method, Normalization
from .engine import aopc_curve, imputed_scores, perturbed_scores, sequential_scores
from .perturbation import Replacement
from .pooling import pool_channels
from .regions import Regions, morf_order, n_regions, pixel_ranks, seeded_orders, tile_ids
from .scoring import choose_target, score_of
from .seeding import randperm_ragged
from .spec import ORDERS, RunSpec

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Evaluator:
    model: nn.Module
    method: Method
    pooling: str
    replacement: Replacement
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
    orders: tuple[str, ...] = ("morf", "random")  # the random baseline is always evaluated
    per_repeat: bool = False
    precision: str = "fp32"  # of the perturbation forward passes (attribution always runs in fp32)
    channels_last: bool = False
    compile: bool = False
    metrics: tuple[str, ...] = ("aopc",)
    complexity: dict[str, Any] = field(default_factory=dict)   # bench.complexity.complexity keywords
    continuity: dict[str, Any] = field(default_factory=dict)   # bench.continuity.continuity keywords
    road: dict[str, Any] = field(default_factory=dict)         # fractions, noise (SPEC §9, ROAD)
    deletion: dict[str, Any] = field(default_factory=dict)     # steps, substrate, score, blur (SPEC §9)
    insertion: dict[str, Any] = field(default_factory=dict)
    faithfulness_correlation: dict[str, Any] = field(default_factory=dict)  # subsets, subset_size, substrate, score
    pixel_flipping: dict[str, Any] = field(default_factory=dict)  # steps, substrate (SPEC §9)
    regions_cfg: dict[str, Any] = field(default_factory=lambda: {"kind": "tiles", "score": "sum"})  # SPEC §3, §9
    irof: dict[str, Any] = field(default_factory=dict)  # SLIC settings, substrate, score (SPEC §9)

    @classmethod
    def from_spec(cls, spec: RunSpec, model: nn.Module) -> "Evaluator":
        """The evaluator of a checked run specification (bench/spec.py), for ``model``."""
        dataset = spec.dataset.obj
        return cls(model=model.to(spec.device).eval(), method=spec.method.obj, pooling=spec.pooling,
                   replacement=spec.perturbation.obj, normalization=dataset.normalization,
                   image_hw=tuple(dataset.image_shape[1:]), patch=spec.patch, steps=spec.steps,
                   repeats=spec.repeats, batch_size=spec.batch_size, seed=spec.seed, target=spec.target,
                   score=spec.score, device=spec.device, save_heatmaps=spec.save_heatmaps, orders=spec.orders,
                   per_repeat=spec.per_repeat, precision=spec.precision, channels_last=spec.channels_last,
                   compile=spec.compile, metrics=spec.metrics, complexity=dict(spec.complexity),
                   continuity=dict(spec.continuity), road=dict(spec.road), deletion=dict(spec.deletion),
                   insertion=dict(spec.insertion), faithfulness_correlation=dict(spec.faithfulness_correlation),
                   pixel_flipping=dict(spec.pixel_flipping), regions_cfg=dict(spec.regions), irof=dict(spec.irof))

    def __post_init__(self) -> None:
        self.orders = tuple(o for o in ORDERS if o in set(self.orders) | {"random"})
        if "road" in self.metrics:
            from .perturbation import Road

            self.road_replacement = Road(noise=self.road["noise"])
            self.road_repeats = self.repeats if self.road_replacement.random else 1  # (noise 0: deterministic)
        if self.replacement.sequential or not self.replacement.random:
            self.repeats = 1  # deterministic g: repeats would only repeat the same numbers
        h, w = self.image_hw
        self.superpixels = self.regions_cfg["kind"] == "slic"
        # tiles: R regions, L = min(steps, R); superpixels: R per image, L = steps (recorded n_regions 0)
        self.regions = 0 if self.superpixels else n_regions(h, w, self.patch)
        self.L = self.steps if self.superpixels else min(self.steps, self.regions)
        self._forward = self.model
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.compile:
            self._forward = torch.compile(self.model)

    # -- model calls -------------------------------------------------------------------------------
    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's outputs with the run's precision, memory format and compilation; used for the
        unperturbed and the perturbed inputs alike, so a curve never mixes precisions. Compiled, a chunk
        shorter than ``batch_size`` is padded to it (copies of its last input, outputs dropped), so the
        compiled graph sees one static shape and is never recompiled for the last chunk."""
        n = len(inputs)
        if self.compile and 0 < n < self.batch_size:
            inputs = torch.cat([inputs, inputs[-1:].expand(self.batch_size - n, *inputs.shape[1:])])
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext():
            return self._forward(inputs)[:n].float()

    def score_fn(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """f_c of a chunk of perturbed inputs (SPEC §1)."""
        return score_of(self.logits(inputs), target, self.score)

    def attribute(self, x: torch.Tensor, target: torch.Tensor, image_ids: list[str]) -> torch.Tensor:
        ctx = Context(image_ids=image_ids, seed=self.seed, normalization=self.normalization)
        return self.method.attribute(self.model, x, target, ctx)

    # -- one batch ---------------------------------------------------------------------------------
    def evaluate(self, image_ids: list[str], raw: torch.Tensor, labels: torch.Tensor,
                 indices: list[int] | None = None) -> tuple[dict[str, pd.DataFrame] | None, list[tuple[str, str]]]:
        """Tidy rows of one batch by table name, and the images skipped, as (image_id, reason): the model's
        score of the unperturbed image is not finite, or the method's heatmap is not. ``indices`` are the
        images' dataset positions (for ``save_heatmaps``)."""
        pending = self.launch(image_ids, raw, labels, indices)
        return pending.tables(), pending.skipped

    def launch(self, image_ids: list[str], raw: torch.Tensor, labels: torch.Tensor,
               indices: list[int] | None = None) -> "Pending":
        """The device work of ``evaluate``; the host work is left to the returned ``Pending.tables()``."""
        indices = list(range(len(image_ids))) if indices is None else list(indices)
        raw = raw.to(self.device, non_blocking=True).float()
        x = self.normalization.normalize(raw)
        with torch.inference_mode():
            logits = self.logits(x)
        target = choose_target(logits, labels, self.target)
        f0 = score_of(logits, target, self.score)
        skipped: list[tuple[str, str]] = []

        def keep_only(ok: torch.Tensor, reason: str) -> None:
            nonlocal x, raw, target, f0, labels, image_ids, indices
            skipped.extend((image_ids[i], reason) for i in torch.nonzero(~ok).flatten().tolist())
            keep = ok.nonzero().flatten()
            x, raw, target, f0, labels = x[keep], raw[keep], target[keep], f0[keep], labels[keep.cpu()]
            image_ids, indices = [image_ids[i] for i in keep.tolist()], [indices[i] for i in keep.tolist()]

        ok = torch.isfinite(logits).all(1) & torch.isfinite(f0)
        if not ok.all():
            keep_only(ok, "the model's output for the unperturbed image is not finite (NaN/inf)")
            if not image_ids:
                return Pending(skipped, [])
        heat = pool_channels(self.attribute(x, target, image_ids), self.pooling)
        ok = torch.isfinite(heat).flatten(1).all(1)
        if not ok.all():
            heat = heat[ok.nonzero().flatten()]
            keep_only(ok, "the method's heatmap is not finite (NaN/inf)")
            if not image_ids:
                return Pending(skipped, [])

        regions = self.batch_regions(raw)
        seeded = regions.orders(heat.float(), image_ids, self.seed)  # MoRF, LeRF, random: once for all protocols
        work = [self._curves(x, target, f0, labels, image_ids, regions, seeded)]
        if "complexity" in self.metrics:
            work.append(lambda: {"complexity": self._complexity(heat, image_ids)})
        if "continuity" in self.metrics:
            rows = self._continuity(x, target, image_ids)
            work.append(lambda: {"continuity": rows})
        if {"road", "deletion", "insertion"} & set(self.metrics):  # pixels ranked once for all three (SPEC §9)
            pixel_orders = seeded_orders(heat.float().reshape(len(x), -1), image_ids, self.seed)
        if "road" in self.metrics:
            work.append(self._road(x, pixel_orders, target, f0, labels, image_ids))
        for kind in ("deletion", "insertion"):
            if kind in self.metrics:
                work.append(self._deletion_insertion(kind, x, pixel_orders, target, labels, image_ids))
        if "faithfulness_correlation" in self.metrics:
            work.append(self._faithfulness_correlation(x, heat, target, image_ids))
        if "pixel_flipping" in self.metrics:
            work.append(self._pixel_flipping(x, heat, target, f0, labels, image_ids, regions, seeded["random"]))
        if "irof" in self.metrics:
            work.append(self._irof(x, raw, heat, target, labels, image_ids, regions))
        saved = [i for i, index in enumerate(indices) if index < self.save_heatmaps]
        if saved:
            h, w = self.image_hw
            kept = heat[saved]
            raw = self.normalization.denormalize(x[saved].float())  # the input, for the report's heatmap grid
            lo, hi = self.normalization.raw_range
            work.append(lambda: {"heatmaps": pd.DataFrame({
                "image_id": [image_ids[i] for i in saved], "height": h, "width": w,
                "heatmap": list(kept.float().cpu().numpy().reshape(len(saved), -1)),
                "channels": raw.shape[1], "image": list(raw.cpu().numpy().reshape(len(saved), -1)),
                "raw_low": float(lo), "raw_high": float(hi)})})
        return Pending(skipped, work)

    def batch_regions(self, raw: torch.Tensor) -> Regions:
        """The regions of a batch (SPEC §3): the run's tiles, or each image's SLIC superpixels (``regions=slic``,
        bench/superpixels.py, computed from the raw image)."""
        cfg = self.regions_cfg
        if not self.superpixels:
            h, w = self.image_hw
            return Regions.tiles(h, w, self.patch, len(raw), self.device, cfg["score"])
        return self._superpixels(raw, cfg)

    def _superpixels(self, raw: torch.Tensor, cfg: dict) -> Regions:
        from .superpixels import SLIC_DEFAULTS, slic_labels

        ids, counts = slic_labels(raw, self.normalization.raw_range, **{k: cfg[k] for k in SLIC_DEFAULTS})
        return Regions.per_image(ids, counts, cfg.get("score", "mean"))

    def _curves(self, x, target, f0, labels, image_ids, regions: Regions, seeded: dict[str, torch.Tensor]
                ) -> Callable[[], dict[str, pd.DataFrame]]:
        """MoRF (and LeRF) curves of the heatmap and the paired random-baseline curve (SPEC §3–4); the device
        work is done here, the tidy rows are made by the returned function. Superpixels: the first
        min(L, largest R) steps are computed, and an image's steps after its own R repeat its last value.
        ``seeded``: the heatmap's region orders (``Regions.orders``)."""
        orders = [seeded[o] for o in self.orders]
        ranks = torch.stack([regions.ranks(o) for o in orders], 1)
        steps = min(self.L, regions.count)
        if self.replacement.sequential:
            scores = sequential_scores(self.score_fn, x, ranks, self.replacement.step, target, steps,
                                       self.batch_size)
        elif self.replacement.imputed:
            draws = self.replacement.draw(x, image_ids, self.repeats, self.seed, self.normalization)
            scores = imputed_scores(self.score_fn, x, ranks, self.replacement.fill, draws, target,
                                    torch.arange(1, steps + 1), self.batch_size)
        else:
            draws = self.replacement.draw(x, image_ids, self.repeats, self.seed, self.normalization)
            scores = perturbed_scores(self.score_fn, x, ranks, draws, target, steps, self.batch_size)  # B,O,J,L
        scores = regions.extend(scores, self.L)

        first = f0.view(-1, 1, 1).expand(-1, len(orders), 1)
        nonfinite = torch.cat([torch.zeros_like(first), (~torch.isfinite(scores)).sum(2).to(first.dtype)], -1)
        curve = torch.cat([first, scores.mean(2)], -1)
        spread = torch.cat([torch.zeros_like(first), scores.std(2, correction=0)], -1)
        aopc = aopc_curve(f0.view(-1, 1), curve)
        replaced = torch.stack([regions.extend(regions.fraction(o, steps, curve.dtype), self.L) for o in orders], 1)
        fraction = torch.cat([torch.zeros_like(first), replaced], -1)
        return lambda: self._curve_rows(image_ids, labels, target, scores, fraction, curve, spread, aopc, nonfinite)

    def _curve_rows(self, image_ids, labels, target, scores, fraction, curve, spread, aopc, nonfinite):
        tables = {"curves": grid_frame(
            dict(image_id=image_ids, label=labels.cpu().numpy(), target_class=target.cpu().numpy()),
            order=list(self.orders), step=np.arange(self.L + 1),
            values=dict(fraction_perturbed=fraction, score_value=curve, score_std=spread, aopc=aopc,
                        nonfinite=nonfinite))}
        tables["curves"]["nonfinite"] = tables["curves"]["nonfinite"].astype("int64")
        if self.per_repeat:
            tables["curves_repeats"] = grid_frame(
                dict(image_id=image_ids), order=list(self.orders), repeat=np.arange(scores.shape[2]),
                step=np.arange(1, self.L + 1), values=dict(score_value=scores))
        return tables

    def _pixel_ranks(self, orders: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, O, H, W) ranks of the pixels in each of ``orders`` ((B, H·W) pixel orders)."""
        h, w = self.image_hw
        pixels = tile_ids(h, w, 1, device=next(iter(orders.values())).device)
        return torch.stack([pixel_ranks(o, pixels) for o in orders.values()], 1)

    def _road(self, x, pixel_orders, target, f0, labels, image_ids) -> Callable[[], dict[str, pd.DataFrame]]:
        """ROAD (SPEC §9): the pixels ranked by the pooled heatmap (``pixel_orders``: ties and the random order
        seeded per image, as for the regions), MoRF, LeRF and random; at each removal fraction the top pixels of
        the original image are replaced by noisy linear imputation (bench/imputation.py), ``road_repeats`` noise
        draws."""
        h, w = self.image_hw
        orders = {"morf": pixel_orders["morf"], "lerf": pixel_orders["morf"].flip(1), "random": pixel_orders["random"]}
        ranks = self._pixel_ranks(orders)
        fractions = torch.tensor((0.0, *self.road["fractions"]), dtype=torch.float64)
        counts = (fractions[1:] * h * w).round().long().clamp(1, h * w)
        road = self.road_replacement
        draws = road.draw(x, image_ids, self.road_repeats, self.seed, self.normalization)
        scores = imputed_scores(self.score_fn, x, ranks, road.fill, draws, target, counts, self.batch_size)
        first = f0.view(-1, 1, 1).expand(-1, len(orders), 1)
        curve = torch.cat([first, scores.mean(2)], -1)
        spread = torch.cat([torch.zeros_like(first), scores.std(2, correction=0)], -1)
        removed = torch.cat([torch.zeros(1), counts.double() / (h * w)]).float()
        removed = removed.view(1, 1, -1).expand_as(curve)
        noise, repeats = self.road["noise"], self.road_repeats

        def rows():
            table = grid_frame(dict(image_id=image_ids, label=labels.cpu().numpy(), target_class=target.cpu().numpy()),
                               order=list(orders),
                               step=np.arange(len(fractions)),
                               values=dict(fraction_removed=removed, score_value=curve, score_std=spread))
            table["road_noise"], table["road_repeats"] = noise, repeats
            return {"road": table}
        return rows

    def _deletion_insertion(self, kind: str, x, pixel_orders, target, labels, image_ids
                            ) -> Callable[[], dict[str, pd.DataFrame]]:
        """Deletion or insertion (Petsiuk et al., BMVC 2018; SPEC §9). Pixels ranked by the pooled heatmap (ties
        and the paired random order seeded per image, the ``pixel_orders`` ROAD uses too); k_s = round(s·H·W / S) pixels at step
        s = 0 … S. Deletion: the top k_s pixels of x set to the substrate; insertion: the substrate with the top
        k_s pixels of x put back (from the substrate's score at s = 0 to the image's at s = S). Scored with the
        protocol's own ``score`` (the class probability by default); every item batched like ROAD's."""
        cfg = getattr(self, kind)
        h, w = self.image_hw
        steps = cfg["steps"] or h
        orders = {"morf": pixel_orders["morf"], "random": pixel_orders["random"]}
        ranks = self._pixel_ranks(orders)
        counts = (torch.arange(steps + 1, dtype=torch.float64) * (h * w) / steps).round().long()
        substrate = self._substrate(cfg, x, image_ids)
        base, put = (x, substrate) if kind == "deletion" else (substrate, x)
        score = cfg["score"]

        def score_fn(inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return score_of(self.logits(inputs), t, score)

        def fill(b: torch.Tensor, chosen: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return torch.where(chosen, p, b)

        scores = imputed_scores(score_fn, base, ranks, fill, put[:, None], target, counts, self.batch_size)[:, :, 0]
        changed = (counts.double() / (h * w)).float().view(1, 1, -1).expand_as(scores)
        substrate_name = cfg["substrate"]

        def rows():
            table = grid_frame(dict(image_id=image_ids, label=labels.cpu().numpy(), target_class=target.cpu().numpy()),
                               order=list(orders), step=np.arange(steps + 1),
                               values=dict(fraction_changed=changed, score_value=scores))
            table[f"{kind}_substrate"], table[f"{kind}_score"] = substrate_name, score
            return {kind: table}
        return rows

    def _substrate(self, cfg: dict, x: torch.Tensor, image_ids: list[str]) -> torch.Tensor:
        """What removed pixels become in a §9 protocol: ``zero`` (black), ``mean`` (the dataset mean),
        ``image_mean`` (the per-channel mean of the image itself) or ``blur`` (the Gaussian blur of the image,
        ``blur_sigma``, ``blur_kernel``), in model-input units."""
        from .perturbation import Mean, Zero, gaussian_blur

        if cfg["substrate"] == "image_mean":
            return x.mean((2, 3), keepdim=True).expand_as(x)
        if cfg["substrate"] == "blur":
            return gaussian_blur(x, cfg["blur_sigma"], cfg["blur_kernel"] // 2)
        constant = Zero() if cfg["substrate"] == "zero" else Mean()
        return constant.draw(x, image_ids, 1, self.seed, self.normalization)[:, 0]

    def _pixel_flipping(self, x, heat, target, f0, labels, image_ids, regions: Regions, random_order: torch.Tensor
                        ) -> Callable[[], dict[str, pd.DataFrame]]:
        """Pixel-flipping with recomputed heatmaps (tutorial Sec. 7.2, Fig. 8; SPEC §9): at step k the heatmap of
        the current image x⁽ᵏ⁻¹⁾ is computed, its most relevant remaining region (tiles of ``patch`` or the image's
        superpixels; ties by the seeded permutation) set to the substrate (default black), and f_c(x⁽ᵏ⁾)
        recorded; all images advance together, one batched attribution and one batched forward per step.
        Alongside, the paired random order with the same substrate (no heatmap). A seeded method draws afresh
        at each step (id ``<image_id>~pf<k>``). ``steps`` null: every region (tiles) or the run's ``steps``
        (superpixels, whose count differs per image; after its own R an image's curve stays, ``region`` −1)."""
        cfg = self.pixel_flipping
        total = self.L if self.superpixels else self.regions
        steps = min(cfg["steps"] or total, total)
        done = min(steps, regions.count)  # steps computed; the rest repeat each image's last
        n = len(x)
        substrate = self._substrate(cfg, x, image_ids)
        tiebreak = randperm_ragged(self.seed, "pixel_flipping_tiebreak", list(image_ids), regions.counts,
                                   regions.count, x.device)
        counts = torch.tensor(regions.counts, device=x.device).view(-1, 1)
        removed = torch.arange(regions.count, device=x.device).expand(n, -1) >= counts  # padding: never chosen
        chosen = torch.empty(n, done, dtype=torch.long, device=x.device)
        scores = torch.empty(n, done, dtype=torch.float32, device=x.device)
        current, h = x, heat
        for k in range(done):
            if k:  # the heatmap of the current image (step 0: the image's own, already computed)
                ids = [f"{i}~pf{k}" for i in image_ids]
                h = pool_channels(self.attribute(current, target, ids), self.pooling).detach()
            rs = regions.scores(h.float()).masked_fill(removed, float("-inf"))
            pick = morf_order(rs, tiebreak)[:, 0]
            removed[torch.arange(n, device=x.device), pick] = True
            chosen[:, k] = pick
            current = torch.where(regions.pixel_mask(removed).unsqueeze(1), substrate, x).detach()
            with torch.no_grad():  # (not inference mode: the next step attributes ``current``)
                scores[:, k] = torch.cat([self.score_fn(current[s:s + self.batch_size], target[s:s + self.batch_size])
                                          for s in range(0, n, self.batch_size)])
        ranks = regions.ranks(random_order).unsqueeze(1)
        rnd = perturbed_scores(self.score_fn, x, ranks, substrate[:, None], target, done, self.batch_size)[:, 0, 0]
        real = torch.arange(steps, device=x.device) < counts  # (B, steps): a region was removed at this step
        chosen = torch.where(real, regions.extend(chosen, steps), -1)
        first = f0.view(-1, 1)
        curve = torch.stack([torch.cat([first, regions.extend(scores, steps)], 1),
                             torch.cat([first, regions.extend(rnd, steps)], 1)], 1)
        zero = torch.zeros(n, 1, dtype=torch.float64, device=x.device)
        sizes = regions.sizes.gather(1, chosen.clamp(min=0)) * real
        flipped = torch.cat([zero, sizes.cumsum(1).double() / (self.image_hw[0] * self.image_hw[1])], 1)
        rnd_flipped = torch.cat([zero, regions.extend(regions.fraction(random_order, done), steps)], 1)
        fraction = torch.stack([flipped, rnd_flipped], 1).float()
        rnd_region = torch.where(real, regions.extend(random_order[:, :done], steps), -1)
        region = torch.stack([torch.cat([torch.full((n, 1), -1, device=x.device), chosen], 1),
                              torch.cat([torch.full((n, 1), -1, device=x.device), rnd_region], 1)], 1)
        substrate_name = cfg["substrate"]

        def rows():
            table = grid_frame(dict(image_id=image_ids, label=labels.cpu().numpy(), target_class=target.cpu().numpy()),
                               order=["morf", "random"], step=np.arange(steps + 1),
                               values=dict(fraction_perturbed=fraction, score_value=curve))
            table["region"] = region.cpu().numpy().ravel()
            table["pixel_flipping_substrate"] = substrate_name
            return {"pixel_flipping": table}
        return rows

    def _irof(self, x, raw, heat, target, labels, image_ids, regions: Regions
              ) -> Callable[[], dict[str, pd.DataFrame]]:
        """IROF (Rieger & Hansen 2020; SPEC §9): the image's SLIC superpixels (``irof`` settings) ranked by their
        mean relevance (ties seeded), removed one after another until none is left — set to the substrate (the
        image's per-channel mean by default), static so every step is batched like the AOPC curve — with the
        paired random order of the same superpixels. Rows: steps 0 … R of each image (its own R), the score
        (class probability by default) and ``relative_score`` f_c(x⁽ᵏ⁾)/f_c(x). ``regions``: the run's, whose
        segments are used when they are superpixels of the same SLIC settings (not segmented twice)."""
        from dataclasses import replace

        from .superpixels import SLIC_DEFAULTS

        cfg = self.irof
        if self.superpixels and all(cfg[k] == self.regions_cfg[k] for k in SLIC_DEFAULTS):
            regions = replace(regions, score="mean")
        else:
            regions = self._superpixels(raw, {**cfg, "score": "mean"})
        seeded = regions.orders(heat.float(), image_ids, self.seed)
        orders = {"morf": seeded["morf"], "random": seeded["random"]}
        ranks = torch.stack([regions.ranks(o) for o in orders.values()], 1)
        substrate = self._substrate(cfg, x, image_ids)
        score = cfg["score"]

        def score_fn(inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return score_of(self.logits(inputs), t, score)

        with torch.inference_mode():
            f_x = score_fn(x, target)
        scores = perturbed_scores(score_fn, x, ranks, substrate[:, None], target, regions.count,
                                  self.batch_size)[:, :, 0]
        first = f_x.view(-1, 1, 1).expand(-1, len(orders), 1)
        curve = torch.cat([first, scores], -1)
        zero = torch.zeros(len(x), 1, dtype=torch.float32, device=x.device)
        fraction = torch.stack([torch.cat([zero, regions.fraction(o, regions.count, torch.float32)], 1)
                                for o in orders.values()], 1)
        counts = np.asarray(regions.counts)
        settings = {f"irof_{k}": cfg[k] for k in ("n_segments", "compactness", "sigma", "max_num_iter", "substrate",
                                                  "score")}

        def rows():
            table = grid_frame(dict(image_id=image_ids, label=labels.cpu().numpy(), target_class=target.cpu().numpy(),
                                    irof_regions=counts),
                               order=list(orders), step=np.arange(regions.count + 1),
                               values=dict(fraction_perturbed=fraction, score_value=curve,
                                           relative_score=curve / first))
            table = table[table.step <= table.irof_regions].reset_index(drop=True)
            for k, v in settings.items():
                table[k] = v
            return {"irof": table}
        return rows

    def _faithfulness_correlation(self, x, heat, target, image_ids) -> Callable[[], dict[str, pd.DataFrame]]:
        """Faithfulness correlation (Bhatt et al., IJCAI 2020; SPEC §9): per image, ``subsets`` random pixel
        subsets S of ``subset_size`` pixels (seeded per image: the smallest of uniform draws), the Pearson
        correlation between Σ_{i∈S} h_i and f_c(x) − f_c(x with S set to the substrate). All subsets of all
        images go through the model in chunks of ``batch_size``; a subset's mask is made in its chunk."""
        from .seeding import rand_per_image

        cfg = self.faithfulness_correlation
        h, w = self.image_hw
        n, size = cfg["subsets"], cfg["subset_size"] or max(1, round(224 * h * w / 224 ** 2))
        draws = rand_per_image(self.seed, "faithfulness_subsets", list(image_ids), (n, h * w), x.device)
        subsets = draws.topk(size, dim=-1, largest=False).indices  # (B, N, |S|), distinct pixels
        substrate = self._substrate(cfg, x, image_ids)
        score = cfg["score"]
        with torch.inference_mode():
            f_x = score_of(self.logits(x), target, score)
            total = len(x) * n
            drops = torch.empty(total, dtype=torch.float64, device=x.device)
            flat = subsets.reshape(total, size)
            for start in range(0, total, self.batch_size):
                stop = min(start + self.batch_size, total)
                b = torch.arange(start, stop, device=x.device) // n
                mask = torch.zeros(stop - start, h * w, dtype=torch.bool, device=x.device)
                mask.scatter_(1, flat[start:stop], True)
                inputs = torch.where(mask.view(-1, 1, h, w), substrate[b], x[b])
                drops[start:stop] = (f_x[b] - score_of(self.logits(inputs), target[b], score)).double()
        sums = heat.double().reshape(len(x), -1).gather(1, subsets.reshape(len(x), -1)).view(len(x), n, size).sum(-1)
        a = sums - sums.mean(1, keepdim=True)
        d = drops.view(len(x), n) - drops.view(len(x), n).mean(1, keepdim=True)
        r = (a * d).sum(1) / (a.square().sum(1) * d.square().sum(1)).sqrt()  # 0/0 → NaN: no variation to correlate
        substrate_name = cfg["substrate"]

        def rows():
            return {"faithfulness_correlation": pd.DataFrame({
                "image_id": image_ids, "faithfulness_correlation": r.cpu().numpy(), "fc_subsets": n,
                "fc_subset_size": size, "fc_substrate": substrate_name, "fc_score": score})}
        return rows

    def _complexity(self, heat: torch.Tensor, image_ids: list[str]) -> pd.DataFrame:
        """SPEC §5: PNG/JPEG bytes and entropy of the rendered heatmap (bench/complexity.py)."""
        from .complexity import complexity

        rows = complexity(heat.float().cpu().numpy(), image_keys=image_ids, **self.complexity)
        return rows.rename(columns={"image": "image_id"})

    def _continuity(self, x: torch.Tensor, target: torch.Tensor, image_ids: list[str]) -> pd.DataFrame:
        """SPEC §6 over the configured neighbourhood, every neighbour attributed in batches; each image's
        class stays fixed. Neighbour v > 0 of an image gets its own id ``<image_id>~<v>`` so that methods
        seeded per image (random, SmoothGrad) draw afresh for it."""
        from .continuity import continuity

        first_row: dict[int, int] = {}
        seen = [0]

        def attribute(xs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            ids = []
            for row, i in enumerate(idx.tolist(), start=seen[0]):
                v = row - first_row.setdefault(i, row)
                ids.append(image_ids[i] if v == 0 else f"{image_ids[i]}~{v}")
            seen[0] += len(ids)
            return self.attribute(xs, target[idx], ids)

        rows = continuity(attribute, x, seed=self.seed, image_keys=image_ids, batch_size=self.batch_size,
                          **self.continuity)
        return rows.rename(columns={"image": "image_id"})


@dataclass
class Pending:
    """A batch whose device work is queued: the images skipped so far, and the host work that makes its rows."""
    skipped: list[tuple[str, str]]
    work: list[Callable[[], dict[str, pd.DataFrame]]]

    def tables(self) -> dict[str, pd.DataFrame] | None:
        """Tidy rows by table name (waits for the device); None when every image of the batch was skipped."""
        if not self.work:
            return None
        out: dict[str, pd.DataFrame] = {}
        for make in self.work:
            out.update(make())
        return out


def grid_frame(per_image: dict[str, Any], values: dict[str, torch.Tensor], **axes) -> pd.DataFrame:
    """Rows of the full grid image × axis₁ × axis₂ …, in that order, with per-image columns repeated and
    each value tensor (B, len(axis₁), len(axis₂), …) flattened."""
    n = len(per_image["image_id"])
    grids = np.meshgrid(np.arange(n), *(np.arange(len(a)) for a in axes.values()), indexing="ij")
    img = grids[0].ravel()
    frame = {k: np.asarray(v, dtype=object if isinstance(v, list) else None)[img] for k, v in per_image.items()}
    for (name, axis), g in zip(axes.items(), grids[1:]):
        frame[name] = np.asarray(axis, dtype=object if isinstance(axis, list) else None)[g.ravel()]
    for name, v in values.items():
        frame[name] = v.float().cpu().numpy().ravel()
    return pd.DataFrame(frame)
