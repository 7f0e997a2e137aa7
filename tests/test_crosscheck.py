"""Agreement with independent implementations where the definitions coincide: Captum (gradient,
gradient × input, integrated gradients, deconvnet, guided backprop, LRP-ε) and Zennit (every LRP rule
and composite, deconvnet, guided backprop), on torchvision's VGG-11 and ResNet-18 with random weights.

The methods are run exactly as configured (conf/method/*.yaml). Set-up choices that make the
definitions coincide:
- relevance at the output f_c(x): Zennit is seeded with f_c · one-hot(c);
- Zennit's canonizer turns a merged BatchNorm into x / √(1 + eps) instead of the identity, so the models
  use BatchNorm eps = 0 (with eps = 1e-5 the two differ by ~1e-4 relative on ResNet-18, Zennit's side);
- the first layer's (merged) bias is zero for the first-layer rules: the deep Taylor paper (Sec. 6.2)
  adds max(0, b) to the z^B denominator, where Zennit's ZBox cancels the bias and its WSquare adds b²;
- average pooling and residual sums use Zennit's Norm rule (= the z-rule this suite gets from the
  gradient), ReLUs its Pass rule.
Run with ``-s`` to see the largest relative difference max|ours − theirs| / max|theirs| of each case.
"""

import warnings

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from bench import plugins
from bench.interfaces import Context, Normalization
from bench.plugins import ROOT

NORM = Normalization(raw_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
TOLERANCE = 1e-5  # float64 throughout; the agreement measured is 1e-8 or better
_MODELS = {}


def model_of(name):
    if name not in _MODELS:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).double().eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                    m.bias.uniform_(-0.05, 0.05)
                if isinstance(m, nn.BatchNorm2d):
                    m.eps = 0.0
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.1, 0.1)
            if name == "vgg11":
                model.features[0].bias.zero_()
            else:
                model.bn1.running_mean.zero_()
                model.bn1.bias.zero_()
        _MODELS[name] = model
    return _MODELS[name]


def data(name):
    g = torch.Generator().manual_seed(1)
    x = NORM.normalize(torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64))
    with torch.no_grad():
        logits = model_of(name)(x)
    target = logits.argmax(1)
    return x, target, logits.gather(1, target[:, None]).squeeze(1)


def ours(config, model, x, target, **overrides):
    cfg = OmegaConf.load(ROOT / "conf" / "method" / f"{config}.yaml")
    params = {} if cfg.get("params") is None else OmegaConf.to_container(cfg.params, resolve=True)
    method = plugins.load_class("methods", cfg.plugin)(**{**params, **overrides})
    return method.attribute(model, x, target, Context(["a", "b"], seed=0, normalization=NORM))


def check(case, a, b):
    diff = ((a - b).abs().max() / b.abs().max()).item()
    print(f"\n{case}: largest relative difference {diff:.1e}")
    assert diff < TOLERANCE, case


# --- Captum --------------------------------------------------------------------------------------------

CAPTUM = ["sensitivity", "gradient_x_input", "integrated_gradients", "deconvnet", "guided_backprop", "lrp_eps"]


# Not compared: LRP-ε on ResNet-18, where the definitions differ — Captum's LRP copies relevance into both
# branches of a residual addition (no skip-connection support); ours splits it in proportion to the summands.
# ResNet-18 LRP-ε is cross-checked against Zennit below instead.
CAPTUM_CASES = [(n, c) for n in ("vgg11", "resnet18") for c in CAPTUM if (n, c) != ("resnet18", "lrp_eps")]


@pytest.mark.parametrize("name,config", CAPTUM_CASES)
def test_agrees_with_captum(name, config):
    ca = pytest.importorskip("captum.attr")
    model = model_of(name)
    x, target, _ = data(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if config == "sensitivity":
            theirs = ca.Saliency(model).attribute(x, target, abs=False)
        elif config == "gradient_x_input":
            theirs = ca.InputXGradient(model).attribute(x, target)
        elif config == "integrated_gradients":
            theirs = ca.IntegratedGradients(model).attribute(x, target=target, n_steps=8, method="gausslegendre")
        elif config == "deconvnet":
            theirs = ca.Deconvolution(model).attribute(x, target)
        elif config == "guided_backprop":
            theirs = ca.GuidedBackprop(model).attribute(x, target)
        else:
            from captum.attr._utils.lrp_rules import EpsilonRule

            for m in model.modules():  # ε = 1 on the linear layers, as lrp_eps; z-rule on the pooling
                m.rule = EpsilonRule(1.0) if isinstance(m, (nn.Conv2d, nn.Linear)) else EpsilonRule(1e-9)
            try:
                theirs = ca.LRP(model).attribute(x, target)
            finally:
                for m in model.modules():
                    m.__dict__.pop("rule", None)
    mine = ours(config, model, x, target, **({"steps": 8} if config == "integrated_gradients" else {}))
    check(f"captum {name} {config}", mine, theirs)


# --- Zennit --------------------------------------------------------------------------------------------

def zennit_attribution(model, name, x, target, f, config=None, low=None, high=None, composite=None):
    """Zennit's relevance for our LRP ``config`` (its rules layer by layer: ``zennit_composite`` of the method
    benchmark, bench/perf/methods.py, so the benchmark times what is checked here) or a named ``composite``."""
    from zennit.attribution import Gradient
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    from bench.perf.methods import zennit_composite

    canonizers = [VGGCanonizer() if name == "vgg11" else ResNetCanonizer()]
    composite = zennit_composite(config, low, high, canonizers) if composite is None else composite(canonizers=canonizers)
    seed = torch.nn.functional.one_hot(target, 1000).to(x.dtype) * f[:, None]
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, seed)
    return relevance


ZENNIT = ["lrp_0", "lrp_eps", "lrp_eps_0.01", "lrp_a1b0", "lrp_a2b1", "lrp_gamma", "deep_taylor", "deep_taylor_w2",
          "deep_taylor_flat", "lrp_composite", "deconvnet", "guided_backprop"]
# VGG-11's 25088 × 4096 dense layer in float64 costs seconds per call (Zennit copies it for every rule
# part): the required rules there, all of them on ResNet-18
ZENNIT_VGG = ["lrp_eps", "lrp_a1b0", "deep_taylor", "lrp_composite", "deconvnet"]


@pytest.mark.parametrize("name, config", [("resnet18", c) for c in ZENNIT] + [("vgg11", c) for c in ZENNIT_VGG])
def test_agrees_with_zennit(name, config):
    pytest.importorskip("zennit")
    from zennit.composites import DeconvNet, GuidedBackprop

    model = model_of(name)
    x, target, f = data(name)
    low, high = NORM.input_bounds(x)
    if config in ("deconvnet", "guided_backprop"):
        composite = DeconvNet if config == "deconvnet" else GuidedBackprop
        theirs = zennit_attribution(model, name, x, target, torch.ones_like(f), composite=composite)
        mine = ours(config, model, x, target)
    else:
        theirs = zennit_attribution(model, name, x, target, f, config, low[None], high[None])
        first_rule = {"deep_taylor_w2": "wsquare", "deep_taylor_flat": "flat"}.get(config)
        mine = (ours("deep_taylor", model, x, target, first_rule=first_rule) if first_rule
                else ours(config, model, x, target))
    check(f"zennit {name} {config}", mine, theirs)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
