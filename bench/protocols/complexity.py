"""Heatmap complexity (DEFINITIONS §5, TNNLS 2017 Sec. IV / Fig. 5): file size and image entropy.

Each heatmap is rendered by :mod:`bench.render` (divide by max|h|, colormap ``bwr``, 8-bit RGB), then

* ``png_bytes``  — byte count of that RGB image encoded in memory as PNG (lossless, fixed settings);
* ``jpeg_bytes`` — byte count of it encoded as baseline JPEG with quality ``jpeg_quality`` (default 90),
  4:2:0 chroma subsampling, no optimisation pass;
* ``entropy_bits`` — Shannon entropy of the 256-bin histogram of the grayscale version,
  E = −Σ_k p_k log2 p_k over non-empty bins, p_k = count_k / (H·W): exactly MATLAB's ``entropy(I)``
  (``p = imhist(I); p(p==0) = []; p = p/numel(I); E = -sum(p.*log2(p))``) applied to the uint8 gray image.

Grayscale (``gray`` argument): ``"skimage"`` (default) is ``img_as_ubyte(skimage.color.rgb2gray(rgb))``,
i.e. Rec.709 luma 0.2125 R + 0.7154 G + 0.0721 B, rounded half-to-even. MATLAB's own ``rgb2gray`` uses
Rec.601 weights (0.2989, 0.5870, 0.1140); ``"matlab"`` reproduces that (rounded half away from zero) for
a closer match to the paper's pipeline. The entropy formula is identical either way; the gray images and
hence the entropy values differ slightly between the two. Lower values = less complex.

As a protocol (``metrics=[aopc,complexity]``): the table ``complexity``, one row per image, with the rendering's
settings as columns; host work only (the rendering and encoding run while the next batch is on the device).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image
from skimage.color import rgb2gray
from skimage.util import img_as_ubyte

from bench.engine.render import COLORMAP, render_heatmaps
from bench.engine.stats import bootstrap_ci, sem
from bench.protocols.base import Batch, Figure, Protocol, Quantity, Table, choice, integer, setting

#: PNG settings (lossless; fixed so that sizes are comparable between runs).
PNG_COMPRESS_LEVEL = 9
#: JPEG chroma subsampling passed to Pillow (2 = 4:2:0).
JPEG_SUBSAMPLING = 2
#: MATLAB ``rgb2gray`` luma coefficients (first row of inv of the NTSC YIQ matrix).
_MATLAB_GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def png_bytes(rgb: np.ndarray) -> int:
    """Size in bytes of a uint8 RGB image (H, W, 3) encoded as PNG (compress_level 9, no optimize)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getbuffer().nbytes


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> int:
    """Size in bytes of a uint8 RGB image (H, W, 3) encoded as baseline JPEG at ``quality``, 4:2:0."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(
        buf, format="JPEG", quality=int(quality), subsampling=JPEG_SUBSAMPLING, optimize=False, progressive=False
    )
    return buf.getbuffer().nbytes


def to_gray_uint8(rgb: np.ndarray, gray: str = "skimage") -> np.ndarray:
    """uint8 RGB (..., H, W, 3) → uint8 gray (..., H, W); see the module docstring for ``gray``."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB (..., 3), got {rgb.dtype} {rgb.shape}")
    if gray == "skimage":
        return img_as_ubyte(rgb2gray(rgb))
    if gray == "matlab":
        y = rgb.astype(np.float64) @ _MATLAB_GRAY
        return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)  # y ≥ 0: round half away from zero
    raise ValueError(f"gray must be 'skimage' or 'matlab', got {gray!r}")


def entropy_bits(gray: np.ndarray) -> np.ndarray:
    """MATLAB ``entropy`` of uint8 gray images (B, H, W) → (B,) float64 bits.

    E = −Σ_k p_k log2 p_k, p_k = (#pixels with value k) / (H·W), k = 0…255, empty bins skipped.
    All images' histograms are counted in one ``bincount`` (image b uses bins 256·b … 256·b + 255).
    """
    g = np.asarray(gray)
    if g.dtype != np.uint8 or g.ndim != 3:
        raise ValueError(f"expected uint8 (B, H, W), got {g.dtype} {g.shape}")
    b, h, w = g.shape
    offsets = (np.arange(b, dtype=np.int64) * 256)[:, None, None]
    counts = np.bincount((g.astype(np.int64) + offsets).ravel(), minlength=256 * b).reshape(b, 256)
    p = counts / float(h * w)
    plogp = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return -plogp.sum(axis=1) + 0.0  # + 0.0 turns −0.0 into 0.0


