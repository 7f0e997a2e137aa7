"""Speed of ROAD's linear imputation — a benchmark, not a test: ``python -m bench.perf.imputation``.

The same systems (images × channels, one random mask per image at each removal fraction) are solved by
``bench.imputation.linear_imputation`` (all at once, float64 conjugate gradients on the device) and by
Quantus 0.6's ``noisy_linear_imputation`` (ROAD's authors' formulation: one SciPy sparse direct solve per
image), in alternating rounds; medians are printed, with the largest difference between the two results.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ..engine.imputation import linear_imputation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.imputation", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[28, 64], help="image height = width")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(0)
    print(f"{'size':>5} {'frac':>5} {'systems':>7} {'ours s':>8} {'quantus s':>9} {'speed-up':>8} {'max |diff|':>10}")
    for size in args.size:
        for frac in args.fractions:
            x = rng.normal(size=(args.images, args.channels, size, size)).astype(np.float32)
            m = rng.random((args.images, size, size)) < frac
            xt = torch.tensor(x, device=args.device)
            mt = torch.tensor(m, device=args.device)[:, None]
            ours_t, theirs_t = [], []
            for _ in range(args.rounds):  # alternating rounds
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                ours = linear_imputation(xt, mt).cpu().numpy()
                ours_t.append(time.perf_counter() - t)
                t = time.perf_counter()
                theirs = np.stack([noisy_linear_imputation(x[i].copy(), np.flatnonzero(m[i]), noise=0.0)
                                   for i in range(args.images)])
                theirs_t.append(time.perf_counter() - t)
            a, b = statistics.median(ours_t), statistics.median(theirs_t)
            print(f"{size:>5} {frac:>5.2f} {args.images * args.channels:>7} {a:>8.3f} {b:>9.3f} {b / a:>7.1f}× "
                  f"{float(np.abs(ours - theirs).max()):>10.1e}")


if __name__ == "__main__":
    main()
