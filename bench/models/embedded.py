"""The embedded CNN of the papers' style, trained deterministically on the dataset's train split and cached
(``model=embedded_cnn``), and its checkpoints along training (``model=checkpoint``; ``python -m bench.models``;
TNNLS Fig. 7).

Shipped weights. Training is deterministic on one CPU but not bit-identical across CPUs, so the Quick start's
model (the default settings on the embedded MNIST) ships with the package: ``shipped/embedded_cnn-<key>.pt``,
``<key>`` the cache key of its settings and training data, loaded only when its SHA-256 equals ``SHIPPED[key]``.
``python -m bench.models --ship`` retrains it and writes the file and its digest again (on another CPU the
weights may differ in the last bits: then the digest, and the Quick start's last digits, change with them)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..interfaces import Dataset, UnreadableImage
from ..checks import writable_dir
from ..errors import BenchError

from .weights import atomic_torch_save, _load_state, _need_file

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


SHIPPED_DIR = Path(__file__).with_name("shipped")
#: cache key → SHA-256 of the shipped state_dict file (``python -m bench.models --ship`` writes both)
SHIPPED = {"5ae13ee315001cb6": "1c6518d4bcde0700c4d2516501c14e1b3eff912a30a808e287be60efebf86924"}


def _cache_key(settings: dict, xtr: torch.Tensor, ytr: torch.Tensor) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(xtr.numpy().tobytes())
    digest.update(ytr.numpy().tobytes())
    return digest.hexdigest()[:16]


def shipped_file(key: str) -> Path:
    return SHIPPED_DIR / f"embedded_cnn-{key}.pt"


def shipped_key(dataset: Dataset, epochs: int = 6, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                channels=(16, 32), hidden: int = 128) -> str | None:
    """The cache key of these settings on ``dataset`` when their weights ship with the package (loading them then
    trains nothing and writes nothing to ``cache_dir``), else None (also for a dataset without a train split)."""
    if dataset.train_split() is None:
        return None
    xtr, ytr, settings, _ = _embedded_setup(dataset, epochs, lr, batch_size, seed, channels, hidden)
    key = _cache_key(settings, xtr, ytr)
    return key if key in SHIPPED else None


def load_shipped(path: Path, digest: str, build: Callable[[], nn.Module], what: str, remake: str) -> nn.Module:
    """The shipped weights in ``path`` on ``build()``, after checking the file's SHA-256 against ``digest``
    (before it is read); ``remake``: the command that writes the file again. Shared by the embedded models."""
    hint = f"reinstall the package, or remake the file with: {remake}"
    if not path.is_file():
        raise BenchError(f"model '{what}': the shipped weights {path} are missing; {hint}")
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != digest:
        raise BenchError(f"model '{what}': the shipped weights {path} do not match their digest (SHA-256 "
                         f"{found[:16]}…, expected {digest[:16]}…); {hint}")
    model = build()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def write_shipped(state: dict, path: Path) -> str:
    """Write ``state`` to ``path`` as shipped weights (atomically) and return the file's SHA-256. Saved through a
    file object, so the archive's inner folder is "archive", not a temporary file's name: the bytes depend on the
    weights only."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def cached_or_trained(path: Path, build: Callable[[], nn.Module], train: Callable[[], nn.Module],
                      what: str) -> nn.Module:
    """The model cached in ``path``; else ``train()``, cached there afterwards (an unreadable cache file is
    retrained, never fatal; a cache folder that cannot be written fails before training). Shared by the embedded
    models."""
    if path.is_dir():
        raise BenchError(f"model '{what}': the cache file {path} is a directory, not a file; remove it or "
                         f"choose another cache_dir=… (BENCH_CACHE_DIR)")
    if path.is_file():
        model = build()
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception as exc:  # corrupt cache: retrain, never fail
            log.warning("cached model %s unreadable (%s); retraining", path, exc)
    writable_dir("cache_dir", path.parent)
    log.info("training the %s (cached afterwards at %s)", what, path)
    model = train()
    atomic_torch_save(model.state_dict(), path)
    return model


def ship_embedded_cnn(dataset: Dataset, epochs: int = 6, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                      channels=(16, 32), hidden: int = 128) -> tuple[Path, str]:
    """Train the embedded CNN for ``dataset`` (as ``load_embedded_cnn`` would) and write it as shipped weights:
    (the file, its SHA-256) — the value to keep in ``SHIPPED``. The file's bytes depend on the weights only."""
    xtr, ytr, settings, build = _embedded_setup(dataset, epochs, lr, batch_size, seed, channels, hidden)
    torch.manual_seed(seed)
    model = build()
    _train(model, xtr, ytr, epochs, lr, batch_size, seed)
    path = shipped_file(_cache_key(settings, xtr, ytr))
    return path, write_shipped(model.state_dict(), path)


def load_embedded_cnn(dataset: Dataset, cache_dir: str, epochs: int = 6, lr: float = 1e-3,
                      batch_size: int = 64, seed: int = 0, channels=(16, 32), hidden: int = 128) -> nn.Module:
    """The embedded CNN for ``dataset``: the shipped weights (module docstring) for their settings and data; else
    from the cache, or trained now and cached."""
    xtr, ytr, settings, build = _embedded_setup(dataset, epochs, lr, batch_size, seed, channels, hidden)
    key = _cache_key(settings, xtr, ytr)
    if key in SHIPPED:
        return load_shipped(shipped_file(key), SHIPPED[key], build, "embedded_cnn", "python -m bench.models --ship")

    def train() -> nn.Module:
        torch.manual_seed(seed)
        model = build()
        _train(model, xtr, ytr, epochs, lr, batch_size, seed)
        return model
    return cached_or_trained(Path(cache_dir).expanduser() / f"embedded_cnn-{key}.pt", build, train, "embedded_cnn")


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
