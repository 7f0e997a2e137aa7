"""One evaluation job: config → checked Job → streamed blocks of images → Evaluator → tidy tables on disk.

``run(cfg, out_dir)`` is called by the Hydra entry point (bench/__main__.py) and by tests. Images are
streamed through a DataLoader in batches of ``batch_size``; memory is bounded by the batch, not by the
number of images. What happens to one batch is bench/evaluate.py; the summary is bench/summary.py.

Resume and shards. The images 0 … n_images−1 are cut into fixed blocks of ``block_size`` (in dataset
order, independent of batch_size); after each block its rows are written to ``parts/`` with a marker
written last (layout in bench/tables.py). A job started again in the same folder checks that the folder
holds the same run (configuration without the runtime keys, code, model weights), skips the finished
blocks and computes the rest; at the end the blocks are assembled into the final tables. ``shard=i
num_shards=n`` gives a job the i-th of n contiguous slices of the blocks; a shard keeps its parts, and
``python -m bench.collect`` assembles the shards of a run exactly as one job would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
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
from .evaluate import Evaluator, evaluator_options
from .models import load_model
from .perturbation import make_replacement
from .pooling import POOLINGS
from .progress import Progress
from .scoring import SCORES, TARGETS
from .summary import summarize_run
from .tables import (DONE, FAILED, JOB_FORMAT, MANIFEST, PARTS, assemble, block_marker, devices_of,
                     finished_block, finished_job, params_json, part_path, read_json, versions, with_provenance,
                     write_csv, write_json, write_parquet, write_text)

log = logging.getLogger(__name__)

#: Keys that do not change the numbers: a job may be resumed with other values (SPEC §8 still records
#: the device of every block). Everything else in the configuration must match to resume.
RUNTIME_KEYS = ("batch_size", "num_workers", "device", "cache_dir", "resume")
#: Keys that say which part of a run a job computes; shards of one run share everything else.
SHARD_KEYS = ("shard", "num_shards")


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
    block_size: int = 256
    shard: int = 0
    num_shards: int = 1

    @property
    def n_blocks(self) -> int:
        return -(-self.n_images // self.block_size)

    def blocks(self) -> list[tuple[int, int, int]]:
        """(block, first image, stop) of this job's shard: contiguous, in dataset order."""
        lo, hi = (self.shard * self.n_blocks // self.num_shards, (self.shard + 1) * self.n_blocks // self.num_shards)
        return [(b, b * self.block_size, min((b + 1) * self.block_size, self.n_images)) for b in range(lo, hi)]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Job":
        patch, steps, repeats = (_positive_int(cfg, k) for k in ("patch", "steps", "repeats"))
        n_images, batch_size = _positive_int(cfg, "n_images"), _positive_int(cfg, "batch_size")
        block_size = _positive_int(cfg, "block_size") if "block_size" in cfg else 256
        num_shards = _positive_int(cfg, "num_shards") if "num_shards" in cfg else 1
        shard = cfg.get("shard", 0)
        if not isinstance(shard, int) or isinstance(shard, bool) or not 0 <= shard < num_shards:
            raise BenchError(f"shard must be an integer with 0 ≤ shard < num_shards={num_shards}, got {shard!r}")
        n_blocks = -(-n_images // block_size)
        if num_shards > n_blocks:
            raise BenchError(f"num_shards={num_shards} but n_images={n_images} makes only {n_blocks} block(s) of "
                             f"block_size={block_size}; choose num_shards ≤ {n_blocks} or a smaller block_size")
        if not isinstance(cfg.get("resume", True), bool):
            raise BenchError(f"resume must be true or false, got {cfg.get('resume')!r}")
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
        return cls(dataset, method, pooling, patch, steps, repeats, n_images, batch_size, device, block_size, shard,
                   num_shards)


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
        dataset=cfg.dataset.name, preprocessing=job.dataset.preprocessing, model=cfg.model.name,
        model_params=params_json(params_of(cfg.model)), perturbation=cfg.perturbation.name,
        perturbation_params=params_json(params_of(cfg.perturbation)), patch=job.patch, steps=job.steps,
        L=evaluator.L, n_regions=evaluator.regions, repeats=evaluator.repeats, orders=",".join(evaluator.orders),
        target=cfg.target, score=cfg.score, precision=evaluator.precision, seed=cfg.seed, device=str(job.device),
        wall_time_s=round(wall_time_s, 3), **versions())


# ------------------------------------------------------------------------------------------ identity

#: Files and folders of the package that compute no number (orchestration, reports): editing them does
#: not invalidate finished blocks.
_NOT_NUMBERS = ("__main__.py", "collect.py", "progress.py", "style.py", "perf.py", "report")


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved configuration without the runtime and shard keys: what the numbers depend on."""
    conf = OmegaConf.to_container(cfg, resolve=True)
    for key in RUNTIME_KEYS + SHARD_KEYS:
        conf.pop(key, None)
    return conf


def code_sha(cfg: DictConfig) -> str:
    """Hash of the code that computes the numbers: the bench package's sources (without the modules that
    only orchestrate or report) and the job's method and dataset plug-ins. The same files are hashed
    whatever the process has imported before, so a job and its resumption in a sweep agree.
    ``BENCH_CODE_VERSION`` (e.g. a git commit) replaces the hash: the user vouches for the code then."""
    if os.environ.get("BENCH_CODE_VERSION"):
        return f"version:{os.environ['BENCH_CODE_VERSION']}"
    package = Path(__file__).resolve().parent
    files = [f for f in package.rglob("*.py") if f.relative_to(package).parts[0] not in _NOT_NUMBERS]
    for kind, node in (("methods", cfg.method), ("datasets", cfg.dataset)):
        module = sys.modules.get(f"bench_plugins.{kind}.{str(node.plugin).partition(':')[0]}")
        if module is not None and getattr(module, "__file__", None):
            files.append(Path(module.__file__).resolve())
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(files):
        h.update(str(f.relative_to(package) if package in f.parents else f.name).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def model_sha(model: torch.nn.Module) -> str:
    """Hash of the model's weights and buffers (a retrained or changed model is another run)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def manifest_of(cfg: DictConfig, job: Job, model: torch.nn.Module) -> dict[str, Any]:
    conf, code, weights = run_config(cfg), code_sha(cfg), model_sha(model)
    key = hashlib.blake2b(json.dumps([conf, code, weights], sort_keys=True, default=str).encode(),
                          digest_size=8).hexdigest()
    blocks = job.blocks()
    return dict(format=JOB_FORMAT, run_key=key, run_config=conf, code_sha=code, model_sha=weights,
                shard=job.shard, num_shards=job.num_shards, n_images=job.n_images, block_size=job.block_size,
                n_blocks=job.n_blocks, blocks=[blocks[0][0], blocks[-1][0] + 1])


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def incompatibility(old: dict, new: dict) -> str | None:
    """Why the results of manifest ``old`` cannot be continued by job ``new`` (None: they can)."""
    if old.get("format") != new["format"]:
        return "results in another layout"
    if (old.get("shard"), old.get("num_shards")) != (new["shard"], new["num_shards"]):
        return (f"shard {old.get('shard')} of num_shards={old.get('num_shards')} "
                f"(this job is shard {new['shard']} of num_shards={new['num_shards']})")
    a, b = _flat(old.get("run_config", {})), _flat(new["run_config"])
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]
    if diff:
        shown = ", ".join(f"{k}={a.get(k, '<unset>')} there, {b.get(k, '<unset>')} now" for k in diff[:3])
        return f"results of a different configuration ({shown}{', …' if len(diff) > 3 else ''})"
    if old.get("code_sha") != new["code_sha"]:
        return "results computed by different code (the bench sources or the method/dataset plug-in changed)"
    if old.get("model_sha") != new["model_sha"]:
        return "results computed with different model weights (the cached model was retrained or changed)"
    return None


