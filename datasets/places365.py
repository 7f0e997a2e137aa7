"""Places365-Standard from a local folder (``dataset=places365``), with its class list
``categories_places365.txt`` (365 lines ``/a/airfield 0``; class index = line, as the Places365 CNNs).

Layouts, ``root`` = ``dataset.params.root``:

1. flat validation images: ``<root>/Places365_val_00000001.jpg`` … (``val_256/`` or ``val_large/``) with the
   label file ``places365_val.txt`` (``<file name> <class index>`` a line);
2. class folders: ``<root>/a/airfield/*.jpg`` (``data_256/``, ``data_large/``; sub-categories nested, as
   ``<root>/a/apartment_building/outdoor/``) or ``<root>/airfield/*.jpg`` (the "easyformat" archives).

``categories_places365.txt`` and ``places365_val.txt`` are ``dataset.params.classes`` / ``labels``, or
found in ``<root>`` or its parent (the layout of ``filelist_places365-standard.tar`` and of torchvision's
``Places365`` root). Image ids are paths relative to ``root`` without extension; the order is by file name.
Preprocessing defaults to resize 256 → centre crop 224 with the ImageNet mean/std, or the model's ``input``.
"""

from __future__ import annotations

from pathlib import Path

from bench.checks import regular_file
from bench.errors import BenchError
from bench.data.imagefolders import (
    IMAGENET_MEAN, IMAGENET_STD, ImageFiles, Preprocess, canonical_class, check_params, class_list, find_class_file,
    first_existing, label_lookup, label_token, labelled, labels_by_name, list_images, make_normalization, need_root,
    read_label_file, relpath, relpath_id, unlabeled_error)


LAYOUT = ("<root>/Places365_val_00000001.jpg … with <root>/places365_val.txt ('<file name> <class index>' a line), "
          "or class folders <root>/a/airfield/*.jpg; with the class list <root>/categories_places365.txt "
          "('/a/airfield 0' a line; also looked for in the parent folder, or set dataset.params.classes=FILE)")


class Places365(ImageFiles):
    def __init__(self, root: str | None = None, labels: str | None = None, classes: str | None = None,
                 resize=None, crop=None, mean=None, std=None, channels: int | None = 3) -> None:
        check_params(root=root, labels=labels, classes=classes, resize=resize, crop=crop, mean=mean, std=std,
                     channels=channels)
        what = "places365"
        root = need_root(root, what, LAYOUT)
        class_file = find_class_file(classes, root, "categories_places365.txt", what, LAYOUT)
        names = class_list(class_file) if class_file else None
        index = {canonical_class(n): i for i, n in enumerate(names or [])}
        num_classes = len(names) if names else 365
        files = list_images(root)
        if not files:
            raise BenchError(f"dataset '{what}': no image files under {root}; expected {LAYOUT}")
        flat = any(p.parent == root for p in files)
        label_file = Path(labels).expanduser() if labels else (
            first_existing(d / "places365_val.txt" for d in (root, root.parent)) if flat else None)
        if labels:
            regular_file(f"dataset '{what}': dataset.params.labels", label_file)
        if labels and not label_file.is_file():
            raise BenchError(f"dataset '{what}': label file {label_file} does not exist; expected {LAYOUT}")

        if label_file is not None:
            where = f"label file {label_file}"
            table = labels_by_name(read_label_file(label_file),
                                   lambda t: label_token(t, index, num_classes, where), label_file)
            samples, missing = labelled(files, root, lambda p: label_lookup(table, p, root), relpath_id(root))
            how = f"add them to {label_file} or remove them"
        else:
            if names is None:
                raise BenchError(f"dataset '{what}': class folders need the class list categories_places365.txt "
                                 f"in {root} or {root.parent} (or set dataset.params.classes=FILE); expected {LAYOUT}")
            folder = lambda p: canonical_class(relpath(p.parent, root))  # noqa: E731
            unknown = sorted({relpath(p.parent, root) for p in files if p.parent != root and folder(p) not in index})
            if unknown:
                raise BenchError(f"dataset '{what}': folder '{unknown[0]}' under {root} is not a class of {class_file} "
                                 f"(expected names like {names[0]})")
            samples, missing = labelled(files, root, lambda p: None if p.parent == root else index[folder(p)],
                                        relpath_id(root))
            how = f"images directly in {root} need the label file places365_val.txt — expected {LAYOUT}"
        if missing:
            raise unlabeled_error(what, missing, root, how)
        preprocess = Preprocess.with_defaults(resize, crop, channels, what)
        norm = make_normalization(mean, std, IMAGENET_MEAN, IMAGENET_STD, preprocess.channels, what)
        super().__init__(samples, num_classes, preprocess, norm, what)
        self.root, self.classes = root, names
