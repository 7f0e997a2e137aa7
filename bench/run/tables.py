"""The tidy-table schema (DEFINITIONS §8), defined once, and atomic writes.

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
    "run_key", "method", "method_params", "pooling", "dataset", "preprocessing", "data_sha", "images", "model",
    "model_params",
    "model_sha", "perturbation", "perturbation_params", "regions", "regions_params", "patch", "equal_regions", "steps",
    "L", "n_regions", "repeats", "orders", "target", "score", "precision", "seed", "bootstrap", "metrics",
    "protocol_settings", "randomise_layers", "input_noise", "protocol", "protocol_params", "code_sha", "device",
    "device_name", "bench_version", "torch_version", "torchvision_version", "numpy_version", "scipy_version",
    "skimage_version", "pandas_version", "python_version", "wall_time_s",
]
SUMMARY_COLUMNS = PROVENANCE + ["quantity", "unit", "mean", "median", "sem", "ci_low", "ci_high", "n_images"]

#: What a line of a figure or a row of a table is: the method with its parameters and pooling.
SERIES = ["method", "method_params", "pooling"]
#: What a heatmap depends on (not patch, perturbation, steps or repeats): runs that differ only elsewhere have the
#: same heatmaps (the report keeps one copy of their per-heatmap tables).
HEATMAP_KEY = ["dataset", "model", "target", "score", *SERIES, "seed", "randomise_layers", "input_noise"]
#: What was measured (a run's condition): every setting that can change a number — the images, the weights
#: (``model_sha``), every protocol's settings (``protocol_settings``) and the bootstrap included. The code identity
#: (``code_sha``: it covers the method's own file, so it differs between methods), device, versions, wall time and
#: the derived L / n_regions / equal_regions are recorded but not part.
CONDITION = [*SERIES, "dataset", "data_sha", "images", "model", "model_sha", "perturbation", "regions",
             "regions_params", "patch", "steps", "repeats", "target", "score", "seed", "bootstrap", "metrics",
             "protocol_settings", "randomise_layers", "input_noise"]
#: What methods are compared under, one column of a report table: the condition without the method. Runs that
#: differ in images, repeats, seed or any setting are separate columns, never ranked together.
COLUMN_KEY = [c for c in CONDITION if c not in SERIES]
#: Which run of a baseline method a run is paired with (the same images, draws and heatmap key; curves are compared
#: step by step, so steps may differ).
PAIRING_KEY = [c for c in COLUMN_KEY if c != "steps"] + ["seed"]



def name_clashes(rows: pd.DataFrame) -> list[str]:
    """One line per model or dataset name that stands for more than one model (weights ``model_sha``) or set of
    images (``data_sha``) among ``rows`` (runs or summary rows): their runs are separate conditions, and a
    reader who goes by the name would mix them."""
    lines = []
    for name, digest, what in (("model", "model_sha", "weights"), ("dataset", "data_sha", "images")):
        if name not in rows or digest not in rows:
            continue
        known = rows[rows[digest].astype(str) != ""]
        for value, g in known.groupby(known[name].astype(str), sort=True):
            n = g[digest].astype(str).nunique()
            if n > 1:
                lines.append(f"{name} '{value}' names {n} different {what} ({digest} "
                             f"{', '.join(sorted(g[digest].astype(str).unique())[:3])[:60]}…): their runs are "
                             f"separate conditions, shown apart — give them different names to tell them apart")
    return lines


def versions() -> dict[str, str]:
    """The versions of the packages that compute numbers (scikit-image: superpixels; SciPy: the inpainting
    solves and the tests of the report; pandas: the tables)."""
    import numpy
    import scipy
    import skimage
    import torch
    import torchvision

    from .. import __version__
    return {"bench_version": __version__, "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__, "numpy_version": numpy.__version__,
            "scipy_version": scipy.__version__, "skimage_version": skimage.__version__,
            "pandas_version": pd.__version__, "python_version": platform.python_version()}


def device_name(device) -> str:
    """The model of the device the numbers were computed on: the GPU's name, or the CPU's."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or device.type


def protocol_of_table(name: str) -> str | None:
    """The protocol that declares table ``name`` (``curves_repeats``: AOPC's ``curves``), None if none does."""
    from .. import protocols

    for cls in protocols.catalogue():
        if any(t.name == name or f"{t.name}_repeats" == name for t in cls.tables):
            return cls.name
    return None


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


def with_provenance(df: pd.DataFrame, provenance: dict[str, Any], protocol: str | pd.Series | None = None
                    ) -> pd.DataFrame:
    """The run's provenance columns first (DEFINITIONS §8), then the table's own columns. ``protocol``: the protocol
    the rows come from (a name, or one per row); ``protocol_params`` are then its settings from the run's
    ``protocol_settings``."""
    own = [c for c in df.columns if c not in PROVENANCE]
    df = df.copy()
    for key in PROVENANCE:
        if key not in ("protocol", "protocol_params"):
            df[key] = provenance[key]
    settings = json.loads(provenance["protocol_settings"] or "{}")
    names = protocol if isinstance(protocol, pd.Series) else pd.Series(protocol or "", index=df.index, dtype=object)
    df["protocol"] = names.fillna("").astype(str).to_numpy()
    df["protocol_params"] = df["protocol"].map({n: params_json(settings.get(n, {})) for n in df["protocol"].unique()})
    return df[PROVENANCE + own]


def write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1, sort_keys=True, default=str)))


def write_text(text: str, path: Path) -> None:
    """``text`` as UTF-8 with ``\\n`` line ends (the same bytes on every platform), atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8", newline="\n"))


def read_json(path: Path) -> Any:
    """The JSON content of ``path``, or None when it is missing, unreadable or not a regular file (a FIFO would
    block the reader)."""
    try:
        if not Path(path).is_file():
            return None
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
