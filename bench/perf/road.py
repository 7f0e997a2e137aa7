"""The ROAD protocol against Quantus 0.6 ``ROAD`` on the same workload — a benchmark, not a test:
``python -m bench.perf.road [--images 64] [--rounds 3] [overrides …]``.

Same model, images, heatmaps (the run's method, pooled), removal fractions (``road.fractions``) and noise
(``road.noise``). Ours: the suite's ROAD (``metrics=[aopc,road]``: MoRF, LeRF and the random order, all
fractions, imputation on the device, ``batch_size`` model inputs per pass). Quantus: MoRF only (its ROAD has
no other order), one SciPy solve per image and fraction on the host. Alternating rounds, medians; the
heatmaps are computed once, outside the timings.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def main(argv: list[str] | None = None) -> None:
    from .inputs import prepare

    parser = argparse.ArgumentParser(prog="python -m bench.perf.road", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="run settings, e.g. method=lrp_eps device=cuda")
    args = parser.parse_args(argv)
    import quantus

    run = prepare(["metrics=[aopc,road]", *args.overrides], args.images)
    spec, model, ev, ids, x, target, heat = (run.spec, run.model, run.evaluator, run.ids, run.x, run.target,
                                             run.heat)
    road = spec.protocol("road")
    repeats = ev.requested_repeats if road.noise > 0 else 1
    percentages = [round(100 * f) for f in road.fractions]
    metric = quantus.ROAD(noise=road.noise, percentages=percentages, abs=False, normalise=False,
                          disable_warnings=True, display_progressbar=False)
    x_np, y_np = x.cpu().numpy(), target.cpu().numpy()
    a_np = heat[:, None].expand_as(x).cpu().numpy()
    ours_t, theirs_t = [], []
    for _ in range(args.rounds):
        if spec.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        ev.run_protocol(road, x, heat, target, ids)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, device=str(spec.device),
                   batch_size=spec.batch_size)
        theirs_t.append(time.perf_counter() - t)
    a, b = statistics.median(ours_t), statistics.median(theirs_t)
    n_frac = len(percentages)
    print(f"{args.images} images, {n_frac} fractions, noise {road.noise}, method {spec.method.name}, "
          f"device {spec.device}, batch_size {spec.batch_size}, {args.rounds} alternating rounds (medians)")
    print(f"ours (MoRF+LeRF+random, {repeats} repeat(s)): {a:.2f} s  "
          f"({args.images * n_frac * 3 * repeats / a:.0f} perturbed images/s)")
    print(f"quantus ROAD (MoRF only):               {b:.2f} s  ({args.images * n_frac / b:.0f} perturbed images/s)")
    print(f"speed-up, same images and fractions: {b / a:.1f}× (per perturbed image: {3 * repeats * b / a:.1f}×)")


if __name__ == "__main__":
    main()
