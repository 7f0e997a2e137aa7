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
        "class Net(nn.Module):\n    def __init__(self, width=3):\n"
        "        super().__init__(); self.l = nn.Linear(2, width)\n"
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
    with pytest.raises(BenchError, match="cannot use .*cache: Not a directory; cache_dir must be a folder") as err:
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


# ------------------------------------------------------------------------------------------ more of each class

def test_a_known_model_type_with_auto_map_is_refused_too_and_transformers_never_trusts_code(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    from bench.models.hub import load_huggingface

    marker = tmp_path / "ran"
    folder = tmp_path / "vit-with-code"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "vit", "auto_map": {"AutoModelForImageClassification": "modeling_x.Model"}}))
    (folder / "modeling_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (folder / "model.safetensors").write_bytes(b"")
    seen = {}

    def fake(path, **kwargs):  # what transformers would be asked: recorded, nothing loaded
        seen.update(kwargs)
        return torch.nn.Identity()

    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_pretrained", fake)
    with pytest.raises(BenchError, match="auto_map in config.json") as err:
        load_huggingface(None, str(folder))
    one_line(err)
    assert not marker.exists() and not seen  # refused before transformers was called at all
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    load_huggingface(None, str(folder))
    assert seen["trust_remote_code"] is False and seen["local_files_only"] is True


def test_hugging_face_files_that_are_special_or_outside_the_folder_are_refused_unread(tmp_path):
    pytest.importorskip("transformers")
    from bench.models.hub import hf_input, load_huggingface

    folder = tmp_path / "hf"
    folder.mkdir()
    os.mkfifo(folder / "config.json")
    with pytest.raises(BenchError, match="model.params.path: .*config.json is a FIFO") as err:
        load_huggingface(None, str(folder))  # would block forever if config.json were opened
    one_line(err)
    os.mkfifo(folder / "preprocessor_config.json")
    with pytest.raises(BenchError, match="preprocessor_config.json is a FIFO"):
        hf_input(str(folder), "mean")  # (the resolver of model.input, run when the config is composed)
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    with pytest.raises(BenchError, match="shard '../../etc/passwd' outside the folder") as err:
        load_huggingface(None, str(folder))
    one_line(err)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "shard-1.safetensors"}}))
    os.mkfifo(folder / "shard-1.safetensors")
    with pytest.raises(BenchError, match="shard-1.safetensors is a FIFO"):
        load_huggingface(None, str(folder))