def complexity(heatmaps, *, jpeg_quality: int = 90, gray: str = "skimage", image_keys=None) -> pd.DataFrame:
    """Complexity of a batch of pixel heatmaps (B, H, W) (numpy or torch), one row per heatmap.

    Columns: ``image`` (key; default 0…B−1), ``png_bytes``, ``jpeg_bytes``, ``entropy_bits``, ``colormap``,
    ``jpeg_quality``, ``png_compress_level``, ``gray``. Rendering: :func:`bench.render.render_heatmaps`.
    """
    rgb = render_heatmaps(heatmaps)
    n = rgb.shape[0]
    keys = list(range(n)) if image_keys is None else list(image_keys)
    if len(keys) != n:
        raise ValueError(f"{len(keys)} image_keys for {n} heatmaps")
    return pd.DataFrame(
        {
            "image": keys,
            "png_bytes": np.array([png_bytes(im) for im in rgb], dtype=np.int64),
            "jpeg_bytes": np.array([jpeg_bytes(im, jpeg_quality) for im in rgb], dtype=np.int64),
            "entropy_bits": entropy_bits(to_gray_uint8(rgb, gray)),
            "colormap": COLORMAP,
            "jpeg_quality": int(jpeg_quality),
            "png_compress_level": PNG_COMPRESS_LEVEL,
            "gray": gray,
        }
    )


def summarize(
    df: pd.DataFrame,
    by=("method",),
    value_cols=("png_bytes", "jpeg_bytes", "entropy_bits"),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per group of ``by`` and per value column: n, mean, median, standard error and a ``level``
    percentile bootstrap interval of the mean over images (NaNs dropped; ``bench.stats.bootstrap_ci``,
    one vectorised (n_boot, n) resample). Long format: columns ``*by, metric, n, mean, median, sem,
    ci_low, ci_high, ci_level, n_boot, boot_seed``. Every group uses the same ``seed``, so a group's
    interval does not depend on which other groups are present."""
    by = [by] if isinstance(by, str) else list(by)
    value_cols = [value_cols] if isinstance(value_cols, str) else list(value_cols)
    rows = []
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        for col in value_cols:
            v = g[col].to_numpy(dtype=np.float64)
            v = v[~np.isnan(v)]
            lo, hi = bootstrap_ci(v, n_boot=int(n_boot), seed=int(seed), level=level)
            rows.append(
                {
                    **dict(zip(by, key)),
                    "metric": col,
                    "n": int(v.size),
                    "mean": float(v.mean()) if v.size else float("nan"),
                    "median": float(np.median(v)) if v.size else float("nan"),
                    "sem": float(sem(v)),
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                    "ci_level": level,
                    "n_boot": int(n_boot),
                    "boot_seed": int(seed),
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Complexity(Protocol):
    jpeg_quality: int = setting(90, integer(1, 100), "JPEG quality of the compressed-size measure (PNG is lossless)")
    gray: str = setting("skimage", choice("skimage", "matlab"), "skimage (Rec.709 luma) | matlab (Rec.601, rgb2gray)")

    title = "complexity"
    family = "complexity"
    tables = (Table("complexity", ("image_id", "png_bytes", "jpeg_bytes", "entropy_bits"), per_heatmap=True),)
    quantities = (
        Quantity("png_bytes", -1, "PNG size (bytes)", headline=True, printed="PNG bytes", print_as="mean",
                 unit="bytes"),
        Quantity("jpeg_bytes", -1, "JPEG size (bytes)", unit="bytes"),
        Quantity("entropy_bits", -1, "entropy (bits)", printed="entropy", print_as="mean", unit="bits"),
    )
    figures = (Figure("complexity_scatter", "scatter", table="complexity", value="png_bytes", label="PNG size (bytes)"),
               Figure("complexity_entropy", "box", table="complexity", value="entropy_bits", label="entropy (bits)"))

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        heat, image_ids, settings = batch.heatmap, batch.image_ids, self.values()

        def rows() -> dict[str, pd.DataFrame]:
            table = complexity(heat.float().cpu().numpy(), image_keys=image_ids, **settings)
            return {"complexity": table.rename(columns={"image": "image_id"})}
        return rows

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        rows = tables.get("complexity")
        return None if rows is None else rows.set_index("image_id")[["png_bytes", "jpeg_bytes", "entropy_bits"]]
