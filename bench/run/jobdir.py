"""The job folder, with one owner: its layout, manifest, lock, markers, status and the resume decision.

``bench/run/job.py`` writes a job folder only through ``JobDir``; ``bench/run/collect.py`` and the report read
its status only through ``status``. Layout of ``<job>/``::

    .lock                         held while a process works here (bench/run/lock.py); gone when it ends
    job.json                      manifest: run key, configuration (without runtime keys), code and model
                                  hashes, shard, block layout, one record per attempt
    parts/block-NNNNNN.<t>.parquet the rows of one block of images, per table (no provenance)
    parts/block-NNNNNN.done.json   written last for a block: its tables with their files' digests, skipped
                                  images, time, device
    <table>.parquet, summary.csv   the final tables (unsharded jobs; the parts are then removed)
    skipped.csv, config.yaml      images left out with the reason; the resolved configuration
    .hydra/{config,hydra,overrides}.yaml, bench.log   Hydra's record of the command, the job's log
    DONE                          written last of all: the job is finished (shards keep their parts); lists the
                                  final tables with their files' digests
    FAILED                        "error: <reason>" (+ traceback); removed when the job starts again

Rules. Every file is written atomically, and a block or a job counts as finished only through its
marker, written after everything it vouches for. A command writes nothing into a folder before its
configuration is accepted, the lock is held and the folder's run is known to be the same run (or the
folder is empty, or ``resume=false`` says to discard it): a refused command leaves a finished folder
byte-identical. A failure is recorded (FAILED) only in a folder the command owns, or one that holds no run.

Containment. The folder is the only place a job reads its results from, writes or deletes: every name read from a
marker is a plain file name checked to stay inside it (no absolute path, no ``..``), and a file or ``parts/``
that is a symbolic link leaving the folder makes the folder refused (``escape``). A block or table file whose
bytes do not match the digest its marker recorded is not finished: a block is recomputed; a final table makes the
job ``failed`` ("damaged: …") until the same command recomputes it.
"""

from __future__ import annotations

import hashlib
import os
import re
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


