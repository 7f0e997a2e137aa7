"""Shared helpers for the datasets read from local image files and archives (datasets/imagenet.py,
places365.py, sun397.py, imagefolder.py, cifar10.py, mnist.py).

Dataset plug-ins are loaded by path and may import only from bench, torch, torchvision, numpy, PIL,
pandas and the standard library, so what they share lives here:

- ``Preprocess``: resize (shorter side, or an exact [H, W]) → centre crop → channels → float tensor in
  [0, 1], the torchvision pipeline ``Resize``/``CenterCrop``/``ToTensor`` on PIL images. The model/dataset
  pair decides it: dataset YAMLs take ``resize``, ``crop``, ``mean``, ``std`` from the model's ``input``
  block (``${oc.select:model.input.resize,null}``), ``null`` meaning the dataset's own default.
- ``ImageFiles``: a ``bench.api.Dataset`` over a list of (image_id, path, label); a file PIL cannot read
  raises ``UnreadableImage`` (skipped, counted and reported by the run, never fatal).
- ``list_images``: every image file under a folder, in the suite's fixed order: by file name, then by
  relative path. For ILSVRC2012 and Places365 validation files this is the official numbering, whatever
  the layout, so "the first N images" are the same images in the flat and the class-per-folder layout.
- label files, class lists and the one-line errors that say which file to put where.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ..interfaces import Dataset, Normalization, UnreadableImage
from ..checks import integer, number, regular_file, special_file
from ..errors import BenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ("," if len(values) == 1 else "") + ")"


def _size(value, key: str, what: str) -> int | tuple[int, int] | None:
    """``null`` | int | [H, W] → None | int | (H, W), checked."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return int(value)
    raise BenchError(f"dataset '{what}': {key} must be a positive integer, a pair [H, W] or null, got {value!r}")


