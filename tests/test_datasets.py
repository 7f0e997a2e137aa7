"""Datasets read from local copies: layouts, class indices, fixed order, preprocessing, missing paths and
corrupt files. Every folder, label file and archive is built here, tiny, on the fly; nothing is downloaded."""

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.interfaces import Dataset, UnreadableImage
from bench.errors import BenchError
from bench import plugins
from bench.plugins import CONF_DIR, ROOT, load_class

WNIDS = [w for w in (ROOT / "datasets" / "imagenet_wnids.txt").read_text().splitlines() if w and w[0] != "#"]
SMALL = ["n_images=4", "steps=2", "repeats=1", "bootstrap=50", "batch_size=8", "device=cpu"]

from conftest import scaled


def jpeg(path: Path, seed: int, size=(24, 20), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def dataset(*overrides):
    from omegaconf import OmegaConf

    return plugins.build("datasets", OmegaConf.to_container(compose(*overrides).dataset, resolve=True), "dataset")


# ------------------------------------------------------------------------------------------- ImageNet

# (file number, class index): images 1…6 of the validation set, in two layouts
VAL = [(1, 65), (2, 970), (3, 230), (4, 809), (5, 516), (6, 0)]


def imagenet_folders(root: Path) -> Path:
    for k, c in VAL:
        jpeg(root / WNIDS[c] / f"ILSVRC2012_val_{k:08d}.JPEG", k)
    return root


def imagenet_flat(root: Path, label_style: str = "index") -> Path:
    for k, _ in VAL:
        jpeg(root / f"ILSVRC2012_val_{k:08d}.JPEG", k)
    if label_style == "index":
        (root / "val.txt").write_text("".join(f"ILSVRC2012_val_{k:08d}.JPEG {c}\n" for k, c in VAL))
    elif label_style == "wnid":
        (root / "val.txt").write_text("".join(f"ILSVRC2012_val_{k:08d}.JPEG {WNIDS[c]}\n" for k, c in VAL))
    elif label_style == "kaggle":
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(
            f"ILSVRC2012_val_{k:08d},{WNIDS[c]} 1 2 30 40 {WNIDS[c]} 3 4 10 12\n" for k, c in VAL[::-1]))
    return root


def test_imagenet_wnid_list_is_torchvisions_class_order():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    assert len(WNIDS) == 1000 == len(set(WNIDS)) == len(_IMAGENET_CATEGORIES) and WNIDS == sorted(WNIDS)
    assert (WNIDS[0], WNIDS[1], WNIDS[999]) == ("n01440764", "n01443537", "n15075141")  # tench, goldfish, toilet tissue


@pytest.mark.parametrize("layout", ["folders", "index", "wnid", "kaggle"])
def test_imagenet_layouts_give_the_same_images_labels_and_order(tmp_path, layout):
    root = imagenet_folders(tmp_path / "val") if layout == "folders" else imagenet_flat(tmp_path / "val", layout)
    ds = dataset("dataset=imagenet", f"dataset.params.root={root}")
    assert len(ds) == 6 and ds.num_classes == 1000 and ds.image_shape == (3, 224, 224)
    ids, labels = zip(*[(s[0], s[2]) for s in ds.samples])
    assert ids == tuple(f"ILSVRC2012_val_{k:08d}" for k, _ in VAL)  # the official order, whatever the layout
    assert labels == tuple(c for _, c in VAL)
    image_id, raw, label = ds.get(1)
    assert image_id == "ILSVRC2012_val_00000002" and label == 970
    assert raw.shape == (3, 224, 224) and raw.dtype == torch.float32 and 0 <= raw.min() and raw.max() <= 1
    assert ds.preprocessing == ("resize=256 center_crop=224 rgb mean=(0.485, 0.456, 0.406) "
                                "std=(0.229, 0.224, 0.225) raw_range=[0, 1]")


def test_imagenet_devkit_ground_truth_with_meta_mat(tmp_path):
    import scipy.io

    root = tmp_path / "val"
    for k, _ in VAL:
        jpeg(root / f"ILSVRC2012_val_{k:08d}.JPEG", k)
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    # the devkit numbers classes its own way (ILSVRC2012_ID); here ID i+1 is the class of sorted index 999 - i
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = np.array([(i + 1, WNIDS[999 - i], "w", "g", 0) for i in range(1000)] + [(1001, "n00001740", "entity", "g", 5)],
                       dtype=fields)
    scipy.io.savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{1000 - c}\n" for _, c in VAL))
    ds = dataset("dataset=imagenet", f"dataset.params.root={root}")
    assert [s[2] for s in ds.samples] == [c for _, c in VAL]


