"""AttnLRP / CP-LRP heatmaps per second, ours against LXT's, on the same torchvision ViT, batch and device
(not a test).

    python -m bench.perf.attnlrp [--size 32 --patch 4 --dim 192 --depth 12 --heads 3] [--batch 8]
                                 [--device cpu|cuda] [--threads N] [--rounds 20] [--reps 3] [--mode attnlrp|cp]
                                 [--epsilon 0]

The model is torchvision's ``VisionTransformer`` with random weights (ViT-Tiny widths on 32×32 inputs by default),
in eval mode, float32, explained for its predicted classes. LXT 2.1 patches torchvision's classes for the whole
process, so each side lives in a worker process of its own (both with the C library's malloc set up as the suite's
CLI sets it up, bench/run/runtime.py): it builds the same model (seed 0) and explains the batch twice untimed;
then the main process alternates the two workers ``--rounds`` times, each round timing ``--reps`` heatmap batches
on one side and then the other (who goes first alternates too), so that a machine shared with other work disturbs
both alike. It prints the median heatmaps per second of each side over all timed batches, the median over the
rounds of ours / LXT's (paired by round), and the same per CPU-second of the worker process
(``time.process_time``: less sensitive to other work on a shared machine than the wall clock).

LXT's side is its torchvision map (``lxt.efficient``: CP-LRP inside the attention, identity rule on GELU, LayerNorm
with σ detached, Gradient × Input) and, for ``attnlrp``, the attention written with its own rules (q and k
gradients divided by 4, v by 2, as its Hugging Face attention wrapper does). Ours is ``bench.lrp.lrp`` with the
``attnlrp`` / ``cp_lrp`` composite at ``--epsilon`` (default 0, the methods' default: the linear layers' gradient,
the numbers of LXT's Gradient × Input, tests/test_attnlrp.py; ε > 0 adds LRP-ε's factor |z| / (|z| + ε) on every
linear layer). Without lxt installed, ours is timed alone and one line says that LXT is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time


def build(args):
    import torch
    from torch import nn
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=args.size, patch_size=args.patch, num_layers=args.depth, num_heads=args.heads,
                              hidden_dim=args.dim, mlp_dim=4 * args.dim, num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts the head at 0
    model = model.eval().to(args.device)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(args.device)
    return model, x


def lxt_patch(zennit: bool = False) -> None:
    """LXT 2.1 as its documentation and vision-transformer example use it, for the whole process: ``monkey_patch``
    of torchvision's ViT with its map (CP-LRP inside the attention, identity rule on GELU, LayerNorm σ constant),
    after which Gradient × Input is its heatmap; ``zennit``: also its Zennit patch (for a Zennit composite on the
    linear layers). tests/test_attnlrp.py computes its reference heatmaps with this too."""
    import transformers.pytorch_utils as pu

    for name in ("find_pruneable_heads_and_indices", "prune_linear_layer", "apply_chunking_to_forward"):
        if not hasattr(pu, name):
            setattr(pu, name, None)  # LXT 2.1 imports these for BERT; transformers 5 removed them
    from torchvision.models import vision_transformer as tv
    from lxt.efficient import monkey_patch, monkey_patch_zennit
    from lxt.efficient.models.vit_torch import cp_LRP

    monkey_patch(tv, cp_LRP)
    if zennit:
        monkey_patch_zennit()


def lxt_attnlrp_attention(self, query, key, value, *args, **kwargs):
    """``nn.MultiheadAttention.forward`` with LXT's AttnLRP rules on q, k and v (``divide_gradient``: q kᵀ and A v
    split uniformly; the softmax's gradient is its rule with the bias term), as LXT's Hugging Face attention wrapper
    applies them — LXT's torchvision map has no AttnLRP. Self-attention without masks only."""
    import torch
    import torch.nn.functional as F
    from lxt.efficient.rules import divide_gradient

    e, h = self.embed_dim, self.num_heads
    w, b = self.in_proj_weight, self.in_proj_bias
    q, k, v = (F.linear(t, w[i * e:(i + 1) * e], b[i * e:(i + 1) * e]) for i, t in enumerate((query, key, value)))
    q, k, v = divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2)
    n, length = q.shape[:2]
    q, k, v = (t.reshape(n, length, h, e // h).transpose(1, 2) for t in (q, k, v))
    o = torch.softmax(q @ k.transpose(-2, -1) / (e // h) ** 0.5, dim=-1) @ v
    return F.linear(o.transpose(1, 2).reshape(n, length, e), self.out_proj.weight, self.out_proj.bias), None


def lxt_explainer(mode: str, model):
    """LXT's heatmaps (Gradient × Input after its patches of torchvision's classes, for the whole process)."""
    import torch
    from torchvision.models import vision_transformer as tv

    lxt_patch()
    if mode == "attnlrp":
        tv.nn.MultiheadAttention.forward = lxt_attnlrp_attention

    def heatmaps(x, target):
        x = x.detach().requires_grad_(True)
        out = model(x)
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
        return x * g
    return heatmaps


def worker(args) -> None:
    """Builds the model, warms up, then times ``reps`` batches for every line read on stdin."""
    import torch

    from ..run.runtime import keep_freed_memory

    keep_freed_memory()  # both sides as the CLI's processes run (bench/run/runtime.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, x = build(args)
    with torch.no_grad():
        target = model(x).argmax(1)
    if args.side == "lxt":
        explain = lxt_explainer(args.mode, model)
    else:
        from bench.lrp import attnlrp, cp_lrp, lrp

        composite = (attnlrp if args.mode == "attnlrp" else cp_lrp)(args.epsilon)

        def explain(x, target):
            return lrp(model, x, target, composite)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for _ in range(2):  # untimed: first-call costs
        explain(x, target)
    sync()
    print("ready", flush=True)
    for _ in sys.stdin:
        times = []
        for _ in range(args.reps):
            start, cpu = time.perf_counter(), time.process_time()
            explain(x, target)
            sync()
            times.append((time.perf_counter() - start, time.process_time() - cpu))
        print(json.dumps(times), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch's CPU threads in both workers (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=20, help="alternating rounds of the two sides")
    ap.add_argument("--reps", type=int, default=3, help="timed batches per side and round")
    ap.add_argument("--mode", default="attnlrp", choices=("attnlrp", "cp"))
    ap.add_argument("--epsilon", type=float, default=0.0, help="ε of our LRP-ε on the linear layers")
    ap.add_argument("--side", default=None, choices=("ours", "lxt"), help=argparse.SUPPRESS)  # (a worker)
    args = ap.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.side:
        return worker(args)
    sides = ["ours"]
    if importlib.util.find_spec("lxt") is None:
        print("LXT is not installed (pip install lxt==2.1): timing ours alone")
    else:
        sides.append("lxt")
    common = [f"--{k}={getattr(args, k)}" for k in ("size", "patch", "dim", "depth", "heads", "batch", "device",
                                                   "threads", "reps", "mode", "epsilon")]
    workers = {side: subprocess.Popen([sys.executable, "-m", "bench.perf.attnlrp", *common, f"--side={side}"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for side in sides}
    try:
        for side, proc in workers.items():
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"{side}: the worker failed (its error is above)")
        times: dict[str, list[list[float]]] = {side: [] for side in sides}
        for r in range(args.rounds):
            for side in (sides if r % 2 == 0 else sides[::-1]):  # who goes first alternates too
                workers[side].stdin.write("go\n")
                workers[side].stdin.flush()
                line = workers[side].stdout.readline()
                if not line:
                    raise SystemExit(f"{side}: the worker failed (its error is above)")
                times[side].append(json.loads(line))
    finally:
        for proc in workers.values():
            proc.stdin.close()
            proc.wait()
    def rate(side: str, clock: int) -> float:
        return args.batch / statistics.median(t[clock] for rnd in times[side] for t in rnd)

    print(f"{args.mode} (ours at ε = {args.epsilon:g}) · torchvision ViT {args.size}×{args.size}/{args.patch}, width "
          f"{args.dim}, depth {args.depth}, {args.heads} heads · batch {args.batch} · {args.device}"
          f"{f' ({args.threads} threads)' if args.threads else ''} · {args.rounds} alternating rounds × {args.reps} "
          "batches")
    labels = {"ours": "ours", "lxt": "LXT "}
    for side in sides:
        per_round = [args.batch / statistics.median(t[0] for t in rnd) for rnd in times[side]]
        print(f"  {labels[side]}  {rate(side, 0):8.2f} heatmaps/s   (rounds: min {min(per_round):.2f}, "
              f"max {max(per_round):.2f}; per CPU-second of the process: {rate(side, 1):.2f})")
    if "lxt" in sides:
        paired = [statistics.median(b[0] for b in lb) / statistics.median(a[0] for a in la)
                  for la, lb in zip(times["ours"], times["lxt"])]
        print(f"  ours / LXT = {rate('ours', 0) / rate('lxt', 0):.2f} (median over rounds of the paired ratio: "
              f"{statistics.median(paired):.2f}; per CPU-second: {rate('ours', 1) / rate('lxt', 1):.2f})")


if __name__ == "__main__":
    main()