@dataclass(frozen=True)
class Preprocess:
    """resize → centre crop → channels (3 = RGB, 1 = grayscale) → float C×H×W in [0, 1].

    ``resize``: an int resizes the shorter side to it (aspect ratio kept), a pair (H, W) resizes exactly,
    None keeps the stored size. ``crop``: centre crop to an int (square) or a pair (H, W), None = none.
    Bilinear interpolation with antialiasing (PIL), as torchvision's ImageNet weights' transforms.
    """

    resize: int | tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    channels: int = 3

    @classmethod
    def make(cls, resize, crop, channels: int | None, what: str, default_channels: int = 3) -> "Preprocess":
        channels = default_channels if channels is None else channels
        if channels not in (1, 3):
            raise BenchError(f"dataset '{what}': channels must be 1 or 3, got {channels!r}")
        return cls(_size(resize, "resize", what), _size(crop, "crop", what), channels)

    @classmethod
    def with_defaults(cls, resize, crop, channels: int | None, what: str, default_resize: int = 256,
                      default_crop: int = 224) -> "Preprocess":
        """``null`` resize/crop → the dataset's defaults (resize 256 → crop 224); an exact resize [H, W] needs
        no crop, so then the crop defaults to none."""
        exact = isinstance(resize, (list, tuple)) or (hasattr(resize, "__len__") and not isinstance(resize, str))
        return cls.make(default_resize if resize is None else resize,
                        (None if exact else default_crop) if crop is None else crop, channels, what)

    def output_hw(self, native: tuple[int, int] | None, what: str) -> tuple[int, int]:
        """The fixed H×W of every preprocessed image (``native``: the stored size, when all share one)."""
        for size in (self.crop, self.resize if isinstance(self.resize, tuple) else None):
            if size is not None:
                return (size, size) if isinstance(size, int) else size
        if isinstance(self.resize, int) and native is not None:
            h, w = native
            return (self.resize, round(w * self.resize / h)) if h <= w else (round(h * self.resize / w), self.resize)
        if native is not None:
            return native
        raise BenchError(f"dataset '{what}': images of different sizes need a fixed size to be batched; "
                         f"set dataset.params.crop=N (or model.input.crop=N) or resize=[H,W]")

    def __call__(self, image) -> torch.Tensor:
        """A PIL image → float tensor C×H×W in [0, 1]."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        image = image.convert("RGB" if self.channels == 3 else "L")
        if self.resize is not None:
            size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
            image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        if self.crop is not None:
            image = F.center_crop(image, [self.crop, self.crop] if isinstance(self.crop, int) else list(self.crop))
        return F.pil_to_tensor(image).float().div_(255.0)

    def describe(self, normalization: Normalization, native: str = "") -> str:
        """E.g. ``resize=256 center_crop=224 rgb mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225)``."""
        parts = []
        if self.resize is not None:
            parts.append(f"resize={self.resize if isinstance(self.resize, int) else 'x'.join(map(str, self.resize))}")
        if self.crop is not None:
            parts.append(f"center_crop={self.crop if isinstance(self.crop, int) else 'x'.join(map(str, self.crop))}")
        if not parts:
            parts.append(f"native{'=' + native if native else ''}")
        parts.append("rgb" if self.channels == 3 else "gray")
        return " ".join(parts) + " " + describe_normalization(normalization)


def describe_normalization(normalization: Normalization) -> str:
    lo, hi = normalization.raw_range
    return f"mean={_fmt(normalization.mean)} std={_fmt(normalization.std)} raw_range=[{lo:g}, {hi:g}]"


PATHS = ("root", "labels", "classes", "split")  # file or folder paths; null (or '') = not given


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_params(**params) -> None:
    """One-line errors, before any file is read, for the parameters shared by the image dataset plug-ins
    (imagefolder, imagenet, places365, sun397, mnist, cifar10): paths, ``num_classes`` and the preprocessing
    (``resize``, ``crop``, ``channels``, ``mean``, ``std``). Valid values are left to bench.imagefolders as they are."""
    for key, value in params.items():
        name = f"dataset.params.{key}"
        if value is None:
            continue
        if key in PATHS:
            if not isinstance(value, (str, os.PathLike)):
                raise BenchError(f"{name} must be a path (a string) or null, got {value!r}")
        elif key == "num_classes":
            integer(name, value, low=1)
        elif key in ("resize", "crop"):
            if not (_positive_int(value) or (isinstance(value, (list, tuple)) and len(value) == 2
                                             and all(map(_positive_int, value)))):
                raise BenchError(f"{name} must be a positive integer, a pair [H, W] or null, got {value!r}")
        elif key == "channels":
            if not (_positive_int(value) and value in (1, 3)):
                raise BenchError(f"{name} must be 1 (grayscale), 3 (RGB) or null, got {value!r}")
        elif key in ("mean", "std"):
            # one value for all channels or one per RGB channel: make_normalization repeats a single value and
            # averages RGB statistics for grayscale data, so 1 or 3 values fit either channel count
            values = value if isinstance(value, (list, tuple)) else [value]
            if len(values) not in (1, 3):
                raise BenchError(f"{name} must be a number or a list of 1 or 3 numbers (one per channel), "
                                 f"got {value!r}")
            for v in values:
                if key == "std":
                    number(name, v, low=0, low_open=True)
                else:
                    number(name, v)
        else:
            raise KeyError(key)


def make_normalization(mean, std, default_mean: Sequence[float], default_std: Sequence[float], channels: int,
                       what: str, raw_range: tuple[float, float] = (0.0, 1.0)) -> Normalization:
    """The dataset's normalisation: ``mean``/``std`` from the params (the model's ``input``) or the defaults,
    one value per channel (a single value is repeated)."""
    mean = tuple(float(v) for v in (default_mean if mean is None else
                                    mean if isinstance(mean, (list, tuple)) else [mean]))
    std = tuple(float(v) for v in (default_std if std is None else std if isinstance(std, (list, tuple)) else [std]))
    if len(mean) == 1 and channels > 1:
        mean = mean * channels
    if len(std) == 1 and channels > 1:
        std = std * channels
    if channels == 1:  # an RGB model's statistics on grayscale data: the channel mean (each on its own)
        mean = (sum(mean) / 3,) if len(mean) == 3 else mean
        std = (sum(std) / 3,) if len(std) == 3 else std
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise BenchError(f"dataset '{what}': mean={list(mean)} and std={list(std)} must give one value per channel "
                         f"({channels}) and std > 0")
    return Normalization(raw_range=raw_range, mean=mean, std=std)


# ---------------------------------------------------------------------------------------------- files

def need_root(root, what: str, layout: str) -> Path:
    """``root`` as an existing folder, or a one-line error that says what to put where."""
    if root is None or str(root).strip() in ("", "None", "null", "???"):
        raise BenchError(f"dataset '{what}' reads local files; set dataset.params.root=/path/to/folder. "
                         f"Expected layout: {layout}")
    path = Path(os.path.expanduser(str(root)))
    regular_file(f"dataset '{what}': dataset.params.root", path, "give the folder of the images")
    if not path.is_dir():
        raise BenchError(f"dataset '{what}': folder {path} does not exist; put the images there — {layout} — "
                         f"or set dataset.params.root=/path/to/folder")
    return path


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_images(root: Path) -> list[Path]:
    """Every image file under ``root`` (following links, skipping hidden folders), sorted by file name,
    then by path relative to ``root``."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder) / f for f in files if is_image(f)]
    return sorted(found, key=lambda p: (p.name, p.relative_to(root).as_posix()))


