"""MNIST test digits through torchvision's loader from a local copy (``dataset=mnist``); nothing is
downloaded (``download=False``). For the copy that ships with the suite, see ``dataset=mnist_embedded``.

Layout, ``root`` = ``dataset.params.root`` (torchvision's): ``<root>/MNIST/raw/t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (the unpacked ``.gz`` files of the MNIST distribution); ``train-images-idx3-ubyte``
and ``train-labels-idx1-ubyte`` beside them are needed only to train the embedded CNN.

Image ids ``mnist-t10k-00000`` …, in the stored order. Raw range [0, 1], grayscale (``channels=3`` repeats
it for RGB models), mean 0.1307 / std 0.3081 by default or the model's ``input``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torchvision

from bench.checks import regular_file
from bench.errors import BenchError
from bench.data.imagefolders import ArrayImages, Preprocess, check_params, make_normalization, need_root


LAYOUT = ("<root>/MNIST/raw/t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (unpacked from the .gz files; "
          "train-images-idx3-ubyte and train-labels-idx1-ubyte too to train the embedded CNN)")


class _LocalMNIST(torchvision.datasets.MNIST):
    """torchvision's loader; presence of the split's two files is checked before."""

    @property
    def raw_folder(self) -> str:
        return os.path.join(self.root, "MNIST", "raw")

    @property
    def processed_folder(self) -> str:
        return os.path.join(self.root, "MNIST", "processed")

    def _check_exists(self) -> bool:
        return True


def _read(root: Path, train: bool) -> tuple[np.ndarray, list[int]]:
    prefix = "train" if train else "t10k"
    raw = root / "MNIST" / "raw"
    for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        regular_file("dataset 'mnist': dataset.params.root", raw / name)  # a FIFO would block the reader
        if not (raw / name).is_file():
            hint = f" (unpack {raw / name}.gz)" if (raw / f"{name}.gz").is_file() else ""
            purpose = "training the embedded CNN on MNIST needs" if train else "dataset 'mnist' needs"
            raise BenchError(f"{purpose} {raw / name} (missing){hint}; expected {LAYOUT}; set dataset.params.root=...")
    try:
        data = _LocalMNIST(str(root), train=train, download=False)
    except Exception as exc:
        raise BenchError(f"cannot read MNIST from {raw}: {type(exc).__name__}: {exc}") from None
    return data.data.numpy(), data.targets.tolist()


class MNIST(ArrayImages):
    def __init__(self, root: str | None = None, resize=None, crop=None, mean=None, std=None,
                 channels: int | None = 1) -> None:
        check_params(root=root, resize=resize, crop=crop, mean=mean, std=std, channels=channels)
        root = need_root(root, "mnist", LAYOUT)
        images, labels = _read(root, train=False)
        super().__init__(images, labels, "mnist-t10k", 10,
                         Preprocess.make(resize, crop, channels, "mnist", default_channels=1),
                         make_normalization(mean, std, (0.1307,), (0.3081,), channels or 1, "mnist"),
                         load_train=lambda: _read(root, train=True))
