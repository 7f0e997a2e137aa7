"""Ground-truth check of heatmaps: the share of positive relevance that falls inside the true region.

A dataset that knows where the evidence for its label lies defines ``get_mask(i)`` → bool tensor (H, W),
True on that region (``dataset=mnist_twodigit``: the cell of the digit that decides the class). For the
method's pixel heatmap h of image i (channel-pooled exactly as in the benchmark, DEFINITIONS §2, for the explained
class — the predicted one by default):

    share_inside = Σ_{p ∈ mask} max(h_p, 0) / Σ_p max(h_p, 0)

1 means all positive relevance is on the true region; a heatmap spread evenly gets the mask's area fraction
(``mask_fraction``: 0.5 for a cell of the default 28×56 twodigit canvas); an image without positive relevance
gets NaN. Where the dataset also has ``get_distractor_mask``, ``share_distractor`` is the same share on the
distractor's region.

CLI (prints one line per method, writes the per-image table with ``--out``)::

    python -m bench.groundtruth method=lrp_eps,sensitivity n_images=1000 [dataset=mnist_twodigit] [--out gt.csv]

Any other override of the main config applies (model, target, device, batch_size, seed, method.pooling).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
import torch

from ..interfaces import Context, Dataset, Method, UnreadableImage
from ..errors import BenchError, exit_with_cli_error
from ..engine.pooling import pool_channels
from ..engine.scoring import choose_target


def relevance_inside(heatmap: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of positive relevance inside ``mask``: heatmap (H, W) or (B, H, W), mask bool of the same
    shape (or (H, W), broadcast) → a 0-d tensor or (B,); NaN where a heatmap has no positive relevance."""
    heatmap = torch.as_tensor(heatmap, dtype=torch.float64)
    mask = torch.as_tensor(mask, dtype=torch.bool, device=heatmap.device)
    if mask.shape != heatmap.shape[-mask.ndim:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not fit heatmap {tuple(heatmap.shape)}")
    positive = heatmap.clamp(min=0)
    inside = (positive * mask).sum((-2, -1))
    total = positive.sum((-2, -1))
    return torch.where(total > 0, inside / total.where(total > 0, torch.ones_like(total)),
                       torch.full_like(total, float("nan")))


def groundtruth_table(model: torch.nn.Module, method: Method, pooling: str, dataset: Dataset, n_images: int,
                      batch_size: int = 64, device: torch.device | str = "cpu", seed: int = 0,
                      target: str = "predicted") -> pd.DataFrame:
    """One row per image: image_id, label, target_class, correct, share_inside, share_distractor (share of
    positive relevance on the distractor, when the dataset has ``get_distractor_mask``), mask_fraction (the
    region's area share), positive_total."""
    if not hasattr(dataset, "get_mask"):
        raise BenchError(f"dataset {type(dataset).__name__} has no ground-truth regions (get_mask); "
                         f"use dataset=mnist_twodigit")
    device = torch.device(device)
    model = model.to(device).eval()
    rows = []
    for start in range(0, min(n_images, len(dataset)), batch_size):
        items = []
        for i in range(start, min(start + batch_size, n_images, len(dataset))):
            try:
                items.append((i, *dataset.get(i)))
            except UnreadableImage:
                continue
        if not items:
            continue
        idx, ids, raw, labels = zip(*items)
        x = dataset.normalization.normalize(torch.stack(raw).float().to(device))
        labels = torch.tensor(labels, dtype=torch.long)
        with torch.inference_mode():
            logits = model(x)
        tgt = choose_target(logits, labels, target)
        ctx = Context(image_ids=list(ids), seed=seed, normalization=dataset.normalization)
        heat = pool_channels(method.attribute(model, x, tgt, ctx), pooling).detach().cpu()
        masks = torch.stack([dataset.get_mask(i) for i in idx])
        share = relevance_inside(heat, masks)
        other = (relevance_inside(heat, torch.stack([dataset.get_distractor_mask(i) for i in idx]))
                 if hasattr(dataset, "get_distractor_mask") else torch.full_like(share, float("nan")))
        for k in range(len(idx)):
            rows.append(dict(image_id=ids[k], label=int(labels[k]), target_class=int(tgt[k]),
                             correct=bool(logits[k].argmax().item() == labels[k].item()),
                             share_inside=float(share[k]), share_distractor=float(other[k]),
                             mask_fraction=float(masks[k].float().mean()),
                             positive_total=float(heat[k].clamp(min=0).sum())))
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> dict[str, float]:
    s = table.share_inside.dropna()
    return dict(images=len(table), share_inside=s.mean(), sem=s.std(ddof=1) / math.sqrt(len(s)) if len(s) > 1 else
                float("nan"), median=s.median(), share_distractor=table.share_distractor.mean(),
                mask_fraction=table.mask_fraction.mean(),
                accuracy=table.correct.mean(), no_positive=int(table.share_inside.isna().sum()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.groundtruth",
                                     description="Share of positive relevance inside the ground-truth region.")
    parser.add_argument("--out", default=None, help="CSV file for the per-image table (all methods)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: method=lrp_eps,sensitivity n_images=… …")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    methods = [o.split("=", 1)[1] for o in overrides if o.startswith("method=")] or ["lrp_eps"]
    methods = [m for spec in methods for m in spec.split(",") if m]
    overrides = [o for o in overrides if not o.startswith("method=")]
    if not any(o.startswith("dataset=") for o in overrides):
        overrides.append("dataset=mnist_twodigit")
    try:
        from .config import compose
        from ..models import load_model
        from .spec import build_spec

        tables, lines = [], []
        for name in methods:
            spec = build_spec(compose(overrides + [f"method={name}"]))
            dataset = spec.dataset.obj
            if not hasattr(dataset, "get_mask"):
                raise BenchError(f"dataset '{spec.dataset.name}' has no ground-truth regions (get_mask); "
                                 f"use dataset=mnist_twodigit")
            torch.manual_seed(spec.seed)
            model = load_model(spec)
            table = groundtruth_table(model, spec.method.obj, spec.pooling, dataset, spec.n_images,
                                      spec.batch_size, spec.device, spec.seed, spec.target)
            table.insert(0, "method", spec.method.name)
            table.insert(1, "pooling", spec.pooling)
            table.insert(2, "dataset", spec.dataset.name)
            table.insert(3, "model", spec.model.name)
            table.insert(4, "preprocessing", getattr(dataset, "preprocessing", ""))
            tables.append(table)
            s = summarize(table)
            lines.append(f"{spec.method.name:>16} ({spec.pooling}): share of positive relevance inside the true "
                         f"region {s['share_inside']:.4f} ± {s['sem']:.4f} (s.e.m.; median {s['median']:.4f}) "
                         f"over {s['images']} images; on the distractor {s['share_distractor']:.4f}; region area "
                         f"{s['mask_fraction']:.4f}; "
                         f"model accuracy {s['accuracy']:.4f}")
    except Exception as exc:  # user errors and Hydra's config errors: one line
        return exit_with_cli_error(exc)
    print(f"{spec.dataset.name} · {spec.model.name} · target={spec.target}")
    print("\n".join(lines))
    if args.out:
        from .tables import write_csv

        write_csv(pd.concat(tables, ignore_index=True), Path(args.out))
        print(f"table: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
