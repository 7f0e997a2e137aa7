"""The embedded vision transformer (``model=embedded_vit``): torchvision's ``VisionTransformer``, small, trained
deterministically on the dataset's train split like the embedded CNN (bench/models/embedded.py: the same
optimiser, seeded order and cache), so that transformer explanations (``method=attnlrp``, ``cp_lrp``) are
evaluated offline on a trained model. Its weights for the embedded MNIST ship with the package
(``shipped/embedded_vit-<key>.pt``, SHA-256 checked before they are read; ``python -m bench.models --ship
model=embedded_vit`` remakes them — on another CPU possibly different in the last bits)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import BenchError
from ..interfaces import Dataset
from .embedded import SHIPPED_DIR, _cache_key, _train, cached_or_trained, load_shipped, write_shipped

#: cache key → SHA-256 of the shipped state_dict file (``python -m bench.models --ship model=embedded_vit``)
SHIPPED = {"95831b64e7d4deb0": "83818a345b5d5f50bbf4afe86f85762fabf166a07c8ca7387f9ff91d9e8d6002"}


def embedded_vit(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, patch: int = 7, dim: int = 64,
                 depth: int = 3, heads: int = 4, mlp: int = 128) -> nn.Module:
    """torchvision's ViT on ``image_size``² images of ``in_channels`` channels: (image_size / patch)² tokens and a
    class token, ``depth`` encoder blocks of width ``dim`` with ``heads`` heads and an MLP of ``mlp``."""
    from torchvision.models.vision_transformer import VisionTransformer

    if image_size % patch:
        raise BenchError(f"model 'embedded_vit': model.params.patch={patch} must divide the image side {image_size}")
    if dim % heads:
        raise BenchError(f"model 'embedded_vit': model.params.dim={dim} must be a multiple of heads={heads}")
    model = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=depth, num_heads=heads,
                              hidden_dim=dim, mlp_dim=mlp, num_classes=num_classes)
    if in_channels != 3:
        model.conv_proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
    return model


def _setup(dataset: Dataset, epochs: int, lr: float, batch_size: int, seed: int, patch: int, dim: int, depth: int,
           heads: int, mlp: int):
    split = dataset.train_split()
    if split is None:
        raise BenchError(f"model 'embedded_vit' is trained on the dataset's train split, and dataset "
                         f"{type(dataset).__name__} has none; choose a pretrained model for it")
    c, h, w = dataset.image_shape
    if h != w:
        raise BenchError(f"model 'embedded_vit' takes square images; dataset {type(dataset).__name__} gives {h}×{w}")
    norm = dataset.normalization
    xtr, ytr = norm.normalize(split[0].float()), split[1].long()
    settings = dict(arch="embedded_vit/v1", in_channels=c, num_classes=dataset.num_classes, image_size=h, patch=patch,
                    dim=dim, depth=depth, heads=heads, mlp=mlp, epochs=epochs, lr=lr, batch_size=batch_size,
                    seed=seed, normalization=[norm.mean, norm.std])

    def build():
        return embedded_vit(c, dataset.num_classes, h, patch, dim, depth, heads, mlp)
    return xtr, ytr, settings, build


def shipped_key(dataset: Dataset, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                patch: int = 7, dim: int = 64, depth: int = 3, heads: int = 4, mlp: int = 128) -> str | None:
    """The cache key of these settings on ``dataset`` when their weights ship (nothing trained, nothing written to
    ``cache_dir``), else None."""
    if dataset.train_split() is None or dataset.image_shape[1] != dataset.image_shape[2]:
        return None
    xtr, ytr, settings, _ = _setup(dataset, epochs, lr, batch_size, seed, patch, dim, depth, heads, mlp)
    key = _cache_key(settings, xtr, ytr)
    return key if key in SHIPPED else None


def shipped_file(key: str) -> Path:
    return SHIPPED_DIR / f"embedded_vit-{key}.pt"


def load_embedded_vit(dataset: Dataset, cache_dir: str, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
                      seed: int = 0, patch: int = 7, dim: int = 64, depth: int = 3, heads: int = 4,
                      mlp: int = 128) -> nn.Module:
    """The embedded ViT for ``dataset``: the shipped weights for their settings and data; else from the cache, or
    trained now and cached."""
    xtr, ytr, settings, build = _setup(dataset, epochs, lr, batch_size, seed, patch, dim, depth, heads, mlp)
    key = _cache_key(settings, xtr, ytr)
    if key in SHIPPED:
        return load_shipped(shipped_file(key), SHIPPED[key], build, "embedded_vit",
                            "python -m bench.models --ship model=embedded_vit")
    return cached_or_trained(Path(cache_dir).expanduser() / f"embedded_vit-{key}.pt", build,
                             lambda: _trained(build, xtr, ytr, epochs, lr, batch_size, seed), "embedded_vit")


def _trained(build, xtr, ytr, epochs, lr, batch_size, seed) -> nn.Module:
    torch.manual_seed(seed)
    model = build()
    _train(model, xtr, ytr, epochs, lr, batch_size, seed)
    return model.eval()


def ship_embedded_vit(dataset: Dataset, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                      patch: int = 7, dim: int = 64, depth: int = 3, heads: int = 4, mlp: int = 128
                      ) -> tuple[Path, str]:
    """Train the embedded ViT for ``dataset`` (as ``load_embedded_vit`` would) and write it as shipped weights:
    (the file, its SHA-256) — the value to keep in ``SHIPPED``."""
    xtr, ytr, settings, build = _setup(dataset, epochs, lr, batch_size, seed, patch, dim, depth, heads, mlp)
    model = _trained(build, xtr, ytr, epochs, lr, batch_size, seed)
    path = shipped_file(_cache_key(settings, xtr, ytr))
    return path, write_shipped(model.state_dict(), path)