# ------------------------------------------------------------------------------------------ the job folder

def _discard(out_dir: Path) -> None:
    """Remove what an earlier job left in ``out_dir`` (its markers, parts and final tables)."""
    done = read_json(out_dir / DONE) or {}
    for entry in (done.get("tables") or {}).values():
        (out_dir / entry["file"]).unlink(missing_ok=True)
    for name in (DONE, FAILED, MANIFEST, "summary.csv", "skipped.csv"):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / PARTS, ignore_errors=True)


def open_job_dir(out_dir: Path, manifest: dict, resume: bool) -> dict | None:
    """Prepare ``out_dir`` for the job; its DONE marker if the job is already finished there (resume)."""
    old = read_json(out_dir / MANIFEST)
    if not resume or (old is None and ((out_dir / DONE).exists() or (out_dir / PARTS).exists())):
        _discard(out_dir)
        old = None
    if old is not None:
        problem = incompatibility(old, manifest)
        if problem:
            raise BenchError(f"{out_dir} already holds {problem}; rerun with resume=false to discard them, "
                             f"or choose another output folder")
        (out_dir / FAILED).unlink(missing_ok=True)
        done = finished_job(out_dir)
        if done is not None:
            return done
        (out_dir / DONE).unlink(missing_ok=True)
    (out_dir / FAILED).unlink(missing_ok=True)
    write_json(manifest, out_dir / MANIFEST)
    return None


