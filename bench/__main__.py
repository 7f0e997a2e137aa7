"""``python -m bench [overrides]`` — the Hydra entry point (``-m`` for multirun sweeps).

Problems the user can fix end in one line on stderr and exit status 2, never a traceback:
config-group options that do not exist are caught before Hydra starts (listing the available ones),
everything else raises ``BenchError`` inside the job.

A job that fails writes ``<job dir>/FAILED`` (the reason; a traceback for unexpected errors). In a sweep
(``-m``) the failure is printed and the sweep goes on with the other jobs; at the end the sweep is collected
(bench/collect.py), failed jobs are listed, and the exit status is 1.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from . import collect  # registers the folder-name resolvers of conf/config.yaml (also in launcher workers)
from .errors import BenchError
from .plugins import CONF_DIR

log = logging.getLogger("bench")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_group_overrides(argv: list[str]) -> None:
    """``method=foo`` (or ``method=a,b`` in a sweep) must name files in conf/method/."""
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
            fail(f"unknown {group} '{unknown[0]}'; available: {', '.join(options)}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def app(cfg: DictConfig) -> float | None:
    from .run import run  # heavy imports after argument checks
    from .runtime import keep_freed_memory
    from .summary import format_table

    keep_freed_memory()  # reuse freed activation buffers instead of page-faulting new ones (bench/runtime.py)

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        summary = run(cfg, out_dir)
    except BenchError as exc:
        collect.mark_failed(out_dir, f"error: {exc}")
        if not sweep:
            fail(str(exc))
        print(f"error: {exc} (job {out_dir}; the sweep goes on)", file=sys.stderr)
        return None
    except Exception as exc:
        collect.mark_failed(out_dir, f"error: {type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        if not sweep:
            raise
        log.exception("job %s failed; the sweep goes on (traceback also in %s/FAILED)", out_dir, out_dir)
        return None
    if summary is None:
        print(f"shard {cfg.shard} of num_shards={cfg.num_shards} finished: {out_dir}; merge the shards with "
              f"python -m bench.collect {out_dir.parent if sweep else out_dir}")
        return None
    print(format_table(summary))
    print(f"tables: {out_dir}/curves.parquet, {out_dir}/summary.csv")
    return float(summary.loc[summary.quantity == "aopc_morf_minus_random", "mean"].iloc[0])


def main() -> None:
    check_group_overrides(sys.argv[1:])
    app()
    if collect.LAST is not None and not collect.LAST.ok:  # a sweep ended with failed or unfinished jobs
        sys.exit(1)


if __name__ == "__main__":
    main()
