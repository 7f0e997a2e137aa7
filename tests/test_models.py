"""Models: torchvision architectures with local weights, user models by _target_, the embedded CNN and its
checkpoints along training. Weights are random and written here on the fly; nothing is downloaded."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.interfaces import Dataset, Normalization
from bench.errors import BenchError
from bench.models import build_model, load_embedded_cnn, train_embedded_cnn
from bench.models.__main__ import main
from bench.models.embedded import _embedded_setup
from bench.plugins import CONF_DIR
from bench.run.job import run

from conftest import scaled


def params_of(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node.params, resolve=True)

SMALL = ["n_images=3", "steps=2", "repeats=1", "bootstrap=50", "batch_size=8", "device=cpu"]
ARCHS = ["alexnet", "vgg16", "vgg16_bn", "resnet18", "resnet50"]


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


class Blank(Dataset):
    """Shapes only: what load_model needs to check that a model fits."""

    normalization = Normalization((0.0, 1.0), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    def __init__(self, shape=(3, 64, 64), num_classes=1000):
        self.image_shape, self.num_classes = shape, num_classes


class Tiny(Dataset):
    """8×8 two-class toy data with a train split, for the embedded CNN."""

    normalization = Normalization((0.0, 1.0), (0.5,), (0.25,))
    num_classes, image_shape = 2, (1, 8, 8)

    def __init__(self, n_train=96, n_test=16):
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n_train + n_test) % 2
        self.x = torch.rand(n_train + n_test, 1, 8, 8, generator=g) * 0.5
        self.x[self.y == 1, :, :4] += 0.5  # class 1: bright top half
        self.n_train = n_train

    def __len__(self):
        return len(self.y) - self.n_train

    def get(self, i):
        return f"tiny-{i}", self.x[self.n_train + i], int(self.y[self.n_train + i])

    def train_split(self):
        return self.x[:self.n_train], self.y[:self.n_train]


def folder(tmp_path, n=3, classes=("a", "b")):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / classes[i % len(classes)] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A random-weight resnet18 state_dict at torchvision's file name in a fresh torch cache."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    path = home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return home, path, state


@pytest.fixture
def zero_init(monkeypatch):
    """Random initialisation of VGG's 138M parameters takes seconds; where the values do not matter, tests
    fill weights with zeros instead (the architecture, loading and forward pass are unchanged)."""
    def zero(tensor, *args, **kwargs):
        with torch.no_grad():
            return tensor.zero_()
    for name in ("kaiming_normal_", "kaiming_uniform_", "normal_", "uniform_", "constant_", "trunc_normal_"):
        monkeypatch.setattr(torch.nn.init, name, zero)


@pytest.mark.parametrize("arch", ARCHS)
def test_torchvision_architectures_from_their_configs(arch, zero_init):
    cfg = compose(f"model={arch}", "model.params.weights=random")
    assert cfg.model.kind == "torchvision" and cfg.model.input.crop == 224
    torch.manual_seed(0)
    model = build_model(cfg.model.kind, Blank(), params_of(cfg.model))
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    assert not model.training


def test_any_torchvision_architecture_with_its_published_preprocessing(tmp_path, cache_dir):
    """model=torchvision model.params.arch=<any classification architecture>: named after it, the resize, crop,
    mean and std that torchvision publishes with its weights (recorded in the preprocessing column), end to end
    for two architectures outside the named configs."""
    from bench.models import torchvision_input
    from bench.run.spec import build_spec

    assert [torchvision_input("convnext_tiny", "IMAGENET1K_V1", k) for k in ("resize", "crop")] == [236, 224]
    assert torchvision_input("efficientnet_b0", "IMAGENET1K_V1", "mean") == pytest.approx([0.485, 0.456, 0.406])
    assert torchvision_input("convnext_tiny", "NOSUCH", "crop") is None and torchvision_input(None, "X", "crop") is None
    root = folder(tmp_path, n=4)
    cfg = compose("model=torchvision", "model.params.arch=convnext_tiny", "dataset=imagefolder",
                  f"dataset.params.root={root}", "model.params.weights=random", "n_images=4")
    spec = build_spec(cfg)
    assert spec.model.name == "convnext_tiny" and "resize=236" in spec.dataset.obj.preprocessing
    assert spec.dataset.obj.image_shape == (3, 224, 224)
    for arch in ("efficientnet_b0", "convnext_tiny"):
        s = run(compose("model=torchvision", f"model.params.arch={arch}", "model.params.weights=random",
                        "model.params.num_classes=2", "dataset=imagefolder", f"dataset.params.root={root}",
                        "model.input.resize=32", "model.input.crop=32", "method=integrated_gradients",
                        "method.params.steps=4", "patch=8", "metrics=[aopc,road]", "road.fractions=[0.5]",
                        *SMALL), tmp_path / arch)
        assert (s.model == arch).all() and (s.n_images == 3).all()
    for bad, message in ((["model=torchvision"], "model=torchvision needs model.params.arch"),
                         (["model=torchvision", "model.params.arch=resnet_nosuch"],
                          "model.params.arch=resnet_nosuch is not a torchvision classification architecture; e.g. "
                          "resnet")):
        with pytest.raises(BenchError, match=message):
            build_spec(compose(*bad, "n_images=4", "dataset=imagefolder", f"dataset.params.root={root}"))


def test_torchvision_weights_from_the_torch_cache_or_a_file(resnet18_file, monkeypatch, tmp_path):
    home, path, state = resnet18_file
    monkeypatch.setenv("TORCH_HOME", str(home))
    model = build_model("torchvision", Blank(), dict(arch="resnet18", weights=None))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # the Places365 authors' format: {'state_dict': {'module.…': …}} — unwrapped
    wrapped = tmp_path / "resnet18_places.pth.tar"
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    model = build_model("torchvision", Blank(), dict(arch="resnet18", weights=str(wrapped)))
    assert torch.equal(model.fc.weight, state["fc.weight"])


def test_missing_bad_and_unsafe_weight_files_are_one_line_errors(resnet18_file, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    cache_file = tmp_path / "empty" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(BenchError) as info:
        build_model("torchvision", Blank(), dict(arch="resnet18", weights=None))
    assert f"put torchvision's IMAGENET1K_V1 weights for resnet18 at {cache_file}" in str(info.value)
    assert "model.params.weights=/path/to/resnet18-f37072fd.pth; nothing is downloaded" in str(info.value)
    with pytest.raises(BenchError, match=f"weights file {tmp_path / 'no.pth'} does not exist; put the state_dict"):
        build_model("torchvision", Blank(), dict(arch="resnet18", weights=str(tmp_path / "no.pth")))
    _, path, _ = resnet18_file
    with pytest.raises(BenchError, match="does not fit the architecture: .*size mismatch"):
        build_model("torchvision", Blank(), dict(arch="resnet18", weights=str(path), num_classes=10))
    pickled = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), pickled)  # a pickled module, not a state_dict
    with pytest.raises(BenchError, match=r"cannot load .* with torch.load\(weights_only=True\)"):
        build_model("torchvision", Blank(), dict(arch="resnet18", weights=str(pickled)))
    with pytest.raises(BenchError, match="unknown torchvision architecture 'resnet19'"):
        build_model("torchvision", Blank(), dict(arch="resnet19", weights="random"))


USER_MODULE = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes=2, width=4):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * width, num_classes))

        def forward(self, x):
            return self.head(self.features(x))
""")


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "tiny_user_model.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(code))
    sys.modules.pop("tiny_user_model", None)
    import tiny_user_model

    torch.manual_seed(3)
    net = tiny_user_model.Net(num_classes=3, width=5)
    ckpt = tmp_path / "net.pt"
    torch.save(net.state_dict(), ckpt)
    return code, ckpt, net


