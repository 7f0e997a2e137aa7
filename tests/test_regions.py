import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.engine.regions import morf_order, n_regions, pixel_ranks, region_relevance, seeded_orders, tile_ids


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), m=st.integers(1, 40))
def test_tiles_cover_every_pixel_exactly_once(h, w, m):
    m = min(m, h, w)
    ids = tile_ids(h, w, m)
    count = n_regions(h, w, m)
    assert count == math.ceil(h / m) * math.ceil(w / m)
    sizes = torch.bincount(ids.flatten(), minlength=count)
    assert sizes.sum() == h * w and (sizes > 0).all() and len(sizes) == count
    # every region is a rectangle of at most m×m pixels: full tiles inside, smaller ones at the border
    for r in range(count):
        rows, cols = torch.nonzero(ids == r, as_tuple=True)
        hh, ww = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert hh * ww == sizes[r] and hh <= m and ww <= m


def test_non_divisible_border_tiles_are_smaller():
    ids = tile_ids(10, 7, 4)  # 3 × 2 tiles: rows 4,4,2 ; cols 4,3
    sizes = torch.bincount(ids.flatten()).tolist()
    assert sizes == [16, 12, 16, 12, 8, 6]


def test_region_score_is_sum_of_heatmap():
    ids = tile_ids(4, 4, 2)
    h = torch.arange(16.0).view(1, 4, 4)
    assert region_relevance(h, ids, 4).tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]


def test_ties_are_broken_by_the_seeded_permutation_not_by_position():
    scores = torch.zeros(1, 6)
    for perm in ([3, 1, 5, 0, 2, 4], [5, 4, 3, 2, 1, 0]):
        assert morf_order(scores, torch.tensor([perm])).tolist() == [perm]
    orders = {tuple(seeded_orders(scores, [f"img{i}"], seed=0)["morf"][0].tolist()) for i in range(20)}
    assert len(orders) > 10  # tied regions are shuffled per image, not left in position order


def test_morf_is_by_decreasing_score_and_seeded():
    scores = torch.tensor([[0.1, 3.0, -2.0, 3.0, 0.5]])
    a = seeded_orders(scores, ["x"], seed=1)
    b = seeded_orders(scores, ["x"], seed=1)
    assert torch.equal(a["morf"], b["morf"]) and torch.equal(a["random"], b["random"])
    order = a["morf"][0].tolist()
    assert set(order[:2]) == {1, 3} and order[2:] == [4, 0, 2]
    assert sorted(a["random"][0].tolist()) == list(range(5))


def test_pixel_ranks_replace_exactly_the_first_k_regions():
    ids = tile_ids(5, 5, 2)  # 9 regions, smaller at the border
    order = torch.tensor([[4, 8, 0, 2, 6, 1, 3, 5, 7]])
    ranks = pixel_ranks(order, ids)[0]
    for k in range(10):
        replaced = set(ids[ranks < k].tolist())
        assert replaced == set(order[0, :k].tolist())
