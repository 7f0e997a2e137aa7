"""Finds plug-ins by path: ``methods/<file>.py`` and ``datasets/<file>.py`` (benchopt style).

Plug-in folders are not Python packages. Loading them by path keeps a top-level ``datasets`` package
from ever shadowing (or being shadowed by) Hugging Face's ``datasets``: each file is executed as the
private module ``bench_plugins.<kind>.<file>``. Extra plug-in folders can be listed in the environment
variable ``BENCH_PLUGIN_PATH`` (``os.pathsep``-separated; each may hold ``methods/`` and ``datasets/``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType

from .api import Dataset, Method
from .errors import BenchError

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
KINDS = {"methods": Method, "datasets": Dataset}


def plugin_dirs(kind: str) -> list[Path]:
    roots = [ROOT] + [Path(p) for p in os.environ.get("BENCH_PLUGIN_PATH", "").split(os.pathsep) if p]
    return [r / kind for r in roots if (r / kind).is_dir()]


def available(kind: str) -> list[str]:
    return sorted({p.stem for d in plugin_dirs(kind) for p in d.glob("*.py") if not p.name.startswith("_")})


def load_module(kind: str, name: str) -> ModuleType:
    modname = f"bench_plugins.{kind}.{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    for d in plugin_dirs(kind):
        path = d / f"{name}.py"
        if path.is_file():
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
