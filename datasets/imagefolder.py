"""Any folder of images (``dataset=imagefolder``).

Layouts, ``root`` = ``dataset.params.root``:

1. class folders, as torchvision's ``ImageFolder``: ``<root>/<class>/**/*.jpg``; the class is the first
   folder under ``root``. Class indices: the line numbers of ``dataset.params.classes`` (a file, one class
   name a line — use it to match your model's output indices), else the sorted folder names.
2. any layout with a label file ``dataset.params.labels``: ``<path relative to root, or file name> <label>``
   a line (whitespace or comma separated), the label a class index or a name from ``classes``.

``num_classes`` defaults to the number of classes. Image ids are paths relative to ``root`` without
extension; the order is by file name, then by relative path.
Preprocessing defaults to resize 256 → centre crop 224, RGB, with the ImageNet mean/std (torchvision's
pretrained models), or the model's ``input``; images are read as RGB (``channels=3``) or grayscale (1).
"""

from __future__ import annotations

from pathlib import Path

from bench.checks import regular_file
from bench.errors import BenchError
from bench.data.imagefolders import (
    IMAGENET_MEAN, IMAGENET_STD, ImageFiles, Preprocess, check_params, label_lookup, label_token, labelled,
    labels_by_name, list_images, make_normalization, need_root, read_label_file, read_lines, relpath, relpath_id,
    unlabeled_error)

LAYOUT = ("<root>/<class>/*.jpg (class folders), or any images with a label file dataset.params.labels "
          "('<relative path> <class index or name>' a line)")

class ImageFolder(ImageFiles):
    def __init__(self, root: str | None = None, labels: str | None = None, classes: str | None = None,
                 num_classes: int | None = None, resize=None, crop=None, mean=None, std=None,
                 channels: int | None = 3) -> None:
        check_params(root=root, labels=labels, classes=classes, num_classes=num_classes, resize=resize, crop=crop,
                     mean=mean, std=std, channels=channels)
        what = "imagefolder"
        root = need_root(root, what, LAYOUT)
        files = list_images(root)
        if not files:
            raise BenchError(f"dataset '{what}': no image files under {root}; expected {LAYOUT}")
        if classes:
            class_file = Path(classes).expanduser()
            regular_file(f"dataset '{what}': dataset.params.classes", class_file)
            if not class_file.is_file():
                raise BenchError(f"dataset '{what}': class list {class_file} does not exist (one class name a line)")
            names = [line.split()[0] for line in read_lines(class_file)]
        else:
            names = sorted({relpath(p, root).split("/")[0] for p in files if p.parent != root})
        index = {n: i for i, n in enumerate(names)}
        k = int(num_classes) if num_classes is not None else len(names)

        if labels:
            label_file = Path(labels).expanduser()
            regular_file(f"dataset '{what}': dataset.params.labels", label_file)
            if not label_file.is_file():
                raise BenchError(f"dataset '{what}': label file {label_file} does not exist; expected {LAYOUT}")
            table = labels_by_name(read_label_file(label_file),
                                   lambda t: label_token(t, index, k, f"label file {label_file}"), label_file)
            samples, missing = labelled(files, root, lambda p: label_lookup(table, p, root), relpath_id(root))
            how = f"add them to {label_file} or remove them"
        else:
            first = lambda p: relpath(p, root).split("/")[0]  # noqa: E731
            unknown = sorted({first(p) for p in files if p.parent != root and first(p) not in index})
            if unknown:
                raise BenchError(f"dataset '{what}': folder '{unknown[0]}' under {root} is not in the class list "
                                 f"{classes}")
            samples, missing = labelled(files, root, lambda p: None if p.parent == root else index[first(p)],
                                        relpath_id(root))
            how = f"put them in class folders or give a label file — expected {LAYOUT}"
        if missing:
            raise unlabeled_error(what, missing, root, how)
        if k < 1 or max(s[2] for s in samples) >= k:
            raise BenchError(f"dataset '{what}': num_classes={k} but labels go up to {max(s[2] for s in samples)}")
        preprocess = Preprocess.with_defaults(resize, crop, channels, what)
        norm = make_normalization(mean, std, IMAGENET_MEAN, IMAGENET_STD, preprocess.channels, what)
        super().__init__(samples, k, preprocess, norm, what)
        self.root, self.classes = root, names
