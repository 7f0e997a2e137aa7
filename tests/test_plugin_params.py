"""Plug-in parameters are checked in the constructors: a bad value from the command line
(``method.params.epsilon=abc``, ``perturbation.params.sigma=0``, ``dataset.params.resize=0``) ends in one
``BenchError`` line that names the parameter as the user writes it, before any work; every shipped config
still constructs."""

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench import plugins
from bench.errors import BenchError
from bench.engine.replacement import make_replacement

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
INF, NAN = math.inf, math.nan

# (kind, plug-in, params, the parameter the message must name)
BAD = [
    # methods/lrp.py
    ("methods", "lrp", dict(epsilon="abc"), "method.params.epsilon"),
    ("methods", "lrp", dict(epsilon=-1), "method.params.epsilon"),
    ("methods", "lrp", dict(epsilon=INF), "method.params.epsilon"),
    ("methods", "lrp", dict(rule="gamma", gamma=-0.5), "method.params.gamma"),
    ("methods", "lrp", dict(gamma="x"), "method.params.gamma"),
    ("methods", "lrp", dict(rule="alpha_beta", alpha=2.0, beta=2.0), "method.params.alpha"),
    ("methods", "lrp", dict(rule="alpha_beta", alpha=0.5, beta=-0.5), "method.params.alpha"),
    ("methods", "lrp", dict(rule="alpha_beta", alpha=2.0, beta=-1.0), "method.params.beta"),
    ("methods", "lrp", dict(rule="alpha_beta", alpha=2, beta=True), "method.params.beta"),
    ("methods", "lrp", dict(first_rule="zbox", low=1.0, high=0.0), "method.params.low"),
    ("methods", "lrp", dict(first_rule="zbox", low="a"), "method.params.low"),
    ("methods", "lrp", dict(first_rule="zbox", high=NAN), "method.params.high"),
    ("methods", "lrp", dict(rule="nonsense"), "method.params.rule"),
    ("methods", "lrp", dict(rule=3), "method.params.rule"),
    ("methods", "lrp", dict(rule=["epsilon"]), "method.params.rule"),
    ("methods", "lrp", dict(rule="zbox"), "method.params.rule"),
    ("methods", "lrp", dict(first_rule="bogus"), "method.params.first_rule"),
    ("methods", "lrp", dict(conv_rule="zbox"), "method.params.conv_rule"),
    ("methods", "lrp", dict(dense_rule="wsquare"), "method.params.dense_rule"),
    ("methods", "lrp", dict(maxpool="average"), "method.params.maxpool"),
    # methods/integrated_gradients.py
    ("methods", "integrated_gradients", dict(steps=0), "method.params.steps"),
    ("methods", "integrated_gradients", dict(steps="many"), "method.params.steps"),
    ("methods", "integrated_gradients", dict(steps=1.5), "method.params.steps"),
    ("methods", "integrated_gradients", dict(steps=1, quadrature="riemann_trapezoid"), "method.params.steps"),
    ("methods", "integrated_gradients", dict(quadrature="simpson"), "method.params.quadrature"),
    ("methods", "integrated_gradients", dict(baseline="gray"), "method.params.baseline"),
    ("methods", "integrated_gradients", dict(chunk=0), "method.params.chunk"),
    # methods/occlusion.py
    ("methods", "occlusion", dict(window=0), "method.params.window"),
    ("methods", "occlusion", dict(stride=-2), "method.params.stride"),
    ("methods", "occlusion", dict(chunk=True), "method.params.chunk"),
    ("methods", "occlusion", dict(value="abc"), "method.params.value"),
    ("methods", "occlusion", dict(value=NAN), "method.params.value"),
    # methods/smoothgrad.py
    ("methods", "smoothgrad", dict(samples=0), "method.params.samples"),
    ("methods", "smoothgrad", dict(noise=-0.1), "method.params.noise"),
    ("methods", "smoothgrad", dict(noise="abc"), "method.params.noise"),
    ("methods", "smoothgrad", dict(chunk=2.5), "method.params.chunk"),
    # methods/relu_backward.py, methods/translation.py
    ("methods", "relu_backward", dict(mode="backprop"), "method.params.mode"),
    ("methods", "translation", dict(shift=-1), "method.params.shift"),
    ("methods", "translation", dict(shift="1"), "method.params.shift"),
    ("methods", "translation", dict(method="../model/resnet18"), "method.params.method"),
    ("methods", "translation", dict(method=5), "method.params.method"),
    # bench/engine/replacement.py
    ("perturbation", "blur", dict(sigma=0), "perturbation.params.sigma"),
    ("perturbation", "blur", dict(sigma=-1.0), "perturbation.params.sigma"),
    ("perturbation", "blur", dict(sigma="abc"), "perturbation.params.sigma"),
    ("perturbation", "blur", dict(sigma=INF), "perturbation.params.sigma"),
    # datasets/ (checked before the root is looked at: no files needed)
    ("datasets", "imagenet", dict(root=5), "dataset.params.root"),
    ("datasets", "imagenet", dict(resize=0), "dataset.params.resize"),
    ("datasets", "imagenet", dict(crop=[224]), "dataset.params.crop"),
    ("datasets", "imagenet", dict(resize=[True, 5]), "dataset.params.resize"),
    ("datasets", "imagenet", dict(labels=["val.txt"]), "dataset.params.labels"),
    ("datasets", "imagefolder", dict(num_classes=0), "dataset.params.num_classes"),
    ("datasets", "imagefolder", dict(std=[0.2, 0, 0.2]), "dataset.params.std"),
    ("datasets", "imagefolder", dict(classes=1.5), "dataset.params.classes"),
    ("datasets", "places365", dict(channels=2), "dataset.params.channels"),
    ("datasets", "places365", dict(mean="abc"), "dataset.params.mean"),
    ("datasets", "sun397", dict(mean=[0.5, 0.5]), "dataset.params.mean"),
    ("datasets", "sun397", dict(split=3), "dataset.params.split"),
    ("datasets", "mnist", dict(std="abc"), "dataset.params.std"),
    ("datasets", "mnist", dict(channels=True), "dataset.params.channels"),
    ("datasets", "mnist", dict(crop=-28), "dataset.params.crop"),
    ("datasets", "mnist_twodigit", dict(n_test=0), "dataset.params.n_test"),
    ("datasets", "mnist_twodigit", dict(n_train="many"), "dataset.params.n_train"),
    ("datasets", "mnist_twodigit", dict(region="blob"), "dataset.params.region"),
    ("datasets", "mnist_twodigit", dict(grid=[1, 1]), "dataset.params.grid"),
    ("datasets", "mnist_twodigit", dict(grid=3), "dataset.params.grid"),
]


