"""The tidy-table schema (SPEC §8), defined once, and atomic writes.

Every row carries the run's provenance, so tables from different runs and sweeps concatenate:

curves.parquet — one row per (image, order, step k = 0..L):
    PROVENANCE + image_id, label, target_class, order (morf | random), step, fraction_perturbed,
    score_value (f_c(x⁽ᵏ⁾) averaged over repeats), score_std (over repeats), aopc (AOPC(k), this image)
summary.csv — one row per quantity at the final L (aopc_morf, aopc_random, aopc_morf_minus_random, and with
    the options: aopc_lerf, aopc_lerf_minus_random, png_bytes, jpeg_bytes, entropy_bits, continuity_max,
    continuity_mean): PROVENANCE + quantity, mean, median, sem, ci_low, ci_high, n_images
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)

PROVENANCE = [
    "method", "method_params", "pooling", "dataset", "preprocessing", "model", "model_params", "perturbation",
    "perturbation_params", "patch", "steps", "L", "n_regions", "repeats", "orders", "target", "score", "precision",
    "seed", "device", "bench_version", "torch_version", "torchvision_version", "numpy_version", "python_version",
    "wall_time_s",
]
CURVE_COLUMNS = PROVENANCE + ["image_id", "label", "target_class", "order", "step", "fraction_perturbed",
                              "score_value", "score_std", "aopc"]
SUMMARY_COLUMNS = PROVENANCE + ["quantity", "mean", "median", "sem", "ci_low", "ci_high", "n_images"]


def versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from . import __version__
    return {"bench_version": __version__, "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__, "numpy_version": numpy.__version__,
            "python_version": platform.python_version()}


def params_json(params: dict[str, Any]) -> str:
    """Method parameters as a canonical JSON string column (sorted keys)."""
    return json.dumps(params, sort_keys=True, default=str)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write via a temporary file in the same folder, then rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from collaborators
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def with_provenance(df: pd.DataFrame, provenance: dict[str, Any]) -> pd.DataFrame:
    """The run's provenance columns first (SPEC §8), then the table's own columns."""
    own = [c for c in df.columns if c not in PROVENANCE]
    df = df.copy()
    for key in PROVENANCE:
        df[key] = provenance[key]
    return df[PROVENANCE + own]


# --------------------------------------------------------------------------------------------------
# The job folder: resumable blocks, markers and assembly (written by bench/run.py, read by bench/collect.py)
#
# <job>/job.json                       manifest, written when the job starts: run key, configuration (without
#                                      runtime keys), code and model hashes, shard, block layout
# <job>/parts/block-NNNNNN.<table>.parquet   the rows of one block of images, per table (no provenance)
# <job>/parts/block-NNNNNN.done.json   written last for a block: its tables, skipped images, time, device
# <job>/<table>.parquet, summary.csv   the job's final tables (unsharded jobs; the parts are then removed)
# <job>/DONE                           written last of all: the job is finished (shards keep their parts)
# <job>/FAILED                         "error: <reason>" (+ traceback); removed when the job starts again
#
# Every file is written atomically, and a block or a job counts as finished only through its marker,
# which is written after everything it vouches for: a killed job never leaves a file that passes for done.

MANIFEST, DONE, FAILED, PARTS = "job.json", "DONE", "FAILED", "parts"
JOB_FORMAT = 1


def write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1, sort_keys=True, default=str)))


def write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_json(path: Path) -> Any:
    """The JSON content of ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


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


def devices_of(markers: list[dict]) -> str:
    return ",".join(sorted({m["device"] for m in markers})) or "none"


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
            frames.setdefault(name, []).append(with_provenance(rows, {**provenance, "device": marker["device"]}))
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
