"""The faithfulness family (DEFINITIONS §4, §9) against Quantus 0.6, protocol by protocol, on the same workload — a
benchmark, not a test: ``python -m bench.perf.family [--images 64] [--rounds 3] [--only NAME,…] [overrides …]``.

One composed run (default: the embedded CNN and MNIST, ``method=lrp_eps``); its model, first ``--images`` images,
their explained class and pooled heatmaps are computed once, outside the timings. Then, in alternating rounds
(medians), each protocol of the suite — the Evaluator's own step for it, from the heatmaps to its rows — and
the Quantus metric that computes the same numbers (same images, heatmaps, baseline, steps, score, batch size):

    aopc            ours: MoRF + random order, black, 1 repeat   Quantus RegionPerturbation (MoRF), black
    pixel_flipping  ours: heatmap recomputed at every step        Quantus PixelFlipping, fixed order, same
                    (patch tiles), + random order                 pixels per step (it does not recompute)
    deletion        ours: MoRF + random, black, softmax           Quantus PixelFlipping (= deletion, MoRF)
    insertion       ours                                          (Quantus has none: ours alone)
    faithfulness_correlation  same subset size and count        Quantus FaithfulnessCorrelation
    irof            ours: SLIC + MoRF + random                    Quantus IROF (SLIC + MoRF)
    road            ours: MoRF + LeRF + random                    Quantus ROAD (MoRF only)

Each line prints both times, the speed-up for the protocol as the suite reports it and the speed-up per model
input Quantus evaluates (ours evaluates the paired random order too). Quantus runs on the run's device where
it can (it moves batches to the device for the model, and perturbs them in NumPy on the host).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

PROTOCOLS = ("aopc", "pixel_flipping", "deletion", "insertion", "faithfulness_correlation", "irof", "road")


def main(argv: list[str] | None = None) -> None:
    from ..engine.replacement import substrate
    from .inputs import prepare

    parser = argparse.ArgumentParser(prog="python -m bench.perf.family", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(PROTOCOLS), help="comma-separated protocols to time")
    parser.add_argument("overrides", nargs="*", help="run settings, e.g. method=sensitivity device=cuda")
    args = parser.parse_args(argv)
    import quantus

    if not hasattr(np, "trapz"):  # Quantus 0.6 calls np.trapz (IROF, PixelFlipping's AUC), gone in NumPy 2.4
        np.trapz = np.trapezoid
    chosen = [p for p in args.only.split(",") if p]
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown:
        parser.error(f"unknown protocol {unknown[0]!r}; choose from {', '.join(PROTOCOLS)}")
    run = prepare(["perturbation=zero", "repeats=1", "orders=[morf,random]",
                   f"metrics=[aopc,{','.join(p for p in PROTOCOLS if p != 'aopc')}]", *args.overrides], args.images)
    spec, model, ev, ids, x, target, heat = (run.spec, run.model, run.evaluator, run.ids, run.x, run.target,
                                             run.heat)
    n, (c, h, w) = len(x), x.shape[1:]
    # black in model units; Quantus takes one number, so with several channels it gets channel 0's (same work)
    black = float(substrate("zero", x[:1], ids[:1], ev.seed, ev.normalization).flatten()[0])
    x_np, y_np = x.cpu().numpy(), target.cpu().numpy()
    a_np = np.ascontiguousarray(heat[:, None].expand_as(x).cpu().numpy())
    device, bs = str(spec.device), spec.batch_size

    def quantus_call(metric, softmax):
        def call():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, device=device, batch_size=bs,
                              softmax=softmax)
        return call

    quiet = dict(abs=False, normalise=False, disable_warnings=True, display_progressbar=False)
    regions = ev.batch_regions(ev.normalization.denormalize(x))
    deletion, insertion, fc, road = (spec.protocol(p) for p in ("deletion", "insertion", "faithfulness_correlation",
                                                                "road"))
    del_steps = deletion.steps or h
    fc_size = fc.subset_size or max(1, round(224 * h * w / 224 ** 2))
    pf_steps = regions.count if not ev.superpixels else ev.L
    road_repeats = ev.requested_repeats if road.noise > 0 else 1

    def ours(name):  # one protocol of the run on the batch, its shared state (regions, orders) made afresh
        return lambda: ev.run_protocol(spec.protocol(name), x, heat, target, ids)

    work = {
        "aopc": (ours("aopc"),
                 quantus_call(quantus.RegionPerturbation(patch_size=spec.patch, order="morf", regions_evaluation=ev.L,
                                                         perturb_baseline=black, **quiet), spec.score == "softmax"),
                 2 * n * ev.L, n * ev.L, "MoRF + random / MoRF"),
        "pixel_flipping": (ours("pixel_flipping"),
                           quantus_call(quantus.PixelFlipping(features_in_step=spec.patch ** 2, perturb_baseline=black,
                                                              **quiet), spec.score == "softmax"),
                           2 * n * pf_steps, n * -(-h * w // spec.patch ** 2),
                           "recomputed heatmaps + random / fixed order"),
        "deletion": (ours("deletion"),
                     quantus_call(quantus.PixelFlipping(features_in_step=h * w // del_steps, perturb_baseline=black,
                                                        **quiet), True),
                     2 * n * (del_steps + 1), n * del_steps, "MoRF + random / MoRF"),
        "insertion": (ours("insertion"), None, 2 * n * ((insertion.steps or h) + 1), None, "no Quantus counterpart"),
        "faithfulness_correlation": (
            ours("faithfulness_correlation"),
            quantus_call(quantus.FaithfulnessCorrelation(nr_runs=fc.subsets, subset_size=fc_size,
                                                         perturb_baseline="black", return_aggregate=False, **quiet),
                         fc.score == "softmax"),
            n * fc.subsets, n * fc.subsets, f"{fc.subsets} subsets of {fc_size} pixels"),
        "irof": (ours("irof"),
                 quantus_call(quantus.IROF(segmentation_method="slic", perturb_baseline="mean",
                                           return_aggregate=False, **quiet), True),
                 None, None, "SLIC + MoRF + random / SLIC + MoRF"),
        "road": (ours("road"),
                 quantus_call(quantus.ROAD(noise=road.noise, percentages=[round(100 * f) for f in road.fractions],
                                           **quiet), False),
                 3 * n * len(road.fractions) * road_repeats, n * len(road.fractions), "MoRF + LeRF + random / MoRF"),
    }
    if "irof" in chosen and c != 1:
        print("note: Quantus 0.6 IROF fails on images of more than one channel (its mask has one); irof is timed "
              "for the suite alone")
    print(f"{n} images {c}×{h}×{w}, model {spec.model.name}, method {spec.method.name}, device {spec.device}, "
          f"batch_size {bs}, {args.rounds} alternating rounds (medians); heatmaps computed once, outside the timings")
    inputs = x.repeat(-(-max(bs, 4096) // n), 1, 1, 1)
    with torch.inference_mode():
        rate = len(inputs) / statistics.median(
            _timed(lambda: [ev.logits(inputs[s:s + bs]) for s in range(0, len(inputs), bs)], spec.device)
            for _ in range(args.rounds))
    print(f"the model alone: {rate:.0f} inputs/s (plain forward passes of batch_size); a protocol bound by the model "
          f"cannot be faster than its model inputs at this rate")
    print(f"{'protocol':26s} {'ours (s)':>9s} {'Quantus (s)':>11s} {'speed-up':>9s} {'per input':>9s}  what")
    for name in chosen:
        ours, theirs, our_inputs, their_inputs, what = work[name]
        if name == "irof" and c != 1:
            theirs = None
        t_ours, t_theirs = [], []
        for _ in range(args.rounds):
            t_ours.append(_timed(ours, spec.device))
            if theirs is not None:
                t_theirs.append(_timed(theirs, spec.device))
        a = statistics.median(t_ours)
        if theirs is None:
            print(f"{name:26s} {a:9.3f} {'—':>11s} {'—':>9s} {'—':>9s}  {what}")
            continue
        b = statistics.median(t_theirs)
        per_input = f"{b / a * our_inputs / their_inputs:8.1f}×" if our_inputs and their_inputs else "—"
        print(f"{name:26s} {a:9.3f} {b:11.3f} {b / a:8.1f}× {per_input:>9s}  {what}")


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
