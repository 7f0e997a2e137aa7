"""Old module paths of the flat bench/ (before the subpackages), kept importable for one release.

``import bench.seeding`` or ``from bench.api import Method`` (users' plug-ins) give the module at its new place
(``bench.engine.seeding``, ``bench.interfaces``) — the same module object, not a copy — with a
``DeprecationWarning``. The commands keep their names: ``python -m bench.collect`` runs ``bench.run.collect``,
``python -m bench.perf_family`` runs ``bench.perf.family`` (without a warning).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

#: old module → new module
MOVED = {
    "bench.api": "bench.interfaces",
    "bench.regions": "bench.engine.regions",
    "bench.perturbation": "bench.engine.replacement",
    "bench.seeding": "bench.engine.seeding",
    "bench.counter_rng": "bench.engine.counter_rng",
    "bench.imputation": "bench.engine.imputation",
    "bench.biharmonic": "bench.engine.biharmonic",
    "bench.superpixels": "bench.engine.superpixels",
    "bench.pooling": "bench.engine.pooling",
    "bench.scoring": "bench.engine.scoring",
    "bench.stats": "bench.engine.stats",
    "bench.render": "bench.engine.render",
    "bench.complexity": "bench.protocols.complexity",
    "bench.continuity": "bench.protocols.continuity",
    "bench.hub_models": "bench.models.hub",
    "bench.imagefolders": "bench.data.imagefolders",
    "bench.heatmap_files": "bench.data.heatmap_files",
    "bench.spec": "bench.run.spec",
    "bench.identity": "bench.run.identity",
    "bench.jobdir": "bench.run.jobdir",
    "bench.lock": "bench.run.lock",
    "bench.evaluate": "bench.run.evaluate",
    "bench.pipeline": "bench.run.pipeline",
    "bench.progress": "bench.run.progress",
    "bench.runtime": "bench.run.runtime",
    "bench.tables": "bench.run.tables",
    "bench.summary": "bench.run.summary",
    "bench.hydra_app": "bench.run.cli",
    "bench.slurm": "bench.run.slurm",
    "bench.collect": "bench.run.collect",
    "bench.inmemory": "bench.run.python_api",
    "bench.groundtruth": "bench.run.groundtruth",
    "bench.network_quality": "bench.run.network_quality",
    "bench.style": "bench.report.style",
    "bench.perf_cli": "bench.perf.cli",
    "bench.perf_compare": "bench.perf.compare",
    "bench.perf_family": "bench.perf.family",
    "bench.perf_imputation": "bench.perf.imputation",
    "bench.perf_inpaint": "bench.perf.inpaint",
    "bench.perf_inputs": "bench.perf.inputs",
    "bench.perf_methods": "bench.perf.methods",
    "bench.perf_road": "bench.perf.road",
    "bench.perf_suite": "bench.perf.suite",
}


class _Spec(importlib.machinery.ModuleSpec):
    """The old name's spec; its ``parent`` is the new module's package, so that ``python -m <old name>`` runs the
    new module's code with its relative imports intact."""

    def __init__(self, name: str, loader: "_Loader") -> None:
        super().__init__(name, loader, origin=importlib.util.find_spec(loader.target).origin)
        self._new_parent = loader.target.rpartition(".")[0]

    @property
    def parent(self) -> str:
        return self._new_parent


class _Loader(importlib.abc.Loader):
    def __init__(self, old: str, target: str) -> None:
        self.old, self.target = old, target

    def create_module(self, spec):
        warnings.warn(f"{self.old} moved to {self.target}; the old path works until the next release",
                      DeprecationWarning, stacklevel=4)
        return importlib.import_module(self.target)  # the module itself: one module object under two names

    def exec_module(self, module) -> None:
        sys.modules[self.old] = module

    def get_code(self, fullname: str):  # python -m <old name> (runpy)
        return importlib.util.find_spec(self.target).loader.get_code(self.target)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        new = MOVED.get(fullname)
        return _Spec(fullname, _Loader(fullname, new)) if new else None


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
