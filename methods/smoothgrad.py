"""SmoothGrad (Smilkov et al. 2017): the gradient ∂f_c/∂x averaged over noisy copies x + N(0, σ²).

σ = ``noise`` × (the width of the data's raw pixel range in model-input units, per channel); ``samples``
noisy copies per image; sample s of image i is drawn on the device from sub-stream s of the image's own
stream (bench.seeding, bench.counter_rng.fold), so an image gets the same noise in any batch and chunk;
all images × samples are evaluated in chunks of ``chunk`` model inputs. Pooled with the l2 norm over
channels by default, like sensitivity.
"""

import torch

from bench.interfaces import Context, Method
from bench.checks import integer, number
from bench.engine.counter_rng import fold, normal
from bench.plugins import load_module
from bench.engine.seeding import keys_of


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
        keys = keys_of(ctx.seed, "smoothgrad", list(ctx.image_ids)).to(x.device)
        total = torch.zeros_like(x)
        n = len(x) * self.samples
        for start in range(0, n, self.chunk):  # (image, sample) pairs, image-major, in chunks
            k = torch.arange(start, min(start + self.chunk, n), device=x.device)
            b = k // self.samples
            # sample s of image i: sub-stream s of the image's key, whatever the chunking
            eps = normal(fold(keys[b], k % self.samples), tuple(x.shape[1:]), x.device, x.dtype)
            inputs = x[b] + sigma * eps
            total.index_add_(0, b, self._gradient(model, inputs, target[b]))
        return total / self.samples
