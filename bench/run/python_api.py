"""The Python API: a model and images held in memory, evaluated by the same checked run spec, engine and tables as
the CLI (``python -m bench``), without Hydra on the user's side::

    import bench
    tables = bench.evaluate_explanations(model, images, labels, mean=0.1307, std=0.3081, method="lrp_eps", patch=4)
    tables["summary"], tables["curves"]          # the CLI's summary.csv and curves.parquet, as DataFrames

``images``: raw pixels (N, C, H, W) in ``raw_range`` (default [0, 1]); the model sees ``(raw − mean) / std``
(``mean``/``std`` per channel, required: ``mean=0, std=1`` for a model that takes raw pixels). ``method=`` a
name of conf/method/ (``method_params={…}`` overrides its parameters) or ``heatmaps=`` heatmaps of these
images — (N, H, W) / (N, C, H, W) or {image id: array} — evaluated as ``method=precomputed`` and named
``method_name`` in the rows. ``model_name`` names the model in the rows (default: its class); its weights'
digest is ``model_sha``. Every other keyword is a setting of conf/config.yaml (``patch``, ``steps``,
``repeats``, ``seed``, ``metrics=[…]``, ``perturbation="blur"``, ``road={…}`` …; a block given as a dict
updates the default block). Bad input raises ``BenchError`` with one line, before any work and before
anything is written (a refused call leaves no folder, and an ``out`` folder as it was). The run's job
folder is ``out`` (kept; ``resume`` applies as on the CLI) or a temporary folder removed afterwards. The model
runs in eval mode on the run's device; afterwards it is as it was given (modes, devices, dtypes, memory formats,
``requires_grad``, hooks), also when the run fails; ``images`` are not modified.
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

from ..checks import write_probe
from ..interfaces import Dataset, Normalization
from ..errors import BenchError

_REQUIRED = object()  # mean= and std= have no default: the API asks rather than assume raw pixels

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
    try:
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BenchError(f"images must be a float array (N, C, H, W) of raw pixels ({exc})") from None
    if x.ndim != 4 or not x.is_floating_point():
        raise BenchError(f"images must be a float array (N, C, H, W) of raw pixels, got {tuple(x.shape)} {x.dtype}")
    if len(x) == 0:
        raise BenchError("images holds no image (N = 0); give at least one")
    if x.device.type == "meta":
        raise BenchError("images are on the meta device (no values); give real tensors")
    x = x.detach().to("cpu", torch.float32, copy=True)  # a copy: the caller's tensor is never touched
    n, c = x.shape[:2]
    ids = [f"image-{i:05d}" for i in range(n)] if image_ids is None else [str(i) for i in image_ids]
    if len(ids) != n or len(set(ids)) != n:
        raise BenchError(f"image_ids must be {n} unique ids, one per image; got {len(ids)} ({len(set(ids))} unique)")
    try:
        lab_t = None if labels is None else torch.as_tensor(np.asarray(labels)).flatten()
    except (TypeError, ValueError) as exc:
        raise BenchError(f"labels must be class indices, one per image ({exc})") from None
    if lab_t is not None and (lab_t.is_floating_point() and not torch.equal(lab_t, lab_t.round())
                              or lab_t.dtype == torch.bool or lab_t.is_complex()):
        raise BenchError(f"labels must be integer class indices, got {lab_t.dtype}")
    lab = [-1] * n if lab_t is None else [int(v) for v in lab_t.tolist()]
    if len(lab) != n:
        raise BenchError(f"labels must hold one class per image: {n} images, {len(lab)} labels")
    lo, hi = (float(v) for v in raw_range)
    if not torch.isfinite(x).all() or x.min() < lo or x.max() > hi:
        raise BenchError(f"images must be finite raw pixels in raw_range=[{lo:g}, {hi:g}]; got values in "
                         f"[{float(x.min()):g}, {float(x.max()):g}] (normalise with mean=/std=, not beforehand)")

    def per(name: str, value) -> tuple[float, ...]:
        try:
            v = np.broadcast_to(np.asarray(value, float), (c,))
        except (TypeError, ValueError):
            raise BenchError(f"{name} must be one number or {c} (one per channel), got {value!r}") from None
        if not np.isfinite(v).all() or (name == "std" and (v <= 0).any()):
            raise BenchError(f"{name} must be finite{' and > 0' if name == 'std' else ''}, got {value!r}")
        return tuple(float(t) for t in v)
    return InMemoryImages(x, lab, ids, Normalization((lo, hi), per("mean", mean), per("std", std)), 0)


class _ModelState:
    """What the run may change on the user's model — each module's mode, its parameters and buffers (device, dtype,
    memory format: ``Module.to`` gives a parameter new data and a module new buffer objects), each parameter's
    ``requires_grad``, each module's hooks — recorded and put back afterwards. The original tensors are kept (not
    copied), so putting them back is exact and costs nothing."""

    HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.modes = [(m, m.training) for m in model.modules()]
        self.params = [(m, name, p, p.data, p.requires_grad) for m in model.modules()
                       for name, p in m._parameters.items() if p is not None]
        self.buffers = [(m, name, b, b.data) for m in model.modules() for name, b in m._buffers.items()
                        if b is not None]
        self.hooks = [(m, name, dict(getattr(m, name))) for m in model.modules() for name in self.HOOKS
                      if isinstance(getattr(m, name, None), dict)]

    @staticmethod
    def _same(t: torch.Tensor, data: torch.Tensor) -> bool:
        return (t.device == data.device and t.dtype == data.dtype and t.shape == data.shape
                and (t.device.type == "meta" or t.data_ptr() == data.data_ptr()) and t.stride() == data.stride())

    def restore(self) -> None:
        for module, training in self.modes:
            module.training = training
        for module, name, p, data, requires_grad in self.params:
            module._parameters[name] = p
            if not self._same(p, data):
                p.data = data
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
        for module, name, b, data in self.buffers:
            module._buffers[name] = b
            if not self._same(b, data):
                b.data = data
        for module, name, hooks in self.hooks:
            current = getattr(module, name)
            current.clear()
            current.update(hooks)


def _check_model(model: torch.nn.Module, data: InMemoryImages) -> int:
    """The model's number of classes from one forward pass on the first image (on the model's own device), or one
    line saying why the model cannot be evaluated (meta tensors, an exception, an output that is not (N, classes)
    float logits)."""
    tensors = (*model.named_parameters(), *model.named_buffers())
    meta = next((n for n, t in tensors if t.device.type == "meta"), None)
    if meta is not None:
        raise BenchError(f"model: {meta} is on the meta device (no weights); load the weights first "
                         f"(e.g. model.to_empty(device='cpu') and load_state_dict)")
    device = tensors[0][1].device if tensors else torch.device("cpu")
    try:
        with torch.inference_mode():
            out = model.eval()(data.normalization.normalize(data.images[:1]).to(device))
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        raise BenchError(f"model: the first forward pass on images of shape {tuple(data.images.shape[1:])} failed "
                         f"({type(exc).__name__}: {first})") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or not out.is_floating_point():
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise BenchError(f"model must return float class scores (logits) of shape (batch, classes), got {got}")
    return int(out.shape[1])


def _check_out(out) -> Path:
    """``out`` as a Path if it is, or can be made, a writable folder — checked without making it (one line)."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise BenchError(f"out={out} is a file, not a folder; give a folder (new or one of an earlier run)")
    missing = _missing_dirs(path)
    parent = missing[-1].parent if missing else path
    if not parent.is_dir():
        raise BenchError(f"out={out} cannot be made: {parent} is a file, not a folder; give another out=")
    try:
        write_probe(parent)
    except OSError as exc:
        raise BenchError(f"out={out} cannot be written ({parent}: {exc.strerror or exc}); give a writable folder "
                         f"as out=") from None
    return path


