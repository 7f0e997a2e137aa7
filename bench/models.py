"""Models: the embedded CNN (trained on first use, cached) — ``model=<name>`` in conf/model/.

The embedded CNN is in the style the papers explain: (conv → ReLU → max-pool) × 2, then dense → ReLU →
dense. It is trained deterministically on the dataset's train split in seconds on CPU and cached on
disk *outside* ``results/`` (``cache_dir``, default ``~/.cache/bench``), keyed by a hash of the
architecture, the training settings and the training data; later runs reuse it. Checkpoints are
loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .api import Dataset
from .errors import BenchError

log = logging.getLogger(__name__)


def embedded_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 channels: tuple[int, int] = (16, 32), hidden: int = 128) -> nn.Sequential:
    c1, c2 = channels
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
           seed: int) -> None:
    """Adam on cross-entropy, seeded shuffling; deterministic on CPU."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), batch_size):
            idx = perm[s:s + batch_size]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_embedded_cnn(dataset: Dataset, cache_dir: str, epochs: int = 6, lr: float = 1e-3,
                      batch_size: int = 64, seed: int = 0, channels=(16, 32), hidden: int = 128) -> nn.Module:
    """The embedded CNN for ``dataset``: from the cache, or trained now and cached."""
    split = dataset.train_split()
    if split is None:
        raise BenchError(f"model 'embedded_cnn' is trained on the dataset's train split, and dataset "
                         f"{type(dataset).__name__} has none; choose a pretrained model for it")
    c, h, w = dataset.image_shape
    norm = dataset.normalization
    xtr, ytr = norm.normalize(split[0].float()), split[1].long()
    settings = dict(arch="embedded_cnn/v1", in_channels=c, num_classes=dataset.num_classes, image_size=h,
                    channels=list(channels), hidden=hidden, epochs=epochs, lr=lr, batch_size=batch_size,
                    seed=seed, normalization=[norm.mean, norm.std])
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(xtr.numpy().tobytes())
    digest.update(ytr.numpy().tobytes())
    key = digest.hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"embedded_cnn-{key}.pt"
    model = embedded_cnn(c, dataset.num_classes, h, tuple(channels), hidden)
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception as exc:  # corrupt cache: retrain, never fail
            log.warning("cached model %s unreadable (%s); retraining", path, exc)
    log.info("training the embedded CNN (cached afterwards at %s)", path)
    torch.manual_seed(seed)
    model = embedded_cnn(c, dataset.num_classes, h, tuple(channels), hidden)
    _train(model, xtr, ytr, epochs, lr, batch_size, seed)
    atomic_torch_save(model.state_dict(), path)
    return model


MODELS = {"embedded_cnn": load_embedded_cnn}


def load_model(name: str, dataset: Dataset, params: dict) -> nn.Module:
    if name not in MODELS:
        raise BenchError(f"unknown model kind '{name}'; available: {', '.join(MODELS)}")
    try:
        return MODELS[name](dataset, **params)
    except TypeError as exc:
        raise BenchError(f"model '{name}': {exc}") from None
