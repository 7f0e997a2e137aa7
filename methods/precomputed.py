"""Heatmaps computed elsewhere (a notebook, another library, an earlier run), read by image id:
``method=precomputed method.params.path=…`` (formats: bench/data/heatmap_files.py). Everything is read and
checked against the run's images when the run spec is built; the method then only looks them up.

An H×W heatmap is returned as relevance in the first channel (zeros in the others), so the default
pooling ``sum`` gives back exactly the heatmap (``abs_sum``, ``l2``, ``linf``: its absolute value); a
C×H×W relevance is pooled like any method's.
"""

import hashlib

import torch

from bench.interfaces import Context, Method
from bench.checks import text
from bench.errors import BenchError


class Precomputed(Method):
    pooling = "sum"
    fixed_heatmaps = True  # no heatmap for any other input (continuity's neighbours, shifted copies)

    def __init__(self, path: str | None = None, source_method: str | None = None) -> None:
        if path is None:
            raise BenchError("method=precomputed needs method.params.path: a folder of .npy files, an .npz or a "
                             ".parquet of heatmaps keyed by image id")
        self.path = text("method.params.path", path)
        self.source_method = None if source_method is None else text("method.params.source_method", source_method)
        self.heatmaps: dict | None = None
        self.inputs_sha: str | None = None  # of the heatmaps read: part of the job's identity (bench/run/identity.py)

    def prepare(self, dataset, n_images: int, what: str) -> None:
        from bench.data.heatmap_files import read_heatmaps

        ids = [dataset.image_id(i) for i in range(n_images)]
        self.heatmaps = read_heatmaps(self.path, ids, tuple(dataset.image_shape), what, self.source_method)
        digest = hashlib.blake2b(digest_size=16)
        for image_id in ids:
            a = self.heatmaps[image_id]
            digest.update(f"{image_id}:{a.shape}".encode())
            digest.update(a.tobytes())
        self.inputs_sha = digest.hexdigest()

    def attribute(self, model, x: torch.Tensor, target: torch.Tensor, ctx: Context) -> torch.Tensor:
        out = torch.zeros_like(x)
        for b, image_id in enumerate(ctx.image_ids):  # a lookup per image, no computation
            h = torch.from_numpy(self.heatmaps[image_id]).to(device=x.device, dtype=x.dtype)
            if h.ndim == 2:
                out[b, 0] = h
            else:
                out[b] = h
        return out