def _write_block(out_dir: Path, block: tuple[int, int, int], frames: dict[str, list[pd.DataFrame]],
                 skipped: list[tuple[str, str]], seconds: float, device: str) -> None:
    b, start, stop = block
    tables = {}
    for name, parts in frames.items():
        rows = pd.concat(parts, ignore_index=True)
        write_parquet(rows, part_path(out_dir, b, name))
        tables[name] = len(rows)
    write_json(dict(block=b, start=start, stop=stop, tables=tables, skipped=skipped,
                    wall_time_s=round(seconds, 3), device=device), block_marker(out_dir, b))


def _evaluate_blocks(job: Job, evaluator: Evaluator, cfg: DictConfig, out_dir: Path,
                     todo: list[tuple[int, int, int]]) -> None:
    """Evaluate the blocks ``todo`` (batches never cross a block) and write each as soon as it is done."""
    plan = [(blk, list(range(i, min(i + job.batch_size, blk[2])))) for blk in todo
            for i in range(blk[1], blk[2], job.batch_size)]
    loader = DataLoader(_Items(job.dataset, range(job.n_images)), batch_sampler=[p for _, p in plan],
                        num_workers=int(cfg.get("num_workers", 0)), pin_memory=job.device.type == "cuda",
                        collate_fn=_collate)
    frames: dict[str, list[pd.DataFrame]] = {}
    skipped: list[tuple[str, str]] = []
    tick = time.perf_counter()
    with Progress(total=sum(len(p) for _, p in plan), desc="evaluating", unit="img") as bar:
        for i, ((blk, positions), batch) in enumerate(zip(plan, loader)):
            skipped += [(u.image_id, f"unreadable image: {u.reason}") for u in batch.unreadable]
            if batch.image_ids:
                tables, nonfinite = evaluator.evaluate(batch.image_ids, batch.raw, batch.labels, batch.indices)
                skipped += [(image_id, f"method '{cfg.method.name}' gave a non-finite (NaN/inf) heatmap")
                            for image_id in nonfinite]
                for name, rows in (tables or {}).items():
                    frames.setdefault(name, []).append(rows)
            bar.update(len(positions))
            if i + 1 == len(plan) or plan[i + 1][0] != blk:
                now = time.perf_counter()
                _write_block(out_dir, blk, frames, skipped, now - tick, str(job.device))
                log.log(logging.DEBUG if bar.enabled else logging.INFO,  # a drawn bar shows the progress
                        "block %d/%d done (images %d–%d, %.1fs)", blk[0] + 1, job.n_blocks, blk[1], blk[2] - 1,
                        now - tick)
                frames, skipped, tick = {}, [], now


def _finished_summary(out_dir: Path, done: dict) -> pd.DataFrame | None:
    log.info("%s: already finished (resume=true; resume=false recomputes it)", out_dir)
    if done.get("num_shards", 1) == 1:  # parts left by an attempt killed right after writing DONE
        shutil.rmtree(out_dir / PARTS, ignore_errors=True)
    return pd.read_csv(out_dir / done["summary"]) if done.get("summary") else None


