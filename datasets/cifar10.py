"""CIFAR-10 test images through torchvision's loader from a local copy (``dataset=cifar10``); nothing is
downloaded (``download=False``).

Layout, ``root`` = ``dataset.params.root``: the extracted "python version" archive
(``cifar-10-python.tar.gz``), i.e. ``<root>/cifar-10-batches-py/test_batch`` and ``batches.meta``; the
training batches ``data_batch_1`` … ``data_batch_5`` beside them are needed only to train the embedded CNN
(``model=embedded_cnn``). The files are read as they are, without checking their MD5 sums.

Image ids ``cifar10-test-00000`` …, in the stored order. Raw range [0, 1], CIFAR-10 mean/std by default;
a model's ``input`` (e.g. resize 256, crop 224 and the ImageNet statistics) replaces them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torchvision

from bench.errors import BenchError
from bench.imagefolders import ArrayImages, Preprocess, make_normalization, need_root

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
FOLDER = "cifar-10-batches-py"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
LAYOUT = (f"<root>/{FOLDER}/test_batch and <root>/{FOLDER}/batches.meta (the extracted cifar-10-python.tar.gz; "
          f"data_batch_1 … data_batch_5 too to train the embedded CNN)")


class _LocalCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's loader on the files as they are: presence is checked before, MD5 sums are not."""

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def _read(root: Path, train: bool) -> tuple[np.ndarray, list[int]]:
    needed = (TRAIN if train else ["test_batch"]) + ["batches.meta"]
    missing = [root / FOLDER / f for f in needed if not (root / FOLDER / f).is_file()]
    if missing:
        purpose = "training the embedded CNN on CIFAR-10 needs" if train else "dataset 'cifar10' needs"
        raise BenchError(f"{purpose} {missing[0]} (missing); expected {LAYOUT}; set dataset.params.root=...")
    try:
        data = _LocalCIFAR10(str(root), train=train, download=False)
    except Exception as exc:
        raise BenchError(f"cannot read CIFAR-10 from {root / FOLDER}: {type(exc).__name__}: {exc}") from None
    return np.asarray(data.data), list(data.targets)


class CIFAR10(ArrayImages):
    def __init__(self, root: str | None = None, resize=None, crop=None, mean=None, std=None) -> None:
        root = need_root(root, "cifar10", LAYOUT)
        images, labels = _read(root, train=False)
        super().__init__(images, labels, "cifar10-test", 10, Preprocess.make(resize, crop, 3, "cifar10"),
                         make_normalization(mean, std, MEAN, STD, 3, "cifar10"),
                         load_train=lambda: _read(root, train=True))