def test_imagenet_errors_say_what_to_put_where(tmp_path):
    with pytest.raises(BenchError, match=r"set dataset.params.root=/path/to/folder.*<root>/<wnid>/\*.JPEG"):
        dataset("dataset=imagenet")
    missing = tmp_path / "nowhere"
    with pytest.raises(BenchError, match=rf"folder {missing} does not exist; put the images there .*<wnid>/\*.JPEG"):
        dataset("dataset=imagenet", f"dataset.params.root={missing}")
    flat = tmp_path / "flat"
    jpeg(flat / "ILSVRC2012_val_00000001.JPEG", 0)
    with pytest.raises(BenchError, match=r"have no label .*need a label file \(val.txt, LOC_val_solution.csv\)"):
        dataset("dataset=imagenet", f"dataset.params.root={flat}")
    jpeg(tmp_path / "bad" / "cats" / "a.jpg", 0)
    with pytest.raises(BenchError, match="folder 'cats' .* is not an ILSVRC2012 class"):
        dataset("dataset=imagenet", f"dataset.params.root={tmp_path / 'bad'}")


def test_model_input_sets_the_preprocessing_and_dataset_params_win(tmp_path):
    root = imagenet_folders(tmp_path / "val")
    ds = dataset("dataset=imagenet", f"dataset.params.root={root}", "model=resnet18", "model.input.resize=40",
                 "model.input.crop=32", "model.input.mean=[0.5,0.5,0.5]")
    assert ds.image_shape == (3, 32, 32) and ds.normalization.mean == (0.5, 0.5, 0.5)
    assert ds.normalization.std == (0.229, 0.224, 0.225) and ds.preprocessing.startswith("resize=40 center_crop=32 rgb")
    assert ds.get(0)[1].shape == (3, 32, 32)
    ds = dataset("dataset=imagenet", f"dataset.params.root={root}", "model=resnet18", "dataset.params.crop=[16,24]")
    assert ds.image_shape == (3, 16, 24) and ds.get(0)[1].shape == (3, 16, 24)