def _missing_dirs(path: Path) -> list[Path]:
    """The folders that making ``path`` creates, innermost first."""
    made = []
    while not path.exists() and path != path.parent:
        made.append(path)
        path = path.parent
    return made


def evaluate_explanations(model: torch.nn.Module, images, labels=None, *, method: str | None = None,
                          heatmaps=None, method_params: Mapping[str, Any] | None = None,
                          method_name: str | None = None, model_name: str | None = None,
                          image_ids: Sequence[str] | None = None, mean=_REQUIRED, std=_REQUIRED,
                          raw_range=(0.0, 1.0), out: str | Path | None = None,
                          **settings: Any) -> dict[str, pd.DataFrame]:
    """The tidy tables of one run (see the module docstring): {"summary": …, "curves": …, and "road",
    "complexity", "continuity", "heatmaps" … as the metrics write them}."""
    from ..checks import text
    from .job import run
    from .jobdir import JobDir
    from .spec import build_spec

    # every check first: nothing is written (no job folder, no temporary folder) before all have passed
    if (method is None) == (heatmaps is None):
        raise BenchError("give either method=<name of conf/method/> or heatmaps=<heatmaps of these images>")
    if method_name is not None and heatmaps is None:
        raise BenchError("method_name= names given heatmaps; a method of conf/method/ has its own name")
    if not isinstance(model, torch.nn.Module):
        raise BenchError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if mean is _REQUIRED or std is _REQUIRED or mean is None or std is None:
        raise BenchError("give mean= and std= of the model's input normalisation (the model sees (images − mean) / "
                         "std; mean=0, std=1 for a model that takes raw pixels)")
    data = _images(images, labels, image_ids, mean, std, raw_range)
    name = text("model_name", model_name) if model_name is not None else type(model).__name__
    method_name = text("method_name", method_name) if method_name is not None else None
    given = _check_heatmaps(heatmaps, data) if heatmaps is not None else None
    out_path = _check_out(out) if out is not None else None
    if settings.get("target") == "label" and labels is None:
        raise BenchError("target='label' explains each image's label: give labels=, or use target='predicted'")
    state = _ModelState(model)
    try:
        data.num_classes = _check_model(model, data)
        bad = [(i, v) for i, v in enumerate(data.labels) if labels is not None and not 0 <= v < data.num_classes]
        if bad:
            raise BenchError(f"labels[{bad[0][0]}]={bad[0][1]} is not a class of the model (its {data.num_classes} "
                             f"outputs are classes 0…{data.num_classes - 1}); {len(bad)} label(s) out of range")
        groups = [f"{g}={settings[g].get('kind', 'tiles') if isinstance(settings[g], Mapping) else settings.pop(g)}"
                  for g in GROUPS if g in settings]
        conf = _compose([f"method={'precomputed' if given is not None else method}", *groups])
        if method_name is not None:
            conf["method"]["name"] = method_name
        conf["dataset"] = {"name": "in_memory", "plugin": "in_memory", "params": {}}
        conf["model"] = {"name": name, "kind": "given", "input": None, "params": {}}
        conf["n_images"] = len(data)
        work = out_path if out_path is not None else Path(tempfile.mkdtemp(prefix="bench-"))
        if given is not None:  # read by method=precomputed (its path is part of the run's identity: stable)
            method_params = {"path": str(work / "given_heatmaps.npz"), **dict(method_params or {})}
        conf["method"]["params"].update(dict(method_params or {}))
        for key, value in settings.items():
            if isinstance(conf.get(key), dict) and isinstance(value, Mapping):
                conf[key].update(value)
            else:
                conf[key] = list(value) if isinstance(value, tuple) else value
        job, undo = JobDir(work / "run"), None
        try:
            if given is not None:
                undo = _write_heatmaps(given, work)
            spec = build_spec(conf, dataset=data)  # (reads the heatmaps: method=precomputed checks them)
            run(spec, job.path, model=model, job=job)
            return read_tables(job.path)
        except BaseException:
            if undo is not None and not job.claimed:  # refused before the folder took this run: as it was
                undo()
            raise
        finally:
            if out_path is None:
                import shutil

                shutil.rmtree(work, ignore_errors=True)
    finally:
        state.restore()


