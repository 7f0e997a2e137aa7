"""Time every attribution method per batch against a plain forward + backward gradient (not a test).

    python -m bench.perf_methods --model vgg11 --batch 8 --size 224 [--device cpu|cuda] [--repeats 5]
                                 [--methods lrp_eps,deep_taylor,...] [--all]

The model is a torchvision architecture with random weights (nothing is downloaded), in eval mode, on
a random batch in ImageNet normalisation; the explained class is the predicted one. Each method is
built from its config (conf/method/<name>.yaml) and called once untimed (as in a run, where the same
method object sees batch after batch: this also fills LRP's cache of modified weights); then rounds of
(plain gradient, method) are timed back to back and the medians compared, so that a machine shared
with other work disturbs both sides alike. The multi-pass methods (integrated gradients, SmoothGrad,
occlusion, translation) cost a multiple of the gradient by design and are only timed with ``--all``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from . import plugins
from .api import Context, Normalization
from .runtime import keep_freed_memory

IMAGENET = Normalization(raw_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
MULTI_PASS = ("integrated_gradients", "smoothgrad", "occlusion", "translation")


def plain_gradient(model, x, target):
    x = x.detach().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), x)
    return grad


def build(name: str):
    return plugins.build("methods", plugins.conf_node("method", name), "method")


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vgg11", help="a torchvision classification model (random weights)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per method")
    ap.add_argument("--methods", default=None, help="comma-separated config names (default: all single-pass)")
    ap.add_argument("--all", action="store_true", help="also the multi-pass methods " + ", ".join(MULTI_PASS))
    args = ap.parse_args(argv)
    kept = keep_freed_memory()  # as the CLI's processes (bench/runtime.py)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval().to(device)
    x = IMAGENET.normalize(torch.rand(args.batch, 3, args.size, args.size)).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    ctx = Context(image_ids=[f"img{i}" for i in range(args.batch)], seed=0, normalization=IMAGENET)
    names = args.methods.split(",") if args.methods else sorted(
        p.stem for p in (plugins.CONF_DIR / "method").glob("*.yaml") if args.all or p.stem not in MULTI_PASS)

    print(f"{args.model} · batch {args.batch} · {args.size}×{args.size} · {device} "
          f"({torch.get_num_threads()} threads) · torch {torch.__version__} · median of {args.repeats} rounds"
          f"{' · freed memory kept for reuse' if kept else ''}")
    plain_gradient(model, x, target)  # warm-up
    rows = []
    for name in names:
        method = build(name)
        method.attribute(model, x, target, ctx)  # untimed first call (allocations, weight cache)
        base, own = [], []
        for _ in range(args.repeats):
            base.append(timed(lambda: plain_gradient(model, x, target), device))
            own.append(timed(lambda: method.attribute(model, x, target, ctx), device))
        g, m = statistics.median(base), statistics.median(own)
        rows.append((name, m, g, m / g))
        print(f"  {name:<22} {m:8.3f} s   gradient {g:7.3f} s   ×{m / g:5.2f}", flush=True)

    print("\n| method | s / batch | plain gradient s / batch | × gradient |\n|---|---:|---:|---:|")
    for name, m, g, ratio in rows:
        print(f"| {name} | {m:.3f} | {g:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
