"""A user's own ``nn.Module`` by class path with a state_dict file (``model=user``), and the Python API's model
object (``given``)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from torch import nn

from ..interfaces import Dataset
from ..errors import BenchError

from .weights import _load_state, _need_file

log = logging.getLogger(__name__)


def _import(target: str) -> Any:
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise BenchError(f"model 'user': _target_ must be 'package.module.Class', got '{target}'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"model 'user': cannot import _target_ '{target}' ({type(exc).__name__}: {exc}); make "
                         f"its module importable (the current directory or PYTHONPATH)") from None


def load_user(dataset: Dataset, _target_: str | None = None, checkpoint: str | None = None,
              strict: bool = True, cache_dir: str | None = None, **kwargs: Any) -> nn.Module:
    """``_target_(**kwargs)`` with the state_dict in ``checkpoint`` (``random``: keep the initialisation)."""
    if not _target_:
        raise BenchError("model 'user' needs its class: set model.params._target_=package.module.Class")
    if checkpoint is None:
        raise BenchError("model 'user' needs its weights: set model.params.checkpoint=/path/to/state_dict.pt "
                         "(saved with torch.save(model.state_dict(), path))")
    cls = _import(str(_target_))
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise BenchError(f"model 'user': {_target_}(**{kwargs}) failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise BenchError(f"model 'user': {_target_} gave a {type(model).__name__}, not a torch.nn.Module")
    if str(checkpoint) == "random":
        log.warning("model 'user' (%s) has random weights (model.params.checkpoint=random)", _target_)
    else:
        path = _need_file(Path(str(checkpoint)).expanduser(), "model 'user': checkpoint",
                          f"put the state_dict of {_target_} there (torch.save(model.state_dict(), path)) or set "
                          f"model.params.checkpoint=FILE")
        _load_state(model, path, "user", strict=bool(strict))
    return model.eval()


def load_given(dataset: Dataset, cache_dir: str | None = None) -> nn.Module:
    """Kind ``given``: the model object handed to the Python API (bench/run/python_api.py); there is nothing to load."""
    raise BenchError("model kind 'given' is the Python API's: pass the model to bench.evaluate_explanations(model, …)")
