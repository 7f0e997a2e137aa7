"""Speed and memory of the region-perturbation engine — a benchmark, not a test.

    python -m bench.perf [--model embedded_cnn|vgg16|resnet18|...] [--size 224] [--batch-size 64]
                         [--images 64] [--steps 100] [--repeats 1] [--device auto] [--channels-last]
                         [--precision fp32|bf16|fp16] [--compile] [--rounds 5] [--quantus] [--memory]

Prints, for one model, input size and batch size:
* plain batched forward throughput (images/s) — the ceiling;
* engine throughput (model evaluations/s) on the same batch size — MoRF + random orders, uniform draws;
* engine efficiency = engine / plain;
* with ``--quantus``: the same workload (MoRF, one order, zero replacement, one repeat) through Quantus 0.6's
  ``RegionPerturbation`` (optional benchmark dependency) on the same model object and batch size, in
  alternating rounds, the speed ratio (median of the per-round ratios), and a check that both give the
  same curve for the same ordering and the same deterministic replacement. The ratio is bounded by
  1 + (Quantus's host-side cost per evaluation) / (one forward pass): it grows as the model gets faster.
  The check compares like with like: TF32 is switched off for it (cuDNN picks different algorithms for
  different batch shapes, and TF32 rounds each differently), and its tolerance is that of the precision:
  |Δ| ≤ max(1e-4, 4 ε) × max(1, max |drop|), ε = the unit roundoff of fp32 / bf16 / fp16;
* ``--precision``, ``--channels-last``, ``--compile``: the model's forward under autocast to bf16/fp16, in
  channels-last memory format, through ``torch.compile`` — for the plain forward, the engine and Quantus
  alike (the engine's ``precision``, ``channels_last``, ``compile`` settings, bench/run/evaluate.py), so every
  efficiency is against the plain forward with the same setting;
* with ``--memory``: peak host memory (max RSS) of full ``python -m bench`` runs on N and 10·N images.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..interfaces import Normalization
from ..engine.curves import perturbed_scores
from ..run.evaluate import PRECISIONS, Evaluator
from ..engine.replacement import Uniform, Zero
from ..run.runtime import keep_freed_memory
from ..engine.regions import n_regions, pixel_ranks, region_relevance, seeded_orders, tile_ids
from ..engine.scoring import score_of


def build_model(name: str, size: int) -> tuple[nn.Module, tuple[int, int, int], Normalization]:
    if name == "embedded_cnn":
        from ..models import embedded_cnn

        torch.manual_seed(0)
        return embedded_cnn(), (1, 28, 28), Normalization((0.0, 1.0), (0.1307,), (0.3081,))
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    return model, (3, size, size), Normalization((0.0, 1.0), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, min_time: float = 1.0, min_runs: int = 3) -> float:
    """Seconds per call (median of runs after one warm-up)."""
    fn()
    sync(device)
    times = []
    while len(times) < min_runs or sum(times) < min_time:
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


class AsConfigured(nn.Module):
    """The model as the engine runs it (``Evaluator.logits``: precision, memory format, compilation, padding
    of short chunks when compiled), as one module for the plain forward, the engine and Quantus alike."""

    def __init__(self, model: nn.Module, batch_size: int, device, precision: str = "fp32",
                 channels_last: bool = False, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        self.evaluator = Evaluator(model=model, method=None, pooling="sum", replacement=Zero(),
                                   normalization=None, image_hw=(1, 1), patch=1, steps=1, repeats=1,
                                   batch_size=batch_size, seed=0, device=torch.device(device), precision=precision,
                                   channels_last=channels_last, compile=compile)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluator.logits(x)


def forward_throughput(model, x: torch.Tensor, device) -> float:
    target = torch.zeros(len(x), dtype=torch.long, device=device)

    @torch.inference_mode()
    def once():
        score_of(model(x), target, "logit")

    return len(x) / timed(once, device)


def engine_workload(model, x, norm, patch, steps, repeats, batch_size, orders=("morf", "random"),
                    replacement=None):
    """Everything the engine does for a batch of images once heatmaps exist: orders, draws, curves."""
    b, _, h, w = x.shape
    ids_map = tile_ids(h, w, patch, device=x.device)
    count = n_regions(h, w, patch)
    L = min(steps, count)
    heat = torch.rand(b, h, w, generator=torch.Generator().manual_seed(1)).to(x.device)
    image_ids = [f"img{i}" for i in range(b)]
    target = torch.zeros(b, dtype=torch.long, device=x.device)
    replacement = replacement or Uniform()

    def score_fn(inputs, t):
        return score_of(model(inputs), t, "logit")

    def once():
        seeded = seeded_orders(region_relevance(heat, ids_map, count), image_ids, 0)
        ranks = torch.stack([pixel_ranks(seeded[o], ids_map) for o in orders], 1)
        draws = replacement.draw(x, image_ids, repeats, 0, norm)
        return perturbed_scores(score_fn, x, ranks, draws, target, L, batch_size)

    return once, b * len(orders) * repeats * L, heat, L


def quantus_workload(model, x, heat, patch, L, batch_size, baseline: float):
    import quantus

    metric = quantus.RegionPerturbation(patch_size=patch, order="morf", regions_evaluation=L,
                                        perturb_baseline=baseline, normalise=False, abs=False,
                                        disable_warnings=True, display_progressbar=False)
    x_np = x.cpu().numpy()
    a_np = heat.cpu().numpy()[:, None].repeat(x.shape[1], 1) / x.shape[1]
    y_np = np.zeros(len(x), dtype=np.int64)

    def once():
        return metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, softmax=False,
                      batch_size=batch_size, device=str(x.device))

    return once


@contextmanager
def tf32_off():
    """Full fp32 matrix products on CUDA while the curves are compared (restored after)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def curve_tolerance(precision: str) -> float:
    """Relative tolerance of the Quantus curve check: max(1e-4, 4 × the unit roundoff of the precision)."""
    eps = torch.finfo(PRECISIONS[precision] or torch.float32).eps
    return max(1e-4, 4 * eps)


