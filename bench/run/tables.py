"""The tidy-table schema (SPEC §8), defined once, and atomic writes.

Every row of every table carries the run's provenance (``PROVENANCE``), so tables from different runs and sweeps
concatenate; each protocol's own columns are declared in its file (bench/protocols/). ``regions``: tiles | slic,
``regions_params``: its settings as JSON; ``n_regions`` 0: per image (superpixels).

summary.csv — one row per quantity of the run's protocols (bench/run/summary.py): PROVENANCE + quantity, mean,
    median, sem, ci_low, ci_high, n_images.

Which provenance columns say what was measured (``CONDITION``), and the groupings the collection and the report
make of them (``SERIES``, ``HEATMAP_KEY``, ``COLUMN_KEY``, ``PAIRING_KEY``), are defined here and nowhere else.
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
SUMMARY_COLUMNS = PROVENANCE + ["quantity", "mean", "median", "sem", "ci_low", "ci_high", "n_images"]

#: What a line of a figure or a row of a table is: the method with its parameters and pooling.
SERIES = ["method", "method_params", "pooling"]
#: What a heatmap depends on (not patch, perturbation, steps or repeats): runs that differ only elsewhere have the
#: same heatmaps (the report keeps one copy of their per-heatmap tables).
HEATMAP_KEY = ["dataset", "model", "target", "score", *SERIES, "seed"]
#: What was measured (a run's condition). Device, versions, wall time and the derived L / n_regions are not part.
CONDITION = [*SERIES, "dataset", "model", "perturbation", "regions", "regions_params", "patch", "steps", "repeats",
             "target", "score", "seed"]
#: What methods are compared under, one column of a report table: the condition without the method and without
#: what only makes a number more or less precise (repeats, seed).
COLUMN_KEY = [c for c in CONDITION if c not in SERIES and c not in ("repeats", "seed")]
#: Which run of a baseline method a run is paired with (the same images, draws and heatmap key; curves are compared
#: step by step, so steps may differ).
PAIRING_KEY = [c for c in COLUMN_KEY if c != "steps"] + ["seed"]



def versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from .. import __version__
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
