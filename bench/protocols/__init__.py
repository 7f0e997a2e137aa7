"""The evaluation protocols, one file each, found by path (like ``methods/`` and ``datasets/``).

``bench/protocols/<name>.py`` defines one :class:`~bench.protocols.base.Protocol` subclass: its settings, the
shared state it needs, its device work, its tables, quantities and figures (see bench/protocols/base.py). A
user's own protocol is a file ``<dir>/protocols/<name>.py`` of a folder ``<dir>`` on ``BENCH_PLUGIN_PATH``, run
with ``metrics=[aopc,<name>]``; nothing else is registered anywhere.

This module only finds them. It imports no protocol file statically: the run's code identity
(bench/run/identity.py) hashes the files of the protocols a run computes, not of every protocol.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

from ..errors import BenchError
from .base import (SCORE_UNITS, Batch, Figure, Protocol, Quantity, RunInfo, Table, boolean, choice, curve_auc,  # noqa: F401
                   grid_frame, increasing_fractions, integer, integers, number, odd, optional, setting,
                   substrate_settings)

#: The shipped protocols in catalogue order: the order of summary.csv's rows, the printed table and the report's
#: columns. A user's protocols follow, sorted by name.
SHIPPED = ("aopc", "complexity", "continuity", "srg", "road", "irof", "pixel_flipping", "faithfulness_correlation",
           "deletion", "insertion", "sensitivity_n", "infidelity")
HERE = Path(__file__).resolve().parent


def protocol_dirs() -> list[Path]:
    """bench/protocols/ and the ``protocols/`` folders of the folders on ``BENCH_PLUGIN_PATH``."""
    from ..plugins import plugin_dirs

    return [HERE] + plugin_dirs("protocols", shipped=False)


def available() -> tuple[str, ...]:
    """Every protocol's name, in catalogue order (:data:`SHIPPED`, then the user's, sorted)."""
    found = {p.stem for d in protocol_dirs() for p in d.glob("*.py")
             if not p.name.startswith("_") and p.stem != "base"}
    return tuple(n for n in SHIPPED if n in found) + tuple(sorted(found - set(SHIPPED)))


def protocol_class(name: str) -> type[Protocol]:
    """The protocol class of ``<name>.py``: bench/protocols/ first, then the folders on ``BENCH_PLUGIN_PATH``."""
    from ..plugins import PLUGIN_NAME, load_module

    if not isinstance(name, str) or not PLUGIN_NAME.fullmatch(name) or ":" in name:
        raise BenchError(f"metrics: a protocol is the plain name of a file in protocols/, got {name!r}")
    try:
        if (HERE / f"{name}.py").is_file():
            module = importlib.import_module(f"{__name__}.{name}")
        else:
            module = load_module("protocols", name)
    except BenchError:
        raise
    except Exception as exc:  # a user's broken protocol file: one line naming it, not a traceback
        raise BenchError(f"protocols/{name}.py cannot be loaded ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]})") from exc
    found = [c for _, c in inspect.getmembers(module, inspect.isclass)
             if issubclass(c, Protocol) and c is not Protocol and c.__module__ == module.__name__
             and not c.__name__.startswith("_")]
    if len(found) != 1:
        raise BenchError(f"protocols/{name}.py must define exactly one Protocol subclass; found "
                         f"{[c.__name__ for c in found]}")
    cls = found[0]
    loose = [k for k, v in vars(cls).items() if isinstance(v, dataclasses.Field)]
    if loose or "__dataclass_fields__" not in vars(cls):
        raise BenchError(f"protocols/{name}.py: decorate {cls.__name__} with @dataclass(frozen=True) (its settings "
                         f"are the dataclass's fields{': ' + ', '.join(loose) if loose else ''})")
    if cls.name != name:
        cls.name = name
    return cls


def catalogue() -> list[type[Protocol]]:
    """Every protocol class, in catalogue order."""
    return [protocol_class(n) for n in available()]


def required() -> tuple[str, ...]:
    """The protocols every run computes (``metrics`` must list them)."""
    return tuple(c.name for c in catalogue() if c.required)


def anchor() -> str:
    """The table every run writes (the required protocol's first table): the report finds runs by it."""
    return next(c.tables[0].name for c in catalogue() if c.required)


def quantities() -> dict[str, tuple[type[Protocol], Quantity]]:
    """Every declared quantity by name: (its protocol, its declaration)."""
    return {q.name: (c, q) for c in catalogue() for q in c.quantities}


def settings_blocks() -> dict[str, dict]:
    """The config block of every protocol with settings: ``{name: {setting: default}}`` (conf/ gets them from
    here, bench/run/config.py)."""
    return {c.name: c.defaults() for c in catalogue() if c.settings()}


def unit(quantity: str, score: str, protocol_settings: dict | str | None = None) -> str:
    """The unit of ``quantity`` as a run computed it (its declaration's ``unit``, ``{score}`` resolved): the
    score is its protocol's ``score`` setting in ``protocol_settings`` ({protocol: {setting: value}} or that as
    JSON, e.g. a row's ``protocol_settings``) when the protocol has one, else the run's ``score``. "" for a name
    no protocol declares."""
    import json

    found = quantities().get(quantity)
    if found is None:
        return ""
    cls, q = found
    settings = json.loads(protocol_settings) if isinstance(protocol_settings, str) else protocol_settings or {}
    own = settings.get(cls.name, {}).get("score") if isinstance(settings.get(cls.name), dict) else None
    if own is None and "score" in {f.name for f in dataclasses.fields(cls)}:
        own = cls.defaults().get("score")  # an older row without the settings: the declared default
    return q.unit.format(score=SCORE_UNITS.get(own or score, own or score))
