"""Models — ``model=<name>`` picks ``conf/model/<name>.yaml``, whose ``kind`` is one of ``MODELS``:

- ``embedded_cnn``: the papers' style of CNN, (conv → ReLU → max-pool) × 2, then dense → ReLU → dense.
  It is trained deterministically on the dataset's train split in seconds on CPU and cached on disk
  *outside* ``results/`` (``cache_dir``, default ``~/.cache/bench``), keyed by a hash of the architecture,
  the training settings and the training data; later runs reuse it.
- ``torchvision``: a torchvision architecture (``arch``: alexnet, vgg16, vgg16_bn, resnet18, resnet50, …)
  with weights from a local file (``weights: /path``), or — ``weights: null`` — from the torch cache
  ``$TORCH_HOME/hub/checkpoints/<torchvision's file name>``. Nothing is downloaded; ``weights: random``
  keeps the random initialisation (tests, timing).
- ``user``: any ``nn.Module`` by ``_target_`` (``package.module.Class`` or a factory function; its other
  keys are keyword arguments) plus a ``checkpoint`` file holding its state_dict.
- ``checkpoint``: one checkpoint of an embedded CNN trained with ``train_embedded_cnn`` /
  ``python -m bench.models`` (checkpoints along training, for the network-quality experiment, TNNLS Fig. 7).

Every file is loaded with ``torch.load(..., weights_only=True)``; a missing file is a one-line
``BenchError`` saying which file to put where. One file per kind of model (``embedded``, ``zoo`` for torchvision, ``user``, ``hub`` for timm and Hugging
Face; ``weights`` loads every file safely); this module is the registry. The model's input preprocessing
(resize, crop, mean, std) is declared in the model YAML's ``input`` block and applied by the dataset (see conf/dataset/*.yaml).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import BenchError
from ..interfaces import Dataset
from .embedded import CHECKPOINTS_CSV, embedded_cnn, load_checkpoint, load_embedded_cnn, train_embedded_cnn
from .embedded_vit import load_embedded_vit
from .hub import load_huggingface, load_timm
from .user import load_given, load_user
from .zoo import load_torchvision, register_input_resolver, torchvision_input

__all__ = ["MODELS", "CHECKPOINTS_CSV", "build_model", "check_fits", "check_params", "embedded_cnn", "load_model",
           "register_input_resolver", "torchvision_input", "train_embedded_cnn"]

log = logging.getLogger(__name__)

MODELS = {"embedded_cnn": load_embedded_cnn, "embedded_vit": load_embedded_vit, "torchvision": load_torchvision,
          "user": load_user,
          "checkpoint": load_checkpoint, "given": load_given, "timm": load_timm, "huggingface": load_huggingface}


def check_fits(model: nn.Module, dataset: Dataset, name: str) -> None:
    """One forward pass on a blank input of the dataset's shape: a model that cannot take the images fails
    here, in one line, before any work."""
    x = dataset.normalization.normalize(torch.zeros(1, *dataset.image_shape))
    try:
        with torch.inference_mode():
            out = model.eval()(x)
    except Exception as exc:
        raise BenchError(f"model '{name}' cannot take the {'×'.join(map(str, dataset.image_shape))} inputs of "
                         f"dataset {type(dataset).__name__} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); check the preprocessing "
                         f"(model.input / dataset.params resize, crop, channels)") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise BenchError(f"model '{name}' must return class scores of shape (batch, classes), got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if out.shape[1] != dataset.num_classes:
        log.warning("model '%s' has %d outputs but dataset %s has %d classes; target=label needs them to agree",
                    name, out.shape[1], type(dataset).__name__, dataset.num_classes)


def check_params(kind: str, params: dict) -> None:
    """The model's ``params`` must be keyword arguments its loader takes (checked by the run spec before any
    work; the loader checks files and values when the job loads the model)."""
    import inspect

    from .. import checks

    loader = MODELS[kind]
    signature = inspect.signature(loader)
    if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):  # torchvision, user: the
        try:                                                                      # architecture's own keys
            signature.bind_partial(None, **params)
        except TypeError:
            accepted = [n for n in list(signature.parameters)[1:] if n != "cache_dir"]
            unknown = [k for k in params if k not in signature.parameters]
            raise BenchError(f"unknown setting 'model.params.{unknown[0] if unknown else '?'}' for a model of kind "
                             f"'{kind}'; valid keys: {', '.join(accepted)}") from None
    training = (dict(params.get("train") or {}) if kind == "checkpoint" else
                params if kind in ("embedded_cnn", "embedded_vit") else {})
    where = "model.params.train" if kind == "checkpoint" else "model.params"
    for key, check in (("epochs", lambda n, v: checks.integer(n, v, low=1)),
                       ("lr", lambda n, v: checks.number(n, v, low=0, low_open=True)),
                       ("batch_size", lambda n, v: checks.integer(n, v, low=1)),
                       ("seed", lambda n, v: checks.integer(n, v, low=0)),
                       ("hidden", lambda n, v: checks.integer(n, v, low=1)),
                       *((k, lambda n, v: checks.integer(n, v, low=1)) for k in ("patch", "dim", "depth", "heads",
                                                                                  "mlp"))):
        if key in training:
            check(f"{where}.{key}", training[key])
    channels = training.get("channels")
    if channels is not None and (not isinstance(channels, (list, tuple)) or len(channels) != 2):
        raise BenchError(f"{where}.channels must be a list of two positive integers, got {channels!r}")
    for c in channels or ():
        checks.integer(f"{where}.channels", c, low=1)
    if kind == "checkpoint" and str(params.get("iteration", "last")) != "last":
        checks.integer("model.params.iteration", params.get("iteration"), low=0)


def build_model(kind: str, dataset: Dataset, params: dict, name: str | None = None) -> nn.Module:
    """The model of kind ``kind`` (``MODELS``) with ``params``, checked to take ``dataset``'s images."""
    if kind not in MODELS:
        raise BenchError(f"unknown model kind '{kind}'; available: {', '.join(MODELS)}")
    try:
        model = MODELS[kind](dataset, **params)
    except TypeError as exc:
        raise BenchError(f"model '{name or kind}': {exc}") from None
    check_fits(model, dataset, params.get("arch") or params.get("_target_") or name or kind)
    return model


def load_model(spec) -> nn.Module:
    """The model of a checked run specification (bench/run/spec.py)."""
    return build_model(spec.model.plugin, spec.dataset.obj, dict(spec.model.params, cache_dir=spec.cache_dir),
                       spec.model.name)


