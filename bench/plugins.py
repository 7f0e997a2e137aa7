"""Finds plug-ins by path: ``methods/<file>.py`` and ``datasets/<file>.py`` (benchopt style), and a user's
``protocols/<file>.py`` (bench/protocols/__init__.py).

Plug-in folders are not Python packages. Loading them by path keeps a top-level ``datasets`` package
from ever shadowing (or being shadowed by) Hugging Face's ``datasets``: each file is executed as the
private module ``bench_plugins.<kind>.<file>``. Extra plug-in folders can be listed in the environment
variable ``BENCH_PLUGIN_PATH`` (``os.pathsep``-separated; each may hold ``methods/`` and ``datasets/``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from .interfaces import Dataset, Method
from .errors import BenchError

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
KINDS = {"methods": Method, "datasets": Dataset}
#: A plug-in is named by its file (``lrp``) and optionally its class (``lrp:LRP``): plain names only, so
#: that a config value can never reach a file outside the plug-in folders (``../../x``, ``/tmp/x``).
PLUGIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(:[A-Za-z_][A-Za-z0-9_]*)?")


def plugin_dirs(kind: str, shipped: bool = True) -> list[Path]:
    """``<root>/<kind>/`` of the suite (unless ``shipped=False``) and of every folder on ``BENCH_PLUGIN_PATH``."""
    roots = [ROOT] * shipped + [Path(p) for p in os.environ.get("BENCH_PLUGIN_PATH", "").split(os.pathsep) if p]
    return [r / kind for r in roots if (r / kind).is_dir()]


def available(kind: str) -> list[str]:
    return sorted({p.stem for d in plugin_dirs(kind) for p in d.glob("*.py") if not p.name.startswith("_")})


def check_name(kind: str, name: Any, what: str = "") -> str:
    if not isinstance(name, str) or not PLUGIN_NAME.fullmatch(name):
        raise BenchError(f"{what or kind[:-1] + '.plugin'} must be the plain name of a file in {kind}/ (letters, "
                         f"digits, _; optionally :Class), got {name!r}; available: {', '.join(available(kind))}")
    return name


def load_module(kind: str, name: str) -> ModuleType:
    """The plug-in file ``<kind>/<name>.py`` of the first plug-in folder that has it, executed once per
    process (again if another folder's file of that name is meant now, e.g. after BENCH_PLUGIN_PATH changed)."""
    check_name(kind, name)
    modname = f"bench_plugins.{kind}.{name}"
    for d in plugin_dirs(kind):
        path = d / f"{name}.py"
        if path.is_file():
            loaded = sys.modules.get(modname)
            if loaded is not None and getattr(loaded, "__file__", None) == str(path):
                return loaded
            spec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[modname] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[modname]
                raise
            return module
    raise BenchError(f"no {kind[:-1]} plug-in file '{name}.py' in {', '.join(map(str, plugin_dirs(kind)))}; "
                     f"available: {', '.join(available(kind)) or 'none'}")


def load_class(kind: str, name: str) -> type:
    """The one subclass of Method/Dataset defined in ``<kind>/<name>.py`` (or ``name`` = ``file:Class``)."""
    file, _, clsname = name.partition(":")
    module = load_module(kind, file)
    base = KINDS[kind]
    found = [c for _, c in inspect.getmembers(module, inspect.isclass)
             if issubclass(c, base) and c is not base and c.__module__ == module.__name__
             and (not clsname or c.__name__ == clsname) and not c.__name__.startswith("_")]
    if len(found) != 1:
        what = f"class {clsname}" if clsname else f"exactly one {base.__name__} subclass"
        raise BenchError(f"{kind}/{file}.py must define {what}; found {[c.__name__ for c in found]}")
    return found[0]


def build(kind: str, node: Mapping[str, Any], what: str) -> Any:
    """The plug-in object a config node describes: the class of ``<kind>/<node.plugin>.py`` called with
    ``node.params``. ``what`` is the node's place in the config (``method``, ``dataset``) for messages.
    The one way a plug-in is built (the run specification, the translation wrapper, the benchmarks)."""
    plugin = check_name(kind, node.get("plugin"), f"{what}.plugin")
    params = node.get("params")
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise BenchError(f"{what}.params must be a mapping of keyword arguments, got {params!r}")
    cls = load_class(kind, plugin)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:  # unknown keyword, or a check the plug-in makes with Python's types
        raise BenchError(f"{what} '{node.get('name', plugin)}' ({kind}/{plugin.partition(':')[0]}.py): "
                         f"{' '.join(str(exc).split())}; its params were {dict(params)}") from None


def conf_file(group: str, name: str, what: str = "") -> Path:
    """``conf/<group>/<name>.yaml`` in the suite's or an extra plug-in folder (``BENCH_PLUGIN_PATH``);
    ``what`` names the setting that gave ``name``, for messages."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", name):
        raise BenchError(f"{what or group} must be the plain name of a file in conf/{group}/, got {name!r}")
    for conf in plugin_dirs("conf"):
        if (path := conf / group / f"{name}.yaml").is_file():
            return path
    raise BenchError(f"{what or group}: no config '{name}.yaml' in conf/{group}/")


def conf_node(group: str, name: str, what: str = "") -> dict:
    """``conf/<group>/<name>.yaml`` as a plain dict (a method, a dataset … by its YAML name)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(conf_file(group, name, what)), resolve=True)
