"""Models — ``model=<name>`` picks ``conf/model/<name>.yaml``, whose ``kind`` is one of ``MODELS``:

- ``embedded_cnn``: the papers' style of CNN, (conv → ReLU → max-pool) × 2, then dense → ReLU → dense.
  It is trained deterministically on the dataset's train split in seconds on CPU and cached on disk
  *outside* ``results/`` (``cache_dir``, default ``~/.cache/bench``), keyed by a hash of the architecture,
  the training settings and the training data; later runs reuse it.
- ``torchvision``: a torchvision architecture (``arch``: alexnet, vgg16, vgg16_bn, resnet18, resnet50, …)
  with weights from a local file (``weights: /path``), or — ``weights: null`` — from the torch cache
  ``$TORCH_HOME/hub/checkpoints/<torchvision's file name>``. Nothing is downloaded; ``weights: random``
  keeps the random initialisation (tests, timing).
- ``user``: any ``nn.Module`` by ``_target_`` (``package.module.Class`` or a factory function; its other
  keys are keyword arguments) plus a ``checkpoint`` file holding its state_dict.
- ``checkpoint``: one checkpoint of an embedded CNN trained with ``train_embedded_cnn`` /
  ``python -m bench.models`` (checkpoints along training, for the network-quality experiment, TNNLS Fig. 7).

Every file is loaded with ``torch.load(..., weights_only=True)``; a missing file is a one-line
``BenchError`` saying which file to put where. The model's input preprocessing (resize, crop, mean, std)
is declared in the model YAML's ``input`` block and applied by the dataset (see conf/dataset/*.yaml).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .api import Dataset, UnreadableImage
from .errors import BenchError, exit_with_cli_error

log = logging.getLogger(__name__)


def embedded_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 channels: tuple[int, int] = (16, 32), hidden: int = 128,
                 image_width: int | None = None) -> nn.Sequential:
    """``image_size`` is the height (and the width, unless ``image_width`` says otherwise)."""
    c1, c2 = channels
    side_h, side_w = image_size // 4, (image_width or image_size) // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * side_h * side_w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
           seed: int, on_step: Callable[[int, float | None], None] | None = None) -> None:
    """Adam on cross-entropy, seeded shuffling; deterministic on CPU. ``on_step(iteration, loss)`` is called
    before the first step (iteration 0, loss None) and after every optimiser step; it must not change the
    model (checkpointing only), so training is the same with or without it."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    iteration = 0
    if on_step is not None:
        on_step(iteration, None)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), batch_size):
            idx = perm[s:s + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            iteration += 1
            if on_step is not None:
                on_step(iteration, loss.item())
    model.eval()


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    correct = sum(int((model(x[s:s + batch_size]).argmax(1) == y[s:s + batch_size]).sum())
                  for s in range(0, len(x), batch_size))
    return correct / len(x)


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide checkpoints from collaborators
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _embedded_setup(dataset: Dataset, epochs: int, lr: float, batch_size: int, seed: int, channels,
                    hidden: int, what: str = "embedded_cnn"):
    """(normalised train images, labels, settings, constructor) of the embedded CNN for ``dataset``."""
    split = dataset.train_split()
    if split is None:
        raise BenchError(f"model '{what}' is trained on the dataset's train split, and dataset "
                         f"{type(dataset).__name__} has none; choose a pretrained model for it")
    c, h, w = dataset.image_shape
    norm = dataset.normalization
    xtr, ytr = norm.normalize(split[0].float()), split[1].long()
    settings = dict(arch="embedded_cnn/v1", in_channels=c, num_classes=dataset.num_classes, image_size=h,
                    channels=list(channels), hidden=hidden, epochs=epochs, lr=lr, batch_size=batch_size,
                    seed=seed, normalization=[norm.mean, norm.std])
    if w != h:  # only then: the cache keys of square models stay as they were
        settings["image_width"] = w
    build = lambda: embedded_cnn(c, dataset.num_classes, h, tuple(channels), hidden,  # noqa: E731
                                 image_width=w if w != h else None)
    return xtr, ytr, settings, build


def load_embedded_cnn(dataset: Dataset, cache_dir: str, epochs: int = 6, lr: float = 1e-3,
                      batch_size: int = 64, seed: int = 0, channels=(16, 32), hidden: int = 128) -> nn.Module:
    """The embedded CNN for ``dataset``: from the cache, or trained now and cached."""
    xtr, ytr, settings, build = _embedded_setup(dataset, epochs, lr, batch_size, seed, channels, hidden)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(xtr.numpy().tobytes())
    digest.update(ytr.numpy().tobytes())
    key = digest.hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"embedded_cnn-{key}.pt"
    if path.is_dir():
        raise BenchError(f"model 'embedded_cnn': the cache file {path} is a directory, not a file; remove it or "
                         f"choose another cache_dir=… (BENCH_CACHE_DIR)")
    model = build()
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception as exc:  # corrupt cache: retrain, never fail
            log.warning("cached model %s unreadable (%s); retraining", path, exc)
    path.parent.mkdir(parents=True, exist_ok=True)  # a cache folder that cannot be made fails before training
    log.info("training the embedded CNN (cached afterwards at %s)", path)
    torch.manual_seed(seed)
    model = build()
    _train(model, xtr, ytr, epochs, lr, batch_size, seed)
    atomic_torch_save(model.state_dict(), path)
    return model


# ------------------------------------------------------------------ checkpoints along training (TNNLS Fig. 7)

CHECKPOINTS_CSV, TRAINING_JSON = "checkpoints.csv", "training.json"


def default_checkpoints(total: int, count: int = 12) -> list[int]:
    """0, then about ``count`` iterations spaced logarithmically up to ``total`` (the last one included)."""
    return sorted({0, total} | {round(total ** (k / (count - 1))) for k in range(count)})


def _evaluation_set(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's evaluation images (normalised) and labels; unreadable files are left out."""
    xs, ys = [], []
    for i in range(len(dataset) if limit is None else min(limit, len(dataset))):
        try:
            _, raw, label = dataset.get(i)
        except UnreadableImage:
            continue
        xs.append(raw.float())
        ys.append(int(label))
    return dataset.normalization.normalize(torch.stack(xs)), torch.tensor(ys, dtype=torch.long)


def train_embedded_cnn(dataset: Dataset, out_dir: str | Path, checkpoints: list[int] | None = None,
                       epochs: int = 6, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                       channels=(16, 32), hidden: int = 128, dataset_name: str = "",
                       test_limit: int | None = None) -> list[dict[str, Any]]:
    """Train the embedded CNN exactly as ``load_embedded_cnn`` does (same initialisation, order and steps)
    and save checkpoints along the way:

    ``<out_dir>/ckpt-<iteration>.pt`` (state_dict; iteration 0 = the initialisation),
    ``<out_dir>/checkpoints.csv`` (iteration, epoch, train_loss = mean loss since the previous checkpoint,
    test_accuracy on the dataset's evaluation images, file) and ``<out_dir>/training.json`` (the settings,
    read back by ``model=checkpoint``). Returns the rows of checkpoints.csv.
    """
    out = Path(out_dir).expanduser()
    xtr, ytr, settings, build = _embedded_setup(dataset, epochs, lr, batch_size, seed, channels, hidden)
    per_epoch = math.ceil(len(xtr) / batch_size)
    total = per_epoch * epochs
    wanted = sorted(set(default_checkpoints(total) if checkpoints is None else (int(c) for c in checkpoints)))
    if not wanted or wanted[0] < 0 or wanted[-1] > total:
        raise BenchError(f"checkpoints must be iterations between 0 and {total} ({epochs} epochs × {per_epoch} "
                         f"steps), got {wanted}")
    xte, yte = _evaluation_set(dataset, test_limit)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build()
    rows: list[dict[str, Any]] = []
    losses: list[float] = []

    def on_step(iteration: int, loss: float | None) -> None:
        if loss is not None:
            losses.append(loss)
        if iteration not in wanted:
            return
        was_training = model.training
        model.eval()
        acc = accuracy(model, xte, yte)
        model.train(was_training)
        file = f"ckpt-{iteration}.pt"
        atomic_torch_save(model.state_dict(), out / file)
        rows.append(dict(iteration=iteration, epoch=round(iteration / per_epoch, 4),
                         train_loss=sum(losses) / len(losses) if losses else float("nan"),
                         test_accuracy=acc, file=file))
        losses.clear()
        log.info("checkpoint %s: test accuracy %.4f", file, acc)

    _train(model, xtr, ytr, epochs, lr, batch_size, seed, on_step=on_step)
    info = dict(settings, kind="embedded_cnn", dataset=dataset_name or type(dataset).__name__,
                iterations=total, iterations_per_epoch=per_epoch, checkpoints=[r["iteration"] for r in rows],
                test_images=len(yte))
    tmp = out / f".{TRAINING_JSON}.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=list))
    os.replace(tmp, out / TRAINING_JSON)
    tmp = out / f".{CHECKPOINTS_CSV}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / CHECKPOINTS_CSV)
    return rows


def load_checkpoint(dataset: Dataset, dir: str | None = None, iteration: int | str = "last",
                    cache_dir: str | None = None, train: dict | None = None) -> nn.Module:
    """One checkpoint written by ``train_embedded_cnn``: ``iteration`` = an iteration or ``last``.

    ``train`` (optional): ``train_embedded_cnn`` keywords (``checkpoints``, ``epochs``, …); when given and
    ``dir`` holds no checkpoints yet, they are trained there first (the network-quality experiment)."""
    hint = "train them with: python -m bench.models --out DIR [dataset=...]"
    if dir is None:
        raise BenchError(f"model 'checkpoint' needs the folder of the checkpoints: set model.params.dir=DIR ({hint})")
    folder = Path(str(dir)).expanduser()
    meta = folder / TRAINING_JSON
    if train is not None and not meta.is_file():
        log.info("training the embedded CNN with checkpoints into %s", folder)
        train_embedded_cnn(dataset, folder, **dict(train))
    _need_file(meta, "model 'checkpoint':", f"expected {folder}/training.json and {folder}/ckpt-<iteration>.pt "
                                             f"({hint})")
    info = json.loads(meta.read_text())
    available = info.get("checkpoints", [])
    it = available[-1] if str(iteration) == "last" and available else iteration
    try:
        it = int(it)
    except (TypeError, ValueError):
        raise BenchError(f"model 'checkpoint': iteration must be an integer or 'last', got {iteration!r}") from None
    path = folder / f"ckpt-{it}.pt"
    _need_file(path, "model 'checkpoint':", f"iterations in {folder}: {available}")
    c, h, w = dataset.image_shape
    if (info["in_channels"], info["image_size"], info.get("image_width", info["image_size"])) != (c, h, w) \
            or info["num_classes"] != dataset.num_classes:
        raise BenchError(f"model 'checkpoint': {folder} holds a CNN for {info['in_channels']}×{info['image_size']}×"
                         f"{info.get('image_width', info['image_size'])} images and {info['num_classes']} classes "
                         f"(trained on {info.get('dataset')}); dataset gives {c}×{h}×{w} and {dataset.num_classes}")
    model = embedded_cnn(c, info["num_classes"], h, tuple(info["channels"]), info["hidden"],
                         image_width=info.get("image_width"))
    _load_state(model, path, "checkpoint")
    return model.eval()


# ------------------------------------------------------------------------- pretrained and user models

def _need_file(path: Path, subject: str, hint: str) -> Path:
    """``path`` when it is a file; else one line ``<subject> <path> is a directory, not a file; <hint>`` or
    ``<subject> <path> does not exist; <hint>``."""
    if path.is_dir():
        raise BenchError(f"{subject} {path} is a directory, not a file; {hint}")
    if not path.is_file():
        raise BenchError(f"{subject} {path} does not exist; {hint}")
    return path


def _shape(t: Any) -> str:
    try:
        return "×".join(map(str, t.shape)) or "scalar"
    except Exception:  # an uninitialised (lazy) parameter
        return "uninitialised"


def _listing(kind: str, items: list[str]) -> str:
    """``<kind> (<first 3 items>; … and N more)``: whole items only, never a cut word."""
    more = f"; … and {len(items) - 3} more" if len(items) > 3 else ""
    return f"{kind} ({'; '.join(items[:3])}{more})"


def _first_line(exc: BaseException, limit: int = 120) -> str:
    """The error's type and the first line of its text, shortened at a sentence or word end, never mid-word."""
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    if len(line) > limit:
        sentence, space = line.rfind(". ", 0, limit), line.rfind(" ", 0, limit)
        if sentence > 0:
            line = line[:sentence + 1]
        elif space > 0:
            line = line[:space].rstrip(",;:") + " …"
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _weights_only_refusal(text: str) -> tuple[str | None, str]:
    """(the refused global's name or None, the one-line reason) of a ``torch.load(weights_only=True)``
    failure; its first line is torch's general advice, the reason comes after it."""
    import re

    reason = ""
    for line in text.splitlines()[1:]:
        line = line.split("WeightsUnpickler error:")[-1].strip()
        if line and not line.startswith(("(1)", "(2)", "Check the documentation", "Please file an issue")):
            reason = line
            break
    found = (re.search(r"GLOBAL\s+([A-Za-z_][\w.]*)", reason)
             or re.search(r"but got <class '([\w.]+)'>", reason)
             or re.search(r"unrecognized function <(?:built-in )?(?:function|class) '?([\w.]+)", reason)
             or re.search(r"Unsupported class\s+([A-Za-z_][\w.]*)", reason))
    name = found.group(1) if found else None
    if name and "." not in name:  # torch names builtins without their module: builtins.exec → exec
        name = f"builtins.{name}"
    return name, reason


def _mismatch_message(model: nn.Module, state: dict, strict: bool) -> str | None:
    """The one-line account of how ``state`` differs from ``model``'s state_dict (None when it fits): how many
    keys are of another shape, missing from the file, unexpected in it, and the first 3 of each with shapes."""
    full = model.state_dict()
    own = {k: v for k, v in full.items() if isinstance(v, torch.Tensor)}
    shape = [f"{k}: file {_shape(state[k])}, model {_shape(v)}" for k, v in own.items()
             if k in state and not nn.parameter.is_lazy(v) and tuple(state[k].shape) != tuple(v.shape)]
    missing = [f"{k}: model {_shape(v)}" for k, v in own.items() if k not in state] if strict else []
    unexpected = [f"{k}: file {_shape(v)}" for k, v in state.items() if k not in full] if strict else []
    parts = []
    if shape:
        parts.append(_listing(f"size mismatch in {len(shape)} key{'s' * (len(shape) > 1)}", shape))
    if missing:
        parts.append(_listing(f"{len(missing)} key{'s' * (len(missing) > 1)} of the model missing from the file",
                              missing))
    if unexpected:
        parts.append(_listing(f"{len(unexpected)} unexpected key{'s' * (len(unexpected) > 1)} in the file",
                              unexpected))
    return "; ".join(parts) or None


def _load_state(model: nn.Module, path: Path, what: str, strict: bool = True) -> None:
    """Load a state_dict file (``weights_only=True``; ``.safetensors`` with safetensors) into ``model``; common
    wrappers are unpacked:
    ``{"state_dict": …}`` / ``{"model": …}`` and the ``module.`` prefix of DataParallel. A file holding other
    Python objects is refused without running any of it; every failure is a one-line ``BenchError``."""
    import pickle

    path = _need_file(Path(path), f"model '{what}':", "put the state_dict there (torch.save(model.state_dict(), path))")
    try:
        if path.suffix == ".safetensors":  # tensors only by design (timm, Hugging Face)
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            name, reason = _weights_only_refusal(text)
            if name:  # a global torch's safe loader does not admit: never imported, never called
                raise BenchError(f"model '{what}': {path} holds Python objects other than tensors ({name}); it was "
                                 f"refused without running it (cannot load it with torch.load(weights_only=True)); "
                                 f"save model.state_dict() with torch.save, not a pickled model") from None
            if reason:  # e.g. 'Unsupported operand 110': garbage bytes, or an old-style pickle
                exc = pickle.UnpicklingError(reason)
        raise BenchError(f"model '{what}': {path} is not a readable PyTorch file (truncated or corrupt?: "
                         f"{_first_line(exc)}); copy or save it again") from None
    except Exception as exc:  # truncated zip, garbage bytes, EOFError, 'PytorchStreamReader failed …'
        detail = "the file is empty" if path.stat().st_size == 0 else _first_line(exc)
        raise BenchError(f"model '{what}': {path} is not a readable PyTorch file (truncated or corrupt?: "
                         f"{detail}); copy or save it again") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"model '{what}': {path} does not hold a state_dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    mismatch = _mismatch_message(model, state, strict)
    if mismatch:
        raise BenchError(f"model '{what}': {path} does not fit the architecture: {mismatch}")
    try:
        result = model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:  # what the comparison above does not see (a module's own loading rules)
        raise BenchError(f"model '{what}': {path} does not fit the architecture: {_first_line(exc, 300)}") from None
    if not strict and (result.missing_keys or result.unexpected_keys):
        log.warning("model '%s': %s — missing %s, unexpected %s", what, path, result.missing_keys[:5],
                    result.unexpected_keys[:5])


def torchvision_weights_file(arch: str, weights_name: str) -> str:
    """torchvision's file name for ``arch``'s weights ``weights_name`` (e.g. resnet18-f37072fd.pth)."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (KeyError, ValueError):
        raise BenchError(f"torchvision has no published weights for '{arch}'; set model.params.weights=FILE") from None
    try:
        return enum[weights_name].url.rsplit("/", 1)[-1]
    except KeyError:
        raise BenchError(f"torchvision's {enum.__name__} has no '{weights_name}'; available: "
                         f"{', '.join(m.name for m in enum)}") from None


def torchvision_input(arch: str | None, weights_name: str | None, key: str) -> Any:
    """The preprocessing torchvision publishes with ``arch``'s weights ``weights_name`` (its ``transforms()``:
    resize of the shorter side, centre crop, mean, std) — ``key`` of it, or None where there is none (then the
    dataset's default applies). The OmegaConf resolver ``${bench_torchvision_input:arch,weights,key}``."""
    check_input_key("bench_torchvision_input", key)
    if not arch or not weights_name:
        return None
    from torchvision.models import get_model_weights

    try:
        t = get_model_weights(str(arch))[str(weights_name)].transforms()
    except (ValueError, KeyError, TypeError, AttributeError):  # unknown arch, no such weights, another transform
        return None
    value = {"resize": getattr(t, "resize_size", None), "crop": getattr(t, "crop_size", None),
             "mean": getattr(t, "mean", None), "std": getattr(t, "std", None)}[key]
    if value is None:
        return None
    return int(value[0]) if key in ("resize", "crop") else [float(v) for v in value]


def register_input_resolver() -> None:
    from omegaconf import OmegaConf

    for name, resolver in (("bench_torchvision_input", torchvision_input), ("bench_timm_input", timm_input),
                           ("bench_hf_input", hf_input)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def load_torchvision(dataset: Dataset, arch: str = "resnet18", weights: str | None = None,
                     weights_name: str = "IMAGENET1K_V1", file: str | None = None, num_classes: int = 1000,
                     cache_dir: str | None = None, **kwargs: Any) -> nn.Module:
    """A torchvision classification architecture with local weights (nothing is downloaded).

    ``weights``: a file path; ``null`` = the torch cache ``$TORCH_HOME/hub/checkpoints/<file>`` where ``file``
    defaults to torchvision's own name for ``weights_name`` (e.g. ``resnet18-f37072fd.pth``); ``random`` =
    the random initialisation (seeded by the run's seed). Other keys go to the architecture's builder."""
    import torchvision

    if not arch:
        raise BenchError("model=torchvision needs model.params.arch: a torchvision classification architecture, "
                         "e.g. convnext_tiny, efficientnet_b0, vit_b_16")
    what = f"torchvision {arch}"
    try:
        builder = torchvision.models.get_model_builder(arch)
    except ValueError:
        known = ", ".join(torchvision.models.list_models(module=torchvision.models)[:12])
        raise BenchError(f"unknown torchvision architecture '{arch}'; e.g. {known}, …") from None
    if weights is None:
        name = file or torchvision_weights_file(arch, weights_name)
        path = Path(torch.hub.get_dir()) / "checkpoints" / name
        if path.is_dir():
            raise BenchError(f"model '{arch}': {path} is a directory, not a file; put the weights file {name} there "
                             f"in its place or set model.params.weights=/path/to/{name}")
        if not path.is_file():
            what_file = (f"the weights file {name}" if file else f"torchvision's {weights_name} weights for {arch}")
            how = ("" if file else f"; torchvision.models.get_model('{arch}', weights='{weights_name}') fills it on a "
                                   f"machine with internet")
            raise BenchError(
                f"model '{arch}': no weights file — put {what_file} at {path} (the torch cache, "
                f"$TORCH_HOME/hub/checkpoints{how}) or set model.params.weights=/path/to/{name}; nothing is downloaded")
    elif str(weights) == "random":
        path = None
    else:
        path = Path(str(weights)).expanduser()
        if not path.is_file():  # (torchvision's file name is looked up only then: not every arch has one)
            example = torchvision_weights_file(arch, weights_name) if file is None else file
            _need_file(path, f"model '{arch}': weights file", f"put the state_dict of {arch} there (e.g. "
                       f"torchvision's {example}) or set model.params.weights=/path/to/file.pth")
    try:
        if path is None:
            model = builder(weights=None, num_classes=int(num_classes), **kwargs)
        else:  # no random initialisation of what the file replaces (seconds for VGG's 138M parameters)
            with torch.device("meta"):
                model = builder(weights=None, num_classes=int(num_classes), **kwargs)
            model = model.to_empty(device="cpu")
    except TypeError as exc:
        raise BenchError(f"model '{what}': bad parameters {kwargs}: {exc}") from None
    if path is None:
        log.warning("model '%s' has random weights (model.params.weights=random)", arch)
        return model.eval()
    _load_state(model, path, arch)
    if any(name not in model.state_dict() for name, _ in model.named_buffers()):  # buffers not in the file
        fresh = builder(weights=None, num_classes=int(num_classes), **kwargs)
        fresh.load_state_dict(model.state_dict())
        model = fresh
    return model.eval()


def _import(target: str) -> Any:
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise BenchError(f"model 'user': _target_ must be 'package.module.Class', got '{target}'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"model 'user': cannot import _target_ '{target}' ({type(exc).__name__}: {exc}); make "
                         f"its module importable (the current directory or PYTHONPATH)") from None


def load_user(dataset: Dataset, _target_: str | None = None, checkpoint: str | None = None,
              strict: bool = True, cache_dir: str | None = None, **kwargs: Any) -> nn.Module:
    """``_target_(**kwargs)`` with the state_dict in ``checkpoint`` (``random``: keep the initialisation)."""
    if not _target_:
        raise BenchError("model 'user' needs its class: set model.params._target_=package.module.Class")
    if checkpoint is None:
        raise BenchError("model 'user' needs its weights: set model.params.checkpoint=/path/to/state_dict.pt "
                         "(saved with torch.save(model.state_dict(), path))")
    cls = _import(str(_target_))
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise BenchError(f"model 'user': {_target_}(**{kwargs}) failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise BenchError(f"model 'user': {_target_} gave a {type(model).__name__}, not a torch.nn.Module")
    if str(checkpoint) == "random":
        log.warning("model 'user' (%s) has random weights (model.params.checkpoint=random)", _target_)
    else:
        path = _need_file(Path(str(checkpoint)).expanduser(), "model 'user': checkpoint",
                          f"put the state_dict of {_target_} there (torch.save(model.state_dict(), path)) or set "
                          f"model.params.checkpoint=FILE")
        _load_state(model, path, "user", strict=bool(strict))
    return model.eval()


def load_given(dataset: Dataset, cache_dir: str | None = None) -> nn.Module:
    """Kind ``given``: the model object handed to the Python API (bench/inmemory.py); there is nothing to load."""
    raise BenchError("model kind 'given' is the Python API's: pass the model to bench.evaluate_explanations(model, …)")


# (imported last: bench/hub_models.py uses this module)
from .hub_models import check_input_key, hf_input, load_huggingface, load_timm, timm_input  # noqa: E402

MODELS = {"embedded_cnn": load_embedded_cnn, "torchvision": load_torchvision, "user": load_user,
          "checkpoint": load_checkpoint, "given": load_given, "timm": load_timm, "huggingface": load_huggingface}


def check_fits(model: nn.Module, dataset: Dataset, name: str) -> None:
    """One forward pass on a blank input of the dataset's shape: a model that cannot take the images fails
    here, in one line, before any work."""
    x = dataset.normalization.normalize(torch.zeros(1, *dataset.image_shape))
    try:
        with torch.inference_mode():
            out = model.eval()(x)
    except Exception as exc:
        raise BenchError(f"model '{name}' cannot take the {'×'.join(map(str, dataset.image_shape))} inputs of "
                         f"dataset {type(dataset).__name__} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); check the preprocessing "
                         f"(model.input / dataset.params resize, crop, channels)") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise BenchError(f"model '{name}' must return class scores of shape (batch, classes), got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if out.shape[1] != dataset.num_classes:
        log.warning("model '%s' has %d outputs but dataset %s has %d classes; target=label needs them to agree",
                    name, out.shape[1], type(dataset).__name__, dataset.num_classes)


def check_params(kind: str, params: dict) -> None:
    """The model's ``params`` must be keyword arguments its loader takes (checked by the run spec before any
    work; the loader checks files and values when the job loads the model)."""
    import inspect

    from . import checks

    loader = MODELS[kind]
    signature = inspect.signature(loader)
    if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):  # torchvision, user: the
        try:                                                                      # architecture's own keys
            signature.bind_partial(None, **params)
        except TypeError:
            accepted = [n for n in list(signature.parameters)[1:] if n != "cache_dir"]
            unknown = [k for k in params if k not in signature.parameters]
            raise BenchError(f"unknown setting 'model.params.{unknown[0] if unknown else '?'}' for a model of kind "
                             f"'{kind}'; valid keys: {', '.join(accepted)}") from None
    training = dict(params.get("train") or {}) if kind == "checkpoint" else params if kind == "embedded_cnn" else {}
    where = "model.params.train" if kind == "checkpoint" else "model.params"
    for key, check in (("epochs", lambda n, v: checks.integer(n, v, low=1)),
                       ("lr", lambda n, v: checks.number(n, v, low=0, low_open=True)),
                       ("batch_size", lambda n, v: checks.integer(n, v, low=1)),
                       ("seed", lambda n, v: checks.integer(n, v, low=0)),
                       ("hidden", lambda n, v: checks.integer(n, v, low=1))):
        if key in training:
            check(f"{where}.{key}", training[key])
    channels = training.get("channels")
    if channels is not None and (not isinstance(channels, (list, tuple)) or len(channels) != 2):
        raise BenchError(f"{where}.channels must be a list of two positive integers, got {channels!r}")
    for c in channels or ():
        checks.integer(f"{where}.channels", c, low=1)
    if kind == "checkpoint" and str(params.get("iteration", "last")) != "last":
        checks.integer("model.params.iteration", params.get("iteration"), low=0)


def build_model(kind: str, dataset: Dataset, params: dict, name: str | None = None) -> nn.Module:
    """The model of kind ``kind`` (``MODELS``) with ``params``, checked to take ``dataset``'s images."""
    if kind not in MODELS:
        raise BenchError(f"unknown model kind '{kind}'; available: {', '.join(MODELS)}")
    try:
        model = MODELS[kind](dataset, **params)
    except TypeError as exc:
        raise BenchError(f"model '{name or kind}': {exc}") from None
    check_fits(model, dataset, params.get("arch") or params.get("_target_") or name or kind)
    return model


def load_model(spec) -> nn.Module:
    """The model of a checked run specification (bench/spec.py)."""
    return build_model(spec.model.plugin, spec.dataset.obj, dict(spec.model.params, cache_dir=spec.cache_dir),
                       spec.model.name)


# ------------------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    """``python -m bench.models --out DIR [--checkpoints 0,10,100] [overrides]`` — train the embedded CNN
    (settings from ``model.params``, default conf/model/embedded_cnn.yaml) on ``dataset`` with checkpoints."""
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=main.__doc__)
    parser.add_argument("--out", required=True, help="folder for ckpt-<iteration>.pt, checkpoints.csv, training.json")
    parser.add_argument("--checkpoints", default=None,
                        help="comma-separated iterations (0 = initialisation); default: 0 and ~12 log-spaced")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=cifar10 dataset.params.root=…")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from . import plugins
        from .hydra_app import compose

        conf = compose(args.overrides)  # only the dataset and the model's training settings matter here
        model = conf["model"]
        if model.get("kind") != "embedded_cnn":
            raise BenchError(f"python -m bench.models trains the embedded CNN; model '{model.get('name')}' is of kind "
                             f"'{model.get('kind')}'")
        params = dict(model.get("params") or {})
        check_params("embedded_cnn", params)
        dataset = plugins.build("datasets", conf["dataset"], "dataset")
        checkpoints = None if args.checkpoints is None else [int(c) for c in args.checkpoints.split(",") if c]
        rows = train_embedded_cnn(dataset, args.out, checkpoints, dataset_name=conf["dataset"]["name"], **params)
    except Exception as exc:  # user errors and Hydra's config errors: one line
        return exit_with_cli_error(exc)
    for r in rows:
        print(f"iteration {r['iteration']:>6}  epoch {r['epoch']:<7g} test accuracy {r['test_accuracy']:.4f}  {r['file']}")
    print(f"checkpoints: {Path(args.out) / CHECKPOINTS_CSV}; evaluate one with model=checkpoint "
          f"model.params.dir={args.out} model.params.iteration=N")
    return 0


if __name__ == "__main__":
    sys.exit(main())
