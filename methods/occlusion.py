"""Occlusion (Zeiler & Fergus 2014): how much f_c drops when a square window of the input is replaced.

A ``window`` × ``window`` square slides over the image with step ``stride`` (the last position is flush
with the border, so every pixel is covered); inside it every channel is set to ``value`` (model-input
units: 0 is the mean image for mean/std-normalised data). A pixel's relevance is the average, over the
windows that cover it, of f_c(x) − f_c(x with the window occluded), spread equally over the channels so
that the default sum pooling gives that average. All images × windows are evaluated in chunks of
``chunk`` model inputs (no gradient).
"""

import torch

from bench.interfaces import Context, Method
from bench.checks import number
from bench.errors import BenchError


def window_starts(size: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def window_masks(h: int, w: int, window: int, stride: int, device) -> torch.Tensor:
    """(P, H, W) boolean masks of the P window positions."""
    wh, ww = min(window, h), min(window, w)
    ys = torch.tensor(window_starts(h, wh, stride), device=device)
    xs = torch.tensor(window_starts(w, ww, stride), device=device)
    rows = (torch.arange(h, device=device) >= ys[:, None]) & (torch.arange(h, device=device) < ys[:, None] + wh)
    cols = (torch.arange(w, device=device) >= xs[:, None]) & (torch.arange(w, device=device) < xs[:, None] + ww)
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(-1, h, w)


class Occlusion(Method):
    pooling = "sum"

    def __init__(self, window: int = 8, stride: int = 4, value: float = 0.0, chunk: int = 256) -> None:
        for key, v in (("window", window), ("stride", stride), ("chunk", chunk)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise BenchError(f"method.params.{key} must be a positive integer, got {v!r}")
        value = number("method.params.value", value)  # model-input units, any sign
        self.window, self.stride, self.value, self.chunk = window, stride, value, chunk

    @torch.no_grad()
    def attribute(self, model, x, target, ctx: Context) -> torch.Tensor:
        b_, c, h, w = x.shape
        masks = window_masks(h, w, self.window, self.stride, x.device)
        p_ = len(masks)
        f0 = model(x).gather(1, target.view(-1, 1)).squeeze(1)
        drops = torch.empty(b_, p_, dtype=x.dtype, device=x.device)
        n = b_ * p_
        for start in range(0, n, self.chunk):  # (image, window) pairs, image-major, in chunks
            k = torch.arange(start, min(start + self.chunk, n), device=x.device)
            b, p = k // p_, k % p_
            inputs = torch.where(masks[p].unsqueeze(1), torch.tensor(self.value, dtype=x.dtype), x[b])
            drops[b, p] = f0[b] - model(inputs).gather(1, target[b].view(-1, 1)).squeeze(1)
        m = masks.to(x.dtype)
        heat = torch.einsum("bp,phw->bhw", drops, m) / m.sum(0)
        return (heat / c).unsqueeze(1).expand(b_, c, h, w).contiguous()