class _Touch:
    """Unpickled, it would create the marker file: the proof that a pickle ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return Path.touch, (Path(self.path),)


def test_timm_is_never_handed_a_file_of_its_own_to_load(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import pickle

    from bench.models.hub import load_timm

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": _Touch(str(marker))}))
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm was called"))
    for key, value in (("checkpoint_path", str(evil)), ("pretrained_cfg_overlay", {"file": str(evil)}),
                       ("pretrained", True)):
        with pytest.raises(BenchError, match=f"model.params.{key} is not taken.*model.params.weights=FILE") as err:
            load_timm(None, arch="resnet18", weights="random", **{key: value})
        one_line(err)
    assert not marker.exists()


def test_the_suites_own_functions_and_reexported_library_functions_are_not_model_factories(tmp_path, monkeypatch):
    from bench.models.user import load_user

    made = tmp_path / "made"
    with pytest.raises(BenchError, match="not a torch.nn.Module class nor a function in a file of your own") as err:
        load_user(None, _target_="bench.checks.writable_dir", checkpoint="random", name="x", path=str(made))
    one_line(err)
    assert not made.exists()  # never called
    (tmp_path / "reexports.py").write_text("from subprocess import getoutput\nfrom os import system\n"
                                           "from shutil import rmtree\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("getoutput", "system", "rmtree"):  # a user's module, but the function is the library's
        with pytest.raises(BenchError, match="not a torch.nn.Module class"):
            load_user(None, _target_=f"reexports.{name}", checkpoint="random", cmd=f"touch {tmp_path / 'ran'}")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("key,value,match", [
    ("partition", "gpu\n", "partition"),  # a final newline: re.match's $ would have let it pass
    ("constraint", "a100\n", "constraint"),
    ("additional_parameters", {"mail-user\n": "a@b.org"}, "additional_parameters"),
    ("additional_parameters", {"comment": "x\r#SBATCH --y"}, "additional_parameters.comment"),
    ("srun_args", ["--export=ALL,X=$(id)"], r"srun_args\[0\]"),
    ("name", "bench\x00", "name"),
    ("submitit_folder", "/tmp/x\n#SBATCH --wrap=id", "submitit_folder"),
    ("setup", ["module load cuda\r"], r"setup\[0\]"),
    ("timeout_min", -1, "timeout_min must be an integer ≥ 1"),
    ("nodes", True, "nodes must be an integer"),
    ("cpus_per_task", 2.5, "cpus_per_task must be an integer"),
    ("mem_gb", float("inf"), "mem_gb must be a number"),
    ("gpus_per_node", "1\n#SBATCH --x", "gpus_per_node must be an integer"),
])
def test_slurm_settings_are_checked_whole(key, value, match):
    from bench.run.slurm import check_settings

    with pytest.raises(BenchError, match=match) as err:
        check_settings({**_slurm_params(), key: value})
    one_line(err)


def test_the_script_of_checked_settings_has_one_sbatch_line_per_setting(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    from bench.run.slurm import check_settings

    params = dict(partition="gpu", account="proj-1", qos="normal", gres="gpu:a100:2", constraint="a100|h100",
                  exclude="node[01-04]", comment="bench", mem="16GB")
    check_settings(params)
    text = _make_sbatch_string("true", tmp_path, **params)
    sbatch = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
    assert all(any(ln.startswith(f"#SBATCH --{k}=") for ln in sbatch) for k in params)
    assert not any(ln.startswith("#SBATCH") and "=" not in ln for ln in text.splitlines())


def test_special_dataset_files_are_refused_before_reading(tmp_path):
    from PIL import Image

    from bench import plugins

    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    Image.new("L", (8, 8), 10).save(root / "a" / "0.png")
    os.mkfifo(tmp_path / "labels.txt")
    os.mkfifo(tmp_path / "classes.txt")
    base = {"root": str(root), "resize": 8, "crop": 8, "channels": 1, "mean": [0.5], "std": [0.5]}
    for key in ("labels", "classes"):
        with pytest.raises(BenchError, match=f"dataset.params.{key}: .*{key}.txt is a FIFO") as err:
            plugins.build("datasets", {"name": "imagefolder", "plugin": "imagefolder",
                                       "params": {**base, key: str(tmp_path / f"{key}.txt")}}, "dataset")
        one_line(err)
    with pytest.raises(BenchError, match=r"root: /proc/self lies under /proc \(a system file.*; give the folder"):
        plugins.build("datasets", {"name": "imagefolder", "plugin": "imagefolder",
                                   "params": {**base, "root": "/proc/self"}}, "dataset")
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    (cifar / "batches.meta").write_bytes(b"")
    os.mkfifo(cifar / "test_batch")
    with pytest.raises(BenchError, match="test_batch is a FIFO"):
        plugins.build("datasets", {"name": "cifar10", "plugin": "cifar10", "params": {"root": str(cifar.parent)}},
                      "dataset")
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    os.symlink("/dev/zero", raw / "t10k-images-idx3-ubyte")
    with pytest.raises(BenchError, match="t10k-images-idx3-ubyte lies under /dev"):
        plugins.build("datasets", {"name": "mnist", "plugin": "mnist", "params": {"root": str(raw.parents[1])}},
                      "dataset")


def test_a_ram_disk_file_is_data_not_a_device():
    from bench.checks import special_file

    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm here")
    import tempfile

    with tempfile.NamedTemporaryFile(dir="/dev/shm", suffix=".npy") as f:
        assert special_file(f.name) is None
    assert "lies under /dev" in special_file("/dev/null") and "/proc" in special_file("/proc/self/environ")


def test_an_unwritable_cache_is_refused_with_the_run_spec(tmp_path, monkeypatch):
    from bench.run.config import compose
    from bench.run.spec import build_spec

    (tmp_path / "file").write_text("not a folder")
    cache = tmp_path / "file" / "cache"
    trains = ["n_images=4", "model.params.epochs=1"]  # not the shipped weights' settings: it would train
    with pytest.raises(BenchError, match=r"cannot use .*file/cache: Not a directory; cache_dir must be a folder that "
                                         r"can be written — choose another with cache_dir=…") as err:
        build_spec(compose([f"cache_dir={cache}", *trains]))
    one_line(err)
    # a model that never writes the cache does not need it: a user's, or the embedded CNN whose weights ship
    for overrides in (["model=user", "model.params._target_=torch.nn.Flatten", "model.params.checkpoint=random"], []):
        assert build_spec(compose([f"cache_dir={cache}", "n_images=4", *overrides])).cache_dir == str(cache)
    ok = tmp_path / "new" / "cache"
    build_spec(compose([f"cache_dir={ok}", *trains]))
    assert ok.is_dir() and not list(ok.iterdir())  # made, and the probe file removed


def test_two_heatmaps_for_one_image_in_an_npz_are_refused(tmp_path):
    import io
    import zipfile

    from bench.data.heatmap_files import read_heatmaps

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    with zipfile.ZipFile(tmp_path / "h.npz", "w") as z:  # 'a.npy' and 'a' are both the key 'a' to NumPy
        z.writestr("a.npy", npy(np.zeros((4, 4), np.float32)))
        z.writestr("a", npy(np.ones((4, 4), np.float32)))
    with pytest.raises(BenchError, match=r"h.npz holds two heatmaps for image 'a'") as err:
        read_heatmaps(str(tmp_path / "h.npz"), ["a"], (1, 4, 4), "x")
    one_line(err)
