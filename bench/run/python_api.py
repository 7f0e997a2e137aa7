"""The Python API: a model and images held in memory, evaluated by the same checked run spec, engine and tables as
the CLI (``python -m bench``), without Hydra on the user's side::

    import bench
    tables = bench.evaluate_explanations(model, images, labels, method="lrp_eps", patch=4, n_images=len(images))
    tables["summary"], tables["curves"]          # the CLI's summary.csv and curves.parquet, as DataFrames

``images``: raw pixels (N, C, H, W) in ``raw_range`` (default [0, 1]); the model sees ``(raw − mean) / std``
(``mean``/``std`` per channel, default 0 and 1). ``method=`` a name of conf/method/ (``method_params={…}``
overrides its parameters) or ``heatmaps=`` heatmaps of these images — (N, H, W) / (N, C, H, W) or
{image id: array} — evaluated as ``method=precomputed``. Every other keyword is a setting of conf/config.yaml
(``patch``, ``steps``, ``repeats``, ``seed``, ``metrics=[…]``, ``perturbation="blur"``, ``road={…}`` …; a
block given as a dict updates the default block). Bad settings raise ``BenchError`` with the CLI's one-line
message. The run's job folder is ``out`` (kept; ``resume`` applies as on the CLI) or a temporary folder removed
afterwards. The model is put in eval mode on the run's device.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..interfaces import Dataset, Normalization
from ..errors import BenchError

GROUPS = ("perturbation", "regions")  # config groups a keyword may name (method is its own argument); regions
# may also be given as a dict, e.g. regions={"kind": "slic", "n_segments": 50}


class InMemoryImages(Dataset):
    """Images (N, C, H, W) in ``normalization.raw_range`` with ids and labels, as a ``bench.api.Dataset``."""

    def __init__(self, images: torch.Tensor, labels: Sequence[int], image_ids: Sequence[str],
                 normalization: Normalization, num_classes: int) -> None:
        self.images, self.labels, self.ids = images, [int(v) for v in labels], [str(i) for i in image_ids]
        self.normalization, self.num_classes = normalization, int(num_classes)
        self.image_shape = tuple(images.shape[1:])
        digest = hashlib.blake2b(digest_size=16)  # part of the job's identity (bench/run/identity.py)
        digest.update(json.dumps([self.ids, self.labels]).encode())
        digest.update(images.contiguous().numpy().tobytes())
        self.inputs_sha = digest.hexdigest()
        self.preprocessing = (f"in memory {images.shape[2]}x{images.shape[3]} mean={normalization.mean} "
                              f"std={normalization.std} raw_range={list(normalization.raw_range)}")

    def __len__(self) -> int:
        return len(self.images)

    def image_id(self, index: int) -> str:
        return self.ids[index]

    def get(self, index: int) -> tuple[str, torch.Tensor, int]:
        return self.ids[index], self.images[index], self.labels[index]


def _images(images, labels, image_ids, mean, std, raw_range) -> InMemoryImages:
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim != 4 or not x.is_floating_point():
        raise BenchError(f"images must be a float array (N, C, H, W) of raw pixels, got {tuple(x.shape)} {x.dtype}")
    x = x.detach().float().cpu()
    n, c = x.shape[:2]
    ids = [f"image-{i:05d}" for i in range(n)] if image_ids is None else [str(i) for i in image_ids]
    if len(ids) != n or len(set(ids)) != n:
        raise BenchError(f"image_ids must be {n} unique ids, one per image; got {len(ids)} ({len(set(ids))} unique)")
    lab = [-1] * n if labels is None else [int(v) for v in torch.as_tensor(labels).flatten().tolist()]
    if len(lab) != n:
        raise BenchError(f"labels must hold one class per image: {n} images, {len(lab)} labels")
    lo, hi = (float(v) for v in raw_range)
    if not torch.isfinite(x).all() or x.min() < lo or x.max() > hi:
        raise BenchError(f"images must be finite raw pixels in raw_range=[{lo:g}, {hi:g}]; got values in "
                         f"[{float(x.min()):g}, {float(x.max()):g}] (normalise with mean=/std=, not beforehand)")
    per = lambda v, d: tuple(float(t) for t in (np.broadcast_to(np.asarray(v if v is not None else d, float), (c,))))  # noqa: E731
    return InMemoryImages(x, lab, ids, Normalization((lo, hi), per(mean, 0.0), per(std, 1.0)), 0)


def evaluate_explanations(model: torch.nn.Module, images, labels=None, *, method: str | None = None,
                          heatmaps=None, method_params: Mapping[str, Any] | None = None,
                          image_ids: Sequence[str] | None = None, mean=None, std=None, raw_range=(0.0, 1.0),
                          out: str | Path | None = None, **settings: Any) -> dict[str, pd.DataFrame]:
    """The tidy tables of one run (see the module docstring): {"summary": …, "curves": …, and "road",
    "complexity", "continuity", "heatmaps" … as the metrics write them}."""
    from ..models import check_fits
    from .job import run
    from .spec import build_spec

    if (method is None) == (heatmaps is None):
        raise BenchError("give either method=<name of conf/method/> or heatmaps=<heatmaps of these images>")
    if not isinstance(model, torch.nn.Module):
        raise BenchError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    data = _images(images, labels, image_ids, mean, std, raw_range)
    with torch.inference_mode():
        data.num_classes = int(model.eval()(data.normalization.normalize(data.images[:1])).shape[1])
    groups = [f"{g}={settings[g].get('kind', 'tiles') if isinstance(settings[g], Mapping) else settings.pop(g)}"
              for g in GROUPS if g in settings]
    work = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        if heatmaps is not None:
            method = "precomputed"
            work.mkdir(parents=True, exist_ok=True)
            _write_heatmaps(heatmaps, data.ids, work / "given_heatmaps.npz")
            method_params = {"path": str(work / "given_heatmaps.npz"), **dict(method_params or {})}
        conf = _compose([f"method={method}", *groups])
        conf["dataset"] = {"name": "in_memory", "plugin": "in_memory", "params": {}}
        conf["model"] = {"name": type(model).__name__, "kind": "given", "input": None, "params": {}}
        conf["n_images"] = len(data)
        conf["method"]["params"].update(dict(method_params or {}))
        for key, value in settings.items():
            if isinstance(conf.get(key), dict) and isinstance(value, Mapping):
                conf[key].update(value)
            else:
                conf[key] = list(value) if isinstance(value, tuple) else value
        spec = build_spec(conf, dataset=data)
        check_fits(model, data, type(model).__name__)
        run(spec, work / "run", model=model)
        return read_tables(work / "run")
    finally:
        if out is None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def _compose(overrides: list[str]) -> dict:
    """conf/config.yaml with ``overrides``; Hydra's own errors (an unknown method …) as one line."""
    from hydra.errors import HydraException

    from .config import compose

    try:
        return compose(overrides)
    except HydraException as exc:
        lines = str(exc).splitlines()
        options = [line.strip() for line in lines if line.startswith("\t") and "=" not in line]
        raise BenchError(lines[0] + (f"; available: {', '.join(options)}" if options else "")) from None


def _write_heatmaps(heatmaps, ids: list[str], path: Path) -> None:
    if isinstance(heatmaps, Mapping):
        arrays = {str(k): np.asarray(v) for k, v in heatmaps.items()}
    else:
        h = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
        if h.ndim not in (3, 4) or len(h) != len(ids):
            raise BenchError(f"heatmaps must be (N, H, W) or (N, C, H, W) for the {len(ids)} images, or "
                             f"{{image id: array}}; got shape {tuple(h.shape)}")
        arrays = dict(zip(ids, h))
    np.savez(path, **arrays)


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """A finished job folder's tables: every ``<name>.parquet`` and ``summary`` (summary.csv)."""
    tables = {p.stem: pd.read_parquet(p) for p in sorted(Path(folder).glob("*.parquet"))}
    tables["summary"] = pd.read_csv(Path(folder) / "summary.csv")
    return tables
