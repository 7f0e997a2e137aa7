"""``method=captum`` and ``method=zennit``: each equals calling the library directly on the same batch (the random
Captum methods with the same per-image seeds); bad names and settings are one line."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

from bench import plugins
from bench.interfaces import Context, Normalization
from bench.errors import BenchError
from bench.engine.seeding import derive_seed

NORM = Normalization((0.0, 1.0), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def vgg_like():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 5)).eval()


def batch(n=3):
    g = torch.Generator().manual_seed(1)
    return NORM.normalize(torch.rand(n, 3, 10, 10, generator=g)), torch.arange(n) % 5


def method(plugin, **params):
    return plugins.load_class("methods", plugin)(**params)


def ctx(ids):
    return Context(list(ids), seed=7, normalization=NORM)


# ------------------------------------------------------------------------------------------------- Zennit


@pytest.mark.parametrize("composite, canonizers, kwargs", [
    ("EpsilonPlusFlat", ["SequentialMergeBatchNorm"], {}),
    ("EpsilonAlpha2Beta1", ["SequentialMergeBatchNorm"], {"epsilon": 0.1}),
    ("EpsilonGammaBox", ["SequentialMergeBatchNorm"], {"gamma": 0.5}),
])
def test_zennit_equals_zennit_called_directly(composite, canonizers, kwargs):
    import zennit.composites
    import zennit.torchvision
    from zennit.attribution import Gradient

    model, (x, target) = vgg_like(), batch()
    ours = method("zennit_composite", composite=composite, canonizers=canonizers, composite_kwargs=kwargs)
    r = ours.attribute(model, x, target, ctx("abc"))
    extra = {}
    if composite == "EpsilonGammaBox":
        low, high = NORM.input_bounds(x)
        extra = {"low": low.expand_as(x), "high": high.expand_as(x)}
    comp = getattr(zennit.composites, composite)(canonizers=[zennit.torchvision.SequentialMergeBatchNorm()],
                                                 **kwargs, **extra)
    xr = x.clone().requires_grad_(True)
    with Gradient(model=model, composite=comp) as attributor:
        _, expected = attributor(xr, torch.eye(5)[target])
    assert r.shape == x.shape and r.abs().sum() > 0
    assert torch.equal(r, expected)
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())  # hooks removed again


def test_zennit_resnet_canonizer_equals_zennit_called_directly():
    import torchvision
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x, target = batch()
    x = torch.nn.functional.interpolate(x, size=32)
    r = method("zennit_composite", canonizers=["ResNetCanonizer"]).attribute(model, x, target, ctx("abc"))
    with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
        _, expected = attributor(x.clone().requires_grad_(True), torch.eye(5)[target])
    assert torch.equal(r, expected) and r.abs().sum() > 0


def test_zennit_bad_settings_are_one_line():
    for params, message in ((dict(composite="Epsilon"), "not a zennit composite; e.g. BetaSmooth, DeconvNet, EpsilonAlpha2Beta1"),
                            (dict(canonizers=["MergeEverything"]), "'MergeEverything' is not a zennit canonizer"),
                            (dict(composite_kwargs={"alpha": 2}), "composite_kwargs.alpha: EpsilonPlusFlat takes")):
        with pytest.raises(BenchError, match=message) as err:
            method("zennit_composite", **params)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------- Captum


def direct(name, model, x, target, layer=None, noise_tunnel=None, per_image_seed=None, **kwargs):
    import captum.attr as attr

    algo = getattr(attr, name)(model, layer) if layer is not None else getattr(attr, name)(model)
    algo = attr.NoiseTunnel(algo) if noise_tunnel else algo
    if per_image_seed is None:
        return algo.attribute(x, target=target, **kwargs, **(noise_tunnel or {}))
    out = []
    for i, image_id in enumerate("abc"):
        torch.manual_seed(derive_seed(7, "captum", image_id))
        np.random.seed(derive_seed(7, "captum", image_id) % 2 ** 32)
        out.append(algo.attribute(x[i:i + 1], target=target[i:i + 1], **kwargs, **(noise_tunnel or {})))
    return torch.cat(out)


@pytest.mark.parametrize("name, kwargs", [
    ("Saliency", {}), ("InputXGradient", {}), ("IntegratedGradients", {"n_steps": 8}), ("DeepLift", {}),
    ("Occlusion", {"sliding_window_shapes": [3, 4, 4], "strides": 2}), ("GuidedBackprop", {}),
])
def test_captum_equals_captum_called_directly(name, kwargs):
    model, (x, target) = vgg_like(), batch()
    r = method("captum_attribution", name=name, kwargs=kwargs).attribute(model, x, target, ctx("abc"))
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    assert r.shape == x.shape and r.abs().sum() > 0
    assert torch.equal(r, direct(name, model, x, target, **given))
    assert all(p.grad is None for p in model.parameters())


def test_random_captum_methods_are_seeded_per_image():
    model, (x, target) = vgg_like(), batch()
    nt = {"nt_type": "smoothgrad", "nt_samples": 4, "stdevs": 0.2}
    smooth = method("captum_attribution", name="Saliency", noise_tunnel=nt)
    r = smooth.attribute(model, x, target, ctx("abc"))
    assert torch.equal(r, direct("Saliency", model, x, target, noise_tunnel=nt, per_image_seed=True))
    alone = smooth.attribute(model, x[1:2], target[1:2], ctx("b"))
    assert torch.equal(alone, r[1:2])  # the same draws for an image in any batch
    shap = method("captum_attribution", name="GradientShap", kwargs={"baselines": 0.0, "n_samples": 3})
    r = shap.attribute(model, x, target, ctx("abc"))
    expected = direct("GradientShap", model, x, target, per_image_seed=True, baselines=torch.zeros(1, 3, 10, 10),
                      n_samples=3)
    assert torch.equal(r, expected)


def test_captum_layer_method_upsampled_to_the_input():
    import captum.attr as attr

    model, (x, target) = vgg_like(), batch()
    r = method("captum_attribution", name="LayerGradCam", layer="4").attribute(model, x, target, ctx("abc"))
    cam = attr.LayerAttribution.interpolate(direct("LayerGradCam", model, x, target, layer=model[4]), (10, 10),
                                            interpolate_mode="bilinear")
    assert torch.equal(r[:, 0], cam.sum(1)) and torch.equal(r[:, 1:], torch.zeros_like(r[:, 1:]))


def test_captum_bad_settings_are_one_line():
    model, (x, target) = vgg_like(), batch()
    for params, message in ((dict(name="Salience"), "not a Captum attribution usable here; one of"),
                            (dict(name="LayerGradCam"), "is a layer method: set method.params.layer"),
                            (dict(name="Saliency", layer="4"), "method.params.layer is for Captum's layer methods"),
                            (dict(name="IntegratedGradients", kwargs={"steps": 4}),
                             "method.params.kwargs.steps: IntegratedGradients.attribute takes"),
                            (dict(noise_tunnel={"samples": 3}), "method.params.noise_tunnel.samples")):
        with pytest.raises(BenchError, match=message) as err:
            method("captum_attribution", **params)
        assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match="layer=layer9 is not a module of the model"):
        method("captum_attribution", name="LayerGradCam", layer="layer9").attribute(model, x, target, ctx("abc"))


@pytest.mark.parametrize("plugin, module, extra", [("captum_attribution", "captum", "captum"),
                                                   ("zennit_composite", "zennit", "zennit")])
def test_a_missing_library_is_one_line_naming_the_extra(plugin, module, extra, monkeypatch):
    for name in [m for m in list(sys.modules) if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(BenchError, match=rf"needs the {module} package: pip install 'bench\[{extra}\]'"):
        method(plugin)