def test_user_model_by_target_and_checkpoint(user_model, tmp_path):
    code, ckpt, net = user_model
    cfg = compose("model=user", "model.params._target_=tiny_user_model.Net", f"model.params.checkpoint={ckpt}",
                  "+model.params.num_classes=3", "+model.params.width=5")
    model = build_model(cfg.model.kind, Blank((3, 16, 16), 3), params_of(cfg.model))
    assert torch.equal(model.head[1].weight, net.head[1].weight)
    with pytest.raises(BenchError, match=f"checkpoint {tmp_path / 'gone.pt'} does not exist; put the state_dict of "
                                         "tiny_user_model.Net there"):
        build_model("user", Blank(), {"_target_": "tiny_user_model.Net", "checkpoint": str(tmp_path / "gone.pt")})
    with pytest.raises(BenchError, match="model 'user' needs its weights: set model.params.checkpoint="):
        build_model("user", Blank(), {"_target_": "tiny_user_model.Net"})
    with pytest.raises(BenchError, match="cannot import _target_ 'nowhere.Net'"):
        build_model("user", Blank(), {"_target_": "nowhere.Net", "checkpoint": str(ckpt)})
    with pytest.raises(BenchError, match="does not fit the architecture"):  # checkpoint of another width
        build_model("user", Blank(), {"_target_": "tiny_user_model.Net", "checkpoint": str(ckpt), "num_classes": 3})


