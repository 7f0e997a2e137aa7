"""``python -m bench.collect DIR [--out OUT]`` — merge every job's tables below DIR into one tidy table.

DIR is a sweep folder (``results/multirun/<name>``), a folder of runs, or all of ``results/``. Every job
folder below it is found by its markers (bench/run/tables.py) and gets a status:

* ``finished`` — DONE written; its rows are collected. The shards of one run (same run key, shards
  0 … n−1 all finished) are assembled block by block into exactly the table one job would have written,
  and their summary is recomputed from the merged rows (bench/run/summary.py);
* ``failed`` — FAILED written, with the reason;
* ``incomplete`` — started but neither finished nor failed: killed, timed out, or still running;
* ``missing`` — part of a sweep (from its ``multirun.yaml``) or a shard of a run, but no folder at all;
* ``duplicate`` — the same run (same run key) as another finished job; its rows are not repeated.

Written to OUT (default ``DIR/collected/``): ``<table>.parquet`` for every table name the jobs wrote,
``summary.parquet`` and ``summary.csv``, ``jobs.csv`` (one row per job with status and reason),
``skipped.csv`` when images were skipped, ``warnings.txt`` when a reader must know something (one name for two
models or image sets, a condition whose methods ran on other inputs or models, runs without a 95% interval: also
printed), and ``collection.json`` last. OUT is never in a job folder nor holds the jobs it collects. Rows keep the
provenance columns of DEFINITIONS §8, so collections of different sweeps concatenate. Collecting again gives the
same files; stale files of an earlier collection are removed. Exit status 0 when every job finished, 1 when some
failed, are incomplete or missing (their rows are not in the tables, they are listed), 2 on a usage error.

A job folder's status is read through its owner (bench/run/jobdir.py); the Hydra side of sweeps (folder
names, the callback that collects a sweep when it ends) is bench/run/cli.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import jobdir
from ..errors import BenchError
from .tables import CONDITION

log = logging.getLogger(__name__)

COLLECTED_DIR, COLLECTION = "collected", "collection.json"
STATUSES = ("finished", "failed", "incomplete", "missing", "duplicate")


# -------------------------------------------------------------------------------- finding jobs

@dataclass
class Job:
    path: Path | None  # None: missing
    status: str
    reason: str = ""
    manifest: dict | None = None
    done: dict | None = None
    overrides: list[str] = field(default_factory=list)
    legacy: bool = False  # a run folder written before resumable jobs (curves.parquet + summary.csv only)

    @property
    def run_key(self) -> str | None:
        return (self.manifest or {}).get("run_key") or (f"legacy:{self.path}" if self.legacy else None)

    @property
    def shard(self) -> tuple[int, int]:
        m = self.manifest or {}
        return int(m.get("shard", 0)), int(m.get("num_shards", 1))


def _overrides(job_dir: Path) -> list[str]:
    import yaml

    try:
        return [str(o) for o in (yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or [])]
    except (OSError, ValueError, yaml.YAMLError):
        return []


def inspect_job(job_dir: Path) -> Job:
    st = jobdir.status(job_dir)
    job = Job(job_dir, st.status, st.reason, manifest=st.manifest, done=st.done, overrides=_overrides(job_dir))
    if st.status == "legacy":
        job.status, job.legacy = "finished", True
    elif st.status == "empty":
        job.status, job.reason = "incomplete", "started, nothing computed yet (killed, timed out or still running)"
    return job


def find(root: Path) -> tuple[list[Job], list[Path]]:
    """Job folders below ``root`` (sorted by path) and sweep folders (holding Hydra's multirun.yaml)."""
    jobs, sweeps = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        d, names = Path(dirpath), set(filenames)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        if COLLECTION in names:  # an output of collect
            dirnames[:] = []
            continue
        if "multirun.yaml" in names:
            sweeps.append(d)
        elif jobdir.is_job_dir(d, names):
            jobs.append(inspect_job(d))
            dirnames[:] = []
    return sorted(jobs, key=lambda j: str(j.path)), sorted(sweeps)


def expected_overrides(sweep_dir: Path) -> list[list[str]] | None:
    """Every job's overrides of the sweep in ``sweep_dir``, as Hydra's basic sweeper expands them
    (``hydra.sweeper.params`` then the command line); None for other sweepers."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        conf = OmegaConf.load(sweep_dir / "multirun.yaml")
        target = str(OmegaConf.select(conf, "hydra.sweeper._target_", default=""))
        if not target.endswith("BasicSweeper"):
            return None
        params = OmegaConf.to_container(conf.hydra.sweeper, resolve=False).get("params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in conf.hydra.overrides.task]
        return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)[0]
    except Exception as exc:  # an unreadable multirun.yaml must not stop the collection
        log.warning("%s: cannot expand the sweep (%s); missing jobs of it are not listed", sweep_dir, exc)
        return None


def missing_jobs(jobs: list[Job], sweeps: list[Path]) -> list[Job]:
    out = []
    for sweep in sweeps:
        expected = expected_overrides(sweep)
        if expected is None:
            continue
        present = {frozenset(j.overrides) for j in jobs if j.path is not None and sweep in j.path.parents}
        out += [Job(None, "missing", "never started (no job folder)", overrides=list(o))
                for o in expected if frozenset(o) not in present]
    return out


# -------------------------------------------------------------------------------- runs and tables

@dataclass
class Run:
    """One run: one unsharded job, or the complete shards 0 … n−1 of a run (in shard order)."""

    jobs: list[Job]

    @property
    def path(self) -> Path:
        return self.jobs[0].path


@dataclass
class Collection:
    root: Path
    out: Path | None
    jobs: list[Job]
    runs: list[Run]
    tables: dict[str, Any]  # merged tables by name: only when collected with write=False
    summary: Any
    files: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(j.status == status for j in self.jobs)

    @property
    def problems(self) -> list[Job]:
        return [j for j in self.jobs if j.status in ("failed", "incomplete", "missing") or
                (j.status == "finished" and j.reason)]

    @property
    def ok(self) -> bool:
        return not self.problems

    def warnings(self) -> list[str]:
        """What a reader of the collected tables must know, one line each: one model or dataset name for different
        weights or images (``tables.name_clashes``), a condition whose methods ran on different models or inputs
        (``summary.mixed_columns``), runs without a 95% interval (``summary.interval_lines``)."""
        from .summary import interval_lines, mixed_columns
        from .tables import name_clashes

        if self.summary is None:
            return []
        return [*name_clashes(self.summary), *mixed_columns(self.summary), *interval_lines(self.summary)]


def _without_shard(overrides: list[str]) -> frozenset[str]:
    return frozenset(o for o in overrides if not o.startswith(("shard=", "num_shards=")))


def group_runs(jobs: list[Job]) -> tuple[list[Run], list[Job]]:
    """Finished jobs → runs (duplicates marked); also the shards that are missing altogether."""
    by_key: dict[str, list[Job]] = {}
    for j in jobs:
        if j.status == "finished":
            by_key.setdefault(j.run_key, []).append(j)
    known = {(j.run_key, *j.shard) for j in jobs if j.manifest is not None}
    # unfinished jobs by their overrides, to not list a shard twice (as a failed/missing job and as absent)
    pending = {(_without_shard(j.overrides), o) for j in jobs if j.status != "finished" for o in j.overrides
               if o.startswith("shard=")}
    runs, extra = [], []
    for key, members in by_key.items():
        candidates: list[list[Job]] = []
        shard_sets: dict[int, dict[int, Job]] = {}
        for j in members:
            shard, n = j.shard
            if n == 1:
                candidates.append([j])
            elif shard in shard_sets.setdefault(n, {}):
                j.status, j.reason = "duplicate", f"same shard as {shard_sets[n][shard].path}; rows not repeated"
            else:
                shard_sets[n][shard] = j
        incomplete = {}
        for n, shards in shard_sets.items():
            if len(shards) == n:
                candidates.append([shards[i] for i in range(n)])
            else:
                incomplete[n] = shards
        candidates.sort(key=lambda c: str(c[0].path))
        for c in candidates[1:]:
            for j in c:
                j.status, j.reason = "duplicate", f"same run as {candidates[0][0].path}; rows not repeated"
        for n, shards in incomplete.items():
            if candidates:  # the run is complete otherwise
                for j in shards.values():
                    j.status, j.reason = "duplicate", f"same run as {candidates[0][0].path}; rows not repeated"
                continue
            absent = [i for i in range(n) if i not in shards]
            for j in shards.values():
                j.reason = f"not merged: shard(s) {', '.join(map(str, absent))} of num_shards={n} not finished"
            example = next(iter(shards.values()))
            for i in absent:
                if (key, i, n) not in known and (_without_shard(example.overrides), f"shard={i}") not in pending:
                    extra.append(Job(None, "missing", f"shard {i} of num_shards={n} of the run of {example.path}: "
                                     f"no job folder found", overrides=[f"shard={i}", f"num_shards={n}"]))
        if candidates:
            runs.append(Run(candidates[0]))
    runs.sort(key=lambda r: str(r.path))
    return runs, extra


def jobs_below(root: Path) -> tuple[list[Job], list[Run], bool]:
    """Every job below ``root`` with its status — the job folders, the jobs a sweep expected that never started
    (``missing``) and the shards missing altogether —, the finished runs among them, and whether any job folder or
    sweep was found at all."""
    jobs, sweeps = find(root)
    jobs += missing_jobs(jobs, sweeps)
    runs, extra = group_runs(jobs)
    return jobs + extra, runs, bool(jobs or sweeps)


def _run_tables(run: Run):
    """The run's tables by name, its summary and its skipped images (with provenance)."""
    import pandas as pd

    from .summary import summarize_run, with_run
    from .tables import PROVENANCE, with_provenance

    first = run.jobs[0]
    if first.legacy:
        tables = {p.stem: pd.read_parquet(p) for p in sorted(first.path.glob("*.parquet"))}
        summary = pd.read_csv(first.path / "summary.csv")
        prov = {k: summary.iloc[0][k] for k in PROVENANCE if k in summary.columns}
        skipped_prov = prov if len(prov) == len(PROVENANCE) else None
    elif len(run.jobs) == 1 and first.shard[1] == 1:
        tables = jobdir.read_job_tables(first.path, first.done)
        summary = pd.read_csv(first.path / first.done["summary"])
        skipped_prov = first.done["provenance"]
    else:  # the shards of one run, block by block in dataset order: the rows one job would have written
        blocks = [(j.path, jobdir.finished_block(j.path, b, start, stop)) for j in run.jobs
                  for b, start, stop in j.done["block_spans"]]
        wall = round(sum(j.done["provenance"]["wall_time_s"] for j in run.jobs), 3)
        prov = {**first.done["provenance"], "wall_time_s": wall}
        tables, _ = jobdir.assemble(blocks, prov)
        conf = first.manifest["run_config"]
        summary = None
        if tables:
            summary = with_run(summarize_run(tables, int(conf["bootstrap"]), conf["seed"]),
                               {**prov, "device": jobdir.devices_of([m for _, m in blocks]),
                                "device_name": jobdir.devices_of([m for _, m in blocks], "device_name")})
        skipped_prov = prov
    skipped = None
    if (p := first.path / "skipped.csv").is_file() and len(run.jobs) == 1:
        skipped = pd.read_csv(p)
    elif len(run.jobs) > 1:
        frames = [pd.read_csv(j.path / "skipped.csv") for j in run.jobs if (j.path / "skipped.csv").is_file()]
        skipped = pd.concat(frames, ignore_index=True) if frames else None
    if skipped is not None and skipped_prov is not None:
        skipped = with_provenance(skipped, skipped_prov)
    return tables, summary, skipped


class _Sink:
    """One collected table, written run by run (memory bounded by one run) to a temporary file that
    replaces ``path`` when closed. Later runs are conformed to the first run's schema (missing columns as
    nulls, types cast); ``write`` returns False when that is impossible (a new column, an odd type)."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp, self.writer, self.rows = path, path.parent / f".{path.name}.collecting.tmp", None, 0

    def write(self, df) -> bool:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        if self.writer is None:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        elif not table.schema.equals(self.writer.schema):
            schema = self.writer.schema
            if set(table.column_names) - set(schema.names):
                return False
            try:
                table = pa.table([table[f.name].cast(f.type) if f.name in table.column_names
                                  else pa.nulls(len(table), f.type) for f in schema], schema=schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                return False
        self.writer.write_table(table)
        self.rows += len(table)
        return True

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def job_folder_of(out: Path) -> Path | None:
    """The job folder ``out`` is or lies in (``jobdir.job_folder_around``), also through a link."""
    return jobdir.job_folder_around(out) or jobdir.job_folder_around(Path(out).resolve())


def refuse_out(out: Path, root: Path, job_paths: list[Path], default: bool = False) -> None:
    """Refuse (one line) an output folder that is or lies in a job folder (whose files only its job writes), or that
    holds the folder collected or one of its jobs (its collection.json would hide them from the next collect)."""
    what = f"{'the default output folder ' if default else ''}{out}"
    inside = job_folder_of(out)
    if inside is not None:
        raise BenchError(f"{what} lies in the job folder {inside}, whose files only its job writes; give --out a "
                         f"folder outside it")
    here = Path(out).resolve()
    for p in [root, *job_paths]:
        p = Path(p).resolve()
        if p == here or here in p.parents:
            held = f"the folder it collects, {root}" if p == Path(root).resolve() else f"the job {p}"
            raise BenchError(f"{what} holds {held} (a collection there hides its jobs from the next collect); give "
                             f"--out a folder beside them, e.g. {Path(root) / COLLECTED_DIR}")


def collect(root: str | Path, out: str | Path | None = None, write: bool = True) -> Collection:
    """Find, check and merge every job below ``root``; write the collection to ``out`` (default
    ``root/collected``), streaming one run at a time. With ``write=False`` nothing is written and the merged
    tables are returned in memory (``Collection.tables``). See the module docstring."""
    import pandas as pd

    from .tables import write_parquet

    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"no such folder: {root}")
    jobs, runs, found = jobs_below(root)
    if not found:
        raise BenchError(f"no job folders below {root} (looking for job.json / DONE / FAILED / .hydra)")
    default = out is None
    out = Path(out) if out is not None else root / COLLECTED_DIR
    if write:
        refuse_out(out, root, [j.path for j in jobs if j.path is not None], default)
    parts: dict[str, list] = {}
    sinks: dict[str, _Sink] = {}
    fallback: set[str] = set()  # tables whose runs' schemas cannot be streamed into one: merged in memory
    summaries, skipped = [], []
    try:
        for run in runs:
            tables, summary, skip = _run_tables(run)
            for name, table in tables.items():
                if not write:
                    parts.setdefault(name, []).append(table)
                elif name not in fallback and not sinks.setdefault(name, _Sink(out / f"{name}.parquet")).write(table):
                    fallback.add(name)
                    sinks.pop(name).abort()
            if summary is not None:
                summaries.append(summary)
            if skip is not None and len(skip):
                skipped.append(skip)
        rows = {}
        for name, sink in sinks.items():
            sink.close()
            rows[f"{name}.parquet"] = sink.rows
    finally:
        for sink in sinks.values():
            if sink.tmp.exists():
                sink.abort()
    for name in sorted(fallback):
        table = pd.concat([t for run in runs if (t := _run_tables(run)[0].get(name)) is not None], ignore_index=True)
        write_parquet(table, out / f"{name}.parquet")
        rows[f"{name}.parquet"] = len(table)
    tables = {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
    summary = pd.concat(summaries, ignore_index=True) if summaries else None
    result = Collection(root, out if write else None, jobs, runs, tables, summary)
    if write:
        result.files = rows
        _write(result, pd.concat(skipped, ignore_index=True) if skipped else None)
    return result


#: The condition columns of jobs.csv: those a job's configuration names by themselves (bench/run/tables.py); the
#: rest (parameters, weights, protocol settings) a row of jobs.csv joins by ``run_key`` with the summary rows.
JOB_CONDITION = [c for c in CONDITION if c not in ("method_params", "pooling", "regions_params", "model_sha",
                                                   "protocol_settings")]
#: Where a jobs.csv column's value is in the job's configuration when not under its own name.
_CONFIG_KEY = {"images": "n_images"}


def jobs_frame(c: Collection):
    import pandas as pd

    def name(value):  # a config group's node is named by its name (a method, a dataset …) or kind (regions)
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return (value.get("name") or value.get("kind")) if isinstance(value, dict) else value

    rows = []
    for j in c.jobs:
        m = j.manifest or {}
        conf = m.get("run_config") or {}
        shard, n = j.shard
        lo, hi = m.get("blocks", [0, 0])
        rows.append({
            "job": os.path.relpath(j.path, c.root) if j.path is not None else "", "status": j.status,
            "reason": j.reason, "overrides": " ".join(j.overrides), "run_key": j.run_key or "",
            "shard": shard, "num_shards": n, "blocks": hi - lo,
            **{k: name(conf.get(_CONFIG_KEY.get(k, k))) for k in JOB_CONDITION},
        })
    return pd.DataFrame(rows, columns=["job", "status", "reason", "overrides", "run_key", "shard", "num_shards",
                                       "blocks", *JOB_CONDITION])


def _write(c: Collection, skipped) -> None:
    from .tables import write_csv, write_json, write_parquet

    out = c.out
    written = dict(c.files)  # the tables, already written
    if c.summary is not None:
        write_parquet(c.summary, out / "summary.parquet")
        write_csv(c.summary, out / "summary.csv")
        written["summary.parquet"] = written["summary.csv"] = len(c.summary)
        from .network_quality import network_quality_table

        network = network_quality_table(c.summary)
        if network is not None:  # experiment=network_quality: the table of TNNLS Fig. 7 for the report
            write_csv(network, out / "network_quality.csv")
            written["network_quality.csv"] = len(network)
    if skipped is not None:
        write_csv(skipped, out / "skipped.csv")
        written["skipped.csv"] = len(skipped)
    jobs = jobs_frame(c)
    write_csv(jobs, out / "jobs.csv")
    written["jobs.csv"] = len(jobs)
    from .tables import write_text

    warnings = c.warnings()
    if warnings:
        write_text("\n".join(warnings) + "\n", out / "warnings.txt")
        written["warnings.txt"] = len(warnings)
    elif (out / "warnings.txt").exists() and (out / COLLECTION).exists():
        (out / "warnings.txt").unlink()
    if (out / COLLECTION).exists():  # our own folder: drop what an earlier collection wrote and this did not
        for p in list(out.glob("*.parquet")) + list(out.glob("*.csv")) + list(out.glob(".*.tmp")):
            if p.name not in written:
                p.unlink()
    write_json({"root": str(c.root.resolve()), "files": written, "runs": len(c.runs),
                "jobs": {s: c.count(s) for s in STATUSES}}, out / COLLECTION)
    c.files = written


def format_report(c: Collection) -> str:
    def name(j: Job) -> str:
        if j.path is None:
            return " ".join(j.overrides) or "?"
        return os.path.relpath(j.path, c.root)

    lines = [f"collected {len(c.runs)} run(s) from {len(c.jobs)} job(s) below {c.root}: "
             + ", ".join(f"{c.count(s)} {s}" for s in STATUSES if c.count(s))]
    if c.out is not None:
        lines.append(f"  → {c.out}/: " + ", ".join(f"{f} ({n} rows)" for f, n in c.files.items()))
    for status, title in (("failed", "failed"), ("incomplete", "not finished"), ("missing", "missing")):
        bad = [j for j in c.jobs if j.status == status]
        if bad:
            lines.append(f"{len(bad)} job(s) {title}:")
            lines += [f"  {name(j)}: {j.reason}" for j in bad]
    lines += [f"warning: {w}" for w in c.warnings()]
    unmerged = [j for j in c.jobs if j.status == "finished" and j.reason]
    if unmerged:
        lines.append(f"{len(unmerged)} finished shard(s) not merged (their run is incomplete):")
        lines += [f"  {name(j)}: {j.reason}" for j in unmerged]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.collect", description=(
        "Merge the tables of every job below DIR (a sweep, a folder of runs, results/) into one tidy table; "
        "list failed, unfinished and missing jobs. Exit status 1 when there are any."))
    parser.add_argument("dir", help="sweep or results folder")
    parser.add_argument("--out", default=None, help=f"output folder (default: DIR/{COLLECTED_DIR}); never in a job "
                                                    f"folder, nor one that holds DIR or its jobs")
    args = parser.parse_args(argv)
    try:
        c = collect(args.dir, args.out)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(c))
    if c.summary is not None:
        from .summary import comparison_table

        print("\n" + comparison_table(c.summary))
    return 0 if c.ok else 1


if __name__ == "__main__":
    sys.exit(main())
