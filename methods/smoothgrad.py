"""SmoothGrad (Smilkov et al. 2017): the gradient ∂f_c/∂x averaged over noisy copies x + N(0, σ²).

σ = ``noise`` × (the width of the data's raw pixel range in model-input units, per channel); ``samples``
noisy copies per image, drawn from a generator seeded by (seed, image id) so that an image gets the same
noise in any batch; all images × samples are evaluated in chunks of ``chunk`` model inputs. Pooled with
the l2 norm over channels by default, like sensitivity.
"""

import torch

from bench.api import Context, Method
from bench.checks import integer, number
from bench.plugins import load_module
from bench.seeding import generator


class SmoothGrad(Method):
    pooling = "l2"

    def __init__(self, samples: int = 32, noise: float = 0.15, chunk: int = 256) -> None:
        p = "method.params."
        integer(p + "samples", samples, low=1)
        noise = number(p + "noise", noise, low=0)  # σ / raw pixel range; 0 = the plain gradient, samples times
        integer(p + "chunk", chunk, low=1)
        self.samples, self.noise, self.chunk = samples, noise, chunk
        self._gradient = load_module("methods", "gradient").input_gradient

    def attribute(self, model, x, target, ctx: Context) -> torch.Tensor:
        lo, hi = ctx.normalization.input_bounds(x)
        sigma = (self.noise * (hi - lo)).to(device=x.device, dtype=x.dtype)
        gens = [generator(ctx.seed, "smoothgrad", key) for key in ctx.image_ids]
        total = torch.zeros_like(x)
        n = len(x) * self.samples
        for start in range(0, n, self.chunk):  # (image, sample) pairs, image-major, in chunks
            k = range(start, min(start + self.chunk, n))
            b = torch.tensor([i // self.samples for i in k], device=x.device)
            # the s-th draw of image i's own stream is its s-th sample, whatever the chunking
            eps = torch.stack([torch.randn(tuple(x.shape[1:]), generator=gens[i // self.samples]) for i in k])
            inputs = x[b] + sigma * eps.to(device=x.device, dtype=x.dtype)
            total.index_add_(0, b, self._gradient(model, inputs, target[b]))
        return total / self.samples
