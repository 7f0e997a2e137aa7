"""The tidy-table schema (SPEC §8), defined once, and atomic writes.

Every row carries the run's provenance, so tables from different runs and sweeps concatenate:

(``regions``: tiles | slic, ``regions_params``: its settings as JSON; ``n_regions`` 0: per image, superpixels)

curves.parquet — one row per (image, order, step k = 0..L):
    PROVENANCE + image_id, label, target_class, order (morf | random), step, fraction_perturbed,
    score_value (f_c(x⁽ᵏ⁾) averaged over repeats), score_std (over repeats), aopc (AOPC(k), this image),
    nonfinite (repeats whose perturbed score was NaN/inf: the model's doing, counted, never hidden)
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
    "perturbation_params", "regions", "regions_params", "patch", "steps", "L", "n_regions", "repeats", "orders", "target", "score", "precision",
    "seed", "device", "bench_version", "torch_version", "torchvision_version", "numpy_version", "python_version",
    "wall_time_s",
]
CURVE_COLUMNS = PROVENANCE + ["image_id", "label", "target_class", "order", "step", "fraction_perturbed",
                              "score_value", "score_std", "aopc", "nonfinite"]
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
