"""Per batch of images: heatmaps → the shared state (regions, orders) → every protocol of the run → rows.

``Evaluator`` holds what is fixed for a run (model, method, regions, replacement, settings, the run's protocols)
and what every protocol shares: the model calls (precision, memory format, compilation), the attribution, the
regions and the seeded orders of a batch. What a protocol computes is its own file (bench/protocols/); this
module only loops over them. It knows nothing of files, shards or resuming; bench/run/job.py does.

Two phases per batch, so that a pipeline (bench/run/job.py) can keep the device busy: ``launch`` does the device
work (attribution, orders, each protocol's forward passes) and returns a ``Pending`` whose ``tables()`` does the
host work (copies to the host, tidy frames) — in another thread while the next batch is launched. ``evaluate``
is the two in a row. Tables: those of the run's protocols, and ``heatmaps`` (the first ``save_heatmaps``
images).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn

from ..engine.pooling import pool_channels
from ..engine.regions import Regions, n_regions, seeded_orders
from ..engine.replacement import Replacement
from ..engine.scoring import choose_target, score_of
from ..engine.seeding import randn_per_image
from ..interfaces import Context, Method, Normalization
from .. import protocols
from ..protocols import Batch, Protocol, protocol_class, required
from ..protocols.base import Shared
from .spec import ORDERS, RunSpec

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _required() -> tuple[Protocol, ...]:
    return tuple(protocol_class(name)() for name in required())


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
    protocols: tuple[Protocol, ...] = field(default_factory=_required)   # the run's, with their settings
    regions_settings: dict[str, Any] = field(default_factory=lambda: {"kind": "tiles", "score": "sum"})  # DEFINITIONS §3, §9
    explained: nn.Module | None = None   # the model the method explains (f⁽ᵏ⁾, DEFINITIONS §10); None: ``model``
    input_noise: float = 0.0   # σ: the images are x + σ·ε, ε seeded standard normal in model-input units (§10)

    @classmethod
    def from_spec(cls, spec: RunSpec, model: nn.Module, explained: nn.Module | None = None) -> "Evaluator":
        """The evaluator of a checked run specification (bench/run/spec.py), for ``model``; ``explained``: the
        model the method explains when not ``model`` (``randomise_layers``). Its ``input_noise`` σ is resolved
        afterwards (bench/run/variants.py: ``auto`` needs the evaluator's forward passes)."""
        dataset = spec.dataset.obj
        explained = None if explained is None or explained is model else explained.to(spec.device).eval()
        return cls(model=model.to(spec.device).eval(), explained=explained,
                   method=spec.method.obj, pooling=spec.pooling,
                   replacement=spec.perturbation.obj, normalization=dataset.normalization,
                   image_hw=tuple(dataset.image_shape[1:]), patch=spec.patch, steps=spec.steps,
                   repeats=spec.repeats, batch_size=spec.batch_size, seed=spec.seed, target=spec.target,
                   score=spec.score, device=spec.device, save_heatmaps=spec.save_heatmaps, orders=spec.orders,
                   per_repeat=spec.per_repeat, precision=spec.precision, channels_last=spec.channels_last,
                   compile=spec.compile, protocols=spec.protocols, regions_settings=dict(spec.regions))

    def __post_init__(self) -> None:
        self.orders = tuple(o for o in ORDERS if o in set(self.orders) | {"random"})
        self.requested_repeats = self.repeats  # the run's `repeats`: draws of a protocol's own random replacement
        if self.replacement.sequential or not self.replacement.random:
            self.repeats = 1  # deterministic g: repeats would only repeat the same numbers (recorded)
        h, w = self.image_hw
        self.superpixels = self.regions_settings["kind"] == "slic"
        # tiles: R regions, L = min(steps, R); superpixels: R per image, L = steps (recorded n_regions 0)
        self.n_regions = 0 if self.superpixels else n_regions(h, w, self.patch)
        self.L = self.steps if self.superpixels else min(self.steps, self.n_regions)
        # DEFINITIONS §4 "Unequal regions": tiles of one size only when the patch divides the image
        self.equal_regions = not self.superpixels and h % self.patch == 0 and w % self.patch == 0
        self._forward = self.model
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.compile:
            self._forward = torch.compile(self.model)

    def region_warnings(self) -> list[str]:
        """One line each for what makes AOPC across patch sizes not comparable (DEFINITIONS §4): tiles of unequal size,
        and curves that stop before the whole image is perturbed."""
        h, w = self.image_hw
        lines = []
        if self.superpixels:
            lines.append("regions=slic: the superpixels differ in size, so AOPC is also reported area-matched "
                         "(aopc_area_*, DEFINITIONS §4 Unequal regions); equal_regions=false is recorded")
        elif not self.equal_regions:
            area = [q.name for _, q in protocols.quantities().values() if q.replaces]
            lines.append(f"patch {self.patch} does not divide the {h}×{w} image: its tiles differ in size and "
                         f"AOPC − random is biased; quote the area-matched AOPC ({', '.join(area)}, "
                         f"DEFINITIONS §4 Unequal regions); equal_regions=false is recorded")
        if not self.superpixels and self.L < self.n_regions:
            share = self.L * self.patch ** 2 / (h * w) if self.equal_regions else None
            lines.append(f"steps={self.steps} < {self.n_regions} regions at patch {self.patch}: the curves stop "
                         f"before the whole image is perturbed{f' (at {share:.0%} of the pixels)' if share else ''}; "
                         f"compare patch sizes on the fraction of pixels perturbed, or set steps={self.n_regions}")
        return lines

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

    def scores(self, inputs: torch.Tensor, target: torch.Tensor, score: str | None = None) -> torch.Tensor:
        """f_c of a chunk of inputs (DEFINITIONS §1): the run's ``score`` (logit, softmax or log_softmax), or ``score``."""
        return score_of(self.logits(inputs), target, self.score if score is None else score)

    def attribute(self, x: torch.Tensor, target: torch.Tensor, image_ids: list[str]) -> torch.Tensor:
        """The method's relevance R of ``x`` (x's shape); ``image_ids`` seed a method's per-image draws."""
        ctx = Context(image_ids=image_ids, seed=self.seed, normalization=self.normalization)
        return self.method.attribute(self.model if self.explained is None else self.explained, x, target, ctx)

    def heatmap(self, x: torch.Tensor, target: torch.Tensor, image_ids: list[str]) -> torch.Tensor:
        """The pixel heatmap h (B, H, W): the relevance pooled over channels (DEFINITIONS §2)."""
        return pool_channels(self.attribute(x, target, image_ids), self.pooling)

    def noise(self, x: torch.Tensor, image_ids: list[str]) -> torch.Tensor:
        """ε of DEFINITIONS §10 "Resilience to minor input noise": a seeded standard normal draw per image, x's shape,
        in model-input units (the same ε for every σ, method and device)."""
        return randn_per_image(self.seed, "input_noise", list(image_ids), tuple(x.shape[1:]), x.device, x.dtype)

    def noisy(self, x: torch.Tensor, image_ids: list[str], sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """x + σ·ε (:meth:`noise`) and its raw pixels."""
        x = x + sigma * self.noise(x, image_ids)
        return x, self.normalization.denormalize(x)

    # -- regions -----------------------------------------------------------------------------------
    def batch_regions(self, raw: torch.Tensor) -> Regions:
        """The regions of a batch (DEFINITIONS §3): the run's tiles, or each image's SLIC superpixels (``regions=slic``,
        bench/engine/superpixels.py, computed from the raw image)."""
        settings = self.regions_settings
        if not self.superpixels:
            h, w = self.image_hw
            return Regions.tiles(h, w, self.patch, len(raw), self.device, settings["score"])
        return self.superpixel_regions(raw, settings, settings.get("score", "mean"))

    def superpixel_regions(self, raw: torch.Tensor, slic: dict[str, Any], aggregate: str) -> Regions:
        """Each image's SLIC superpixels with the settings ``slic`` (n_segments, compactness, sigma, max_num_iter),
        a region's relevance the ``aggregate`` (sum or mean) of its pixels."""
        from ..engine.superpixels import SLIC_DEFAULTS, slic_labels

        ids, counts = slic_labels(raw, self.normalization.raw_range, **{k: slic[k] for k in SLIC_DEFAULTS})
        return Regions.per_image(ids, counts, aggregate)

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
        if self.input_noise:
            x, raw = self.noisy(x, image_ids, self.input_noise)
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
        heat = self.heatmap(x, target, image_ids)
        ok = torch.isfinite(heat).flatten(1).all(1)
        if not ok.all():
            heat = heat[ok.nonzero().flatten()]
            keep_only(ok, "the method's heatmap is not finite (NaN/inf)")
            if not image_ids:
                return Pending(skipped, [])

        shared = self.shared_state(raw, heat, image_ids)
        work = []
        for protocol in self.protocols:  # each does its device work now, its rows later
            batch = Batch(run=self, image_ids=image_ids, x=x, raw=raw, labels=labels, target=target, f0=f0,
                          heatmap=heat, shared=shared, needs=frozenset(protocol.needs), protocol=protocol.name)
            rows = protocol.launch(batch)
            if rows is not None:
                work.append(rows)
        saved = [i for i, index in enumerate(indices) if index < self.save_heatmaps]
        if saved:
            work.append(self._saved_heatmaps(x, heat, image_ids, saved))
        return Pending(skipped, work)

    def run_protocol(self, protocol: Protocol, x: torch.Tensor, heatmap: torch.Tensor, target: torch.Tensor,
                     image_ids: list[str], labels: torch.Tensor | None = None) -> dict[str, pd.DataFrame]:
        """One protocol on given model inputs ``x`` and pixel heatmaps (B, H, W): its tidy rows. For benchmarks and
        tests, which time or check one protocol on a fixed heatmap; a run uses ``launch``."""
        raw = self.normalization.denormalize(x)
        with torch.inference_mode():
            f0 = self.scores(x, target)
        labels = target.cpu() if labels is None else labels
        batch = Batch(run=self, image_ids=list(image_ids), x=x, raw=raw, labels=labels, target=target, f0=f0,
                      heatmap=heatmap, shared=self.shared_state(raw, heatmap, list(image_ids)),
                      needs=frozenset(protocol.needs), protocol=protocol.name)
        rows = protocol.launch(batch)
        return rows() if rows is not None else {}

    def shared_state(self, raw: torch.Tensor, heat: torch.Tensor, image_ids: list[str]) -> Shared:
        """The state the protocols share, each computed once per batch when first read (bench/protocols/base.py
        ``NEEDS``): the regions, their seeded MoRF/LeRF/random orders, the seeded orders of the pixels."""
        shared: Shared

        def region_orders() -> dict[str, torch.Tensor]:
            return shared.get("regions").orders(heat.float(), image_ids, self.seed)

        def pixel_orders() -> dict[str, torch.Tensor]:
            return seeded_orders(heat.float().reshape(len(heat), -1), image_ids, self.seed)

        shared = Shared({"regions": lambda: self.batch_regions(raw), "region_orders": region_orders,
                         "pixel_orders": pixel_orders})
        return shared

    def _saved_heatmaps(self, x: torch.Tensor, heat: torch.Tensor, image_ids: list[str], saved: list[int]
                        ) -> Callable[[], dict[str, pd.DataFrame]]:
        """The ``heatmaps`` rows of the images at positions ``saved``: the heatmap and its input (raw pixels), for
        the report's heatmap grid."""
        h, w = self.image_hw
        kept = heat[saved]
        raw = self.normalization.denormalize(x[saved].float())
        lo, hi = self.normalization.raw_range
        return lambda: {"heatmaps": pd.DataFrame({
            "image_id": [image_ids[i] for i in saved], "height": h, "width": w,
            "heatmap": list(kept.float().cpu().numpy().reshape(len(saved), -1)),
            "channels": raw.shape[1], "image": list(raw.cpu().numpy().reshape(len(saved), -1)),
            "raw_low": float(lo), "raw_high": float(hi)})}


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
