"""Time every attribution method per batch against a plain forward + backward gradient (not a test).

    python -m bench.perf.methods --model vgg11 --batch 8 --size 224 [--device cpu|cuda] [--repeats 5]
                                 [--methods lrp_eps,deep_taylor,...] [--all] [--no-zennit]

The model is a torchvision architecture with random weights (nothing is downloaded), in eval mode, on
a random batch in ImageNet normalisation; the explained class is the predicted one. Each method is
built from its config (conf/method/<name>.yaml) and called once untimed (as in a run, where the same
method object sees batch after batch: this also fills LRP's cache of modified weights); then rounds of
(plain gradient, method) are timed back to back and the medians compared, so that a machine shared
with other work disturbs both sides alike. The multi-pass methods (integrated gradients, SmoothGrad,
occlusion, translation) cost a multiple of the gradient by design and are only timed with ``--all``.

Zennit (a test dependency, imported only here; ``--no-zennit`` skips it) is timed alongside, on the same
model object, batch and protocol: its composites EpsilonPlusFlat, EpsilonGammaBox (z^B bounds = the
normalised input's per-channel range, shape (1, 3, 1, 1)), EpsilonAlpha2Beta1 and EpsilonPlus, with the
canonizer of the architecture (``ResNetCanonizer`` for torchvision ResNets, else ``SequentialMergeBatchNorm``
when the model has BatchNorm), as rows ``zennit:<composite>``. A Zennit call enters and leaves the
composite's context (hooks registered, BatchNorm merged and restored), as each of ours registers its hooks
per call, and returns the input gradient of the modified model for the one-hot of the target.

Each of our LRP configs is also timed against the Zennit composite with the same rules, layer by layer
(``zennit_rules``: the mapping that tests/test_crosscheck.py checks attribution for attribution), as rows
``zennit(<config>)``; a second table gives ours / Zennit for each such pair, as the ratio of their
"× gradient" figures, so that a machine slowed down between the two rows does not enter it. The named
composites are not paired: EpsilonGammaBox with ε = γ = 0.25 is lrp_composite's rules but shown as Zennit
ships it; EpsilonPlusFlat and EpsilonPlus (z⁺ with ε on the dense layers) and EpsilonAlpha2Beta1 (ε on the
dense layers) match none of our configs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torchvision

from .. import plugins
from ..interfaces import Context, Normalization
from ..run.runtime import keep_freed_memory

IMAGENET = Normalization(raw_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
MULTI_PASS = ("integrated_gradients", "smoothgrad", "occlusion", "translation")
ZENNIT = ("EpsilonPlusFlat", "EpsilonGammaBox", "EpsilonAlpha2Beta1", "EpsilonPlus")


def plain_gradient(model, x, target):
    x = x.detach().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), x)
    return grad


def zennit_rules(config: str, low, high):
    """(layer map for convolutions and dense layers, first-layer rule or None): the Zennit rules equal to our
    LRP config ``config`` (None when there are none). Our non-ε rules use the stabiliser 1e-9."""
    from zennit import rules as zr
    from zennit.types import Convolution

    tiny = 1e-9
    both = lambda rule: [(Convolution, rule), (torch.nn.Linear, rule)]  # noqa: E731
    return {
        "lrp_0": (both(zr.Epsilon(0.0)), None),
        "lrp_eps": (both(zr.Epsilon(1.0)), None),
        "lrp_eps_0.01": (both(zr.Epsilon(0.01)), None),
        "lrp_eps_100": (both(zr.Epsilon(100.0)), None),
        "lrp_a1b0": (both(zr.ZPlus(tiny)), None),
        "lrp_a2b1": (both(zr.AlphaBeta(2.0, 1.0, tiny)), None),
        "lrp_gamma": (both(zr.Gamma(0.25, tiny)), None),
        "deep_taylor": (both(zr.ZPlus(tiny)), zr.ZBox(low, high, tiny)),
        "deep_taylor_w2": (both(zr.ZPlus(tiny)), zr.WSquare(tiny)),
        "deep_taylor_flat": (both(zr.ZPlus(tiny)), zr.Flat(tiny)),
        "lrp_composite": ([(Convolution, zr.Gamma(0.25, tiny)), (torch.nn.Linear, zr.Epsilon(0.25))],
                          zr.ZBox(low, high, tiny)),
    }.get(config)


def zennit_composite(config: str, low, high, canonizers):
    """The Zennit composite of our LRP config (ReLU passes relevance, sums and average pooling use the z-rule,
    as ours), or None."""
    from zennit import rules as zr
    from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite
    from zennit.layer import Sum
    from zennit.types import Activation, AvgPool, Convolution

    rules = zennit_rules(config, low, high)
    if rules is None:
        return None
    layer_map, first = rules
    base = [(Activation, zr.Pass()), (Sum, zr.Norm(1e-9)), (AvgPool, zr.Norm(1e-9))]
    if first is None:
        return LayerMapComposite(layer_map=base + layer_map, canonizers=canonizers)
    return SpecialFirstLayerMapComposite(layer_map=base + layer_map, first_map=[(Convolution, first)],
                                         canonizers=canonizers)


def zennit_methods(model, norm: Normalization, x, configs: list[str]):
    """({row name: composite} for ``model``: Zennit's named composites and the equivalents of our LRP
    ``configs``, {our config: its row}), or a one-line reason why there are none."""
    try:
        from zennit import composites
        from zennit.canonizers import SequentialMergeBatchNorm
        from zennit.torchvision import ResNetCanonizer
    except ImportError as exc:
        return f"zennit rows left out: zennit is not installed ({exc}; it comes with the [test] extra)"
    canonize = (ResNetCanonizer if isinstance(model, torchvision.models.ResNet) else SequentialMergeBatchNorm
                if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()) else None)
    fresh = lambda: [canonize()] if canonize else None  # noqa: E731 — a canonizer per composite
    low, high = (b[None] for b in norm.input_bounds(x))  # (1, 3, 1, 1): per channel, broadcast by Zennit
    options = {"EpsilonGammaBox": dict(low=low, high=high, epsilon=0.25, gamma=0.25)}
    rows = {f"zennit:{name}": getattr(composites, name)(canonizers=fresh(), **options.get(name, {}))
            for name in ZENNIT}
    pairs = {}
    for config in configs:
        composite = zennit_composite(config, low, high, fresh())
        if composite is not None:
            rows[f"zennit({config})"] = composite
            pairs[config] = f"zennit({config})"
    return rows, pairs


def zennit_attribution(model, composite, x, onehot):
    x = x.detach().requires_grad_(True)
    with composite.context(model) as modified:
        (relevance,) = torch.autograd.grad(modified(x), x, onehot)
    return relevance


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
    ap.add_argument("--no-zennit", action="store_true", help="leave out the Zennit composites")
    args = ap.parse_args(argv)
    kept = keep_freed_memory()  # as the CLI's processes (bench/run/runtime.py)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval().to(device)
    x = IMAGENET.normalize(torch.rand(args.batch, 3, args.size, args.size)).to(device)
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    ctx = Context(image_ids=[f"img{i}" for i in range(args.batch)], seed=0, normalization=IMAGENET)
    names = args.methods.split(",") if args.methods else sorted(
        p.stem for p in (plugins.CONF_DIR / "method").glob("*.yaml") if args.all or p.stem not in MULTI_PASS)

    print(f"{args.model} · batch {args.batch} · {args.size}×{args.size} · {device} "
          f"({torch.get_num_threads()} threads) · torch {torch.__version__} · median of {args.repeats} rounds"
          f"{' · freed memory kept for reuse' if kept else ''}")
    plain_gradient(model, x, target)  # warm-up
    contenders = {name: partial(build(name).attribute, model, x, target, ctx) for name in names}
    zennit, pairs = {}, {}
    if not args.no_zennit:
        found = zennit_methods(model, IMAGENET, x, names)
        if isinstance(found, str):
            print(found)
        else:
            zennit, pairs = found
    onehot = torch.nn.functional.one_hot(target, logits.shape[1]).to(x.dtype)
    contenders.update({row: partial(zennit_attribution, model, composite, x, onehot)
                       for row, composite in zennit.items()})
    rows = {}
    for name, attribute in contenders.items():
        attribute()  # untimed first call (allocations, weight cache)
        base, own = [], []
        for _ in range(args.repeats):
            base.append(timed(lambda: plain_gradient(model, x, target), device))
            own.append(timed(attribute, device))
        g, m = statistics.median(base), statistics.median(own)
        rows[name] = (m, g)
        print(f"  {name:<28} {m:8.3f} s   gradient {g:7.3f} s   ×{m / g:5.2f}", flush=True)

    print("\n| method | s / batch | plain gradient s / batch | × gradient |\n|---|---:|---:|---:|")
    for name, (m, g) in rows.items():
        print(f"| {name} | {m:.3f} | {g:.3f} | {m / g:.2f} |")
    if pairs:
        print("\n| ours | Zennit composite (same rules) | ours × gradient | Zennit × gradient | ours / Zennit |"
              "\n|---|---|---:|---:|---:|")
        for ours, theirs in pairs.items():
            a, b = (rows[name][0] / rows[name][1] for name in (ours, theirs))
            print(f"| {ours} | {theirs} | {a:.2f} | {b:.2f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
