"""Nothing from data or configuration runs code or reads what it should not (DEFINITIONS-free checks of
bench/models/hub.py, bench/models/user.py, bench/run/slurm.py, bench/checks.py and the file readers): a Hugging
Face folder with its own code, class paths naming arbitrary functions, Slurm settings carrying script lines,
special files, ambiguous heatmap files and an unwritable cache are each refused in one line, before any work."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from bench.errors import BenchError


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


# ------------------------------------------------------------------------------------------ code

def test_a_hugging_face_folder_with_its_own_code_is_refused_unrun(tmp_path):
    pytest.importorskip("transformers")
    from bench.models.hub import load_huggingface

    marker = tmp_path / "ran"
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "modeling_evil.EvilConfig",
                                           "AutoModelForImageClassification": "modeling_evil.EvilModel"}}))
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(BenchError, match="its own Python code") as err:
        load_huggingface(None, str(folder))
    one_line(err)
    assert not marker.exists()
    # no auto_map, but a model type transformers does not have: the same (only remote code could define it)
    (folder / "config.json").write_text(json.dumps({"model_type": "evil"}))
    with pytest.raises(BenchError, match="does not have"):
        load_huggingface(None, str(folder))
    assert not marker.exists()


@pytest.mark.parametrize("target", ["subprocess.getoutput", "os.system", "builtins.eval", "importlib.import_module",
                                    "shutil.rmtree", "torch.load", "numpy.load", "pickle.loads", "sys.exit"])
def test_a_class_path_is_only_a_module_class_or_a_users_function(target, tmp_path):
    from bench.models.user import load_user

    with pytest.raises(BenchError, match="not a torch.nn.Module class nor a function in a file of your own") as err:
        load_user(None, _target_=target, checkpoint="random", cmd="touch " + str(tmp_path / "ran"))
    one_line(err)
    assert not (tmp_path / "ran").exists()


def test_a_users_own_classes_and_factories_still_load(tmp_path, monkeypatch):
    from bench.models.user import load_user

    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n    def __init__(self, width=3):\n        super().__init__(); self.l = nn.Linear(2, width)\n"
        "def build(width=3):\n    return Net(width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_user(None, _target_="my_models.Net", checkpoint="random", width=4).l.out_features == 4
    assert load_user(None, _target_="my_models.build", checkpoint="random").l.out_features == 3
    assert isinstance(load_user(None, _target_="torch.nn.Linear", checkpoint="random", in_features=2,
                                out_features=1), torch.nn.Linear)


# ------------------------------------------------------------------------------------------ Slurm

def _slurm_params():
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(OmegaConf.structured(SlurmQueueConf))
    params.update(partition="gpu", timeout_min=240, gpus_per_node=1, name="bench", additional_parameters={},
                  setup=["module load cuda/12.4", "source .venv/bin/activate"], constraint="a100|h100")
    return params


@pytest.mark.parametrize("key,value,match", [
    ("partition", "gpu\n#SBATCH --wrap=rm -rf ~", "partition"),
    ("partition", "gpu;touch x", "partition"),
    ("account", "x$(id)", "account"),
    ("qos", "normal`id`", "qos"),
    ("comment", "two words", "comment"),
    ("setup", ["module load cuda", "echo a\necho b"], r"setup\[1\]"),
    ("additional_parameters", {"mail-user": "a@b.org\n#SBATCH --x"}, "additional_parameters.mail-user"),
    ("additional_parameters", {"x\ny": "1"}, "additional_parameters"),
    ("gres", ["gpu:1"], "gres"),
])
def test_slurm_settings_never_carry_script_lines(key, value, match):
    from bench.run.slurm import check_settings

    check_settings(_slurm_params())  # the usual settings pass
    with pytest.raises(BenchError, match=match) as err:
        check_settings({**_slurm_params(), key: value})
    one_line(err)


# ------------------------------------------------------------------------------------------ files

def test_special_files_are_refused_before_reading(tmp_path):
    from bench.data.heatmap_files import read_heatmaps
    from bench.models.weights import _need_file

    fifo = tmp_path / "heatmaps.npz"
    os.mkfifo(fifo)
    with pytest.raises(BenchError, match="is a FIFO") as err:
        read_heatmaps(str(fifo), ["a"], (1, 4, 4), "x")  # would block forever if it were opened
    one_line(err)
    folder = tmp_path / "npy"
    folder.mkdir()
    os.mkfifo(folder / "a.npy")
    with pytest.raises(BenchError, match="is a FIFO"):
        read_heatmaps(str(folder), ["a"], (1, 4, 4), "x")
    for path in (fifo, "/proc/self/environ", "/dev/zero"):
        with pytest.raises(BenchError, match="FIFO|system file|device"):
            _need_file(__import__("pathlib").Path(path), "model 'user': checkpoint", "give a file")


def test_a_fifo_among_images_is_skipped_as_unreadable_not_read(tmp_path):
    from PIL import Image

    from bench import plugins

    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    Image.new("L", (8, 8), 10).save(root / "a" / "0.png")
    os.mkfifo(root / "a" / "1.png")
    ds = plugins.build("datasets", {"name": "imagefolder", "plugin": "imagefolder",
                                    "params": {"root": str(root), "resize": 8, "crop": 8, "channels": 1,
                                               "mean": [0.5], "std": [0.5]}}, "dataset")
    from bench.interfaces import UnreadableImage

    got = []
    for i in range(len(ds)):
        try:
            got.append(ds.get(i)[0])
        except UnreadableImage as exc:
            assert "FIFO" in exc.reason
    assert got == ["a/0"]


def test_different_heatmaps_for_one_image_are_refused(tmp_path):
    from bench.data.heatmap_files import read_heatmaps

    h = np.arange(16, dtype=np.float32)
    rows = [dict(image_id="a", height=4, width=4, heatmap=h), dict(image_id="a", height=4, width=4, heatmap=h),
            dict(image_id="b", height=4, width=4, heatmap=h)]
    pd.DataFrame(rows).to_parquet(tmp_path / "same.parquet")
    # the same heatmap twice (one method's runs at two patch sizes): taken once
    assert set(read_heatmaps(str(tmp_path / "same.parquet"), ["a", "b"], (1, 4, 4), "x")) == {"a", "b"}
    rows[1] = dict(image_id="a", height=4, width=4, heatmap=h[::-1].copy())
    pd.DataFrame(rows).to_parquet(tmp_path / "two.parquet")
    with pytest.raises(BenchError, match="2 different heatmaps for image 'a'") as err:
        read_heatmaps(str(tmp_path / "two.parquet"), ["a", "b"], (1, 4, 4), "x")
    assert "two.parquet" in one_line(err)


def test_an_unwritable_cache_is_found_before_training(tmp_path, monkeypatch):
    from bench.models import embedded
    from bench.run.config import compose
    from bench import plugins

    conf = compose([])
    ds = plugins.build("datasets", conf["dataset"], "dataset")
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(embedded, "_train", lambda *a, **k: pytest.fail("trained before the cache was checked"))
    with pytest.raises(BenchError, match="cache_dir=.* is not a writable folder") as err:
        embedded.load_embedded_cnn(ds, str(tmp_path / "file" / "cache"), epochs=1)
    one_line(err)


def test_duplicate_image_ids_are_refused():
    from bench.data.imagefolders import ImageFiles, Preprocess
    from bench.interfaces import Normalization

    with pytest.raises(BenchError, match="image id 'x' occurs twice") as err:
        ImageFiles([("x", "a/x.png", 0), ("x", "b/x.jpg", 1)], 2, Preprocess.make(8, 8, 1, "t"), Normalization(),
                   "t")
    one_line(err)
    import bench

    with pytest.raises(BenchError, match="image_ids must be 2 unique ids"):
        bench.evaluate_explanations(torch.nn.Flatten(), torch.rand(2, 1, 4, 4), image_ids=["a", "a"], mean=0, std=1,
                                    method="sensitivity")
