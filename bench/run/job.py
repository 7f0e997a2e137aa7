"""One evaluation job: checked RunSpec → locked job folder → streamed blocks of images → Evaluator → tables.

``run(spec, out_dir)`` is called by the Hydra app (bench/run/cli.py), by ``bench.api_run`` helpers and by
tests. Order of work, so that a refused command leaves no trace: the spec was checked before (bench/run/spec.py);
the folder is locked (a second process is refused at once); the model is loaded; the folder's owner
(bench/run/jobdir.py) decides whether this run may resume, start afresh or must be refused; only then is
anything written. Images are streamed through a DataLoader in batches of ``batch_size``; memory is bounded
by the batch. What happens to one batch is bench/run/evaluate.py; the summary is bench/run/summary.py.

Resume and shards. Images 0 … n_images−1 are cut into fixed blocks of ``block_size`` (in dataset order,
independent of batch_size); each finished block is written to ``parts/`` with a marker written last. A job
started again in the same folder keeps the finished blocks of the same run and computes the rest.
``shard=i num_shards=n`` gives a job the i-th of n contiguous slices of the blocks; collect assembles
the shards of a run exactly as one job would have.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from ..interfaces import Dataset, UnreadableImage
from ..errors import BenchError, failure_text
from .evaluate import Evaluator, Pending
from .identity import manifest_of
from .jobdir import JobDir, assemble, devices_of, finished_block
from ..models import load_model
from .pipeline import HostQueue, prefetched
from .progress import Progress
from .spec import RunSpec, build_spec
from .summary import interval_warnings, summarize_run, undefined_reasons, with_run
from .tables import device_name, params_json, versions
from .variants import explained_model, input_noise

log = logging.getLogger(__name__)


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


def provenance(spec: RunSpec, evaluator: Evaluator, manifest: dict, wall_time_s: float) -> dict[str, Any]:
    """The DEFINITIONS §8 columns every row of this run carries (``protocol``/``protocol_params`` are per row)."""
    return dict(
        run_key=manifest["run_key"], method=spec.method.name, method_params=params_json(spec.method.params),
        pooling=spec.pooling, dataset=spec.dataset.name, preprocessing=spec.dataset.obj.preprocessing,
        data_sha=manifest["data_sha"],
        images=spec.n_images, model=spec.model.name, model_params=params_json(spec.model.params),
        model_sha=manifest["model_sha"], perturbation=spec.perturbation.name,
        perturbation_params=params_json(spec.perturbation.params), regions=spec.regions["kind"],
        regions_params=params_json({k: v for k, v in spec.regions.items() if k != "kind"}), patch=spec.patch,
        equal_regions=evaluator.equal_regions, steps=spec.steps, L=evaluator.L, n_regions=evaluator.n_regions,
        repeats=evaluator.repeats, orders=",".join(evaluator.orders), target=spec.target, score=spec.score,
        precision=evaluator.precision, seed=spec.seed, bootstrap=spec.bootstrap,
        metrics=",".join(p.name for p in spec.protocols),
        protocol_settings=params_json({p.name: p.values() for p in spec.protocols}), code_sha=manifest["code_sha"],
        randomise_layers=spec.randomise_layers, input_noise=evaluator.input_noise,
        device=str(spec.device), device_name=device_name(spec.device), wall_time_s=round(wall_time_s, 3),
        **versions())


def _evaluate_blocks(spec: RunSpec, evaluator: Evaluator, job: JobDir, todo: list[tuple[int, int, int]]) -> None:
    """Evaluate the blocks ``todo`` (batches never cross a block) and write each as soon as it is done.

    Pipelined (bench/run/pipeline.py): batches are read ahead by a background thread, the main thread launches
    each batch's device work, and the host side (rows, block files) follows in one background thread. With
    ``num_workers`` > 1 each batch is read as that many consecutive slices, one per worker, and joined again
    (a DataLoader gives a whole batch to one worker: the first batch would take batch_size reads on one core)."""
    plan = [(blk, list(range(i, min(i + spec.batch_size, blk[2])))) for blk in todo
            for i in range(blk[1], blk[2], spec.batch_size)]
    size = [-(-len(p) // max(1, spec.num_workers)) for _, p in plan]
    slices = [[p[k:k + n] for k in range(0, len(p), n)] for (_, p), n in zip(plan, size)]
    loader = DataLoader(_Items(spec.dataset.obj, range(spec.n_images)), batch_sampler=[s for p in slices for s in p],
                        num_workers=spec.num_workers, pin_memory=spec.device.type == "cuda" and spec.num_workers <= 1,
                        collate_fn=_collate)
    block = _BlockWriter(spec, job)
    joined = _joined(loader, slices, pin=spec.device.type == "cuda" and spec.num_workers > 1)
    with Progress(total=sum(len(p) for _, p in plan), desc="evaluating", unit="img") as bar, HostQueue() as host, \
            closing(prefetched(joined)) as batches:  # closed on an error too: the reading thread stops
        for i, ((blk, positions), batch) in enumerate(zip(plan, batches)):
            unreadable = [(u.image_id, f"unreadable image: {u.reason}") for u in batch.unreadable]
            pending = (evaluator.launch(batch.image_ids, batch.raw, batch.labels, batch.indices)
                       if batch.image_ids else None)
            host.submit(block.add, blk, unreadable, pending, i + 1 == len(plan) or plan[i + 1][0] != blk)
            bar.update(len(positions))


def _joined(loader, slices: list[list[list[int]]], pin: bool = False):
    """The planned batches again, each joined from its consecutive slices as the loader returns them (in
    page-locked memory when ``pin``, so that the copy to the GPU does not wait for the GPU)."""
    parts = iter(loader)
    for plan_slices in slices:
        got = [next(parts) for _ in plan_slices]
        if len(got) == 1:
            yield got[0]
            continue
        good = [g for g in got if g.raw is not None]
        raw = torch.cat([g.raw for g in good]) if good else None
        yield Batch([i for g in got for i in g.indices], [i for g in got for i in g.image_ids],
                    raw.pin_memory() if pin and raw is not None else raw,
                    torch.cat([g.labels for g in good]) if good else None, [u for g in got for u in g.unreadable])


class _BlockWriter:
    """Host side of the batches of a block, in order (a HostQueue thread): rows collected, block written at its end."""

    def __init__(self, spec: RunSpec, job: JobDir) -> None:
        self.spec, self.job = spec, job
        self.frames: dict[str, list[pd.DataFrame]] = {}
        self.skipped: list[tuple[str, str]] = []
        self.tick = time.perf_counter()
        self.device_name = device_name(spec.device)

    def add(self, blk: tuple[int, int, int], unreadable: list[tuple[str, str]], pending: Pending | None,
            last: bool) -> None:
        self.skipped += unreadable
        if pending is not None:
            for name, rows in (pending.tables() or {}).items():
                self.frames.setdefault(name, []).append(rows)
            self.skipped += pending.skipped
        if last:
            now = time.perf_counter()
            self.job.write_block(blk, self.frames, self.skipped, now - self.tick, str(self.spec.device),
                                 self.device_name)
            log.debug("block %d/%d done (images %d–%d, %.1fs)", blk[0] + 1, self.spec.n_blocks, blk[1], blk[2] - 1,
                      now - self.tick)
            self.frames, self.skipped, self.tick = {}, [], now


def run(spec: RunSpec | Any, out_dir: str | Path, config_yaml: str = "", hydra_files: dict[str, str] | None = None,
        job: JobDir | None = None, model: torch.nn.Module | None = None) -> pd.DataFrame | None:
    """Run one evaluation job into ``out_dir``: ``<table>.parquet`` per table, ``summary.csv``,
    ``config.yaml`` (resuming what an earlier attempt finished there). Returns the summary; a shard of a
    run (num_shards > 1) keeps its rows in ``parts/`` for collect and returns None. A failure after the
    folder was claimed is recorded in ``FAILED`` and raised again. ``spec`` may also be a composed config
    (tests, notebooks): it is checked by ``build_spec`` first. ``model``: the model itself (the Python API,
    bench/run/python_api.py) instead of loading the spec's."""
    start = time.perf_counter()
    if not isinstance(spec, RunSpec):
        spec = build_spec(spec)
    job = job or JobDir(out_dir)
    with job.locked():
        torch.manual_seed(spec.seed)
        model = load_model(spec) if model is None else model.eval()
        manifest = manifest_of(spec, model)
        evaluator = Evaluator.from_spec(spec, model, explained_model(spec, model))
        evaluator.input_noise = input_noise(spec, evaluator)
        setup_s = time.perf_counter() - start
        done = job.claim(manifest, spec.resume, setup_s)
        if done is not None:
            log.info("%s: already finished (resume=true; resume=false recomputes it)", job.path)
            return pd.read_csv(job.path / done["summary"]) if done.get("summary") else None
        try:
            job.write_record(config_yaml, hydra_files)
            with job.log_file():
                return _compute(spec, evaluator, job, manifest, setup_s)
        except Exception as exc:  # Ctrl-C / SIGTERM leave the job 'incomplete', to be resumed
            job.mark_failed(failure_text(exc))
            raise


