"""The one heatmap → RGB rendering of the suite, used by the complexity metric and by the figures.

DEFINITIONS §5 / TNNLS Fig. 5: a pixel heatmap ``h`` (H×W) is divided by ``max |h|`` (per heatmap; an
all-zero heatmap stays zero), clipped to [−1, 1] and mapped through one fixed diverging colormap
(:data:`COLORMAP`), value 0 landing on the colormap's centre, −1 on its low end and +1 on its high end.
The colormap object is matplotlib's own (``matplotlib.colormaps[COLORMAP]``), never a hand table.
"""

from __future__ import annotations

import matplotlib
import numpy as np

#: Name of the matplotlib diverging colormap used everywhere (recorded in every complexity row).
COLORMAP = "bwr"


def _as_numpy(h) -> np.ndarray:
    """numpy or torch (any device, with or without grad) → float64 numpy array."""
    if hasattr(h, "detach"):  # torch.Tensor, without importing torch here
        h = h.detach().cpu().numpy()
    return np.asarray(h, dtype=np.float64)


def colormap():
    """The matplotlib ``Colormap`` object named by :data:`COLORMAP`."""
    return matplotlib.colormaps[COLORMAP]


def normalize_heatmap(h) -> np.ndarray:
    """u = clip(h / max|h|, −1, 1), the max taken per heatmap over its H×W pixels.

    Accepts (H, W) or a batch (B, H, W), numpy or torch; returns float64 numpy of the same shape.
    An all-zero heatmap stays all zero. Non-finite values are rejected (ValueError).
    """
    a = _as_numpy(h)
    if a.ndim not in (2, 3):
        raise ValueError(f"heatmap must be (H, W) or (B, H, W), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("heatmap contains NaN or infinite values")
    if a.shape[-1] == 0 or a.shape[-2] == 0:
        return a.copy()
    scale = np.abs(a).max(axis=(-2, -1), keepdims=True)
    out = np.divide(a, scale, out=np.zeros_like(a), where=scale > 0)
    return np.clip(out, -1.0, 1.0)


def _render_normalized(u: np.ndarray) -> np.ndarray:
    """u ∈ [−1, 1] → uint8 RGB via the colormap at (u + 1) / 2 (so 0 ↦ colormap(0.5), its centre)."""
    rgba = colormap()((u + 1.0) / 2.0, bytes=True)
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


def render_heatmap(h) -> np.ndarray:
    """One heatmap (H, W) → uint8 RGB image (H, W, 3): colormap((normalize_heatmap(h) + 1) / 2)."""
    a = _as_numpy(h)
    if a.ndim != 2:
        raise ValueError(f"render_heatmap expects (H, W), got shape {a.shape}; use render_heatmaps")
    return _render_normalized(normalize_heatmap(a))


def render_heatmaps(h) -> np.ndarray:
    """A batch (B, H, W) → uint8 RGB images (B, H, W, 3); each heatmap normalised by its own max|h|."""
    a = _as_numpy(h)
    if a.ndim != 3:
        raise ValueError(f"render_heatmaps expects (B, H, W), got shape {a.shape}")
    return _render_normalized(normalize_heatmap(a))


def centre_colour() -> np.ndarray:
    """uint8 RGB of the colormap centre, i.e. the colour of h = 0 (near-white for ``bwr``)."""
    return _render_normalized(np.zeros((1, 1)))[0, 0]
