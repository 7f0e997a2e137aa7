"""Every speed figure of the suite in one command — benchmarks, not tests.

    python -m bench.perf.suite [--profile gpu|cpu] [--out DIR] [--only NAME,...] [--list]

Runs the benchmark scripts (``bench.perf``, ``bench.perf.methods``, ``bench.perf.cli``) one after another,
each in a fresh process with its own time limit, writes each one's output to ``DIR/<name>.txt`` as it
comes (a step that runs out of time keeps what it printed), and ends with a table of the key figure of
every step side by side. ``--profile gpu`` is the set of issue 16's targets (AlexNet and VGG-16 at 224×224
on one GPU, each precision / layout / compile setting against the plain forward with the same setting,
Quantus, LRP against Zennit, and the paper's whole workload through the CLI); ``--profile cpu`` is a small
set for a 2-core machine. On a GPU machine without this package's optional dependencies installed, put
their wheels on ``PYTHONPATH`` first (see the README, "Measuring speed").
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

PERF_GPU = ["--device", "cuda", "--size", "224"]
# the paper's workload; the synthetic JPEGs are written once and reused by every CLI step
CLI_PAPER = ["bench.perf.cli", "--images", "5040", "--device", "cuda", "--num-workers", "8", "--keep",
             "/tmp/bench-perf-cli-images"]
PROFILES: dict[str, list[tuple[str, list[str], int]]] = {
    # (name, python -m arguments, time limit in s)
    "gpu": [
        ("alexnet_fp32", ["bench.perf", "--model", "alexnet", *PERF_GPU, "--batch-size", "1024", "--images", "32",
                          "--repeats", "10", "--rounds", "5"], 300),
        ("alexnet_fp32_cl", ["bench.perf", "--model", "alexnet", *PERF_GPU, "--batch-size", "1024", "--images", "32",
                             "--repeats", "10", "--rounds", "5", "--channels-last"], 300),
        ("alexnet_bf16_cl", ["bench.perf", "--model", "alexnet", *PERF_GPU, "--batch-size", "1024", "--images", "32",
                             "--repeats", "10", "--rounds", "5", "--channels-last", "--precision", "bf16"], 300),
        ("alexnet_bf16_cl_compiled", ["bench.perf", "--model", "alexnet", *PERF_GPU, "--batch-size", "1024",
                                      "--images", "32", "--repeats", "10", "--rounds", "5", "--channels-last",
                                      "--precision", "bf16", "--compile"], 400),
        ("vgg16_fp32", ["bench.perf", "--model", "vgg16", *PERF_GPU, "--batch-size", "64", "--images", "64",
                        "--repeats", "2", "--rounds", "5"], 400),
        ("vgg16_bf16_cl", ["bench.perf", "--model", "vgg16", *PERF_GPU, "--batch-size", "128", "--images", "64",
                           "--repeats", "2", "--rounds", "5", "--channels-last", "--precision", "bf16"], 400),
        ("vgg16_quantus", ["bench.perf", "--model", "vgg16", *PERF_GPU, "--batch-size", "64", "--images", "16",
                           "--repeats", "1", "--rounds", "3", "--quantus"], 600),
        ("methods_vgg16", ["bench.perf.methods", "--model", "vgg16", "--batch", "32", "--device", "cuda"], 400),
        ("cli_paper_fp32", [*CLI_PAPER], 600),
        ("cli_paper_bf16_cl", [*CLI_PAPER, "--precision", "bf16", "--channels-last"], 600),
        ("cli_paper_bf16_cl_compiled", [*CLI_PAPER, "--precision", "bf16", "--channels-last", "--compile"], 600),
    ],
    "cpu": [
        ("embedded_cnn", ["bench.perf", "--rounds", "5"], 300),
        ("embedded_cnn_quantus", ["bench.perf", "--quantus", "--images", "16", "--rounds", "5"], 300),
        ("methods_vgg11", ["bench.perf.methods", "--model", "vgg11", "--batch", "4", "--size", "112",
                           "--repeats", "3"], 600),
        ("cli_alexnet_small", ["bench.perf.cli", "--images", "16", "--size", "112", "--patch", "16", "--steps",
                               "20", "--repeats", "2", "--batch-size", "256", "--device", "cpu",
                               "--num-workers", "0"], 600),
    ],
}
# The key figure of each kind of step: a regular expression on its output, and its label.
FIGURES = [
    (r"engine efficiency\s+([\d.]+)", "engine efficiency"),
    (r"speed-up over quantus\s+([\d.]+)×", "× Quantus"),
    (r"same curve as quantus: .*\((OK|MISMATCH)\)", "curve check"),
    (r"^wall time\s+([\d.]+) s", "CLI wall s"),
    (r"paper scale \(5040 images\): ~([\d.]+) s", "5040 images, s"),
    (r"^GPU idle share\s+([\d.]+ %)", "GPU idle"),
    (r"^start-up\s+([\d.]+) s", "start-up s"),
    (r"^\| (lrp_composite) \|.*\| ([\d.]+) \|$", "lrp_composite × gradient"),
]


def figures(text: str) -> list[str]:
    found = []
    for pattern, label in FIGURES:
        m = re.search(pattern, text, flags=re.MULTILINE)
        if m:
            found.append(f"{label} {m.groups()[-1]}")
    return found


def run_step(name: str, args: list[str], limit: int, out: Path) -> tuple[str, float, str]:
    """Run one benchmark, streaming its output to out/<name>.txt; (status, seconds, output)."""
    start = time.perf_counter()
    path = out / f"{name}.txt"
    with open(path, "w") as log:
        log.write(f"$ {sys.executable} -m {' '.join(args)}\n")
        log.flush()
        try:
            done = subprocess.run([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                  timeout=limit, env={**os.environ, "BENCH_PROGRESS": "0"})
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit} s"
    return status, time.perf_counter() - start, path.read_text()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=list(PROFILES), default=None, help="default: gpu when CUDA is available")
    p.add_argument("--out", default=os.environ.get("OUT", "results/perf"), help="folder for each step's output")
    p.add_argument("--only", default=None, help="comma-separated step names")
    p.add_argument("--list", action="store_true", help="print the steps and their commands, run nothing")
    args = p.parse_args(argv)
    if args.profile is None:
        import torch

        args.profile = "gpu" if torch.cuda.is_available() else "cpu"
    steps = PROFILES[args.profile]
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {s[0] for s in steps})
        if unknown:
            print(f"error: --only: unknown step(s) {', '.join(unknown)} in profile {args.profile}; "
                  f"available: {', '.join(s[0] for s in steps)}", file=sys.stderr)
            return 2
        steps = [s for s in steps if s[0] in wanted]
    if args.list:
        for name, cmd, limit in steps:
            print(f"{name:<26} ≤{limit:>4} s  python -m {' '.join(cmd)}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, cmd, limit in steps:
        print(f"== {name}: python -m {' '.join(cmd)}", flush=True)
        status, seconds, text = run_step(name, cmd, limit, out)
        print(text.split("\n", 1)[-1].rstrip(), flush=True)
        rows.append((name, status, seconds, figures(text)))
    print(f"\n| step | status | s | key figures |\n|---|---|---:|---|")
    for name, status, seconds, found in rows:
        print(f"| {name} | {status} | {seconds:.0f} | {'; '.join(found) or '—'} |")
    (out / "summary.md").write_text("\n".join(f"{n}\t{s}\t{t:.0f}\t{'; '.join(f)}" for n, s, t, f in rows) + "\n")
    return 0 if all(r[1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
