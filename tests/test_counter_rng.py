"""bench.counter_rng: exact agreement with an independent NumPy Philox-4x32-10, per-key rows, statistics."""

import math

import numpy as np
import pytest
import torch

from bench.engine import counter_rng as crng
from bench.engine.seeding import derive_seed, keys_of

U32 = np.uint64(0xFFFFFFFF)
KEYS = [0, 1, 12345, 0x243F6A8885A308D3 >> 1, (1 << 63) - 2, (1 << 63) - 1]
SHAPES = [(), (1,), (3,), (7,), (4, 5), (2, 3, 5), (3, 1, 9, 2)]


# ----------------------------------------------------------------------------------------- NumPy reference
def np_philox(ctr: np.ndarray, key: int) -> np.ndarray:
    """Philox-4x32-10 of counters ``ctr`` (N, 4) under a 64-bit key; uint64 arrays holding 32-bit words."""
    x = [ctr[:, i].astype(np.uint64) for i in range(4)]
    k = [np.uint64(key & 0xFFFFFFFF), np.uint64((key >> 32) & 0xFFFFFFFF)]
    for rnd in range(10):
        if rnd > 0:
            k = [(k[0] + np.uint64(0x9E3779B9)) & U32, (k[1] + np.uint64(0xBB67AE85)) & U32]
        p0 = x[0] * np.uint64(0xD2511F53)  # < 2^64: exact in uint64
        p1 = x[2] * np.uint64(0xCD9E8D57)
        x = [(p1 >> np.uint64(32)) ^ x[1] ^ k[0], p1 & U32, (p0 >> np.uint64(32)) ^ x[3] ^ k[1], p0 & U32]
    return np.stack(x, axis=1)


def np_words(key: int, total: int, domain: int) -> np.ndarray:
    n_ctr = (total + 3) // 4
    ctr = np.zeros((n_ctr, 4), dtype=np.uint64)
    ctr[:, 0] = np.arange(n_ctr, dtype=np.uint64)
    ctr[:, 2] = domain
    return np_philox(ctr, key % (1 << 64)).reshape(-1)[:total]


def np_uniform(key: int, shape) -> np.ndarray:
    w = np_words(key, math.prod(shape), 0)
    return ((w >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)).reshape(shape)


def np_permutation(key: int, n: int) -> np.ndarray:
    ctr = np.zeros((n, 4), dtype=np.uint64)
    ctr[:, 0] = np.arange(n, dtype=np.uint64)
    ctr[:, 2] = 1
    w = np_philox(ctr, key % (1 << 64))
    r = ((w[:, 0] & np.uint64(0x7FFFFFFF)) << np.uint64(32)) | w[:, 1]
    k = np.uint64(max(1, (n - 1).bit_length()))
    return np.argsort(((r >> k) << k) | np.arange(n, dtype=np.uint64), kind="stable")


