"""The two plug-in interfaces: a ``Method`` (in ``methods/``) and a ``Dataset`` (in ``datasets/``).

A plug-in is one file in its folder defining one subclass of the class below; its parameters are
declared as constructor keywords and set from ``conf/method/<name>.yaml`` / ``conf/dataset/<name>.yaml``
(key ``params``). Plug-in files are loaded by path (bench/plugins.py), never imported as packages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class Normalization:
    """Raw pixel range and the per-channel affine map raw → model input: x = (raw − mean) / std."""

    raw_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1, 1, 1)
        mean = torch.as_tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.as_tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw pixels (..., C, H, W) → model input."""
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (..., C, H, W) → raw pixels."""
        mean, std = self._stats(x)
        return x * std + mean

    def input_bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw range mapped through the normalisation: per-channel (low, high) in model-input units,
        broadcastable to ``like`` (used by the z^B rule, deep Taylor Sec. 5)."""
        lo, hi = self.raw_range
        mean, std = self._stats(like)
        return (lo - mean) / std, (hi - mean) / std


@dataclass
class Context:
    """What a method may know besides (model, x, target): image ids (for per-image seeding), the run's
    seed and the data's normalisation (for rules that need pixel bounds)."""

    image_ids: Sequence[str]
    seed: int = 0
    normalization: Normalization = field(default_factory=Normalization)


class Method:
    """An attribution method: ``attribute(model, x, target, ctx) -> R`` with ``R.shape == x.shape``.

    ``pooling`` is the method's default channel pooling (DEFINITIONS §2); the config may override it.
    The model is in eval mode; a method must leave it exactly as it found it (parameters, hooks, modes)
    and must not accumulate ``.grad`` on its parameters (use ``torch.autograd.grad``).
    """

    pooling: ClassVar[str] = "sum"
    #: True for a method that only has heatmaps of the dataset's images (``precomputed``): it cannot attribute
    #: other inputs, so protocols that do (continuity's neighbours, the translation wrapper) refuse it.
    fixed_heatmaps: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        if params:
            raise TypeError(f"{type(self).__name__} takes no parameters, got {sorted(params)}")

    def attribute(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: Context) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, dataset: "Dataset", n_images: int, what: str) -> None:
        """Called once when the run spec is built, before any work: raise ``BenchError`` (one line) if the
        method cannot serve the first ``n_images`` images of ``dataset`` (``what``: its name), e.g. precomputed
        heatmaps that lack one. Most methods need nothing."""


class UnreadableImage(Exception):
    """Raised by ``Dataset.get`` for a corrupt or unreadable file: the run skips, counts and reports it."""

    def __init__(self, image_id: str, reason: str) -> None:
        super().__init__(f"{image_id}: {reason}")
        self.image_id, self.reason = image_id, reason


class Dataset:
    """Evaluation images in a fixed order. ``get(i) -> (image_id, raw, label)`` with ``raw`` a float
    tensor C×H×W of shape ``image_shape`` in ``normalization.raw_range``; the engine normalises.
    ``image_id`` must be unique and stable (it seeds the per-image random streams). A file that cannot be
    read raises ``UnreadableImage`` (skipped and reported, not fatal)."""

    normalization: Normalization = Normalization()
    num_classes: int = 0
    image_shape: tuple[int, int, int] = (0, 0, 0)
    preprocessing: str = ""  # e.g. "resize=256 center_crop=224 mean=(…) std=(…)", recorded in every row

    def __init__(self, **params: Any) -> None:
        if params:
            raise TypeError(f"{type(self).__name__} takes no parameters, got {sorted(params)}")

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, index: int) -> tuple[str, torch.Tensor, int]:
        raise NotImplementedError

    def image_id(self, index: int) -> str:
        """The id of image ``index`` without reading it, where a dataset can (the default reads it)."""
        return self.get(index)[0]

    def train_split(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(raw images N×C×H×W, labels N) to train the embedded model on, or None."""
        return None