def relpath(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def first_existing(candidates: Iterable[Path]) -> Path | None:
    for p in candidates:
        if p.is_file():
            return p
    return None


def find_class_file(classes: str | None, root: Path, name: str, what: str, layout: str) -> Path | None:
    """A dataset's class list: the file ``classes`` when given (it must exist), else ``name`` in ``root`` or
    its parent folder; None when there is none."""
    if classes:
        path = Path(classes).expanduser()
        regular_file(f"dataset '{what}': dataset.params.classes", path)
        if not path.is_file():
            raise BenchError(f"dataset '{what}': class list {path} does not exist; expected {layout}")
        return path
    return first_existing(d / name for d in (root, root.parent))


def read_lines(path: Path) -> list[str]:
    """Non-empty lines without comments (``#``) of a text file."""
    regular_file("a dataset's list file", path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from None
    return [s for s in (line.split("#", 1)[0].strip() for line in text.splitlines()) if s]


def canonical_class(name: str) -> str:
    """One spelling for class names of scene datasets: '/a/apartment_building/outdoor', 'a/apartment_building/
    outdoor', 'apartment_building/outdoor' and 'apartment_building-outdoor' are the same class."""
    parts = [p for p in name.strip().strip("/").replace("\\", "/").split("/") if p]
    if len(parts) > 1 and len(parts[0]) == 1:
        parts = parts[1:]
    return "/".join(parts).replace("-", "/").lower()


def class_list(path: Path) -> list[str]:
    """Class names, one a line, index = line number; a trailing integer (``/a/airfield 0``) must agree."""
    names = []
    for i, line in enumerate(read_lines(path)):
        parts = line.split()
        if len(parts) > 1 and parts[-1].lstrip("-").isdigit() and int(parts[-1]) != i:
            raise BenchError(f"class list {path}: line {i + 1} '{line}' gives index {parts[-1]}, expected {i}")
        names.append(parts[0])
    if not names:
        raise BenchError(f"class list {path} is empty")
    return names


def read_label_file(path: Path) -> list[list[str]]:
    """A label file as rows of tokens: whitespace or comma separated; a CSV header is kept as a row."""
    return [line.replace(",", " ").split() for line in read_lines(path)]


def labels_by_name(rows: list[list[str]], to_label: Callable[[str], int], path: Path) -> dict[str, int]:
    """Rows ``<file> <label> …`` → {key: label}; keys are the file's relative path, file name and stem."""
    table: dict[str, int] = {}
    for row in rows:
        if len(row) < 2:
            raise BenchError(f"label file {path}: line '{' '.join(row)}' is not '<file name> <label>'")
        name = row[0].strip("/")
        label = to_label(row[1])
        for key in {name, Path(name).name, Path(name).stem}:
            table.setdefault(key, label)
    return table


def label_lookup(table: dict[str, int], path: Path, root: Path) -> int | None:
    rel = relpath(path, root)
    for key in (rel, path.name, path.stem, str(Path(rel).with_suffix(""))):
        if key in table:
            return table[key]
    return None


def label_token(token: str, names: dict[str, int], num_classes: int, where: str) -> int:
    """A label written as a class index (0 … K−1) or a class name in ``names``."""
    if token.lstrip("-").isdigit():
        label = int(token)
        if not 0 <= label < num_classes:
            raise BenchError(f"{where}: label {label} outside 0…{num_classes - 1}")
        return label
    for key in (token, canonical_class(token)):
        if key in names:
            return names[key]
    raise BenchError(f"{where}: label '{token}' is neither a class index 0…{num_classes - 1} nor a known class name")


def unlabeled_error(what: str, missing: list[Path], root: Path, how: str) -> BenchError:
    shown = ", ".join(relpath(p, root) for p in missing[:3])
    return BenchError(f"dataset '{what}': {len(missing)} image(s) under {root} have no label (e.g. {shown}); {how}")


class ImageFiles(Dataset):
    """Images read from files in a fixed order: ``samples`` = [(image_id, path, label)]."""

    def __init__(self, samples: list[tuple[str, str, int]], num_classes: int, preprocess: Preprocess,
                 normalization: Normalization, what: str, native: tuple[int, int] | None = None) -> None:
        if not samples:
            raise BenchError(f"dataset '{what}' found no image files")
        ids = [s[0] for s in samples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise BenchError(f"dataset '{what}': image id '{dup}' occurs twice; image ids must be unique")
        self.samples = samples
        self.num_classes = int(num_classes)
        self.transform = preprocess
        self.normalization = normalization
        h, w = preprocess.output_hw(native, what)
        self.image_shape = (preprocess.channels, h, w)
        self.preprocessing = preprocess.describe(normalization)

    def __len__(self) -> int:
        return len(self.samples)

    def image_id(self, index: int) -> str:
        return self.samples[index][0]

    def get(self, index: int) -> tuple[str, torch.Tensor, int]:
        from PIL import Image

        image_id, path, label = self.samples[index]
        why = special_file(path)
        if why:  # a FIFO named like an image would block the reader
            raise UnreadableImage(image_id, why)
        try:
            with Image.open(path) as img:
                raw = self.transform(img)
        except Exception as exc:  # any decoder error: the run skips the file and reports it
            message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            raise UnreadableImage(image_id, f"{type(exc).__name__}: {message}") from None
        if tuple(raw.shape) != self.image_shape:
            raise UnreadableImage(image_id, f"{path}: preprocessed to {tuple(raw.shape)}, expected "
                                            f"{self.image_shape} (set a crop size)")
        return image_id, raw, label


class ArrayImages(Dataset):
    """Images stored as one uint8 array (N×H×W or N×H×W×C, as torchvision's CIFAR10 and MNIST hold them).
    Without resize/crop/channel change they are used as stored; otherwise each goes through PIL and
    ``Preprocess``, exactly like image files. ``load_train`` gives the training arrays for the embedded CNN."""

    def __init__(self, images, labels, id_prefix: str, num_classes: int, preprocess: Preprocess,
                 normalization: Normalization, load_train: Callable[[], tuple] | None = None) -> None:
        self.images, self.labels = images, [int(v) for v in labels]
        self.id_prefix, self.num_classes = id_prefix, int(num_classes)
        self.transform, self.normalization, self._load_train = preprocess, normalization, load_train
        stored_c = 1 if images.ndim == 3 else images.shape[3]
        self.native = (preprocess.resize is None and preprocess.crop is None and preprocess.channels == stored_c)
        h, w = preprocess.output_hw(tuple(images.shape[1:3]), id_prefix)
        self.image_shape = (preprocess.channels, h, w)
        self.preprocessing = preprocess.describe(normalization, native=f"{images.shape[1]}x{images.shape[2]}")

    def __len__(self) -> int:
        return len(self.images)

    def _raw(self, images, index: int) -> torch.Tensor:
        if self.native:
            t = torch.from_numpy(images[index].copy())
            return (t[None] if t.ndim == 2 else t.permute(2, 0, 1)).float().div_(255.0)
        from PIL import Image

        return self.transform(Image.fromarray(images[index]))

    def image_id(self, index: int) -> str:
        return f"{self.id_prefix}-{index:05d}"

    def get(self, index: int) -> tuple[str, torch.Tensor, int]:
        return self.image_id(index), self._raw(self.images, index), self.labels[index]

    def train_split(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._load_train is None:
            return None
        images, labels = self._load_train()
        if self.native:
            x = torch.from_numpy(images.copy())
            x = (x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)).float().div_(255.0)
        else:
            x = torch.stack([self._raw(images, i) for i in range(len(images))])
        return x, torch.as_tensor([int(v) for v in labels], dtype=torch.long)


def labelled(files: list[Path], root: Path, label_of: Callable[[Path], int | None],
             image_id: Callable[[Path], str]) -> tuple[list[tuple[str, str, int]], list[Path]]:
    """(samples, files without a label) in the order of ``files``."""
    samples, missing = [], []
    for path in files:
        label = label_of(path)
        if label is None:
            missing.append(path)
        else:
            samples.append((image_id(path), str(path), int(label)))
    return samples, missing


def stem_id(path: Path) -> str:
    return path.stem


def relpath_id(root: Path) -> Callable[[Path], str]:
    return lambda path: str(Path(relpath(path, root)).with_suffix(""))


def devkit_wnids(meta_mat: Path) -> dict[int, str]:
    """ILSVRC2012_ID → WordNet id of the 1,000 leaf classes, from the devkit's ``data/meta.mat``."""
    regular_file("the devkit's meta.mat", meta_mat)
    if not meta_mat.is_file():
        raise BenchError(f"the devkit's ground truth needs its meta.mat beside it: put ILSVRC2012_devkit_t12/data/"
                         f"meta.mat at {meta_mat}")
    try:
        import scipy.io

        synsets = scipy.io.loadmat(str(meta_mat), squeeze_me=True)["synsets"]
        return {int(s[0]): str(s[1]) for s in synsets if int(s[4]) == 0}
    except Exception as exc:
        raise BenchError(f"cannot read the devkit's {meta_mat}: {type(exc).__name__}: {exc}") from None
