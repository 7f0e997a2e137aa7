"""bench.render: the single heatmap → RGB rendering (DEFINITIONS §5)."""

import matplotlib
import numpy as np
import pytest
import torch

from bench.engine.render import COLORMAP, centre_colour, normalize_heatmap, render_heatmap, render_heatmaps


def _cmap_bytes(v):
    return np.asarray(matplotlib.colormaps[COLORMAP](v, bytes=True))[..., :3]


def test_colormap_is_recorded_diverging_bwr():
    assert COLORMAP == "bwr"
    assert (_cmap_bytes(0.0) == [0, 0, 255]).all() and (_cmap_bytes(1.0) == [255, 0, 0]).all()


def test_all_zero_heatmap_renders_to_colormap_centre():
    rgb = render_heatmap(np.zeros((4, 5)))
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 5, 3)
    assert (rgb == _cmap_bytes(0.5)).all()
    assert (rgb == centre_colour()).all()
    assert (centre_colour() >= 250).all()  # bwr's centre is (near) white


def test_normalize_per_heatmap_and_clip():
    h = np.array([[[0.0, 2.0], [-4.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.5], [0.25, 0.0]]])
    u = normalize_heatmap(h)
    np.testing.assert_allclose(u[0], [[0, 0.5], [-1, 0.25]])
    assert (u[1] == 0).all() and not np.isnan(u).any()
    np.testing.assert_allclose(u[2], [[0, 1], [0.5, 0]])
    assert u.min() >= -1 and u.max() <= 1


def test_extremes_and_scale_invariance():
    h = np.array([[3.0, -3.0, 0.0, 1.5]])
    rgb = render_heatmap(h)
    assert (rgb[0, 0] == [255, 0, 0]).all() and (rgb[0, 1] == [0, 0, 255]).all()
    assert (rgb[0, 2] == centre_colour()).all()
    assert (rgb[0, 3] == _cmap_bytes(0.75)).all()
    assert (render_heatmap(7.0 * h) == rgb).all()  # positive rescaling does not change the picture


def test_torch_numpy_and_batch_agree():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 6, 7))
    batch = render_heatmaps(h)
    assert batch.shape == (3, 6, 7, 3) and batch.dtype == np.uint8
    assert (render_heatmaps(torch.tensor(h, requires_grad=True)) == batch).all()
    for i in range(3):
        assert (render_heatmap(torch.tensor(h[i])) == batch[i]).all()
        assert (render_heatmap(h[i] * (i + 1)) == batch[i]).all()


def test_bad_shapes_and_values_rejected():
    with pytest.raises(ValueError):
        render_heatmap(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        render_heatmaps(np.zeros((3, 4)))
    with pytest.raises(ValueError):
        normalize_heatmap(np.array([[np.nan, 1.0]]))
