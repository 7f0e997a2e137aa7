"""CIFAR-10 test images from a local copy of the "python version" (``dataset=cifar10``); nothing is downloaded.

Layout, ``root`` = ``dataset.params.root``: the extracted "python version" archive
(``cifar-10-python.tar.gz``), i.e. ``<root>/cifar-10-batches-py/test_batch`` and ``batches.meta``; the
training batches ``data_batch_1`` … ``data_batch_5`` beside them are needed only to train the embedded CNN
(``model=embedded_cnn``).

The batches are pickles, and unpickling a file can run any code its author chose. They are therefore read by
our own restricted unpickler, never by plain ``pickle``: it admits only the globals a genuine CIFAR-10 batch
refers to — numpy's array reconstruction (``numpy.core.multiarray._reconstruct`` / ``numpy._core…``,
``numpy.ndarray``, ``numpy.dtype``; also ``numpy…numeric._frombuffer``, which numpy writes for pickle
protocol 5, and ``_codecs.encode`` limited to latin-1 text, which Python 3 writes for bytes under protocol
2). A file that names anything else is refused, in one line, without running it. The contents are then
checked: ``data`` an N×3072 uint8 array, ``labels`` N integers 0–9, ``label_names`` 10 strings (keys as
``str`` or ``bytes``). MD5 sums are not checked (any folder of this layout and format is accepted).

Image ids ``cifar10-test-00000`` …, in the stored order; each 3072-byte row (1024 red, 1024 green, 1024 blue,
row-major) becomes a 32×32×3 image, as torchvision's loader does. Raw range [0, 1], CIFAR-10 mean/std by
default; a model's ``input`` (e.g. resize 256, crop 224 and the ImageNet statistics) replaces them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bench.checks import regular_file
from bench.errors import BenchError
from bench.data.imagefolders import ArrayImages, Preprocess, check_params, make_normalization, need_root

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
FOLDER = "cifar-10-batches-py"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
LAYOUT = (f"<root>/{FOLDER}/test_batch and <root>/{FOLDER}/batches.meta (the extracted cifar-10-python.tar.gz; "
          f"data_batch_1 … data_batch_5 too to train the embedded CNN)")

try:  # numpy ≥ 2 (numpy.core is a deprecated alias there): look the functions up where they live
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric  # type: ignore[no-redef]


class _Refused(pickle.UnpicklingError):
    """A global outside ``_ALLOWED`` (or a use of one no batch makes): the file is not a genuine CIFAR-10 batch."""


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 uses it in protocol-2 pickles of ``bytes``: latin-1 text only."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") != "latin1":
        raise _Refused(f"_codecs.encode with {type(text).__name__} and encoding {str(encoding)[:20]!r}")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """Admits only the globals of numpy arrays (see the module docstring); nothing is imported or run."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {str(pid)[:40]!r}")


def _unpickle(path: Path) -> dict:
    """The dict pickled in ``path``, keys as ``str`` (Python 2 strings are read as latin-1)."""
    not_genuine = f"{path} is not a genuine CIFAR-10 batch"
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        raise BenchError(f"{not_genuine}: it refers to {exc}, which a CIFAR-10 batch never does; it was refused "
                         f"without running it (use the files of the official cifar-10-python.tar.gz)") from None
    except Exception as exc:  # truncated, garbage, not a pickle
        detail = str(exc).splitlines()[0] if str(exc).strip() else ""
        if len(detail) > 160:  # shortened at a word end, never mid-word
            detail = detail[:detail.rfind(" ", 0, 160)] + " …" if " " in detail[:160] else detail
        raise BenchError(f"{path} is not a readable CIFAR-10 batch (truncated or corrupt?: {type(exc).__name__}"
                         f"{': ' + detail if detail else ''}); use the files of the official "
                         f"cifar-10-python.tar.gz") from None
    if not isinstance(obj, dict):
        raise BenchError(f"{not_genuine}: it holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


def _read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """(N×3072 uint8 data, N labels 0–9) of one batch file, checked."""
    batch = _unpickle(path)
    not_genuine = f"{path} is not a genuine CIFAR-10 batch"
    if "data" not in batch or "labels" not in batch:
        raise BenchError(f"{not_genuine}: it has no {'data' if 'data' not in batch else 'labels'} entry "
                         f"(keys: {', '.join(map(str, list(batch)[:6]))})")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = (f"a {data.dtype} array of shape {'×'.join(map(str, data.shape))}" if isinstance(data, np.ndarray)
                else f"a {type(data).__name__}")
        raise BenchError(f"{not_genuine}: its data is {what}, not an N×3072 uint8 array")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist() if labels.ndim == 1 and labels.dtype.kind in "iu" else None
    wanted = f"{not_genuine}: its labels must be {len(data)} integers 0–9 (one per image)"
    if not isinstance(labels, list) or len(labels) != len(data):
        got = f"{len(labels)} values" if isinstance(labels, list) else f"a {type(batch['labels']).__name__}"
        raise BenchError(f"{wanted}, got {got}")
    bad = next((i for i, v in enumerate(labels)
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 9), None)
    if bad is not None:
        value = labels[bad]
        got = value if isinstance(value, int) and not isinstance(value, bool) else f"a {type(value).__name__}"
        raise BenchError(f"{wanted}, got {got} at position {bad}")
    return data, [int(v) for v in labels]


def _read_label_names(path: Path) -> list[str]:
    meta = _unpickle(path)
    names = meta.get("label_names")
    texts = [_text(n) for n in names] if isinstance(names, list) else []
    if len(texts) != 10 or any(t is None for t in texts):
        raise BenchError(f"{path} is not a genuine CIFAR-10 batches.meta: its label_names must be a list of 10 "
                         f"strings")
    return texts  # type: ignore[return-value]


def _read(root: Path, train: bool) -> tuple[np.ndarray, list[int]]:
    needed = (TRAIN if train else ["test_batch"]) + ["batches.meta"]
    for f in needed:  # a FIFO or device named like a batch would block the reader
        regular_file("dataset 'cifar10': dataset.params.root", root / FOLDER / f)
    missing = [root / FOLDER / f for f in needed if not (root / FOLDER / f).is_file()]
    if missing:
        purpose = "training the embedded CNN on CIFAR-10 needs" if train else "dataset 'cifar10' needs"
        raise BenchError(f"{purpose} {missing[0]} (missing); expected {LAYOUT}; set dataset.params.root=...")
    _read_label_names(root / FOLDER / "batches.meta")
    parts, labels = [], []
    for name in needed[:-1]:
        data, batch_labels = _read_batch(root / FOLDER / name)
        parts.append(data)
        labels.extend(batch_labels)
    data = np.vstack(parts).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # HWC, as torchvision's CIFAR10
    return data, labels


class CIFAR10(ArrayImages):
    def __init__(self, root: str | None = None, resize=None, crop=None, mean=None, std=None) -> None:
        check_params(root=root, resize=resize, crop=crop, mean=mean, std=std)
        root = need_root(root, "cifar10", LAYOUT)
        images, labels = _read(root, train=False)
        super().__init__(images, labels, "cifar10-test", 10, Preprocess.make(resize, crop, 3, "cifar10"),
                         make_normalization(mean, std, MEAN, STD, 3, "cifar10"),
                         load_train=lambda: _read(root, train=True))
