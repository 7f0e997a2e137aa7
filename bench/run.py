"""One evaluation job: config → checked Job → streamed batches → Evaluator → tidy tables on disk.

``run(cfg, out_dir)`` is called by the Hydra entry point (bench/__main__.py) and by tests. Images are
streamed through a DataLoader in batches of ``batch_size``; memory is bounded by the batch, not by the
number of images. What happens to one batch is bench/evaluate.py; the summary is bench/summary.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from . import plugins
from .api import Dataset, Method, UnreadableImage
from .errors import BenchError
from .evaluate import Evaluator
from .models import load_model
from .perturbation import make_replacement
from .pooling import POOLINGS
from .scoring import SCORES, TARGETS
from .summary import summarize_run
from .tables import params_json, versions, with_provenance, write_csv, write_parquet

log = logging.getLogger(__name__)


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
    """Dataset positions ``indices`` → (position, image_id, raw, label), or the UnreadableImage raised."""

    def __init__(self, dataset: Dataset, indices: range) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        try:
            image_id, raw, label = self.dataset.get(index)
        except UnreadableImage as exc:
            return exc
        return index, image_id, raw.float(), label


@dataclass
class Batch:
    indices: list[int]
    image_ids: list[str]
    raw: torch.Tensor | None
    labels: torch.Tensor | None
    unreadable: list[UnreadableImage]


def _collate(items: list) -> Batch:
    """Stack the readable items; pass the unreadable ones on to be reported."""
    bad = [it for it in items if isinstance(it, UnreadableImage)]
    good = [it for it in items if not isinstance(it, UnreadableImage)]
    if not good:
        return Batch([], [], None, None, bad)
    return Batch([it[0] for it in good], [it[1] for it in good], torch.stack([it[2] for it in good]),
                 torch.tensor([it[3] for it in good], dtype=torch.long), bad)


def provenance(cfg: DictConfig, job: Job, evaluator: Evaluator, wall_time_s: float) -> dict[str, Any]:
    """The SPEC §8 columns every row of this run carries."""
    return dict(
        method=cfg.method.name, method_params=params_json(params_of(cfg.method)), pooling=job.pooling,
        dataset=cfg.dataset.name, model=cfg.model.name, perturbation=cfg.perturbation.name, patch=job.patch,
        steps=job.steps, L=evaluator.L, n_regions=evaluator.regions, repeats=job.repeats, target=cfg.target,
        score=cfg.score, seed=cfg.seed, device=str(job.device), wall_time_s=round(wall_time_s, 3), **versions())


def run(cfg: DictConfig, out_dir: str | Path) -> pd.DataFrame:
    """Run one evaluation and write ``curves.parquet``, ``summary.csv`` and ``config.yaml`` to ``out_dir``."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    job = Job.from_config(cfg)
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.model.kind, job.dataset, dict(params_of(cfg.model), cache_dir=cfg.cache_dir))
    evaluator = Evaluator(
        model=model.to(job.device).eval(), method=job.method, pooling=job.pooling,
        replacement=make_replacement(cfg.perturbation.name, **params_of(cfg.perturbation)),
        normalization=job.dataset.normalization, image_hw=tuple(job.dataset.image_shape[1:]), patch=job.patch,
        steps=job.steps, repeats=job.repeats, batch_size=job.batch_size, seed=cfg.seed, target=cfg.target,
        score=cfg.score, device=job.device, save_heatmaps=int(cfg.get("save_heatmaps", 0)))

    loader = DataLoader(_Items(job.dataset, range(job.n_images)), batch_size=job.batch_size, shuffle=False,
                        num_workers=int(cfg.get("num_workers", 0)), pin_memory=job.device.type == "cuda",
                        collate_fn=_collate)
    frames: dict[str, list[pd.DataFrame]] = {}
    skipped = []
    for batch in loader:
        skipped += [(u.image_id, f"unreadable image: {u.reason}") for u in batch.unreadable]
        if not batch.image_ids:
            continue
        tables, nonfinite = evaluator.evaluate(batch.image_ids, batch.raw, batch.labels, batch.indices)
        skipped += [(i, f"method '{cfg.method.name}' gave a non-finite (NaN/inf) heatmap") for i in nonfinite]
        for name, rows in (tables or {}).items():
            frames.setdefault(name, []).append(rows)
    if skipped:
        report = pd.DataFrame(skipped, columns=["image_id", "reason"])
        write_csv(report, out_dir / "skipped.csv")
        log.warning("%d image(s) skipped (%s); listed in %s", len(report),
                    "; ".join(f"{n}× {r}" for r, n in report.reason.value_counts().items()), out_dir / "skipped.csv")
    if not frames:
        raise BenchError(f"no image could be evaluated: all {len(skipped)} were skipped "
                         f"(see {out_dir / 'skipped.csv'}) — nothing else was computed")

    prov = provenance(cfg, job, evaluator, time.perf_counter() - start)
    tables = {name: with_provenance(pd.concat(parts, ignore_index=True), prov) for name, parts in frames.items()}
    summary = with_provenance(summarize_run(tables, int(cfg.bootstrap), cfg.seed), prov)
    for name, table in tables.items():
        write_parquet(table, out_dir / f"{name}.parquet")
    write_csv(summary, out_dir / "summary.csv")
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return summary
