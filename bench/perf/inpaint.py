"""``perturbation=inpaint`` before and after the device solver — a benchmark, not a test:
``python -m bench.perf.inpaint [--images 32] [--rounds 3] [overrides …]``.

The same region-perturbation curves (the run's method, patch, orders and steps) with biharmonic inpainting
by scikit-image on the host, one call per image and step (``solver=host``, the suite's path before), and by
bench/engine/biharmonic.py on the run's device, all images of a step at once (``solver=device``). Alternating
rounds, medians; the heatmaps are computed once, outside the timings; the largest difference between the
two runs' curves is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> None:
    from ..engine.curves import sequential_scores
    from .inputs import evaluator_of, prepare

    parser = argparse.ArgumentParser(prog="python -m bench.perf.inpaint", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="run settings, e.g. method=lrp_eps patch=4 device=cuda")
    args = parser.parse_args(argv)

    run = prepare(["perturbation=inpaint", "perturbation.params.solver=device", *args.overrides], args.images)
    spec, ev, ids, x, target, heat = run.spec, run.evaluator, run.ids, run.x, run.target, run.heat
    host = evaluator_of([f"n_images={args.images}", "perturbation=inpaint", "perturbation.params.solver=host",
                         *args.overrides])[2]
    evaluators = {"host": host, "device": ev}
    regions = ev.batch_regions(ev.normalization.denormalize(x))
    seeded = regions.orders(heat.float(), ids, ev.seed)
    ranks = torch.stack([regions.ranks(seeded[o]) for o in ev.orders], 1)

    def no_model(inputs, t):
        return inputs.new_zeros(len(inputs))

    times = {(s, part): [] for s in evaluators for part in ("curves", "inpaint")}
    curves = {}
    for _ in range(args.rounds):
        for solver, e in evaluators.items():  # alternating
            for part in ("curves", "inpaint"):
                if spec.device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                if part == "curves":
                    rows = e.run_protocol(e.protocols[0], x, heat, target, ids)["curves"]
                    curves[solver] = rows["score_value"].to_numpy()
                else:
                    sequential_scores(no_model, x, ranks, e.replacement.step, target, e.L, e.batch_size)
                    if spec.device.type == "cuda":
                        torch.cuda.synchronize()
                times[(solver, part)].append(time.perf_counter() - t)
    med = {key: statistics.median(v) for key, v in times.items()}
    host, device = med[("host", "curves")], med[("device", "curves")]
    n_curves = args.images * len(ev.orders)
    print(f"{args.images} images × {len(ev.orders)} orders ({', '.join(ev.orders)}), {ev.L} steps, patch {ev.patch}, "
          f"method {spec.method.name}, device {spec.device}, {args.rounds} alternating rounds (medians)")
    print(f"inpaint, scikit-image on the host (solver=host):  {host:.2f} s  ({n_curves * ev.L / host:.0f} steps/s)")
    print(f"inpaint, bench/engine/biharmonic.py (solver=device):      {device:.2f} s  ({n_curves * ev.L / device:.0f} steps/s)")
    print(f"inpainting alone (no model): host {med[('host', 'inpaint')]:.3f} s, device "
          f"{med[('device', 'inpaint')]:.3f} s: {med[('host', 'inpaint')] / med[('device', 'inpaint')]:.1f}×")
    print(f"speed-up of the curves: {host / device:.1f}×; largest curve difference {abs(curves['host'] - curves['device']).max():.1e}")


if __name__ == "__main__":
    main()