def test_a_model_that_cannot_take_the_images_fails_before_any_work():
    with pytest.raises(BenchError, match=r"model 'alexnet' cannot take the 3×32×32 inputs .*check the preprocessing"):
        build_model("torchvision", Blank((3, 32, 32)), dict(arch="alexnet", weights="random"))


def test_default_embedded_cnn_keeps_its_cache_key():
    """The settings hashed for a square dataset are exactly those of the original code (same cached weights)."""
    _, _, settings, build = _embedded_setup(Tiny(), 6, 1e-3, 64, 0, (16, 32), 128)
    assert settings == dict(arch="embedded_cnn/v1", in_channels=1, num_classes=2, image_size=8, channels=[16, 32],
                            hidden=128, epochs=6, lr=1e-3, batch_size=64, seed=0,
                            normalization=[(0.5,), (0.25,)])
    assert build()[7].in_features == 32 * 2 * 2


def test_checkpoints_along_training_match_the_cached_model(tmp_path, cache_dir):
    ds = Tiny()
    rows = train_embedded_cnn(ds, tmp_path / "ck", checkpoints=[0, 2, 6], epochs=2, batch_size=32, hidden=16)
    assert [r["iteration"] for r in rows] == [0, 2, 6] and rows[-1]["epoch"] == 2.0
    table = pd.read_csv(tmp_path / "ck" / "checkpoints.csv")
    assert list(table.columns) == ["iteration", "epoch", "train_loss", "test_accuracy", "file"]
    assert table.file.tolist() == ["ckpt-0.pt", "ckpt-2.pt", "ckpt-6.pt"] and table.test_accuracy.between(0, 1).all()
    info = json.loads((tmp_path / "ck" / "training.json").read_text())
    assert info["iterations"] == 6 and info["checkpoints"] == [0, 2, 6]
    # the last checkpoint is the model load_embedded_cnn trains with the same settings
    cached = load_embedded_cnn(ds, str(cache_dir), epochs=2, batch_size=32, hidden=16)
    last = build_model("checkpoint", ds, dict(dir=str(tmp_path / "ck")))
    assert all(torch.equal(v, cached.state_dict()[k]) for k, v in last.state_dict().items())
    early = build_model("checkpoint", ds, dict(dir=str(tmp_path / "ck"), iteration=2))
    assert torch.equal(early[0].weight, torch.load(tmp_path / "ck" / "ckpt-2.pt", weights_only=True)["0.weight"])
    with pytest.raises(BenchError, match=r"ckpt-3.pt does not exist; iterations in .*: \[0, 2, 6\]"):
        build_model("checkpoint", ds, dict(dir=str(tmp_path / "ck"), iteration=3))
    with pytest.raises(BenchError, match="checkpoints must be iterations between 0 and 6"):
        train_embedded_cnn(ds, tmp_path / "x", checkpoints=[7], epochs=2, batch_size=32)
    with pytest.raises(BenchError, match=r"training.json does not exist.*python -m bench.models --out DIR"):
        build_model("checkpoint", ds, dict(dir=str(tmp_path / "none")))


