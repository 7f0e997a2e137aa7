"""ILSVRC2012 validation images from a local folder (``dataset=imagenet``), labelled with the 1,000 class
indices of torchvision's ImageNet models (the sorted WordNet ids of ``datasets/imagenet_wnids.txt``).

Layouts, ``root`` = ``dataset.params.root``:

1. class-per-folder: ``<root>/<wnid>/<file>.JPEG``, e.g. ``<root>/n01440764/ILSVRC2012_val_00000293.JPEG``
   (torchvision's ``ImageNet(split='val')`` folder, or the usual valprep.sh result).
2. flat: ``<root>/ILSVRC2012_val_00000001.JPEG`` … (``ILSVRC2012_img_val.tar`` extracted) with a label file,
   ``dataset.params.labels`` or the first found in ``<root>`` or its parent:
   - ``val.txt``: ``<file name> <class index 0–999 or wnid>`` a line (Caffe's ilsvrc12 ``val.txt``);
   - ``LOC_val_solution.csv`` (Kaggle): ``ImageId,PredictionString``, the wnid first in the string;
   - ``ILSVRC2012_validation_ground_truth.txt`` of the devkit (one ILSVRC2012_ID a line, image k on line k),
     with the devkit's ``meta.mat`` beside it (``ILSVRC2012_devkit_t12/data/``).

Image ids are file stems (``ILSVRC2012_val_00000001``) and the order is by file name — the official
validation order in both layouts, so ``n_images=5040`` are the paper's first 5,040 images.
Preprocessing defaults to resize 256 → centre crop 224 with the ImageNet mean/std, or the model's ``input``.
"""

from __future__ import annotations

from pathlib import Path

from bench.checks import regular_file
from bench.errors import BenchError
from bench.data.imagefolders import (
    IMAGENET_MEAN, IMAGENET_STD, ImageFiles, Preprocess, check_params, devkit_wnids, first_existing, label_lookup,
    label_token, labelled, labels_by_name, list_images, make_normalization, need_root, read_label_file, read_lines,
    relpath, stem_id, unlabeled_error)


WNIDS_FILE = Path(__file__).resolve().parent / "imagenet_wnids.txt"
LABEL_FILES = ("val.txt", "LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt",
               "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
LAYOUT = ("<root>/<wnid>/*.JPEG (class-per-folder, e.g. <root>/n01440764/ILSVRC2012_val_00000293.JPEG) or flat "
          "<root>/ILSVRC2012_val_00000001.JPEG … with a label file <root>/val.txt ('<file name> <class index 0–999 "
          "or wnid>' a line), <root>/LOC_val_solution.csv or the devkit's ILSVRC2012_validation_ground_truth.txt "
          "+ meta.mat (or set dataset.params.labels=FILE)")


class ImageNetVal(ImageFiles):
    def __init__(self, root: str | None = None, labels: str | None = None, classes: str | None = None,
                 resize=None, crop=None, mean=None, std=None, channels: int | None = 3) -> None:
        check_params(root=root, labels=labels, classes=classes, resize=resize, crop=crop, mean=mean, std=std,
                     channels=channels)
        what = "imagenet"
        root = need_root(root, what, LAYOUT)
        wnids = read_lines(Path(classes).expanduser() if classes else WNIDS_FILE)
        index = {w: i for i, w in enumerate(wnids)}
        files = list_images(root)
        if not files:
            raise BenchError(f"dataset '{what}': no image files under {root}; expected {LAYOUT}")
        flat = any(p.parent == root for p in files)
        label_file = Path(labels).expanduser() if labels else (
            first_existing(d / f for d in (root, root.parent) for f in LABEL_FILES) if flat else None)
        if labels:
            regular_file(f"dataset '{what}': dataset.params.labels", label_file)
        if labels and not label_file.is_file():
            raise BenchError(f"dataset '{what}': label file {label_file} does not exist; expected {LAYOUT}")

        if label_file is not None:
            table = self._label_table(label_file, index)
            samples, missing = labelled(files, root, lambda p: label_lookup(table, p, root), stem_id)
            how = f"add them to {label_file} or remove them"
        else:
            unknown = sorted({relpath(p, root).split("/")[0] for p in files
                              if p.parent != root and relpath(p, root).split("/")[0] not in index})
            if unknown:
                raise BenchError(f"dataset '{what}': folder '{unknown[0]}' under {root} is not an ILSVRC2012 class "
                                 f"(a WordNet id such as n01440764); expected {LAYOUT}")
            samples, missing = labelled(files, root, lambda p: None if p.parent == root else
                                        index[relpath(p, root).split("/")[0]], stem_id)
            how = f"images directly in {root} need a label file (val.txt, LOC_val_solution.csv) — expected {LAYOUT}"
        if missing:
            raise unlabeled_error(what, missing, root, how)
        preprocess = Preprocess.with_defaults(resize, crop, channels, what)
        norm = make_normalization(mean, std, IMAGENET_MEAN, IMAGENET_STD, preprocess.channels, what)
        super().__init__(samples, len(wnids), preprocess, norm, what)
        self.root, self.label_file = root, label_file

    @staticmethod
    def _label_table(path: Path, index: dict[str, int]) -> dict[str, int]:
        rows = read_label_file(path)
        where = f"label file {path}"
        if rows and rows[0][0] == "ImageId":  # Kaggle's LOC_val_solution.csv
            rows = [[r[0], r[1]] for r in rows[1:]]
        elif rows and all(len(r) == 1 and r[0].isdigit() for r in rows):  # the devkit's ground truth
            wnid_of = devkit_wnids(path.parent / "meta.mat")
            rows = [[f"ILSVRC2012_val_{k + 1:08d}", wnid_of.get(int(r[0]), f"unknown-ILSVRC2012_ID-{r[0]}")]
                    for k, r in enumerate(rows)]
        return labels_by_name(rows, lambda token: label_token(token, index, len(index), where), path)
