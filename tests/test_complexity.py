"""bench.complexity: PNG/JPEG size and MATLAB-style entropy of rendered heatmaps (DEFINITIONS §5, TNNLS Fig. 5)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.measure import shannon_entropy

from bench.protocols.complexity import complexity, entropy_bits, summarize, to_gray_uint8
from bench.engine.render import render_heatmaps


def _gauss(yy, xx, cy, cx, s):
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2))


def _ladder(seed=0, n=64):
    """all-zero, one blob, many random blobs, i.i.d. noise — increasingly complex heatmaps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(float)
    blob = _gauss(yy, xx, n / 2, n / 2, 5)
    c = rng.uniform(4, n - 4, (24, 2))
    a = rng.choice([-1, 1], 24) * rng.uniform(0.5, 1, 24)
    many = sum(a[k] * _gauss(yy, xx, c[k, 0], c[k, 1], 3) for k in range(24))
    noise = rng.uniform(-1, 1, (n, n))
    return np.stack([np.zeros((n, n)), blob, many, noise])


@pytest.mark.parametrize("seed", [0, 1])
def test_complexity_ordering_zero_blob_blobs_noise(seed):
    df = complexity(_ladder(seed))
    for col in ["png_bytes", "jpeg_bytes", "entropy_bits"]:
        v = df[col].to_numpy()
        assert (np.diff(v) > 0).all(), (col, v)
    assert df["entropy_bits"].iloc[0] == 0.0  # one colour → one gray level → 0 bits


def test_columns_and_recorded_settings():
    df = complexity(torch.tensor(_ladder()[:2]), jpeg_quality=75, image_keys=["a", "b"])
    assert {"image", "png_bytes", "jpeg_bytes", "entropy_bits", "colormap", "jpeg_quality"} <= set(df.columns)
    assert list(df["image"]) == ["a", "b"] and (df["colormap"] == "bwr").all() and (df["jpeg_quality"] == 75).all()
    # JPEG quality matters and is deterministic
    assert complexity(_ladder()[1:2], jpeg_quality=95)["jpeg_bytes"][0] != df["jpeg_bytes"][1]
    pd.testing.assert_frame_equal(complexity(_ladder()), complexity(_ladder()))


def test_entropy_hand_computed_three_levels():
    # 4×4 heatmap: 8 zeros (centre colour), 4 × +1 (red), 4 × −1 (blue) → three distinct gray levels
    h = np.zeros((4, 4))
    h[0, :] = 1.0
    h[1, :] = -1.0
    gray = to_gray_uint8(render_heatmaps(h[None]))[0]
    assert len(np.unique(gray)) == 3
    # by hand: p = (1/2, 1/4, 1/4) → H = 1/2·1 + 2·(1/4·2) = 1.5 bits
    assert complexity(h[None])["entropy_bits"][0] == pytest.approx(1.5, abs=1e-12)


def test_entropy_hand_computed_gray_counts():
    # 16 pixels with counts 1, 3, 12 of gray levels 0, 7, 255
    g = np.array([0] + [7] * 3 + [255] * 12, dtype=np.uint8).reshape(1, 4, 4)
    expected = -(1 / 16 * math.log2(1 / 16) + 3 / 16 * math.log2(3 / 16) + 12 / 16 * math.log2(12 / 16))
    assert entropy_bits(g)[0] == pytest.approx(expected, abs=1e-12)
    assert entropy_bits(np.zeros((1, 3, 3), np.uint8))[0] == 0.0
    assert entropy_bits(np.arange(256, dtype=np.uint8).reshape(1, 16, 16))[0] == pytest.approx(8.0)


def test_entropy_equals_matlab_definition_and_skimage():
    """MATLAB: p = imhist(I) (256 bins for uint8); p(p==0)=[]; p = p/numel(I); E = -sum(p.*log2(p))."""
    rng = np.random.default_rng(3)
    g = np.concatenate(
        [rng.integers(0, 256, (3, 9, 11)), rng.integers(100, 104, (2, 9, 11))]
    ).astype(np.uint8)
    ours = entropy_bits(g)
    for i in range(len(g)):
        p = np.histogram(g[i], bins=np.arange(257))[0].astype(float)
        p = p[p > 0] / g[i].size
        assert ours[i] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-12)
        assert ours[i] == pytest.approx(shannon_entropy(g[i], base=2), abs=1e-12)


def test_gray_conversions():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    # skimage rgb2gray (Rec.709) then img_as_ubyte: round(255·w)
    assert to_gray_uint8(rgb).tolist() == [[54, 182, 18, 255]]
    # MATLAB rgb2gray (Rec.601): round(255·[0.2989, 0.5870, 0.1140])
    assert to_gray_uint8(rgb, "matlab").tolist() == [[76, 150, 29, 255]]
    with pytest.raises(ValueError):
        to_gray_uint8(rgb, "nope")


def test_summarize_bootstrap():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"method": np.repeat(["a", "b"], 50), "entropy_bits": np.r_[rng.normal(1, 0.1, 50), rng.normal(3, 0.5, 50)]}
    )
    s = summarize(df, by=["method"], value_cols=["entropy_bits"], n_boot=500, seed=0)
    assert list(s["method"]) == ["a", "b"] and (s["n"] == 50).all()
    for _, row in s.iterrows():
        v = df.loc[df.method == row.method, "entropy_bits"]
        assert row["mean"] == pytest.approx(v.mean()) and row["median"] == pytest.approx(v.median())
        assert row.ci_low < row["mean"] < row.ci_high
    pd.testing.assert_frame_equal(s, summarize(df, by=["method"], value_cols=["entropy_bits"], n_boot=500, seed=0))
    # a group's interval does not depend on the other groups
    s_a = summarize(df[df.method == "a"], by=["method"], value_cols=["entropy_bits"], n_boot=500, seed=0)
    assert s_a.ci_low[0] == s.ci_low[0] and s_a.ci_high[0] == s.ci_high[0]
    # constant values → degenerate interval
    c = summarize(pd.DataFrame({"m": ["x"] * 5, "v": [2.0] * 5}), by=["m"], value_cols=["v"])
    assert c.ci_low[0] == c.ci_high[0] == 2.0
