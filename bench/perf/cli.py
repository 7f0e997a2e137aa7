"""The whole command line on a TNNLS-scale workload — a benchmark, not a test.

    python -m bench.perf.cli [--images 512] [--size 224] [--model alexnet] [--method lrp_eps] [--patch 9]
                             [--steps 100] [--repeats 10] [--batch-size 1024] [--precision fp32|bf16|fp16]
                             [--channels-last] [--compile] [--device auto] [--num-workers 4] [--block-size N]
                             [--keep DIR] [--extra key=value ...]

Writes ``--images`` synthetic JPEGs (seeded smooth blobs + noise, 3 class folders, about 9/8·size ×
3/2·size px so that the dataset's resize and crop do real work; not timed into the results), then runs
``python -m bench`` on them in a fresh process (random weights, imagefolder dataset) and prints:
* wall time of that process, start-up and imports included;
* evaluations/s (images × orders × repeats × L model evaluations, read from the finished job) and images/s;
* start-up: the CLI's own "job ready in X s", and from launch to that log line (imports included);
* CUDA: launch → first nonzero GPU utilisation sample, and the device idle share (share of
  ``nvidia-smi`` samples, every 200 ms, at 0 %: over the whole run and after the first nonzero one);
  CPU: mean busy cores of the child (user + sys CPU time / wall);
* the same rate extrapolated to the paper's 5,040 images.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..engine.regions import n_regions

ROOT = Path(__file__).resolve().parents[2]
PAPER_IMAGES = 5040
CLASSES = ("class_a", "class_b", "class_c")


def write_images(root: Path, n: int, size: int, seed: int = 0) -> tuple[bool, int, int]:
    """``n`` deterministic JPEGs ``<root>/<class>/img_NNNNN.jpg``; reuses a complete folder. (reused, h, w)"""
    h, w = round(size * 256 / 224 * 9 / 8), round(size * 256 / 224 * 3 / 2)
    stamp = dict(images=n, height=h, width=w, seed=seed)
    marker = root / ".perf_cli.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return True, h, w
    marker.unlink(missing_ok=True)
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
        for old in (root / c).glob("img_*.jpg"):
            old.unlink()
    workers = max(1, min(os.cpu_count() or 1, n // 64))
    step = -(-n // workers)
    with ProcessPoolExecutor(workers) as pool:  # each image depends only on (seed, i)
        list(pool.map(_write_range, [(root, range(s, min(s + step, n)), h, w, seed) for s in range(0, n, step)]))
    marker.write_text(json.dumps(stamp))
    return False, h, w


def _write_range(job) -> None:
    root, indices, h, w, seed = job
    for i in indices:
        rng = np.random.default_rng([seed, i])
        coarse = rng.uniform(0, 255, (rng.integers(3, 9), rng.integers(3, 9), 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
        ramp = np.linspace(-40, 40, w, dtype=np.float32)[None, :, None] * rng.choice([-1, 1], 3)
        pixels = np.clip(smooth + ramp + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / CLASSES[i % len(CLASSES)] / f"img_{i:05d}.jpg", quality=90)


class GpuSampler:
    """``nvidia-smi`` utilisation samples (timestamp, %) every 200 ms in the background."""

    def __init__(self, index: str) -> None:
        self.samples: list[tuple[datetime, int]] = []
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=timestamp,utilization.gpu", "--format=csv,noheader,nounits",
             "-i", index, "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                stamp, util = (s.strip() for s in line.split(","))
                self.samples.append((datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f"), int(util)))
            except ValueError:
                continue

    def stop(self) -> list[tuple[datetime, int]]:
        self.proc.terminate()
        self.proc.wait()
        self.thread.join(timeout=2)
        return self.samples


def gpu_index(device: str) -> str:
    """The nvidia-smi index (or UUID) of ``device``, through CUDA_VISIBLE_DEVICES when set."""
    n = int(device.split(":")[1]) if ":" in device else 0
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[n].strip() if n < len(visible) else str(n)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--size", type=int, default=224, help="crop size (the model's input side)")
    p.add_argument("--model", default="alexnet")
    p.add_argument("--method", default="lrp_eps")
    p.add_argument("--patch", type=int, default=9)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--keep", default=None, help="image folder to keep and reuse (default: a temporary one)")
    p.add_argument("--extra", nargs="*", default=[], help="more CLI overrides, key=value")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    device = args.device if args.device != "auto" else ("cuda" if cuda else "cpu")

    with tempfile.TemporaryDirectory(prefix="bench-perf-cli-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp) / "images"
        t = time.perf_counter()
        reused, h, w = write_images(root, args.images, args.size)
        made_s = time.perf_counter() - t
        cmd = [sys.executable, "-m", "bench", "dataset=imagefolder", f"dataset.params.root={root}",
               f"model={args.model}", "model.params.weights=random", f"method={args.method}",
               f"patch={args.patch}", f"steps={args.steps}", f"repeats={args.repeats}", f"n_images={args.images}",
               f"batch_size={args.batch_size}", f"precision={args.precision}",
               f"channels_last={str(args.channels_last).lower()}", f"compile={str(args.compile).lower()}",
               f"device={args.device}", f"num_workers={args.num_workers}", "save_heatmaps=0",
               f"hydra.run.dir={tmp}/run"]
        if args.size != 224:  # the model's preprocessing: shorter side → size·256/224, centre crop → size
            cmd += [f"model.input.resize={round(args.size * 256 / 224)}", f"model.input.crop={args.size}"]
        cmd += [f"block_size={args.block_size}"] * (args.block_size is not None) + list(args.extra)

        print(f"model {args.model} · method {args.method} · size {args.size} · {args.images} images · "
              f"patch {args.patch} · steps {args.steps} · repeats {args.repeats} · batch {args.batch_size} · "
              f"{args.precision} · {'channels-last' if args.channels_last else 'contiguous (NCHW)'}"
              f"{' · compiled' if args.compile else ''} · device {device} · {args.num_workers} workers · "
              f"torch {torch.__version__} · {torch.get_num_threads()} threads")
        print(f"images: {args.images} JPEGs {w}×{h} px in {root} "
              f"({'reused' if reused else f'written in {made_s:.1f} s'}; not counted below)")

        smi = shutil.which("nvidia-smi") if cuda else None
        sampler = GpuSampler(gpu_index(device)) if smi else None
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        launched = datetime.now()
        t = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples = sampler.stop() if sampler else []
        if done.returncode != 0:
            last = re.sub(r"^error:\s*", "", (done.stderr.strip().splitlines() or ["no output"])[-1])
            raise SystemExit(f"error: the CLI run failed (exit {done.returncode}): {last}")

        record = json.loads((Path(tmp) / "run" / "DONE").read_text())
        prov = record["provenance"]
        L = min(args.steps, n_regions(args.size, args.size, args.patch))
        if prov["L"] != L:
            print(f"note: the job recorded L={prov['L']}, expected {L}; the job's value is used")
        n_img, orders = record["n_images"], prov["orders"].split(",")
        evals = n_img * len(orders) * prov["repeats"] * prov["L"]

    ready = re.search(r"\[([\d-]+ [\d:]+,\d+)\]\[[\w.]+\]\[INFO\] - job ready in ([\d.]+)s", done.stderr)
    ready_s = (datetime.strptime(ready[1], "%Y-%m-%d %H:%M:%S,%f") - launched).total_seconds() if ready else None
    work = wall - (ready_s or 0.0)
    print(f"wall time        {wall:10.1f} s  (fresh process: start-up, imports, evaluation, tables)")
    print(f"evaluations/s    {evals / wall:10.1f}    ({evals} evaluations = {n_img} images × {len(orders)} orders "
          f"× {prov['repeats']} repeats × L={prov['L']}; {evals / work:.1f}/s after start-up)")
    print(f"images/s         {n_img / wall:10.2f}    ({n_img / work:.2f}/s after start-up)")
    print("start-up         " + (f"{ready_s:10.1f} s  from launch to 'job ready' (imports included; the CLI's "
                                  f"own figure: {ready[2]} s)" if ready else "       n/a (no 'job ready' log line)"))
    if cuda and not smi:
        print("first GPU work   n/a (nvidia-smi not found)\nGPU idle share   n/a (nvidia-smi not found)")
    elif cuda:
        busy = [i for i, (_, u) in enumerate(samples) if u > 0]
        share = lambda s: f"{100 * sum(u == 0 for _, u in s) / len(s):.1f} % of {len(s)} samples" if s else "n/a"
        first = f"{(samples[busy[0]][0] - launched).total_seconds():10.1f} s  from launch" if busy else \
            "       n/a (no nonzero sample)"
        print(f"first GPU work   {first}")
        print(f"GPU idle share   {share(samples)} at 0 % over the run; "
              f"{share(samples[busy[0]:] if busy else [])} after the first nonzero sample (nvidia-smi, 200 ms)")
    else:
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        print(f"CPU busy cores   {cpu / wall:10.2f}    (child's user+sys {cpu:.1f} s over the wall time, of "
              f"{os.cpu_count()} cores; the idle share is a GPU figure)")
    paper = (ready_s or 0.0) + PAPER_IMAGES * work / n_img
    print(f"paper scale ({PAPER_IMAGES} images): ~{paper:.0f} s at this rate (start-up counted once)")


if __name__ == "__main__":
    main()