def _write_heatmaps(given: dict[str, np.ndarray], work: Path):
    """Write ``work``/given_heatmaps.npz; returns the function that puts ``work`` back as it was (the earlier file,
    or no file and none of the folders made for it)."""
    made = _missing_dirs(work)
    path = work / "given_heatmaps.npz"
    before = path.read_bytes() if path.is_file() else None
    work.mkdir(parents=True, exist_ok=True)
    np.savez(path, **given)

    def undo() -> None:
        if before is not None:
            path.write_bytes(before)
            return
        path.unlink(missing_ok=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break
    return undo


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


def _check_heatmaps(heatmaps, data: InMemoryImages) -> dict[str, np.ndarray]:
    """``heatmaps=`` as {image id: float32 array}, checked in the caller's terms: an array (N, H, W) or
    (N, C, H, W) for the N images, or a dict whose keys are exactly the image ids; finite numbers."""
    c, h, w = data.image_shape
    shapes = f"(H, W) = ({h}, {w}) or (C, H, W) = ({c}, {h}, {w})"
    if isinstance(heatmaps, Mapping):
        keys = [str(k) for k in heatmaps]
        missing = [i for i in data.ids if i not in keys]
        extra = [k for k in keys if k not in set(data.ids)]
        if missing or extra or len(set(keys)) != len(keys):
            raise BenchError("heatmaps: the keys must be exactly the image ids"
                             + (f"; no heatmap for image '{missing[0]}' ({len(missing)} missing)" if missing else "")
                             + (f"; '{extra[0]}' is not an image id ({len(extra)} such key(s))" if extra else "")
                             + ("" if image_ids_given(data) else " (the ids are image-00000 … unless image_ids= is "
                                                               "given)"))
        items = [(str(k), v) for k, v in heatmaps.items()]
        where = lambda k, i: f"heatmaps['{k}']"  # noqa: E731
    else:
        try:
            arr = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
        except (TypeError, ValueError) as exc:
            raise BenchError(f"heatmaps must be an array (N, H, W) / (N, C, H, W) or {{image id: array}} ({exc})") \
                from None
        if arr.ndim not in (3, 4) or len(arr) != len(data) or tuple(arr.shape[1:]) not in ((h, w), (c, h, w)):
            raise BenchError(f"heatmaps must be (N, H, W) or (N, C, H, W) for the {len(data)} images of shape "
                             f"{tuple(data.image_shape)}, i.e. ({len(data)}, {h}, {w}) or ({len(data)}, {c}, {h}, "
                             f"{w}); got {tuple(arr.shape)}")
        items = list(zip(data.ids, arr))
        where = lambda k, i: f"heatmaps[{i}]"  # noqa: E731
    out = {}
    for i, (key, value) in enumerate(items):
        try:
            a = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        except (TypeError, ValueError):
            a = np.asarray([])
        if a.dtype.kind not in "fiub" or a.shape not in ((h, w), (c, h, w)):
            raise BenchError(f"{where(key, i)} is {a.dtype} {tuple(a.shape)}; each heatmap is a number array "
                             f"{shapes}")
        if not np.isfinite(a).all():
            raise BenchError(f"{where(key, i)} has non-finite values")
        out[key] = np.asarray(a, dtype=np.float32)
    return out


def image_ids_given(data: InMemoryImages) -> bool:
    return not all(i == f"image-{k:05d}" for k, i in enumerate(data.ids))


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """A finished job folder's tables: every ``<name>.parquet`` and ``summary`` (summary.csv)."""
    tables = {p.stem: pd.read_parquet(p) for p in sorted(Path(folder).glob("*.parquet"))}
    tables["summary"] = pd.read_csv(Path(folder) / "summary.csv")
    return tables
