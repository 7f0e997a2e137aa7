"""Before/after: one benchmark command on another commit and on this checkout, in alternating rounds.

    python -m bench.perf.compare --base REV [--rounds 3] [--grep REGEX] -- bench.perf --quantus --images 16

Checks out ``REV`` into a temporary git worktree, then runs ``python -m <command>`` there and here in turn,
``--rounds`` times, so that a drift of the machine's speed hits both sides alike, and prints the lines of
each output that match ``--grep`` (default: the key figures of bench.perf / perf_methods / perf_cli). The
two sides use the same Python environment; only the code differs. Not a test.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = r"plain forward|engine \(|efficiency|speed-up|same curve|^\||wall time|evaluations/s|start-up"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the commit to compare with (any git revision)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--grep", default=FIGURES, help="regular expression of the output lines to print")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- module [arguments], run as python -m")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the benchmark after --, e.g. -- bench.perf --rounds 5")
    with tempfile.TemporaryDirectory(prefix="bench-perf-compare-") as tmp:
        base = Path(tmp) / "base"
        made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
                              capture_output=True, text=True)
        if made.returncode != 0:
            print(f"error: cannot check out {args.base!r}: {made.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            return 2
        try:
            for r in range(1, args.rounds + 1):
                for name, where in ((f"base {args.base}", base), ("this checkout", ROOT)):
                    done = subprocess.run([sys.executable, "-m", *command], cwd=where, capture_output=True, text=True)
                    print(f"== round {r} · {name}" + ("" if done.returncode == 0 else f" · exit {done.returncode}"))
                    text = done.stdout + (done.stderr if done.returncode else "")
                    for line in text.splitlines():
                        if re.search(args.grep, line):
                            print("  " + line)
                    sys.stdout.flush()
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
