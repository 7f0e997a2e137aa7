"""A user's own ``nn.Module`` by class path with a state_dict file (``model=user``), and the Python API's model
object (``given``)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

from torch import nn

from ..interfaces import Dataset
from ..errors import BenchError

from .weights import _load_state, _need_file

log = logging.getLogger(__name__)


def _system_file(path: str | None) -> bool:
    """Whether ``path`` is part of Python itself (the standard library, builtins, frozen modules)."""
    if not path or path in ("built-in", "frozen"):
        return True
    stdlib = [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")]
    real = os.path.realpath(path)
    site = [os.path.realpath(p) for p in {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}]
    return any(real.startswith(os.path.realpath(d) + os.sep) for d in stdlib) and \
        not any(real.startswith(d + os.sep) for d in site)


def _installed_file(path: str) -> bool:
    """Whether ``path`` belongs to an installed package (site-packages) rather than to a user's own files."""
    real = os.path.realpath(path)
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} | {sys.prefix, sys.base_prefix}
    return any(real.startswith(os.path.realpath(r) + os.sep) for r in roots)


def _suite_file(path: str) -> bool:
    """Whether ``path`` is the suite's own code (the bench package, its shipped methods/ and datasets/), which
    holds no model factory of the user's — refused alike whether bench is installed or an editable checkout."""
    from ..plugins import ROOT

    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(ROOT / d) + os.sep) for d in ("bench", "methods", "datasets"))


def _import(target: str) -> Any:
    """The class (or factory) ``target`` names — only a ``torch.nn.Module`` subclass, or a function defined in a
    file of the user's own (not Python's standard library, not an installed package); checked before anything is
    called, so that a config never runs ``os.system``, ``subprocess.getoutput``, ``builtins.eval`` …"""
    module_name, _, attr = str(target).rpartition(".")
    if not module_name or not all(part.isidentifier() for part in str(target).split(".")):
        raise BenchError(f"model 'user': _target_ must be 'package.module.Class', got '{target}'")
    refused = (f"model 'user': _target_ '{target}' is not a torch.nn.Module class nor a function in a file of your "
               f"own; the suite calls only those")
    try:
        top = importlib.util.find_spec(module_name.split(".")[0])
    except (ImportError, ValueError):
        top = None
    if top is None:
        raise BenchError(f"model 'user': cannot import _target_ '{target}' (no module named "
                         f"'{module_name.split('.')[0]}'); make its module importable (the current directory or "
                         f"PYTHONPATH)")
    where = [top.origin] if top.origin else list(top.submodule_search_locations or [])  # (a namespace package)
    if module_name.split(".")[0] in sys.builtin_module_names or not where or any(map(_system_file, where)):
        raise BenchError(refused)  # (the standard library holds no model; it is not even imported)
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"model 'user': cannot import _target_ '{target}' ({type(exc).__name__}: {exc}); make "
                         f"its module importable (the current directory or PYTHONPATH)") from None
    if inspect.isclass(obj):
        if issubclass(obj, nn.Module):
            return obj
        raise BenchError(refused)
    if inspect.isfunction(obj):
        source = inspect.getsourcefile(obj)
        if source and not _installed_file(source) and not _system_file(source) and not _suite_file(source):
            return obj
    raise BenchError(refused)


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