def test_train_cli_then_evaluate_a_checkpoint(tmp_path, cache_dir, capsys):
    out = tmp_path / "ckpts"
    data = ["dataset=mnist_twodigit", "dataset.params.n_train=64", "dataset.params.n_test=8"]
    assert main(["--out", str(out), "--checkpoints", "0,1", *data, "model.params.epochs=1",
                 "model.params.hidden=8"]) == 0
    assert "checkpoints.csv" in capsys.readouterr().out
    summary = run(compose(*data, "model=checkpoint", f"model.params.dir={out}", "model.params.iteration=1",
                          "method=lrp_eps", "patch=14", *SMALL), tmp_path / "run")
    assert (summary.model == "checkpoint-1").all() and (summary.n_images == 3).all()
    assert main(["--out", str(out), "dataset=imagenet"]) == 2
    assert "error: dataset 'imagenet' reads local files" in capsys.readouterr().err


def test_runs_for_each_architecture_family(tmp_path, resnet18_file, monkeypatch, cache_dir, zero_init):
    """resnet18 from the torch cache (sensitivity) on an image folder; vgg16 (LRP-ε; zero weights, see
    zero_init) on Places365 validation files; the embedded CNN trained on torchvision-layout CIFAR-10."""
    import pickle

    monkeypatch.setenv("TORCH_HOME", str(resnet18_file[0]))
    root = folder(tmp_path)
    s = run(compose("dataset=imagefolder", f"dataset.params.root={root}", "model=resnet18", "model.input.resize=40",
                    "model.input.crop=32", "method=sensitivity", "patch=8", *SMALL), tmp_path / "r1")
    assert (s.model == "resnet18").all() and (s.dataset == "imagefolder").all() and (s.n_images == 3).all()

    val = tmp_path / "val_256"
    val.mkdir()
    for k in range(1, 4):
        (root / ("a" if k % 2 else "b") / f"{k - 1}.png").rename(val / f"Places365_val_{k:08d}.png")
    (val / "places365_val.txt").write_text("".join(f"Places365_val_{k:08d}.png {k}\n" for k in range(1, 4)))
    s = run(compose("dataset=places365", f"dataset.params.root={val}", "model=vgg16", "model.params.weights=random",
                    "model.input.resize=32", "model.input.crop=32", "method=lrp_eps", "patch=8", *SMALL), tmp_path / "r2")
    assert (s.model == "vgg16").all() and (s.n_images == 3).all()

    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        batch = {"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(8)]}
        (cifar / name).write_bytes(pickle.dumps(batch))
    (cifar / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    s = run(compose("dataset=cifar10", f"dataset.params.root={cifar.parent}", "model.params.epochs=1", "method=lrp_eps",
                    *SMALL), tmp_path / "r3")
    assert (s.model == "embedded_cnn").all() and (s.dataset == "cifar10").all()


def test_cli_user_model_on_sun397_and_missing_weights(tmp_path, user_model, cache_dir):
    code, ckpt, _ = user_model
    root = tmp_path / "SUN397"
    root.mkdir()
    (root / "ClassName.txt").write_text("/a/abbey\n/b/bar\n/c/cafe\n")
    rng = np.random.default_rng(0)
    for i, c in enumerate(["a/abbey", "b/bar", "c/cafe"]):
        (root / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / c / f"sun_{i}.jpg")
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache_dir), "TORCH_HOME": str(tmp_path / "torch"),
           "PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])}

    def cli(*overrides):
        return subprocess.run([sys.executable, "-m", "bench", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
                              cwd=tmp_path, capture_output=True, text=True, timeout=scaled(300), env=env)

    proc = cli("dataset=sun397", f"dataset.params.root={root}", "model=user", "model.params._target_=tiny_user_model.Net",
               f"model.params.checkpoint={ckpt}", "+model.params.num_classes=3", "+model.params.width=5",
               "model.input.resize=16", "model.input.crop=16", "method=gradient_x_input", "patch=4", *SMALL)
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert (summary.model == "user").all() and (summary.dataset == "sun397").all() and (summary.n_images == 3).all()

    proc = cli("dataset=sun397", f"dataset.params.root={root}", "model=vgg16_bn", *SMALL)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    cache_file = tmp_path / "torch" / "hub" / "checkpoints" / "vgg16_bn-6c64b313.pth"
    assert lines[0].startswith(f"error: model 'vgg16_bn': no weights file — put torchvision's IMAGENET1K_V1 weights "
                               f"for vgg16_bn at {cache_file}")