# ------------------------------------------------------------------------------------------ containment

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def file_digest(path: Path) -> str:
    """blake2b-128 of a file's bytes (written into the marker that vouches for the file)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inside(job_dir: Path, name: Any) -> Path | None:
    """``job_dir / name`` for a plain file name read from a marker (no folder part, no ``..``, not absolute),
    or None for any other value."""
    if not isinstance(name, str) or not _FILE_NAME.match(name) or name in (".", ".."):
        return None
    return Path(job_dir) / name


def escape(job_dir: Path) -> str | None:
    """The first entry of the folder (or of its ``parts/``) that is a symbolic link or a special file — a job's
    files are regular files inside it — as one line, or None."""
    job_dir = Path(job_dir)
    try:
        entries = list(job_dir.iterdir())
        parts = job_dir / PARTS
        if parts.is_symlink():
            return (f"{parts} is a symbolic link (to {os.path.realpath(parts)}); a job's files must lie inside its "
                    f"folder")
        if parts.is_dir():
            entries += list(parts.iterdir())
    except OSError:
        return None
    for entry in entries:
        if entry.name == ".lock":
            continue
        if entry.is_symlink():
            return (f"{entry} is a symbolic link (to {os.path.realpath(entry)}); a job's files must lie inside its "
                    f"folder")
        if not (entry.is_file() or entry.is_dir()):
            return f"{entry} is not a regular file (a FIFO, socket or device)"
    return None


def _verified(path: Path | None, digest: Any) -> bool:
    """Whether ``path`` is a regular file whose bytes have ``digest``."""
    if path is None or not isinstance(digest, str) or path.is_symlink() or not path.is_file():
        return False
    try:
        return file_digest(path) == digest
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ blocks

def block_stem(block: int) -> str:
    return f"block-{block:06d}"


def block_marker(job_dir: Path, block: int) -> Path:
    return Path(job_dir) / PARTS / f"{block_stem(block)}.done.json"


def part_path(job_dir: Path, block: int, table: str) -> Path:
    return Path(job_dir) / PARTS / f"{block_stem(block)}.{table}.parquet"


def finished_block(job_dir: Path, block: int, start: int, stop: int) -> dict | None:
    """The marker of a finished block (images ``start``…``stop - 1``), or None when the block is not done:
    no marker, an unreadable one, another layout, a table name that is not a plain name, or a part file
    missing or not matching the digest the marker recorded (it is then recomputed)."""
    if (Path(job_dir) / PARTS).is_symlink():
        return None
    marker = read_json(block_marker(job_dir, block))
    if not isinstance(marker, dict) or (marker.get("start"), marker.get("stop")) != (start, stop) \
            or marker.get("block") != block:
        return None
    tables, digests = marker.get("tables"), marker.get("digests")
    if not isinstance(tables, dict) or not isinstance(digests, dict) or set(tables) != set(digests):
        return None
    if not all(isinstance(t, str) and _TABLE_NAME.match(t) and _verified(part_path(job_dir, block, t), digests[t])
               for t in tables):
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


def damage(job_dir: Path) -> str | None:
    """Why the DONE marker of ``job_dir`` does not vouch for its files (one line), or None when it does (or there
    is no DONE): a name that leaves the folder, a file missing, or a file whose bytes changed after it was written."""
    job_dir = Path(job_dir)
    if not (job_dir / DONE).exists():
        return None
    link = escape(job_dir)
    if link:
        return link
    done = read_json(job_dir / DONE)
    if not isinstance(done, dict):
        return f"{job_dir / DONE} is unreadable"
    entries = dict(done.get("tables") or {})
    if done.get("summary") is not None:
        entries["summary"] = {"file": done.get("summary"), "digest": (done.get("digests") or {}).get("summary")}
    for name, entry in entries.items():
        entry = entry if isinstance(entry, dict) else {}
        path = inside(job_dir, entry.get("file"))
        if path is None:
            return f"{job_dir / DONE} names {entry.get('file')!r} for table {name!r}: not a file of this folder"
        if not path.is_file():
            return f"{path} is missing"
        if not _verified(path, entry.get("digest")):
            return f"{path} changed after the job finished (its bytes do not match the digest written with it)"
    if done.get("num_shards", 1) > 1:
        spans = done.get("block_spans", [])
        bad = [b for b, start, stop in spans if not finished_block(job_dir, b, start, stop)] \
            if all(isinstance(s, list) and len(s) == 3 for s in spans) else ["?"]
        if bad:
            return f"{job_dir / PARTS}: block {bad[0]} is missing or changed after the job finished"
    return None


def finished_job(job_dir: Path) -> dict | None:
    """The DONE marker of a finished job, or None: no marker, or a file it vouches for is missing or changed
    (``damage``)."""
    job_dir = Path(job_dir)
    done = read_json(job_dir / DONE)
    if not isinstance(done, dict) or damage(job_dir) is not None:
        return None
    return done


def read_job_tables(job_dir: Path, done: dict) -> dict[str, pd.DataFrame]:
    """The final tables of a finished unsharded job, by name, as listed in its DONE marker."""
    return {name: pd.read_parquet(inside(job_dir, entry["file"])) for name, entry in done["tables"].items()}


# ------------------------------------------------------------------------------------------ status

@dataclass
class Status:
    """What a folder holds: ``finished``, ``failed`` (also: "damaged: …", a finished job whose files changed
    afterwards), ``incomplete`` (killed, timed out or running), ``legacy`` (a finished run of the format before
    resumable jobs) or ``empty`` (no run)."""

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
    problem = (damage(job_dir) if (job_dir / DONE).exists() else None) or escape(job_dir)
    if problem and not holder:
        return Status("failed", f"damaged: {problem}; the same command recomputes it (resume=true)", manifest, None,
                      holder)
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


def job_folder_around(path: Path) -> Path | None:
    """The job folder that ``path`` is or lies in (a folder holding a run's files, finished or not), or None: where
    collect and report must not write their outputs."""
    path = Path(path).absolute()
    for p in [path, *path.parents]:
        if not p.is_dir():
            continue
        if holds_run(p) or (p / FAILED).exists() or (p / HYDRA / "config.yaml").is_file():
            if not (p / "collection.json").exists():  # (bench/run/collect.py's own output folder)
                return p
    return None


def _first_line(path: Path) -> str:
    import re

    try:
        if not path.is_file():
            return ""
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
        link = escape(out)
        if link:
            raise BenchError(f"{out} cannot hold this job: {link}; remove it or choose another output folder")
        old = read_json(out / MANIFEST)
        old = old if isinstance(old, dict) else None
        if old is None and resume and holds_run(out):
            raise BenchError(f"{out} already holds results without a job manifest (an older layout, or not written "
                             f"by this suite); rerun with resume=false to discard them, or choose another output "
                             f"folder")
        if old is not None and resume:
            problem = incompatibility(old, manifest)
            if problem:
                raise BenchError(f"{out} already holds {problem}; rerun with resume=false to discard them, "
                                 f"or choose another output folder")
            done = finished_job(out)
            if done is not None:
                return done
            broken = damage(out)
            if broken:
                import logging

                logging.getLogger(__name__).warning("%s: %s; recomputing it", out, broken)
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
        done = read_json(out / DONE)
        entries = (done.get("tables") or {}).values() if isinstance(done, dict) else []
        for entry in entries:  # only plain names inside the folder (``inside``): never a path read from a marker
            path = inside(out, entry.get("file") if isinstance(entry, dict) else None)
            if path is not None:
                path.unlink(missing_ok=True)
        for name in (DONE, FAILED, MANIFEST, "summary.csv", "skipped.csv", "curves.parquet"):
            (out / name).unlink(missing_ok=True)
        if (out / PARTS).is_symlink():
            (out / PARTS).unlink()
        else:
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
        tables, digests = {}, {}
        for name, parts in frames.items():
            rows = pd.concat(parts, ignore_index=True)
            write_parquet(rows, part_path(self.path, b, name))
            tables[name], digests[name] = len(rows), file_digest(part_path(self.path, b, name))
        write_json(dict(block=b, start=start, stop=stop, tables=tables, digests=digests, skipped=skipped,
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
        write_json(dict(info, tables={n: {"file": f"{n}.parquet", "rows": len(t),
                                          "digest": file_digest(out / f"{n}.parquet")} for n, t in tables.items()},
                        summary="summary.csv", digests={"summary": file_digest(out / "summary.csv")}), out / DONE)
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
