"""The sweep of the metric report card (DEFINITIONS §10): ``python -m bench -m experiment=metric_card``.

Hydra's basic sweep (the product of the command line's and the experiment's lists) with, for every job of it,
the runs the card needs and no other: every method at each seed of ``seeds`` (the first is the reference run);
every method but ``random`` (a random heatmap does not depend on the model) at ``randomise_layers`` = each k of
``layers``, on the first seed; every method at ``input_noise`` = ``noise``, on the first seed. The jobs are
ordinary runs (their folders named ``method=…,seed=1``, ``…,randomise_layers=2``, ``…,input_noise=auto``), so
they resume, shard, run on any launcher (joblib, Slurm) and are collected like every sweep.

A request the card cannot use is refused before any job starts, in one line: fewer than 3 methods or none
``random``; fewer than 2 seeds; a protocol without a quantity that compares methods (direction ±1); a model with
fewer parameterised layers than the largest k; ``seed``, ``randomise_layers`` or ``input_noise`` set by hand.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from omegaconf import OmegaConf

from ..errors import BenchError

VARIANT_KEYS = ("seed", "randomise_layers", "input_noise")
#: The name Hydra knows the sweeper by (its plug-ins must live in ``hydra_plugins``): :func:`register`.
TARGET = "hydra_plugins.bench_card.CardSweeper"
BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def clean_runs(rows):
    """The rows (of any table with the provenance) of runs neither randomised nor noisy: the seeds' runs."""
    return rows[(rows.randomise_layers == 0) & (rows.input_noise == 0)]


def reference_runs(rows):
    """The rows of the reference runs: clean (:func:`clean_runs`), at the first seed — the plain sweep."""
    clean = clean_runs(rows)
    return clean[clean.seed == clean.seed.min()]


def card_jobs(jobs: list[list[str]], seeds: Sequence[int], layers: Sequence[int], noise: Any) -> list[list[str]]:
    """Each job (its overrides) expanded into the card's runs (module docstring)."""
    out = []
    for job in jobs:
        method = next((o.split("=", 1)[1] for o in job if o.startswith("method=")), None)
        runs = [[f"seed={s}"] for s in seeds]
        if method != "random":
            runs += [[f"seed={seeds[0]}", f"randomise_layers={k}"] for k in layers]
        if noise is not None and noise != 0:
            runs.append([f"seed={seeds[0]}", f"input_noise={noise}"])
        out += [job + r for r in runs]
    return out


def check_request(jobs: list[list[str]], seeds: Sequence[int], layers: Sequence[int], metrics: Sequence[str]) -> None:
    """Refuse, in one line, what the card cannot use (module docstring), the model excepted."""
    from .. import protocols

    methods = sorted({o.split("=", 1)[1] for job in jobs for o in job if o.startswith("method=")})
    if len(methods) < 3 or "random" not in methods:
        raise BenchError(f"experiment=metric_card needs at least 3 methods, random among them (DEFINITIONS §10), "
                         f"got method={','.join(methods) or '(one, not swept)'}")
    if len(set(seeds)) < 2:
        raise BenchError(f"experiment=metric_card needs at least 2 seeds for the noise floor, got "
                         f"hydra.sweeper.seeds={list(seeds)}")
    if any(int(k) < 1 for k in layers) or len(set(layers)) != len(layers):
        raise BenchError(f"hydra.sweeper.layers must be distinct k ≥ 1, got {list(layers)}")
    for o in (o for job in jobs for o in job):
        if o.split("=", 1)[0] in VARIANT_KEYS:
            raise BenchError(f"experiment=metric_card sets {o.split('=', 1)[0]} itself: set hydra.sweeper.seeds, "
                             f".layers or .noise instead of {o}")
    for name in metrics:
        if name not in protocols.available():
            continue  # the run's own check names it
        if not any(q.direction for q in protocols.protocol_class(name).quantities if not q.diagnostic):
            raise BenchError(f"metrics=[…, {name}]: protocol '{name}' declares no quantity with a direction (+1 or "
                             f"−1), so the card cannot rank methods by it; leave it out of metrics")


def check_model(config, layers: Sequence[int]) -> None:
    """Refuse a model with fewer parameterised layers than the largest k (the sweep's own model and dataset)."""
    if not layers:
        return
    from ..models import load_model
    from .spec import build_spec
    from .variants import explained_model

    conf = OmegaConf.to_container(config, resolve=False)
    conf.pop("hydra", None)
    spec = build_spec(OmegaConf.create(conf), here=False)
    model = load_model(spec)
    explained_model(dataclasses.replace(spec, randomise_layers=max(layers)), model)


def sweeper_class(basic: type) -> type:
    """The card's sweeper: Hydra's basic sweeper ``basic``, each job expanded into the card's runs (:func:`card_jobs`).
    Built on the class Hydra's plug-in registry holds (its scan re-imports the module, so the class imported here
    would be another object)."""

    class CardSweeper(basic):
        def __init__(self, max_batch_size: int | None = None, params: dict | None = None,
                     seeds: Sequence[int] = (0, 1, 2), layers: Sequence[int] = (1, 2, 3), noise: Any = "auto") -> None:
            super().__init__(max_batch_size=max_batch_size, params=params)
            self.seeds, self.layers, self.noise = [int(s) for s in seeds], [int(k) for k in layers], noise

        def split_arguments(self, overrides, max_batch_size):  # type: ignore[override]
            jobs = basic.split_arguments(overrides, None)[0]
            check_request(jobs, self.seeds, self.layers, list(self.config.get("metrics") or []))
            check_model(self.config, self.layers)
            jobs = card_jobs(jobs, self.seeds, self.layers, self.noise)
            if max_batch_size is None:
                return [jobs]
            return [list(c) for c in basic.split_overrides_to_chunks(jobs, max_batch_size)]

    return CardSweeper


def register() -> None:
    """Enter the card's sweeper into Hydra's plug-in registry as ``TARGET`` (idempotent; bench/run/cli.py)."""
    from hydra.core.plugins import Plugins

    global CardSweeper
    registry = Plugins.instance().class_name_to_class
    if TARGET not in registry:
        cls = sweeper_class(registry[BASIC])
        cls.__qualname__ = cls.__name__  # Hydra instantiates it by this module's attribute of that name
        CardSweeper = registry[TARGET] = cls


CardSweeper: type | None = None   # set by register()
