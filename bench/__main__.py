"""``python -m bench [overrides]`` — the Hydra entry point (``-m`` for multirun sweeps).

Problems the user can fix end in one line on stderr and exit status 2, never a traceback:
config-group options that do not exist are caught before Hydra starts (listing the available ones),
everything else raises ``BenchError`` inside the job.
"""

from __future__ import annotations

import logging
import re
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

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
    from .summary import format_table

    out_dir = HydraConfig.get().runtime.output_dir
    try:
        summary = run(cfg, out_dir)
    except BenchError as exc:
        fail(str(exc))
    print(format_table(summary))
    print(f"tables: {out_dir}/curves.parquet, {out_dir}/summary.csv")
    return float(summary.loc[summary.quantity == "aopc_morf_minus_random", "mean"].iloc[0])


def main() -> None:
    check_group_overrides(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
