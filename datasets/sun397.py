"""SUN397 from a local folder (``dataset=sun397``), with its class list ``ClassName.txt`` (397 lines
``/a/abbey``; class index = line).

Layout, ``root`` = ``dataset.params.root``: the extracted ``SUN397.tar.gz`` (torchvision's ``<root>/SUN397``):
``<root>/ClassName.txt`` and ``<root>/a/abbey/sun_aaalbzqrimafwbiv.jpg`` (sub-categories nested, as
``<root>/a/apartment_building/outdoor/``). ``ClassName.txt`` is ``dataset.params.classes`` or found in
``<root>`` or its parent. ``dataset.params.split`` may name a partition file of the official splits
(``Testing_01.txt``: ``/a/abbey/sun_aaalbzqrimafwbiv.jpg`` a line) to keep only its images.

Image ids are paths relative to ``root`` without extension; the order is by file name (SUN397's file names
are random, so the first N images mix the classes).
Preprocessing defaults to resize 256 → centre crop 224 with the ImageNet mean/std, or the model's ``input``.
"""

from __future__ import annotations

from pathlib import Path

from bench.checks import regular_file
from bench.errors import BenchError
from bench.data.imagefolders import (
    IMAGENET_MEAN, IMAGENET_STD, ImageFiles, Preprocess, canonical_class, check_params, class_list, find_class_file,
    labelled, list_images, make_normalization, need_root, read_lines, relpath, relpath_id, unlabeled_error)


LAYOUT = ("<root>/ClassName.txt ('/a/abbey' a line, 397 classes) and <root>/a/abbey/sun_*.jpg "
          "(the extracted SUN397.tar.gz)")


class SUN397(ImageFiles):
    def __init__(self, root: str | None = None, classes: str | None = None, split: str | None = None,
                 resize=None, crop=None, mean=None, std=None, channels: int | None = 3) -> None:
        check_params(root=root, classes=classes, split=split, resize=resize, crop=crop, mean=mean, std=std,
                     channels=channels)
        what = "sun397"
        root = need_root(root, what, LAYOUT)
        class_file = find_class_file(classes, root, "ClassName.txt", what, LAYOUT)
        if class_file is None:
            raise BenchError(f"dataset '{what}': no class list; put ClassName.txt in {root} (or set "
                             f"dataset.params.classes=FILE); expected {LAYOUT}")
        names = class_list(class_file)
        index = {canonical_class(n): i for i, n in enumerate(names)}
        files = list_images(root)
        if split:
            split_file = Path(split).expanduser()
            regular_file(f"dataset '{what}': dataset.params.split", split_file)
            if not split_file.is_file():
                raise BenchError(f"dataset '{what}': split file {split_file} does not exist (e.g. Testing_01.txt of "
                                 f"the official partitions, '/a/abbey/sun_….jpg' a line)")
            keep = {line.strip("/") for line in read_lines(split_file)}
            files = [p for p in files if relpath(p, root) in keep]
        if not files:
            raise BenchError(f"dataset '{what}': no image files under {root}"
                             f"{' listed in ' + str(split) if split else ''}; expected {LAYOUT}")
        folder = lambda p: canonical_class(relpath(p.parent, root))  # noqa: E731
        unknown = sorted({relpath(p.parent, root) for p in files if p.parent != root and folder(p) not in index})
        if unknown:
            raise BenchError(f"dataset '{what}': folder '{unknown[0]}' under {root} is not a class of {class_file} "
                             f"(expected names like {names[0]})")
        samples, missing = labelled(files, root, lambda p: None if p.parent == root else index[folder(p)],
                                    relpath_id(root))
        if missing:
            raise unlabeled_error(what, missing, root, f"SUN397 images belong in class folders — expected {LAYOUT}")
        preprocess = Preprocess.with_defaults(resize, crop, channels, what)
        norm = make_normalization(mean, std, IMAGENET_MEAN, IMAGENET_STD, preprocess.channels, what)
        super().__init__(samples, len(names), preprocess, norm, what)
        self.root, self.classes = root, names
