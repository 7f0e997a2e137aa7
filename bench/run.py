"""One evaluation job: dataset → model → method → heatmap → region perturbation → AOPC → tidy tables.

``run(cfg, out_dir)`` is called by the Hydra entry point (bench/__main__.py) and by tests. Images are
streamed in batches of ``batch_size``; per batch the method's heatmaps are computed, the regions ordered
(MoRF, and the random baseline on the same images with the same replacement draws), and all perturbed
inputs evaluated by bench/engine.py. Memory is bounded by the batch, not by the number of images.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from . import plugins
from .api import Context, Dataset, Method
from .engine import aopc_curve, perturbed_scores
from .errors import BenchError
from .models import load_model
from .perturbation import make_replacement
from .pooling import POOLINGS, pool_channels
from .regions import n_regions, pixel_ranks, region_scores, seeded_orders, tile_ids
from .scoring import SCORES, TARGETS, choose_target, score_of
from .stats import bootstrap_ci, sem
from .tables import (CURVE_COLUMNS, SUMMARY_COLUMNS, params_json, versions, with_provenance, write_csv,
                     write_parquet)

log = logging.getLogger(__name__)
ORDERS = ("morf", "random")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device={name} requested but CUDA is not available here; use device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BenchError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


def _positive_int(cfg: DictConfig, key: str) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BenchError(f"{key} must be a positive integer, got {value!r}")
    return value


def params_of(node: DictConfig) -> dict:
    """The ``params`` mapping of a config group node as a plain dict ({} when absent)."""
    params = node.get("params")
    return {} if params is None else OmegaConf.to_container(params, resolve=True)


def _construct(kind: str, node: DictConfig) -> Any:
    cls = plugins.load_class(kind, node.plugin)
    params = params_of(node)
    try:
        return cls(**params)
    except TypeError as exc:
        raise BenchError(f"{kind[:-1]} '{node.name}' ({kind}/{node.plugin}.py): bad params {params}: {exc}") from None


@dataclass
class Job:
    """Everything resolved from the config, checked before any heavy work starts."""

    dataset: Dataset
    method: Method
    pooling: str
    patch: int
    steps: int
    repeats: int
    n_images: int
    batch_size: int
    device: torch.device

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Job":
        patch, steps, repeats = (_positive_int(cfg, k) for k in ("patch", "steps", "repeats"))
        n_images, batch_size = _positive_int(cfg, "n_images"), _positive_int(cfg, "batch_size")
        if cfg.target not in TARGETS:
            raise BenchError(f"target must be one of {', '.join(TARGETS)}, got '{cfg.target}'")
        if cfg.score not in SCORES:
            raise BenchError(f"score must be one of {', '.join(SCORES)}, got '{cfg.score}'")
        device = resolve_device(str(cfg.device))
        dataset = _construct("datasets", cfg.dataset)
        _, h, w = dataset.image_shape
        if patch > h or patch > w:
            raise BenchError(f"patch={patch} is larger than the {h}×{w} images of dataset '{cfg.dataset.name}'; "
                             f"choose 1 ≤ patch ≤ {min(h, w)}")
        if n_images > len(dataset):
            raise BenchError(f"n_images={n_images} but dataset '{cfg.dataset.name}' has only {len(dataset)} "
                             f"evaluation images; choose n_images ≤ {len(dataset)}")
        method = _construct("methods", cfg.method)
        pooling = cfg.method.get("pooling") or method.pooling
        if pooling not in POOLINGS:
            raise BenchError(f"unknown pooling '{pooling}'; available: {', '.join(POOLINGS)}")
        return cls(dataset, method, pooling, patch, steps, repeats, n_images, batch_size, device)


class _Items(torch.utils.data.Dataset):
    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        image_id, raw, label = self.dataset.get(i)
        return image_id, raw.float(), label


def evaluate_batch(model, method: Method, job: Job, cfg: DictConfig, ids_map: torch.Tensor, regions: int,
                   L: int, replacement, image_ids: list[str], raw: torch.Tensor, labels: torch.Tensor):
    """Curves of one batch of images; returns per-image arrays, or skips images whose heatmap is not finite."""
    norm = job.dataset.normalization
    x = norm.normalize(raw.to(job.device, non_blocking=True))
    with torch.inference_mode():
        logits = model(x)
    target = choose_target(logits, labels, cfg.target)
    f0 = score_of(logits, target, cfg.score)
    ctx = Context(image_ids=image_ids, seed=cfg.seed, normalization=norm)
    heat = pool_channels(method.attribute(model, x, target, ctx), job.pooling)
    finite = torch.isfinite(heat).flatten(1).all(1)
    bad = [image_ids[i] for i in torch.nonzero(~finite).flatten().tolist()]
    if bad:
        keep = finite.nonzero().flatten()
        x, heat, target, f0, labels = x[keep], heat[keep], target[keep], f0[keep], labels[keep.cpu()]
        image_ids = [image_ids[i] for i in keep.tolist()]
        if not image_ids:
            return None, bad
    orders = seeded_orders(region_scores(heat.float(), ids_map, regions), image_ids, cfg.seed)
    ranks = torch.stack([pixel_ranks(orders[o], ids_map) for o in ORDERS], 1)
    draws = replacement.draw(x, image_ids, job.repeats, cfg.seed, norm)

    def score_fn(inputs, t):
        return score_of(model(inputs), t, cfg.score)

    scores = perturbed_scores(score_fn, x, ranks, draws, target, L, job.batch_size)  # (B, O, J, L)
    first = f0.view(-1, 1, 1).expand(-1, len(ORDERS), 1)
    curve = torch.cat([first, scores.mean(2)], -1)
    spread = torch.cat([torch.zeros_like(first), scores.std(2, correction=0)], -1)
    aopc = aopc_curve(f0.view(-1, 1), curve)
    sizes = torch.bincount(ids_map.flatten(), minlength=regions).to(x.dtype)
    replaced = torch.stack([sizes[orders[o][:, :L]].cumsum(1) for o in ORDERS], 1) / ids_map.numel()
    fraction = torch.cat([torch.zeros_like(first), replaced], -1)
    out = dict(image_id=image_ids, label=labels.tolist(), target_class=target.tolist(),
               curve=curve.cpu().numpy(), fraction=fraction.cpu().numpy(), spread=spread.cpu().numpy(),
               aopc=aopc.cpu().numpy())
    return out, bad


def curves_frame(batches: list[dict], L: int) -> pd.DataFrame:
    """Per-image arrays → tidy rows (image, order, step)."""
    frames = []
    for b in batches:
        n = len(b["image_id"])
        idx_img, idx_ord, idx_step = np.meshgrid(np.arange(n), np.arange(len(ORDERS)), np.arange(L + 1),
                                                 indexing="ij")
        idx_img, idx_ord, idx_step = idx_img.ravel(), idx_ord.ravel(), idx_step.ravel()
        frames.append(pd.DataFrame({
            "image_id": np.asarray(b["image_id"], dtype=object)[idx_img],
            "label": np.asarray(b["label"])[idx_img],
            "target_class": np.asarray(b["target_class"])[idx_img],
            "order": np.asarray(ORDERS, dtype=object)[idx_ord],
            "step": idx_step,
            "fraction_perturbed": b["fraction"].ravel(),
            "score_value": b["curve"].ravel(),
            "score_std": b["spread"].ravel(),
            "aopc": b["aopc"].ravel(),
        }))
    return pd.concat(frames, ignore_index=True)


def summary_frame(per_image_final: dict[str, np.ndarray], n_boot: int, seed: int) -> pd.DataFrame:
    """AOPC(L) per image → mean, sem, 95% bootstrap CI of MoRF, random and their paired difference."""
    morf, rnd = per_image_final["morf"], per_image_final["random"]
    values = np.stack([morf, rnd, morf - rnd], 1)
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return pd.DataFrame({
        "quantity": ["aopc_morf", "aopc_random", "aopc_morf_minus_random"],
        "mean": values.mean(0), "sem": sem(values), "ci_low": low, "ci_high": high, "n_images": len(values),
    })


def format_table(summary: pd.DataFrame) -> str:
    """The short table printed at the end of a run."""
    q = summary.set_index("quantity")
    first = summary.iloc[0]

    def fmt(name: str, ci: bool = False) -> str:
        r = q.loc[name]
        s = f"{r['mean']:.4f} ± {r['sem']:.4f}"
        return s + f" [{r['ci_low']:.4f}, {r['ci_high']:.4f}]" if ci else s

    table = pd.DataFrame([{
        "method": first["method"], "random AOPC": fmt("aopc_random"), f"AOPC(L={first['L']})": fmt("aopc_morf"),
        "AOPC − random [95% CI]": fmt("aopc_morf_minus_random", ci=True), "images": int(first["n_images"]),
    }])
    head = (f"{first['dataset']} · {first['model']} · patch {first['patch']} ({first['n_regions']} regions) · "
            f"L={first['L']} · {first['repeats']} repeats · {first['perturbation']} · score={first['score']}"
            f" · mean ± s.e.m. over images")
    return head + "\n" + table.to_string(index=False)


def run(cfg: DictConfig, out_dir: str | Path) -> pd.DataFrame:
    """Run one evaluation and write ``curves.parquet``, ``summary.csv`` and ``config.yaml`` to ``out_dir``."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    job = Job.from_config(cfg)
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.model.kind, job.dataset, dict(params_of(cfg.model), cache_dir=cfg.cache_dir)).to(job.device).eval()
    replacement = make_replacement(cfg.perturbation.name, **params_of(cfg.perturbation))
    _, h, w = job.dataset.image_shape
    regions = n_regions(h, w, job.patch)
    L = min(job.steps, regions)
    ids_map = tile_ids(h, w, job.patch, device=job.device)

    loader = DataLoader(_Items(job.dataset, job.n_images), batch_size=job.batch_size, shuffle=False,
                        num_workers=int(cfg.get("num_workers", 0)), pin_memory=job.device.type == "cuda")
    batches, skipped = [], []
    for image_ids, raw, labels in loader:
        out, bad = evaluate_batch(model, job.method, job, cfg, ids_map, regions, L, replacement,
                                  list(image_ids), raw, labels)
        skipped += bad
        if out is not None:
            batches.append(out)
    if skipped:
        log.warning("%d image(s) skipped: method '%s' gave non-finite heatmaps: %s", len(skipped),
                    cfg.method.name, ", ".join(skipped[:10]) + (" …" if len(skipped) > 10 else ""))
        write_csv(pd.DataFrame({"image_id": skipped, "reason": "non-finite heatmap"}), out_dir / "skipped.csv")
    if not batches:
        raise BenchError(f"method '{cfg.method.name}' gave non-finite (NaN/inf) heatmaps for all {len(skipped)} "
                         f"images; check the method's parameters (e.g. a zero ε) — nothing else was computed")

    wall = time.perf_counter() - start
    provenance = dict(
        method=cfg.method.name, method_params=params_json(params_of(cfg.method)),
        pooling=job.pooling, dataset=cfg.dataset.name, model=cfg.model.name, perturbation=cfg.perturbation.name,
        patch=job.patch, steps=job.steps, L=L, n_regions=regions, repeats=job.repeats, target=cfg.target,
        score=cfg.score, seed=cfg.seed, device=str(job.device), wall_time_s=round(wall, 3), **versions())
    curves = curves_frame(batches, L)
    curves = with_provenance(curves, provenance, CURVE_COLUMNS)
    final = {o: np.concatenate([b["aopc"][:, i, L] for b in batches]) for i, o in enumerate(ORDERS)}
    summary = with_provenance(summary_frame(final, int(cfg.bootstrap), cfg.seed), provenance, SUMMARY_COLUMNS)
    write_parquet(curves, out_dir / "curves.parquet")
    write_csv(summary, out_dir / "summary.csv")
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return summary