def construct(kind: str, plugin: str, params: dict):
    """The plug-in built the way the run builds it (bench/run/job.py)."""
    if kind == "perturbation":
        return make_replacement(plugin, **params)
    return plugins.load_class(kind, plugin)(**params)


@pytest.mark.parametrize("kind, plugin, params, name", BAD,
                         ids=[f"{p}-{'-'.join(f'{k}={v!r}' for k, v in kw.items())}" for _, p, kw, _ in BAD])
def test_bad_parameter_is_one_line_naming_it(kind, plugin, params, name):
    with pytest.raises(BenchError) as info:
        construct(kind, plugin, params)
    message = str(info.value)
    assert "\n" not in message
    assert name in message, message


def yaml_params(path: Path) -> dict:
    cfg = OmegaConf.load(path)
    return {} if cfg.get("params") is None else OmegaConf.to_container(cfg.params, resolve=True)


@pytest.mark.parametrize("path", sorted((CONF / "method").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_method_config_constructs(path):
    params = yaml_params(path)
    if "path" in params and params["path"] is None:  # reads the user's files: the only complaint is the path
        with pytest.raises(BenchError, match="needs method.params.path"):
            construct("methods", OmegaConf.load(path).plugin, params)
        return
    assert construct("methods", OmegaConf.load(path).plugin, params) is not None


@pytest.mark.parametrize("path", sorted((CONF / "perturbation").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_perturbation_config_constructs(path):
    assert construct("perturbation", OmegaConf.load(path).name, yaml_params(path)) is not None


@pytest.mark.parametrize("path", [p for p in sorted((CONF / "dataset").glob("*.yaml"))
                                  if "root" in yaml_params(p)], ids=lambda p: p.stem)
def test_every_folder_dataset_config_passes_its_checks(path):
    """With the shipped params the only complaint is the missing root (the checks come first)."""
    with pytest.raises(BenchError, match="set dataset.params.root="):
        construct("datasets", OmegaConf.load(path).plugin, yaml_params(path))


@pytest.mark.parametrize("plugin, params", [
    ("imagenet", dict(resize=[256, 320], crop=224, mean=[0.5], std=0.25, channels=3)),
    ("imagefolder", dict(num_classes=5, mean=(0.485, 0.456, 0.406), std=[0.229, 0.224, 0.225], channels=1)),
    ("places365", dict(resize=256, crop=[200, 224], labels="", classes=None)),
    ("sun397", dict(channels=None, split=None, mean=0, std=1)),
    ("mnist", dict(resize=32, crop=28, mean=0.1307, std=[0.3081], channels=3)),
])
def test_valid_dataset_values_pass_the_checks(plugin, params):
    with pytest.raises(BenchError, match="set dataset.params.root="):
        construct("datasets", plugin, params)


def test_twodigit_config_constructs():
    path = CONF / "dataset" / "mnist_twodigit.yaml"
    params = {**yaml_params(path), "n_test": 20, "grid": (2, 2)}
    ds = construct("datasets", "mnist_twodigit", params)
    assert len(ds) == 20 and ds.image_shape == (1, 56, 56)


def test_integers_where_numbers_are_expected_and_the_values_kept():
    lrp = construct("methods", "lrp", dict(rule="epsilon", epsilon=1, gamma=0, alpha=2, beta=1, low=-1, high=1))
    assert lrp.composite.default.epsilon == 1
    assert construct("methods", "lrp", dict(rule="alpha_beta", alpha=1, beta=0)).composite.default.alpha == 1
    assert construct("methods", "lrp", dict(rule="zero", epsilon=0)) is not None
    assert construct("methods", "smoothgrad", dict(noise=0)).noise == 0.0
    assert construct("methods", "occlusion", dict(value=-1)).value == -1.0
    assert construct("methods", "integrated_gradients", dict(steps=2, quadrature="riemann_trapezoid")).steps == 2
    assert construct("methods", "translation", dict(method="lrp_eps_0.01", shift=0)).shifts == [(0, 0)]
    assert construct("perturbation", "blur", dict(sigma=1)).sigma == 1.0


def test_unknown_names_stay_one_line():
    with pytest.raises(BenchError, match=r"unknown perturbation \['blur'\]"):
        make_replacement(["blur"])
    with pytest.raises(TypeError):  # unknown parameter names: Python's TypeError, turned into one line by bench/run/job.py
        construct("methods", "lrp", dict(epsilom=1.0))