def test_corrupt_and_truncated_files_are_unreadable_not_fatal(tmp_path):
    root = imagenet_folders(tmp_path / "val")
    (root / WNIDS[0] / "ILSVRC2012_val_00000007.JPEG").write_bytes(b"not an image")
    good = jpeg(tmp_path / "x.jpg", 9, size=(64, 64)).read_bytes()
    (root / WNIDS[0] / "ILSVRC2012_val_00000008.JPEG").write_bytes(good[: len(good) // 2])
    ds = dataset("dataset=imagenet", f"dataset.params.root={root}", "dataset.params.resize=32", "dataset.params.crop=32")
    assert len(ds) == 8
    for i in (6, 7):
        with pytest.raises(UnreadableImage) as info:
            ds.get(i)
        assert info.value.image_id == f"ILSVRC2012_val_{i + 1:08d}" and "JPEG" in info.value.reason
    assert ds.get(5)[0] == "ILSVRC2012_val_00000006"


# ---------------------------------------------------------------------------------- Places365, SUN397

def test_places365_flat_validation_and_class_folders(tmp_path):
    categories = ["/a/airfield", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    (tmp_path / "categories_places365.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(categories)))
    flat = tmp_path / "val_256"
    for k, c in [(2, 1), (1, 2), (3, 0)]:
        jpeg(flat / f"Places365_val_{k:08d}.jpg", k)
    (tmp_path / "places365_val.txt").write_text("Places365_val_00000001.jpg 2\nPlaces365_val_00000002.jpg 1\n"
                                                "Places365_val_00000003.jpg 0\n")
    ds = dataset("dataset=places365", f"dataset.params.root={flat}")
    assert [s[0] for s in ds.samples] == ["Places365_val_00000001", "Places365_val_00000002", "Places365_val_00000003"]
    assert [s[2] for s in ds.samples] == [2, 1, 0] and ds.num_classes == 3

    data = tmp_path / "data_256"  # the training layout: letter / class [/ sub-category] / file
    jpeg(data / "a" / "apartment_building" / "outdoor" / "00000001.jpg", 1)
    jpeg(data / "b" / "bakery" / "shop" / "00000001.jpg", 2)
    jpeg(data / "a" / "airfield" / "00000002.jpg", 3)
    ds = dataset("dataset=places365", f"dataset.params.root={data}")
    assert [(s[0], s[2]) for s in ds.samples] == [("a/apartment_building/outdoor/00000001", 1),
                                                  ("b/bakery/shop/00000001", 2), ("a/airfield/00000002", 0)]
    easy = tmp_path / "easy"  # the "easyformat" archives: class folders without the letter
    jpeg(easy / "apartment_building-outdoor" / "1.jpg", 1)
    ds = dataset("dataset=places365", f"dataset.params.root={easy}", f"dataset.params.classes={tmp_path / 'categories_places365.txt'}")
    assert ds.samples[0][2] == 1


def test_sun397_class_list_and_split_file(tmp_path):
    root = tmp_path / "SUN397"
    (root).mkdir()
    (root / "ClassName.txt").write_text("/a/abbey\n/a/apartment_building/outdoor\n/z/zoo\n")
    jpeg(root / "z" / "zoo" / "sun_aaa.jpg", 0)
    jpeg(root / "a" / "abbey" / "sun_ccc.jpg", 1)
    jpeg(root / "a" / "apartment_building" / "outdoor" / "sun_bbb.jpg", 2)
    ds = dataset("dataset=sun397", f"dataset.params.root={root}")
    assert [(s[0], s[2]) for s in ds.samples] == [("z/zoo/sun_aaa", 2), ("a/apartment_building/outdoor/sun_bbb", 1),
                                                  ("a/abbey/sun_ccc", 0)]
    (tmp_path / "Testing_01.txt").write_text("/a/abbey/sun_ccc.jpg\n")
    ds = dataset("dataset=sun397", f"dataset.params.root={root}", f"dataset.params.split={tmp_path / 'Testing_01.txt'}")
    assert [s[0] for s in ds.samples] == ["a/abbey/sun_ccc"] and ds.num_classes == 3
    (root / "ClassName.txt").unlink()
    with pytest.raises(BenchError, match=rf"no class list; put ClassName.txt in {root}"):
        dataset("dataset=sun397", f"dataset.params.root={root}")


def test_imagefolder_classes_labels_and_grayscale(tmp_path):
    root = tmp_path / "imgs"
    jpeg(root / "dog" / "b.png", 0)
    jpeg(root / "cat" / "sub" / "a.png", 1)
    ds = dataset("dataset=imagefolder", f"dataset.params.root={root}", "dataset.params.resize=[8,12]")
    assert [(s[0], s[2]) for s in ds.samples] == [("cat/sub/a", 0), ("dog/b", 1)] and ds.image_shape == (3, 8, 12)
    (tmp_path / "classes.txt").write_text("dog\ncat\nbird\n")
    ds = dataset("dataset=imagefolder", f"dataset.params.root={root}", f"dataset.params.classes={tmp_path / 'classes.txt'}",
                 "dataset.params.channels=1", "dataset.params.crop=16")
    assert [s[2] for s in ds.samples] == [1, 0] and ds.num_classes == 3 and ds.get(0)[1].shape == (1, 16, 16)
    assert ds.normalization.mean == (pytest.approx(0.449),)
    (tmp_path / "labels.csv").write_text("cat/sub/a.png,2\nb.png,dog\n")
    ds = dataset("dataset=imagefolder", f"dataset.params.root={root}", f"dataset.params.classes={tmp_path / 'classes.txt'}",
                 f"dataset.params.labels={tmp_path / 'labels.csv'}")
    assert [s[2] for s in ds.samples] == [2, 0]


# ------------------------------------------------------------------------------- torchvision loaders

def cifar10_root(tmp: Path, n: int = 6) -> Path:
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return folder.parent


def mnist_root(tmp: Path, n: int = 5) -> Path:
    raw = tmp / "mnistroot" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("t10k", "train"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(range(n)))
    return raw.parent.parent


def test_cifar10_and_mnist_through_torchvision_from_a_local_root(tmp_path):
    ds = dataset("dataset=cifar10", f"dataset.params.root={cifar10_root(tmp_path)}")
    assert len(ds) == 6 and ds.image_shape == (3, 32, 32) and ds.num_classes == 10
    image_id, raw, label = ds.get(4)
    assert image_id == "cifar10-test-00004" and label == 4 and raw.shape == (3, 32, 32)
    x, y = ds.train_split()
    assert x.shape == (30, 3, 32, 32) and y.tolist() == list(range(6)) * 5
    assert ds.preprocessing.startswith("native=32x32 rgb mean=(0.4914, 0.4822, 0.4465)")
    big = dataset("dataset=cifar10", f"dataset.params.root={tmp_path / 'cifar'}", "model=resnet18",
                  "model.input.resize=40", "model.input.crop=36")
    assert big.get(0)[1].shape == (3, 36, 36) and big.normalization.mean == (0.485, 0.456, 0.406)

    ds = dataset("dataset=mnist", f"dataset.params.root={mnist_root(tmp_path)}")
    image_id, raw, label = ds.get(3)
    assert image_id == "mnist-t10k-00003" and label == 3 and raw.shape == (1, 28, 28) and len(ds) == 5
    assert ds.train_split()[0].shape == (5, 1, 28, 28)
    assert dataset("dataset=mnist", f"dataset.params.root={tmp_path / 'mnistroot'}",
                   "dataset.params.channels=3").get(0)[1].shape == (3, 28, 28)


def test_torchvision_loaders_name_the_missing_files(tmp_path):
    with pytest.raises(BenchError, match=r"dataset 'cifar10' needs .*cifar-10-batches-py/test_batch \(missing\)"):
        dataset("dataset=cifar10", f"dataset.params.root={tmp_path}")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(BenchError, match=r"MNIST/raw/t10k-images-idx3-ubyte \(missing\) \(unpack .*\.gz\)"):
        dataset("dataset=mnist", f"dataset.params.root={tmp_path}")


def test_every_dataset_declares_preprocessing_and_normalisation():
    for name in ("mnist_embedded", "mnist_twodigit"):
        ds = dataset(f"dataset={name}")
        assert isinstance(ds.preprocessing, str) and "mean=(0.1307,)" in ds.preprocessing
        assert ds.normalization.raw_range == (0.0, 1.0)
    for path in (ROOT / "datasets").glob("*.py"):
        cls = load_class("datasets", path.stem)
        assert issubclass(cls, Dataset)


# --------------------------------------------------------------------------------- ground-truth dataset

def test_twodigit_canvas_label_and_masks():
    ds = dataset("dataset=mnist_twodigit", "dataset.params.n_test=50", "dataset.params.n_train=40")
    assert ds.image_shape == (1, 28, 56) and ds.num_classes == 4 and len(ds) == 50
    mnist = load_class("datasets", "mnist_embedded")()
    for i in range(10):
        image_id, raw, label = ds.get(i)
        mask, other = ds.get_mask(i), ds.get_distractor_mask(i)
        assert raw.shape == (1, 28, 56) and 0 <= label <= 3 and mask.sum() == other.sum() == 28 * 28
        assert not (mask & other).any()
        target = raw[0][mask].view(28, 28)
        # the target cell holds an embedded MNIST test digit of the label's class, the other a digit 4–9
        match = [j for j in mnist.test_idx if np.array_equal(mnist.images[j], target.numpy())]
        assert match and int(mnist.labels[match[0]]) == label
        distractor = raw[0][other].view(28, 28).numpy()
        match = [j for j in mnist.test_idx if np.array_equal(mnist.images[j], distractor)]
        assert match and int(mnist.labels[match[0]]) >= 4
    box = dataset("dataset=mnist_twodigit", "dataset.params.n_test=50", "dataset.params.region=box",
                  "dataset.params.grid=[2,2]")
    assert box.image_shape == (1, 56, 56) and 0 < box.get_mask(0).sum() < 28 * 28
    x, y = box.train_split()
    assert x.shape == (4000, 1, 56, 56) and set(y.tolist()) == {0, 1, 2, 3}


# ----------------------------------------------------------------------------------------------- CLI

def bench_cli(tmp_path, cache_dir, *overrides, env=None):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bench", f"hydra.run.dir={run_dir}", *overrides], cwd=tmp_path,
                          capture_output=True, text=True, timeout=scaled(300),
                          env={**os.environ, "BENCH_CACHE_DIR": str(cache_dir), **(env or {})})
    return proc, run_dir


def test_cli_imagenet_with_a_corrupt_file_and_a_missing_root(tmp_path, cache_dir):
    root = imagenet_folders(tmp_path / "val")
    (root / WNIDS[230] / "ILSVRC2012_val_00000003.JPEG").write_bytes(b"\xff\xd8 broken")
    proc, run_dir = bench_cli(tmp_path, cache_dir, "dataset=imagenet", f"dataset.params.root={root}", "model=alexnet",
                              "model.params.weights=random", "model.input.resize=64", "model.input.crop=64",
                              "method=lrp_eps", "patch=16", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert "1 image(s) skipped (1× unreadable image" in proc.stdout + proc.stderr
    skipped = pd.read_csv(run_dir / "skipped.csv")
    assert skipped.image_id.tolist() == ["ILSVRC2012_val_00000003"]
    summary = pd.read_csv(run_dir / "summary.csv")
    assert (summary.n_images == 3).all() and (summary.dataset == "imagenet").all() and (summary.model == "alexnet").all()

    proc, _ = bench_cli(tmp_path, cache_dir, "dataset=imagenet", f"dataset.params.root={tmp_path / 'missing'}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: dataset 'imagenet': folder {tmp_path / 'missing'} does not exist; put the "
                               f"images there — <root>/<wnid>/*.JPEG")