def run(cfg: DictConfig, out_dir: str | Path) -> pd.DataFrame | None:
    """Run one evaluation job into ``out_dir``: ``<table>.parquet`` per table, ``summary.csv``,
    ``config.yaml`` (resuming what an earlier attempt finished there). Returns the summary; a shard of a
    run (num_shards > 1) keeps its rows in ``parts/`` for collect and returns None."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    job = Job.from_config(cfg)
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.model.kind, job.dataset, dict(params_of(cfg.model), cache_dir=cfg.cache_dir))
    manifest = manifest_of(cfg, job, model)
    done = open_job_dir(out_dir, manifest, bool(cfg.get("resume", True)))
    if done is not None:
        return _finished_summary(out_dir, done)
    evaluator = Evaluator(
        model=model.to(job.device).eval(), method=job.method, pooling=job.pooling,
        replacement=make_replacement(cfg.perturbation.name, **params_of(cfg.perturbation)),
        normalization=job.dataset.normalization, image_hw=tuple(job.dataset.image_shape[1:]), patch=job.patch,
        steps=job.steps, repeats=job.repeats, batch_size=job.batch_size, seed=cfg.seed, target=cfg.target,
        score=cfg.score, device=job.device, **evaluator_options(cfg))
    blocks = job.blocks()
    todo = [blk for blk in blocks if finished_block(out_dir, *blk) is None]
    setup_s = time.perf_counter() - start
    log.info("job ready in %.1fs (config, dataset, model); %d of %d block(s) of %d image(s) to compute%s", setup_s,
             len(todo), len(blocks), job.block_size, f", {len(blocks) - len(todo)} already done" if
             len(todo) < len(blocks) else "")
    _evaluate_blocks(job, evaluator, cfg, out_dir, todo)
    return _finish(cfg, job, evaluator, out_dir, manifest, blocks, setup_s)


def _finish(cfg: DictConfig, job: Job, evaluator: Evaluator, out_dir: Path, manifest: dict,
            blocks: list[tuple[int, int, int]], setup_s: float) -> pd.DataFrame | None:
    """All blocks are done: assemble the final tables (and summary), then write DONE last."""
    markers = [finished_block(out_dir, *blk) for blk in blocks]
    if any(m is None for m in markers):
        raise BenchError(f"{out_dir}: block files vanished while the job was running (another job writing "
                         f"into the same folder?); run it again to recompute them")
    wall = setup_s + sum(m["wall_time_s"] for m in markers)
    prov = provenance(cfg, job, evaluator, wall)
    tables, skipped = assemble([(out_dir, m) for m in markers], prov)
    n_images = sum(m["stop"] - m["start"] for m in markers) - len(skipped)
    if skipped:
        report = pd.DataFrame(skipped, columns=["image_id", "reason"])
        write_csv(report, out_dir / "skipped.csv")
        log.warning("%d image(s) skipped (%s); listed in %s", len(report),
                    "; ".join(f"{n}× {r}" for r, n in report.reason.value_counts().items()), out_dir / "skipped.csv")
    write_text(OmegaConf.to_yaml(cfg, resolve=True), out_dir / "config.yaml")
    info = dict(run_key=manifest["run_key"], shard=job.shard, num_shards=job.num_shards, n_images=n_images,
                skipped=len(skipped), provenance={**prov, "device": devices_of(markers)},
                block_spans=[list(blk) for blk in blocks])
    if job.num_shards > 1:  # the shard's rows stay in parts/; collect assembles all shards of the run
        write_json(dict(info, tables={}, summary=None), out_dir / DONE)
        return None
    if not tables:
        raise BenchError(f"no image could be evaluated: all {len(skipped)} were skipped "
                         f"(see {out_dir / 'skipped.csv'}) — nothing else was computed")
    summary = with_provenance(summarize_run(tables, int(cfg.bootstrap), cfg.seed), info["provenance"])
    for name, table in tables.items():
        write_parquet(table, out_dir / f"{name}.parquet")
    write_csv(summary, out_dir / "summary.csv")
    write_json(dict(info, tables={n: {"file": f"{n}.parquet", "rows": len(t)} for n, t in tables.items()},
                    summary="summary.csv"), out_dir / DONE)
    shutil.rmtree(out_dir / PARTS, ignore_errors=True)
    for tmp in out_dir.glob(".*.tmp"):  # left by an attempt killed while writing
        tmp.unlink(missing_ok=True)
    return summary