def _compute(spec: RunSpec, evaluator: Evaluator, job: JobDir, manifest: dict, setup_s: float) -> pd.DataFrame | None:
    blocks = spec.blocks()
    todo = [blk for blk in blocks if finished_block(job.path, *blk) is None]
    n_todo, n_all = sum(b[2] - b[1] for b in todo), sum(b[2] - b[1] for b in blocks)
    log.info("job ready in %.1fs (config, dataset, model); %d image(s) to compute%s", setup_s, n_todo,
             f", {n_all - n_todo} already done" if n_todo < n_all else "")
    for line in evaluator.region_warnings():
        log.warning("%s", line)
    _evaluate_blocks(spec, evaluator, job, todo)
    return _finish(spec, evaluator, job, manifest, blocks)


def _finish(spec: RunSpec, evaluator: Evaluator, job: JobDir, manifest: dict,
            blocks: list[tuple[int, int, int]]) -> pd.DataFrame | None:
    """All blocks are done: assemble the final tables (and summary), then write DONE last."""
    markers = [finished_block(job.path, *blk) for blk in blocks]
    if any(m is None for m in markers):
        raise BenchError(f"{job.path}: block files vanished while the job was running; run it again to recompute them")
    wall = job.attempts_setup_s() + sum(m["wall_time_s"] for m in markers)
    prov = provenance(spec, evaluator, manifest, wall)
    tables, skipped = assemble([(job.path, m) for m in markers], prov)
    n_images = sum(m["stop"] - m["start"] for m in markers) - len(skipped)
    report = None
    if skipped:
        report = pd.DataFrame(skipped, columns=["image_id", "reason"])
        job.write_skipped(report)
        log.warning("%d image(s) skipped (%s); listed in %s", len(report),
                    "; ".join(f"{n}× {r}" for r, n in report.reason.value_counts().items()), job.path / "skipped.csv")
    info = dict(run_key=manifest["run_key"], shard=spec.shard, num_shards=spec.num_shards, n_images=n_images,
                skipped=len(skipped), attempts=job.n_attempts(),
                provenance={**prov, "device": devices_of(markers), "device_name": devices_of(markers, "device_name")},
                block_spans=[list(blk) for blk in blocks])
    if spec.num_shards > 1:  # the shard's rows stay in parts/; collect assembles all shards of the run
        job.write_final({}, None, info)
        return None
    if not tables:
        raise BenchError(f"no image could be evaluated: all {len(skipped)} were skipped "
                         f"({'; '.join(sorted(set(r for _, r in skipped)))}) — nothing else was computed")
    summary = summarize_run(tables, spec.bootstrap, spec.seed)
    _check_summary(summary, tables, spec)
    summary = with_run(summary, info["provenance"])
    job.write_final(tables, summary, info)
    return summary


def _check_summary(summary: pd.DataFrame, tables: dict[str, pd.DataFrame], spec: RunSpec) -> None:
    """Never a finished run over NaN: a quantity no image has a finite value of ends the run in one line (why:
    its declaration's ``undefined``, else the model's NaN/inf outputs); what the run's protocols note about
    their tables (e.g. counts of non-finite perturbed scores) is logged as warnings."""
    empty = summary[summary.n_images == 0]
    if len(empty):
        raise BenchError(f"no image has a finite value of {', '.join(empty.quantity)}: "
                         f"{'; '.join(undefined_reasons(summary))}; nothing to summarise")
    for protocol in spec.protocols:
        for line in protocol.notes(tables):
            log.warning("%s", line)
    for line in interval_warnings(summary.assign(bootstrap=spec.bootstrap)):
        log.warning("%s", line)