def np_normal(key: int, shape) -> np.ndarray:
    total = math.prod(shape)
    w = np_words(key, 2 * ((total + 1) // 2), 2).astype(np.float64)
    r = np.sqrt(-2.0 * np.log((w[0::2] + 1.0) / 2.0**32))
    theta = 2.0 * np.pi * w[1::2] / 2.0**32
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1).reshape(-1)[:total].reshape(shape)


def tkeys(keys) -> torch.Tensor:
    return torch.tensor(keys, dtype=torch.int64)


# ----------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("ctr, key, expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(ctr, key, expected):
    """Random123 tests/kat_vectors, the three "philox4x32 10" lines (counter[4], key[2] -> result[4])."""
    got = crng._philox(*(torch.tensor([c]) for c in ctr), *(torch.tensor([k]) for k in key))
    assert tuple(int(g) for g in got) == expected
    ref = np_philox(np.array([ctr], dtype=np.uint64), key[0] | (key[1] << 32))[0]
    assert tuple(int(v) for v in ref) == expected


def test_keys_of():
    ids = ["a", "img_001", "x/y.png"]
    keys = keys_of(7, "noise", ids)
    assert keys.dtype == torch.int64 and keys.tolist() == [derive_seed(7, "noise", i) for i in ids]


@pytest.mark.parametrize("chunk", [None, 5])
def test_uniform_matches_numpy_reference(chunk, monkeypatch):
    if chunk:  # tiny chunks: exercises the chunk boundaries
        monkeypatch.setitem(crng._CHUNK, "cpu", chunk)
    for shape in SHAPES:
        got = crng.uniform(tkeys(KEYS), shape, "cpu")
        assert got.dtype == torch.float32 and got.shape == (len(KEYS), *shape)
        for row, key in zip(got, KEYS):
            assert np.array_equal(row.numpy(), np_uniform(key, shape))
            assert np.array_equal(row.numpy().view(np.uint32), np_uniform(key, shape).view(np.uint32))


def test_uniform_exact_grid_and_range():
    u = crng.uniform(tkeys(KEYS), (1000,), "cpu")
    assert u.min() >= 0 and u.max() < 1
    assert torch.equal(u * 2**24, torch.floor(u * 2**24))


def test_negative_int64_key_is_its_bit_pattern():
    got = crng.uniform(tkeys([-1, -(1 << 63)]), (9,), "cpu")
    assert np.array_equal(got[0].numpy(), np_uniform((1 << 64) - 1, (9,)))
    assert np.array_equal(got[1].numpy(), np_uniform(1 << 63, (9,)))


@pytest.mark.parametrize("chunk", [None, 3])
def test_permutation_matches_numpy_reference(chunk, monkeypatch):
    if chunk:
        monkeypatch.setitem(crng._CHUNK, "cpu", chunk)
    for n in [0, 1, 2, 3, 17, 256, 1000]:
        got = crng.permutation(tkeys(KEYS), n, "cpu")
        assert got.dtype == torch.int64 and got.shape == (len(KEYS), n)
        for row, key in zip(got, KEYS):
            assert np.array_equal(row.numpy(), np_permutation(key, n))


def test_normal_matches_numpy_reference():
    for shape in [(), (1,), (5,), (3, 4)]:
        got = crng.normal(tkeys(KEYS), shape, "cpu")
        assert got.dtype == torch.float32 and got.shape == (len(KEYS), *shape)
        for row, key in zip(got, KEYS):
            np.testing.assert_allclose(row.numpy(), np_normal(key, shape), rtol=1e-6, atol=1e-6)


def test_the_two_ways_of_multiplying_give_the_same_bits(monkeypatch):
    """The unsigned 64-bit product and the product in 16-bit halves (a device without uint64 multiply)."""
    keys, idx = tkeys(KEYS), torch.arange(len(KEYS))
    draws = lambda: (crng.uniform(keys, (3, 7, 5), "cpu"), crng.permutation(keys, 300, "cpu"),  # noqa: E731
                     crng.normal(keys, (11,), "cpu", torch.float64), crng.fold(keys, idx))
    monkeypatch.setitem(crng._UINT64_MUL, "cpu", True)
    fast = draws()
    monkeypatch.setitem(crng._UINT64_MUL, "cpu", False)
    for a, b in zip(fast, draws()):
        assert torch.equal(a, b)
    a = torch.tensor([0, 1, 0xFFFFFFFF, 0x80000000, 123456789])
    for m in (crng._M0, crng._M1, 0xFFFFFFFF):
        hi, lo = crng._mulhilo_halves(a, m)
        assert [(h << 32) | l for h, l in zip(hi.tolist(), lo.tolist())] == [v * m for v in a.tolist()]


def test_fold_matches_numpy_reference_and_separates_substreams():
    idx = torch.tensor([0, 1, 2, 31, (1 << 32) + 5] * 2)
    keys = tkeys(KEYS[:2] * 5)[: len(idx)]
    got = crng.fold(keys, idx)
    for k, i, g in zip(keys.tolist(), idx.tolist(), got.tolist()):
        ctr = np.array([[i & 0xFFFFFFFF, i >> 32, 3, 0]], dtype=np.uint64)
        w = np_philox(ctr, k % (1 << 64))[0]
        assert g % (1 << 64) == int(w[0]) | (int(w[1]) << 32)
    assert len(set(got.tolist())) == len(set(zip(keys.tolist(), idx.tolist())))
    # a sub-key's draws are those of an ordinary key with that bit pattern
    assert np.array_equal(crng.uniform(got[:1], (5,), "cpu")[0].numpy(), np_uniform(got[0].item() % (1 << 64), (5,)))


def test_normal_in_float64_is_the_unrounded_draw():
    z64 = crng.normal(tkeys(KEYS), (9,), "cpu", torch.float64)
    assert z64.dtype == torch.float64
    for row, key in zip(z64, KEYS):
        np.testing.assert_allclose(row.numpy(), np_normal(key, (9,)), rtol=1e-12, atol=1e-12)
    assert torch.equal(z64.float(), crng.normal(tkeys(KEYS), (9,), "cpu"))


def test_rows_depend_only_on_their_key(monkeypatch):
    a, b, c = keys_of(3, "s", ["a", "b", "c"]).tolist()
    alone_u = {k: crng.uniform(tkeys([k]), (3, 7, 5), "cpu")[0] for k in (a, b, c)}
    alone_p = {k: crng.permutation(tkeys([k]), 50, "cpu")[0] for k in (a, b, c)}
    alone_n = {k: crng.normal(tkeys([k]), (3, 7, 5), "cpu")[0] for k in (a, b, c)}
    for chunk in (None, 7):
        if chunk:
            monkeypatch.setitem(crng._CHUNK, "cpu", chunk)
        for order in ([a, b, c], [c, a, b], [b, b, a, c]):
            u = crng.uniform(tkeys(order), (3, 7, 5), "cpu")
            p = crng.permutation(tkeys(order), 50, "cpu")
            z = crng.normal(tkeys(order), (3, 7, 5), "cpu")
            for i, k in enumerate(order):
                assert torch.equal(u[i], alone_u[k]) and torch.equal(p[i], alone_p[k])
                torch.testing.assert_close(z[i], alone_n[k], rtol=1e-6, atol=1e-6)


def test_outputs_on_requested_device():
    keys = tkeys(KEYS[:2])
    for out in (crng.uniform(keys, (3,), "cpu"), crng.normal(keys, (3,), torch.device("cpu")),
                crng.permutation(keys, 4, "cpu")):
        assert out.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_bit_identical():
    keys = torch.cat([tkeys(KEYS), keys_of(0, "noise", [str(i) for i in range(6)])])
    for shape in SHAPES + [(10, 3, 64, 64)]:
        cpu, gpu = crng.uniform(keys, shape, "cpu"), crng.uniform(keys.cuda(), shape, "cuda")
        assert gpu.device.type == "cuda"
        assert torch.equal(cpu.view(torch.int32), gpu.cpu().view(torch.int32))
    for n in [1, 2, 17, 1000, 224 * 224]:
        assert torch.equal(crng.permutation(keys, n, "cpu"), crng.permutation(keys, n, "cuda").cpu())
    torch.testing.assert_close(crng.normal(keys, (3, 100), "cpu"), crng.normal(keys, (3, 100), "cuda").cpu(),
                               rtol=1e-5, atol=1e-5)
    idx = torch.arange(len(keys))
    assert torch.equal(crng.fold(keys, idx), crng.fold(keys.cuda(), idx.cuda()).cpu())


# ----------------------------------------------------------------------------------------- statistics
def test_uniform_moments():
    u = crng.uniform(keys_of(0, "stats", ["a", "b", "c", "d"]), (250_000,), "cpu").double().flatten()
    n = u.numel()
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(u.var().item() - 1 / 12) < 5 * math.sqrt((1 / 80 - 1 / 144) / n)
    across = crng.uniform(torch.arange(100_000), (1,), "cpu").double().flatten()  # consecutive keys
    assert abs(across.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / across.numel())


def test_normal_moments():
    z = crng.normal(keys_of(0, "stats", ["a", "b"]), (500_000,), "cpu").double().flatten()
    n = z.numel()
    assert torch.isfinite(z).all()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.std().item() - 1) < 5 / math.sqrt(2 * n)


