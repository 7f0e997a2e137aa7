"""torchvision classification architectures with local weights (``model=torchvision``) and the preprocessing
torchvision publishes with them (the ``${bench_torchvision_input:…}`` resolvers of conf/model/)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..interfaces import Dataset
from ..errors import BenchError

from .hub import check_input_key, hf_input, timm_input
from .weights import _load_state, _need_file

log = logging.getLogger(__name__)


def torchvision_weights_file(arch: str, weights_name: str) -> str:
    """torchvision's file name for ``arch``'s weights ``weights_name`` (e.g. resnet18-f37072fd.pth)."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (KeyError, ValueError):
        raise BenchError(f"torchvision has no published weights for '{arch}'; set model.params.weights=FILE") from None
    try:
        return enum[weights_name].url.rsplit("/", 1)[-1]
    except KeyError:
        raise BenchError(f"torchvision's {enum.__name__} has no '{weights_name}'; available: "
                         f"{', '.join(m.name for m in enum)}") from None


def torchvision_input(arch: str | None, weights_name: str | None, key: str) -> Any:
    """The preprocessing torchvision publishes with ``arch``'s weights ``weights_name`` (its ``transforms()``:
    resize of the shorter side, centre crop, mean, std) — ``key`` of it, or None where there is none (then the
    dataset's default applies). The OmegaConf resolver ``${bench_torchvision_input:arch,weights,key}``."""
    check_input_key("bench_torchvision_input", key)
    if not arch or not weights_name:
        return None
    from torchvision.models import get_model_weights

    try:
        t = get_model_weights(str(arch))[str(weights_name)].transforms()
    except (ValueError, KeyError, TypeError, AttributeError):  # unknown arch, no such weights, another transform
        return None
    value = {"resize": getattr(t, "resize_size", None), "crop": getattr(t, "crop_size", None),
             "mean": getattr(t, "mean", None), "std": getattr(t, "std", None)}[key]
    if value is None:
        return None
    return int(value[0]) if key in ("resize", "crop") else [float(v) for v in value]


def register_input_resolver() -> None:
    from omegaconf import OmegaConf

    for name, resolver in (("bench_torchvision_input", torchvision_input), ("bench_timm_input", timm_input),
                           ("bench_hf_input", hf_input)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def load_torchvision(dataset: Dataset, arch: str = "resnet18", weights: str | None = None,
                     weights_name: str = "IMAGENET1K_V1", file: str | None = None, num_classes: int = 1000,
                     cache_dir: str | None = None, **kwargs: Any) -> nn.Module:
    """A torchvision classification architecture with local weights (nothing is downloaded).

    ``weights``: a file path; ``null`` = the torch cache ``$TORCH_HOME/hub/checkpoints/<file>`` where ``file``
    defaults to torchvision's own name for ``weights_name`` (e.g. ``resnet18-f37072fd.pth``); ``random`` =
    the random initialisation (seeded by the run's seed). Other keys go to the architecture's builder."""
    import torchvision

    if not arch:
        raise BenchError("model=torchvision needs model.params.arch: a torchvision classification architecture, "
                         "e.g. convnext_tiny, efficientnet_b0, vit_b_16")
    what = f"torchvision {arch}"
    try:
        builder = torchvision.models.get_model_builder(arch)
    except ValueError:
        known = ", ".join(torchvision.models.list_models(module=torchvision.models)[:12])
        raise BenchError(f"unknown torchvision architecture '{arch}'; e.g. {known}, …") from None
    if weights is None:
        name = file or torchvision_weights_file(arch, weights_name)
        path = Path(torch.hub.get_dir()) / "checkpoints" / name
        if path.is_dir():
            raise BenchError(f"model '{arch}': {path} is a directory, not a file; put the weights file {name} there "
                             f"in its place or set model.params.weights=/path/to/{name}")
        if not path.is_file():
            what_file = (f"the weights file {name}" if file else f"torchvision's {weights_name} weights for {arch}")
            how = ("" if file else f"; torchvision.models.get_model('{arch}', weights='{weights_name}') fills it on a "
                                   f"machine with internet")
            raise BenchError(
                f"model '{arch}': no weights file — put {what_file} at {path} (the torch cache, "
                f"$TORCH_HOME/hub/checkpoints{how}) or set model.params.weights=/path/to/{name}; nothing is downloaded")
    elif str(weights) == "random":
        path = None
    else:
        path = Path(str(weights)).expanduser()
        if not path.is_file():  # (torchvision's file name is looked up only then: not every arch has one)
            example = torchvision_weights_file(arch, weights_name) if file is None else file
            _need_file(path, f"model '{arch}': weights file", f"put the state_dict of {arch} there (e.g. "
                       f"torchvision's {example}) or set model.params.weights=/path/to/file.pth")
    try:
        if path is None:
            model = builder(weights=None, num_classes=int(num_classes), **kwargs)
        else:  # no random initialisation of what the file replaces (seconds for VGG's 138M parameters)
            with torch.device("meta"):
                model = builder(weights=None, num_classes=int(num_classes), **kwargs)
            model = model.to_empty(device="cpu")
    except TypeError as exc:
        raise BenchError(f"model '{what}': bad parameters {kwargs}: {exc}") from None
    if path is None:
        log.warning("model '%s' has random weights (model.params.weights=random)", arch)
        return model.eval()
    _load_state(model, path, arch)
    if any(name not in model.state_dict() for name, _ in model.named_buffers()):  # buffers not in the file
        fresh = builder(weights=None, num_classes=int(num_classes), **kwargs)
        fresh.load_state_dict(model.state_dict())
        model = fresh
    return model.eval()
