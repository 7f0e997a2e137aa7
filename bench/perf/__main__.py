"""``python -m bench.perf`` — the region-perturbation engine's speed (bench/perf/engine.py)."""

import sys

from .engine import main

if __name__ == "__main__":
    sys.exit(main())