def test_every_row_is_a_permutation():
    p = crng.permutation(keys_of(1, "perm", [str(i) for i in range(20)]), 777, "cpu")
    assert torch.equal(p.sort(dim=1).values, torch.arange(777).expand(20, -1))


def test_all_orders_of_four_equally_likely():
    n_keys = 24_000
    p = crng.permutation(keys_of(2, "perm", [str(i) for i in range(n_keys)]), 4, "cpu").numpy()
    codes = p @ np.array([64, 16, 4, 1])
    values, counts = np.unique(codes, return_counts=True)
    assert len(values) == 24
    sd = math.sqrt(n_keys * (1 / 24) * (23 / 24))
    assert np.all(np.abs(counts - n_keys / 24) < 5 * sd)


def corr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([x.double().flatten(), y.double().flatten()]))[0, 1])


def test_streams_and_keys_uncorrelated():
    n = 100_000
    a, b = keys_of(0, "noise", ["img0", "img1"]).tolist()
    (s,) = keys_of(0, "other", ["img0"]).tolist()
    u = crng.uniform(tkeys([a, b, s, a ^ 1]), (n + 1,), "cpu")
    assert abs(corr(u[0, :n], u[1, :n])) < 0.01  # different images
    assert abs(corr(u[0, :n], u[2, :n])) < 0.01  # different streams
    assert abs(corr(u[0, :n], u[3, :n])) < 0.01  # keys one bit apart
    assert abs(corr(u[0, :n], u[0, 1:])) < 0.01  # neighbouring counters / lanes
    z = crng.normal(tkeys([a]), (n,), "cpu")
    assert abs(corr(u[0, :n], z[0])) < 0.01  # uniform and normal domains of the same key
    consecutive = crng.uniform(torch.arange(2 * n), (1,), "cpu").flatten()
    assert abs(corr(consecutive[0::2], consecutive[1::2])) < 0.01  # keys k, k + 1


def test_several_streams_in_one_call_are_each_streams_own_draws():
    from bench.engine.seeding import randperm_per_image

    ids = ["a", "b", "c"]
    both = randperm_per_image(4, ("tiebreak", "random_order"), ids, 37)
    assert both.shape == (2, 3, 37)
    assert torch.equal(both[0], randperm_per_image(4, "tiebreak", ids, 37))
    assert torch.equal(both[1], randperm_per_image(4, "random_order", ids, 37))
