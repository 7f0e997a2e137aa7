"""``bench [overrides]`` (= ``python -m bench``) — the Hydra glue, and only that: compose the config, turn it
into the checked run specification (bench/run/spec.py), run the job (bench/run/job.py), print the table.

Also here: the resolvers that name sweep and job folders after their overrides (conf/config.yaml), the
callback that collects a sweep when it ends (bench/run/collect.py), and ``compose`` for tools and tests.

Errors. A problem the user can fix — a bad setting, a missing file, a folder in use or holding another run,
a read-only folder, a full disk — ends in one line on stderr and exit status 2, never a traceback; a bug
shows its traceback. In a sweep (``-m``) a failing job prints its line and the sweep goes on; the sweep is
collected at its end, failed jobs are listed, and the exit status is 1. ``FAILED`` is written only into a
job folder the job owns, or (in a sweep) one that holds no run, so that collect lists it with its reason.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from . import card_sweep, slurm
from .config import compose, hydra_record, register_resolvers  # noqa: F401 (compose: for tools)
from ..errors import BenchError, cli_error_line, failure_text
from ..plugins import CONF_DIR

log = logging.getLogger("bench")


register_resolvers()  # at import: launcher workers (joblib, submitit) import this module to run a job


# -------------------------------------------------------------------------------- sweeps

@dataclass
class SweepOutcome:
    collection: Any = None   # bench.collect.Collection of the last sweep in this process


SWEEP = SweepOutcome()


class CollectCallback(Callback):
    """After a multirun: collect the sweep folder and list failed jobs (conf/config.yaml, hydra.callbacks).
    ``then``: functions (dotted paths, set by an experiment) called with the collection afterwards, e.g. the metric
    card's (conf/experiment/metric_card.yaml)."""

    def __init__(self, then: list[str] | None = None) -> None:
        self.then = list(then or [])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .collect import collect, format_report

        from .slurm import ENDED

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            SWEEP.collection = collect(sweep_dir)
        except Exception as exc:  # collecting must never hide the sweep's own outcome
            log.warning("collecting %s failed (%s: %s); run: python -m bench.collect %s",
                        sweep_dir, type(exc).__name__, exc, sweep_dir)
            return
        for job in SWEEP.collection.jobs:  # a job the cluster ended: say so (bench/run/slurm.py)
            ended = ENDED.reason(job.path, job.overrides)
            if ended and job.status in ("incomplete", "missing"):
                job.reason = f"{ended}; {job.reason}"
        print(format_report(SWEEP.collection), file=sys.stderr if not SWEEP.collection.ok else sys.stdout)
        if SWEEP.collection.summary is None:
            return
        from .summary import comparison_table

        summary = SWEEP.collection.summary
        card = str(config.hydra.sweeper.get("_target_", "")) == card_sweep.TARGET
        if card:  # the comparison of the reference runs; the card's other runs are read by the card
            summary = card_sweep.reference_runs(summary)
        print("\n" + comparison_table(summary))  # the sweep's comparison: methods × conditions
        for name in self.then:  # (the suite's own functions only: a config value never names arbitrary code)
            fn = get_method(name) if str(name).startswith("bench.") else None
            if fn is None or not str(getattr(fn, "__module__", "")).startswith("bench."):
                log.error("hydra.callbacks.collect.then: %r is not a function of the bench package; not called", name)
                continue
            fn(SWEEP.collection)


# -------------------------------------------------------------------------------- errors

def _raised_in(exc: BaseException, package: str) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is code of ``package`` (an installed library)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}{package}{os.sep}" in tb.tb_frame.f_code.co_filename


def error_line(exc: BaseException) -> str | None:
    """The one line for a problem the user can fix (None: a bug, whose traceback should show)."""
    if type(exc).__name__ == "ConfigCompositionException" and "Could not override" in str(exc):
        found = re.search(r"Could not override '([^']+)'", str(exc))
        key = found.group(1) if found else "?"
        if "." in key:
            group = key.split(".")[0]
            from .. import protocols

            blocks = protocols.settings_blocks()
            if group in blocks:  # a protocol's settings, declared in bench/protocols/<group>.py
                return f"error: unknown setting '{key}'; valid {group} keys: {', '.join(blocks[group])}"
            return (f"error: unknown setting '{key}': the chosen {group} config has no such key (see its YAML in "
                    f"conf/{group}/; +{key}=… adds a key, for a plug-in that takes it)")
        from .spec import top_keys

        return f"error: unknown setting '{key}'; valid settings: {', '.join(top_keys())}"
    if isinstance(exc, (ValueError, TypeError)) and _raised_in(exc, "joblib"):  # hydra/launcher=joblib's settings
        said = (str(exc).splitlines() or [repr(exc)])[0].strip("'\"")
        return (f"error: hydra/launcher=joblib refused its settings ({said}); see hydra.launcher.* (n_jobs: an "
                f"integer ≥ 1, or -1 for one job per core)")
    if "Ambiguous value for argument" in str(exc):  # a list of values without -m: the user meant a sweep
        found = re.search(r"argument '([^']+)'", str(exc))
        given = found.group(1) if found else "key=a,b"
        return (f"error: {given} gives several values, which is a sweep: add -m (python -m bench -m {given} …), "
                f"or quote a list value as key='[a,b]'")
    if type(exc).__name__ == "OverrideParseException":
        return f"error: cannot read the override '{getattr(exc, 'override', '?')}': {str(exc).splitlines()[0]}"
    return cli_error_line(exc)


