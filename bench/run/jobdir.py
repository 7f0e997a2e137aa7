"""The job folder, with one owner: its layout, manifest, lock, markers, status and the resume decision.

``bench/run/job.py`` writes a job folder only through ``JobDir``; ``bench/run/collect.py`` and the report read
its status only through ``status``. Layout of ``<job>/``::

    .lock                         held while a process works here (bench/run/lock.py); gone when it ends
    job.json                      manifest: run key, configuration (without runtime keys), code and model
                                  hashes, shard, block layout, one record per attempt
    parts/block-NNNNNN.<t>.parquet the rows of one block of images, per table (no provenance)
    parts/block-NNNNNN.done.json   written last for a block: its tables, skipped images, time, device
    <table>.parquet, summary.csv   the final tables (unsharded jobs; the parts are then removed)
    skipped.csv, config.yaml      images left out with the reason; the resolved configuration
    .hydra/{config,hydra,overrides}.yaml, bench.log   Hydra's record of the command, the job's log
    DONE                          written last of all: the job is finished (shards keep their parts)
    FAILED                        "error: <reason>" (+ traceback); removed when the job starts again

Rules. Every file is written atomically, and a block or a job counts as finished only through its
marker, written after everything it vouches for. A command writes nothing into a folder before its
configuration is accepted, the lock is held and the folder's run is known to be the same run (or the
folder is empty, or ``resume=false`` says to discard it): a refused command leaves a finished folder
byte-identical. A failure is recorded (FAILED) only in a folder the command owns, or one that holds no run.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from ..errors import BenchError
from .identity import incompatibility
from .tables import protocol_of_table, read_json, with_provenance, write_csv, write_json, write_parquet, write_text

# (the lock file, .lock, is bench/run/lock.py's)
MANIFEST, DONE, FAILED, PARTS, LOG, HYDRA = "job.json", "DONE", "FAILED", "parts", "bench.log", ".hydra"


# ------------------------------------------------------------------------------------------ blocks

def block_stem(block: int) -> str:
    return f"block-{block:06d}"


def block_marker(job_dir: Path, block: int) -> Path:
    return Path(job_dir) / PARTS / f"{block_stem(block)}.done.json"


def part_path(job_dir: Path, block: int, table: str) -> Path:
    return Path(job_dir) / PARTS / f"{block_stem(block)}.{table}.parquet"


def finished_block(job_dir: Path, block: int, start: int, stop: int) -> dict | None:
    """The marker of a finished block (images ``start``…``stop - 1``), or None when the block is not done:
    no marker, an unreadable one, another layout, or a part file missing."""
    marker = read_json(block_marker(job_dir, block))
    if not isinstance(marker, dict) or (marker.get("start"), marker.get("stop")) != (start, stop):
        return None
    if not all(part_path(job_dir, block, t).is_file() for t in marker.get("tables", {})):
        return None
    return marker


def devices_of(markers: list[dict], key: str = "device") -> str:
    """The devices (``key="device_name"``: their models) the blocks ran on, comma-separated."""
    return ",".join(sorted({str(m.get(key) or m["device"]) for m in markers})) or "none"


def assemble(blocks: list[tuple[Path, dict]], provenance: dict[str, Any]
             ) -> tuple[dict[str, pd.DataFrame], list[tuple[str, str]]]:
    """The tables of finished blocks ``(job_dir, marker)``, given in dataset order, with the provenance
    columns (each block's rows carry the device it ran on), and the skipped images as (image_id, reason).
    One run and the merge of its shards go through here, so they give the same rows."""
    frames: dict[str, list[pd.DataFrame]] = {}
    skipped: list[tuple[str, str]] = []
    for job_dir, marker in blocks:
        skipped += [tuple(s) for s in marker.get("skipped", [])]
        for name in marker.get("tables", {}):
            rows = pd.read_parquet(part_path(job_dir, marker["block"], name))
            device = {"device": marker["device"], "device_name": marker.get("device_name") or marker["device"]}
            frames.setdefault(name, []).append(with_provenance(rows, {**provenance, **device},
                                                               protocol=protocol_of_table(name)))
    return {name: pd.concat(parts, ignore_index=True) for name, parts in frames.items()}, skipped


def finished_job(job_dir: Path) -> dict | None:
    """The DONE marker of a finished job, or None: no marker, or a file it vouches for is missing."""
    job_dir = Path(job_dir)
    done = read_json(job_dir / DONE)
    if not isinstance(done, dict):
        return None
    files = [e["file"] for e in (done.get("tables") or {}).values()]
    files += [done["summary"]] if done.get("summary") else []
    if not all((job_dir / f).is_file() for f in files):
        return None
    if done.get("num_shards", 1) > 1 and not all(
            finished_block(job_dir, b, start, stop) for b, start, stop in done.get("block_spans", [])):
        return None
    return done


def read_job_tables(job_dir: Path, done: dict) -> dict[str, pd.DataFrame]:
    """The final tables of a finished unsharded job, by name, as listed in its DONE marker."""
    return {name: pd.read_parquet(Path(job_dir) / entry["file"]) for name, entry in done["tables"].items()}


# ------------------------------------------------------------------------------------------ status

@dataclass
class Status:
    """What a folder holds: ``finished``, ``failed``, ``incomplete`` (killed, timed out or running),
    ``legacy`` (a finished run of the format before resumable jobs) or ``empty`` (no run)."""

    status: str
    reason: str = ""
    manifest: dict | None = None
    done: dict | None = None
    holder: dict | None = None   # the lock's holder while a (live) process works here


def status(job_dir: Path) -> Status:
    job_dir = Path(job_dir)
    from .lock import JobLock

    manifest = read_json(job_dir / MANIFEST)
    manifest = manifest if isinstance(manifest, dict) else None
    holder = JobLock(job_dir).live_holder()
    done = finished_job(job_dir) if manifest is not None else None
    if (job_dir / FAILED).exists():  # an attempt that starts removes FAILED: the latest attempt failed
        return Status("failed", _first_line(job_dir / FAILED) or "failed (no reason recorded)", manifest, None, holder)
    if done is not None:
        return Status("finished", "", manifest, done, holder)
    if manifest is None and (job_dir / "curves.parquet").is_file() and (job_dir / "summary.csv").is_file() \
            and not (job_dir / PARTS).exists() and not (job_dir / DONE).exists():
        return Status("legacy", "", None, None, holder)
    running = f"running: pid {holder.get('pid')} on {holder.get('host')}" if holder else \
        "killed, timed out or still running"
    if manifest is not None and {"blocks", "n_images", "block_size"} <= set(manifest):
        lo, hi = manifest["blocks"]
        n_images, size = manifest["n_images"], manifest["block_size"]
        n_done = sum(finished_block(job_dir, b, b * size, min((b + 1) * size, n_images)) is not None
                     for b in range(lo, hi))
        return Status("incomplete", f"not finished: {n_done} of {hi - lo} block(s) done ({running})", manifest,
                      None, holder)
    if manifest is not None or holder or (job_dir / DONE).exists() or (job_dir / PARTS).exists():
        return Status("incomplete", f"started, nothing computed yet ({running})", None, None, holder)
    return Status("empty", "", None, None, holder)


def is_job_dir(job_dir: Path, names: set[str]) -> bool:
    """Whether a folder with files ``names`` is a job folder (for collect's walk)."""
    return bool(names & {MANIFEST, DONE, FAILED}) or (Path(job_dir) / HYDRA / "config.yaml").is_file() or \
        {"curves.parquet", "summary.csv"} <= names


def _first_line(path: Path) -> str:
    import re

    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return re.sub(r"^error:\s*", "", lines[0]) if lines else ""


def holds_run(job_dir: Path) -> bool:
    """Whether the folder holds (part of) a run, finished or not: then only its owner may write there."""
    job_dir = Path(job_dir)
    return any((job_dir / n).exists() for n in (MANIFEST, DONE, PARTS, "curves.parquet"))


# ------------------------------------------------------------------------------------------ the owner

class JobDir:
    """The one writer of a job folder. ``with JobDir(path).locked():`` holds the lock; ``claim`` decides
    whether the folder can take this run (resume, start afresh, or refuse) and only then writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.claimed = False
        self._lock = None

    @contextmanager
    def locked(self) -> Iterator["JobDir"]:
        from .lock import JobLock

        with JobLock(self.path) as lock:  # (which makes the folder)
            self._lock = lock
            try:
                yield self
            finally:
                self._lock = None

    # -- the resume decision -------------------------------------------------------------------------
    def claim(self, manifest: dict, resume: bool, setup_s: float) -> dict | None:
        """Take the folder for the run of ``manifest``: its DONE marker if that run is finished here (nothing
        is written then), else None once the folder is ready (finished blocks of the same run kept). A
        folder holding another run is refused in one line without being touched (unless ``resume=false``)."""
        assert self._lock is not None, "claim() needs the lock"
        out = self.path
        old = read_json(out / MANIFEST)
        old = old if isinstance(old, dict) else None
        if old is not None and resume:
            problem = incompatibility(old, manifest)
            if problem:
                raise BenchError(f"{out} already holds {problem}; rerun with resume=false to discard them, "
                                 f"or choose another output folder")
            done = finished_job(out)
            if done is not None:
                return done
        self.claimed = True
        if not resume or old is None:
            self._discard()
            old = None
        (out / FAILED).unlink(missing_ok=True)
        (out / DONE).unlink(missing_ok=True)
        attempts = (old or {}).get("attempts", []) + [dict(
            started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), setup_s=round(setup_s, 3),
            **{k: v for k, v in (self._lock.holder() or {}).items() if k in ("host", "pid")})]
        write_json(dict(manifest, attempts=attempts), out / MANIFEST)
        return None

    @contextmanager
    def log_file(self) -> Iterator[None]:
        """The job's log lines also go to ``<job>/bench.log`` (appended, attempt after attempt) while inside."""
        import logging

        self._owner()
        handler = logging.FileHandler(self.path / LOG)
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()

    def _discard(self) -> None:
        """Remove what an earlier job left (its markers, parts and final tables)."""
        out = self.path
        done = read_json(out / DONE) or {}
        for entry in (done.get("tables") or {}).values():
            (out / entry["file"]).unlink(missing_ok=True)
        for name in (DONE, FAILED, MANIFEST, "summary.csv", "skipped.csv", "curves.parquet"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / PARTS, ignore_errors=True)

    def attempts_setup_s(self) -> float:
        return sum(a.get("setup_s", 0.0) for a in (read_json(self.path / MANIFEST) or {}).get("attempts", []))

    def n_attempts(self) -> int:
        return len((read_json(self.path / MANIFEST) or {}).get("attempts", []))

    # -- writing (owner only) ------------------------------------------------------------------------
    def _owner(self) -> None:
        if not self.claimed or self._lock is None:
            raise RuntimeError(f"{self.path}: written without owning it (claim() under the lock first)")

    def write_block(self, block: tuple[int, int, int], frames: dict[str, list[pd.DataFrame]],
                    skipped: list[tuple[str, str]], seconds: float, device: str, device_name: str = "") -> None:
        self._owner()
        b, start, stop = block
        tables = {}
        for name, parts in frames.items():
            rows = pd.concat(parts, ignore_index=True)
            write_parquet(rows, part_path(self.path, b, name))
            tables[name] = len(rows)
        write_json(dict(block=b, start=start, stop=stop, tables=tables, skipped=skipped,
                        wall_time_s=round(seconds, 3), device=device, device_name=device_name or device),
                   block_marker(self.path, b))

    def write_record(self, config_yaml: str, hydra_files: dict[str, str] | None) -> None:
        """The resolved configuration and Hydra's record of the command (``.hydra/``), once the folder is ours."""
        self._owner()
        write_text(config_yaml, self.path / "config.yaml")
        for name, text in (hydra_files or {}).items():
            write_text(text, self.path / HYDRA / name)

    def write_skipped(self, skipped: pd.DataFrame) -> None:
        self._owner()
        write_csv(skipped, self.path / "skipped.csv")

    def write_final(self, tables: dict[str, pd.DataFrame], summary: pd.DataFrame | None, info: dict) -> None:
        """The final tables, then DONE last; the parts are removed after (unsharded jobs)."""
        self._owner()
        out = self.path
        if summary is None:  # a shard: its rows stay in parts/ for collect
            write_json(dict(info, tables={}, summary=None), out / DONE)
            return
        for name, table in tables.items():
            write_parquet(table, out / f"{name}.parquet")
        write_csv(summary, out / "summary.csv")
        write_json(dict(info, tables={n: {"file": f"{n}.parquet", "rows": len(t)} for n, t in tables.items()},
                        summary="summary.csv"), out / DONE)
        self.tidy()

    def tidy(self) -> None:
        """Remove the parts of a finished unsharded job and temporary files left by killed attempts."""
        done = read_json(self.path / DONE) or {}
        if done.get("num_shards", 1) == 1:
            shutil.rmtree(self.path / PARTS, ignore_errors=True)
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def mark_failed(self, message: str, hydra_files: dict[str, str] | None = None) -> bool:
        """Write FAILED (first line: the reason) — only into a folder this command owns, or one that holds
        no run (a job refused before it started, so that collect can list it with its reason). Returns
        whether it was written."""
        if not self.claimed and holds_run(self.path):
            return False
        try:
            write_text(message.rstrip() + "\n", self.path / FAILED)
            if not self.claimed:
                for name, text in (hydra_files or {}).items():
                    write_text(text, self.path / HYDRA / name)
        except OSError:
            return False
        return True
