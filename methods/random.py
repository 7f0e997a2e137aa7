"""Random heatmaps: i.i.d. U[0, 1) per input element, seeded per image (DEFINITIONS §2 random baseline).

Note: every run also evaluates the exact uniform random *order* of regions as its paired baseline
(bench/engine/regions.py); this method exists so that "random" can also be swept like any other method.
"""

import torch

from bench.interfaces import Context, Method
from bench.engine.seeding import rand_per_image


class RandomHeatmap(Method):
    pooling = "sum"

    def attribute(self, model, x: torch.Tensor, target: torch.Tensor, ctx: Context) -> torch.Tensor:
        return rand_per_image(ctx.seed, "random_heatmap", list(ctx.image_ids), tuple(x.shape[1:]), x.device, x.dtype)