def peak_rss_mb(n_images: int, extra: list[str]) -> float:
    """Max RSS (MB) of a fresh ``python -m bench`` process on ``n_images`` images (in a fresh folder)."""
    with tempfile.TemporaryDirectory(prefix="bench-perf-mem-") as folder:
        code = ("import resource, runpy, sys, atexit;"
                "atexit.register(lambda: print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss));"
                f"sys.argv = ['bench', 'n_images={n_images}', 'hydra.run.dir={folder}/run'] + {extra!r};"
                "runpy.run_module('bench', run_name='__main__')")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0 or "MAXRSS" not in done.stdout:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: the memory run on {n_images} images failed: {last}")
    return int(done.stdout.rsplit("MAXRSS", 1)[1].split()[0]) / 1024


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded_cnn")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--patch", type=int, default=None, help="default: 4 for 28×28, 9 otherwise")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--quantus", action="store_true")
    p.add_argument("--memory", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="autocast of the model's forward (the engine's precision setting), all sides alike")
    p.add_argument("--channels-last", action="store_true", help="model and inputs in channels-last format")
    p.add_argument("--compile", action="store_true", help="the model through torch.compile (all sides alike)")
    p.add_argument("--rounds", type=int, default=7,
                   help="alternating plain/engine (and quantus/engine) rounds; medians reported")
    args = p.parse_args(argv)
    kept = keep_freed_memory()  # as the CLI's processes (bench/run/runtime.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model, shape, norm = build_model(args.model, args.size)
    model = AsConfigured(model.to(device).eval(), args.batch_size, device, args.precision, args.channels_last,
                         args.compile).eval()
    patch = args.patch or (4 if shape[1] == 28 else 9)
    x = norm.normalize(torch.rand(args.images, *shape, generator=torch.Generator().manual_seed(0))).to(device)

    print(f"model {args.model} · input {tuple(shape)} · batch {args.batch_size} · {args.images} images · "
          f"patch {patch} · steps {args.steps} · repeats {args.repeats} · device {device} · "
          f"{args.precision} · {'channels-last' if args.channels_last else 'contiguous (NCHW)'}"
          f"{' · compiled' if args.compile else ''} · "
          f"torch {torch.__version__} · {torch.get_num_threads()} threads"
          f"{' · freed memory kept for reuse' if kept else ''}")
    # the plain batch: distinct images (repeated to the batch size), like the engine's inputs
    batch = x.repeat((args.batch_size + len(x) - 1) // len(x), 1, 1, 1)[:args.batch_size].contiguous()
    once, evals, heat, L = engine_workload(model, x, norm, patch, args.steps, args.repeats, args.batch_size)
    # alternate plain and engine rounds so that drifts of the machine's speed hit both alike
    plains, engines = [], []
    for _ in range(args.rounds):
        plains.append(forward_throughput(model, batch, device))
        engines.append(evals / timed(once, device, min_time=0.0, min_runs=1))
    plain, engine = float(np.median(plains)), float(np.median(engines))
    ratios = [e / p for p, e in zip(plains, engines)]
    print(f"plain forward        {plain:12.1f} images/s")
    print(f"engine (MoRF+random) {engine:12.1f} evaluations/s  ({evals} evaluations, L={L})")
    print(f"engine efficiency    {float(np.median(ratios)):12.3f}  (median of {args.rounds} alternating rounds' "
          f"ratios: {', '.join(f'{r:.2f}' for r in ratios)})")

    if args.quantus:
        baseline_raw = 0.0
        zero = float(norm.normalize(torch.full((1, shape[0], 1, 1), baseline_raw))[0, 0, 0, 0])
        if len(set(norm.mean)) > 1 or len(set(norm.std)) > 1:
            norm = Normalization(norm.raw_range, (norm.mean[0],) * shape[0], (norm.std[0],) * shape[0])
            zero = float(norm.normalize(torch.full((1, shape[0], 1, 1), baseline_raw))[0, 0, 0, 0])
        ours, q_evals, heat, L = engine_workload(model, x, norm, patch, args.steps, 1, args.batch_size,
                                                 orders=("morf",), replacement=Zero())
        theirs = quantus_workload(model, x, heat, patch, L, args.batch_size, zero)
        t_ours_runs, t_theirs_runs = [], []
        for _ in range(args.rounds):  # alternating, as above
            t_theirs_runs.append(timed(theirs, device, min_time=0.0, min_runs=1))
            t_ours_runs.append(timed(ours, device, min_time=0.0, min_runs=1))
        t_ours, t_theirs = float(np.median(t_ours_runs)), float(np.median(t_theirs_runs))
        speedups = [a / b for a, b in zip(t_theirs_runs, t_ours_runs)]
        with tf32_off():
            with torch.inference_mode():
                f0 = score_of(model(x), torch.zeros(len(x), dtype=torch.long, device=device), "logit")
                ours_drop = (f0.view(-1, 1) - ours()[:, 0, 0]).cpu().numpy()
            theirs_drop = np.asarray(theirs())
        diff = float(np.abs(ours_drop - theirs_drop).max())
        tol = curve_tolerance(args.precision) * max(1.0, float(np.abs(theirs_drop).max()))
        print(f"quantus 0.6 RegionPerturbation (MoRF, zero, 1 repeat): {q_evals / t_theirs:10.1f} evaluations/s")
        print(f"bench engine, same workload:                        {q_evals / t_ours:10.1f} evaluations/s")
        print(f"speed-up over quantus                               {float(np.median(speedups)):10.2f}×  "
              f"(median of {args.rounds} alternating rounds; per round "
              f"{', '.join(f'{r:.2f}' for r in speedups)})")
        print(f"same curve as quantus: max |Δ(f(x0) − f(x_k))| = {diff:.3g}, tolerance {tol:.3g} for "
              f"{args.precision} with TF32 off  ({'OK' if diff <= tol else 'MISMATCH'})")

    if args.memory:
        extra = ["steps=20", "repeats=2", "batch_size=256"]
        n = args.images
        small, large = peak_rss_mb(n, extra), peak_rss_mb(10 * n, extra)
        print(f"peak host memory (python -m bench {' '.join(extra)}): {n} images {small:.0f} MB, "
              f"{10 * n} images {large:.0f} MB (ratio {large / small:.2f})")


if __name__ == "__main__":
    main()