# -------------------------------------------------------------------------------- the app

@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> float | None:
    from .jobdir import JobDir
    from .lock import LockHeld
    from .job import run
    from .runtime import keep_freed_memory, threads_of_slurm_task
    from .spec import build_spec
    from .summary import format_table, headline

    keep_freed_memory()  # reuse freed activation buffers instead of page-faulting new ones (bench/run/runtime.py)
    threads_of_slurm_task()  # a Slurm job uses the CPUs it was given, not every core of the node
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    record = hydra_record(cfg)
    job = JobDir(out_dir)
    try:
        spec = build_spec(cfg)
        summary = run(spec, out_dir, config_yaml=OmegaConf.to_yaml(cfg, resolve=True), hydra_files=record, job=job)
    except Exception as exc:
        line = error_line(exc)
        if not job.claimed:  # (once it owns the folder, run() records FAILED itself)
            if sweep and not isinstance(exc, LockHeld):  # refused before it started: so that collect lists it
                job.mark_failed(failure_text(exc), record)
            else:
                _remove_if_empty(out_dir)
        if not sweep:
            if line is None:
                raise
            print(line, file=sys.stderr)  # exiting here: Hydra would add a line of its own to a raised error
            sys.exit(2)
        if line is None:
            log.exception("job %s failed; the sweep goes on (traceback also in %s/FAILED)", out_dir, out_dir)
        else:
            print(f"{line} (job {out_dir}; the sweep goes on)", file=sys.stderr)
        return None
    if summary is None:
        print(f"shard {spec.shard} of num_shards={spec.num_shards} finished: {out_dir}; merge the shards with "
              f"python -m bench.collect {out_dir.parent if sweep else out_dir}")
        return None
    print(format_table(summary))
    print(f"tables: {out_dir}/curves.parquet, {out_dir}/summary.csv")
    return headline(summary)


def _remove_if_empty(folder: Path) -> None:
    """A refused single run leaves no empty timestamped folder behind (Hydra made it before the app ran)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def check_group_overrides(argv: list[str]) -> None:
    """``method=foo`` (or ``method=a,b`` in a sweep) must name files in conf/method/ (before Hydra starts)."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    if any(a.startswith("hydra.searchpath") for a in argv):
        return  # options may live in the user's extra config folders
    for arg in argv:
        m = re.fullmatch(r"[+~]?([\w/]+)=(.*)", arg)
        if not m or m.group(1) not in groups or re.search(r"[()\[\]{}*$]", m.group(2)):
            continue
        group, values = m.group(1), [v.strip() for v in m.group(2).split(",")]
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        unknown = [v for v in values if v and v not in options]
        if unknown:
            raise BenchError(f"unknown {group} '{unknown[0]}'; available: {', '.join(options)}")


def check_launcher_overrides(argv: list[str]) -> None:
    """``hydra.launcher.n_jobs=…`` (hydra/launcher=joblib: how many jobs of the sweep run at once) must be an integer
    other than 0 — checked before Hydra starts, so that a refused sweep writes no sweep folder (joblib's own refusal,
    of a value set elsewhere, is turned into one line by ``error_line``)."""
    for arg in argv:
        m = re.fullmatch(r"[+~]*hydra\.launcher\.n_jobs=(.*)", arg)
        if not m or "$" in m.group(1) or m.group(1).strip() in ("null", "None"):
            continue
        value = m.group(1).strip()
        if not re.fullmatch(r"[+-]?\d+", value) or int(value) == 0:
            raise BenchError(f"hydra.launcher.n_jobs={value}: joblib runs that many jobs of the sweep at once; give "
                             f"an integer ≥ 1, or -1 for one job per core (-2: all cores but one, …)")


def main(argv: list[str] | None = None) -> None:
    """The ``bench`` command (and ``python -m bench``)."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; the lines below decide what the user sees
    SWEEP.collection = None
    try:
        check_group_overrides(sys.argv[1:])
        check_launcher_overrides(sys.argv[1:])
        slurm.register()  # hydra/launcher=slurm_* (bench/run/slurm.py)
        card_sweep.register()  # hydra/sweeper=metric_card (bench/run/card_sweep.py)
        slurm.ENDED.clear()
        app()
    except KeyboardInterrupt:
        print("interrupted: finished blocks are kept; the same command continues from them", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        sys.exit(2)
    if SWEEP.collection is not None and not SWEEP.collection.ok:  # a sweep ended with failed or unfinished jobs
        sys.exit(1)
