"""Counter-based per-image random draws made directly on the device, bit-identical on CPU and CUDA.

Construction: Philox-4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
SC'11), with the multipliers and Weyl key increments of that paper / the Random123 library, written in plain
int64 tensor operations.  Every 32-bit word is held in an int64 tensor in [0, 2^32); the 32x32->64 products
are exact — one unsigned 64-bit multiply where the device's torch has it, else split into 16-bit halves so no
intermediate exceeds 2^50 (never a signed overflow) — hence the bits are the same on every device.

A draw is a pure function of (key, domain, flat index): the 64-bit key of one image (``bench.seeding.keys_of``)
is the Philox key (low word, high word), and the counter is (index_lo, index_hi, domain, 0), where domain
separates ``uniform`` (0), ``permutation`` (1), ``normal`` (2) and sub-stream keys (3, ``fold``).  Rows
therefore never depend on the batch, the row position, the chunking or the device.
"""

from __future__ import annotations

import math

import torch

_MASK = 0xFFFFFFFF
# Philox-4x32 round multipliers and key-schedule (Weyl) increments, Salmon et al. 2011 (Random123 constants).
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_ROUNDS = 10
# Counters (x batch rows) evaluated at once: bounds temporary memory (~10 int64 temporaries of this size), keeps
# every op vectorised and, on the CPU, far above torch's parallel grain size (32,768 elements) so that each op
# uses all threads (measured on 2 cores: 2^13 → 26 ns/value, 2^16 → 14, 2^19 → 12).  Results do not depend on it.
_CHUNK = {"cpu": 1 << 19}
_CHUNK_DEVICE = 1 << 22
_UNIFORM, _PERMUTATION, _NORMAL, _FOLD = 0, 1, 2, 3


# Per device type: whether its torch has an unsigned 64-bit multiply (tried once; both ways give the same bits).
_UINT64_MUL: dict[str, bool] = {}


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of a * m for a in [0, 2^32) and a constant m < 2^32, exactly: as one unsigned
    64-bit product (a·m < 2^64, no wrap-around) where the device has that multiply, else in 16-bit halves."""
    kind = a.device.type
    if _UINT64_MUL.get(kind, True):
        try:
            p = (a.view(torch.uint64) * m).view(torch.int64)  # the product's 64-bit pattern
            _UINT64_MUL[kind] = True
            return (p >> 32) & _MASK, p & _MASK
        except (RuntimeError, NotImplementedError, TypeError):
            _UINT64_MUL[kind] = False
    return _mulhilo_halves(a, m)


def _mulhilo_halves(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``_mulhilo`` in int64 without overflow: a * m split by the 16-bit halves of m."""
    lo = a * (m & 0xFFFF)  # < 2^48
    hi = a * (m >> 16)  # < 2^48
    t = lo + ((hi & 0xFFFF) << 16)  # a*m = (hi >> 16) * 2^32 + t, t < 2^49
    return (hi >> 16) + (t >> 32), t & _MASK


def _philox(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 bijection of the counter (c0..c3) under the key (k0, k1); all int64 words in [0, 2^32)."""
    for r in range(_ROUNDS):
        if r:
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        h0, l0 = _mulhilo(c0, _M0)
        h1, l1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = h1 ^ c1 ^ k0, l1, h0 ^ c3 ^ k1, l0
    return c0, c1, c2, c3


def _chunks(keys: torch.Tensor, n_ctr: int, domain: int, device):
    """(first counter, its four output words) per chunk of counters 0..n_ctr-1 in ``domain``: int64 (B, n)
    each, one row per key. Chunks bound the temporaries; the values do not depend on them."""
    keys = keys.to(device=device, dtype=torch.int64).reshape(-1, 1)
    k0, k1 = keys & _MASK, (keys >> 32) & _MASK  # the key's 64-bit pattern (also for negative keys)
    step = max(1, _CHUNK.get(torch.device(device).type, _CHUNK_DEVICE) // max(1, keys.shape[0]))
    for start in range(0, n_ctr, step):
        ctr = torch.arange(start, min(start + step, n_ctr), dtype=torch.int64, device=device).reshape(1, -1)
        yield start, _philox(ctr & _MASK, ctr >> 32, torch.full_like(ctr, domain), torch.zeros_like(ctr), k0, k1)


def _fill(keys: torch.Tensor, total: int, domain: int, device, dtype, convert) -> torch.Tensor:
    """(B, total): element i of row b is value i % 4 of ``convert(words)`` for counter i // 4, written chunk by
    chunk into the output (so the memory is the output's, not that of int64 words)."""
    n_ctr = -(-total // 4)
    out = torch.empty((keys.shape[0], 4 * n_ctr), dtype=dtype, device=device)
    for start, words in _chunks(keys, n_ctr, domain, device):
        n = words[0].shape[1]
        out[:, 4 * start:4 * (start + n)] = convert(*words).reshape(keys.shape[0], 4 * n)
    return out[:, :total]


def fold(keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 (N,) sub-keys: words 0 and 1 of counter (index, 0, domain 3, 0) under ``keys`` (N,), as one 64-bit
    pattern — the key of the ``index``-th sub-stream of each key (e.g. SmoothGrad's s-th sample of an image)."""
    keys, index = keys.to(torch.int64).reshape(-1), index.to(device=keys.device, dtype=torch.int64).reshape(-1)
    c0, c1, _, _ = _philox(index & _MASK, (index >> 32) & _MASK, torch.full_like(index, _FOLD),
                           torch.zeros_like(index), keys & _MASK, (keys >> 32) & _MASK)
    return (c1 << 32) | c0  # wraps to a negative int64 when the top bit is set: same 64-bit pattern


def uniform(keys: torch.Tensor, shape: tuple[int, ...], device) -> torch.Tensor:
    """float32 (B, *shape) in [0, 1): element (b, i) = top 24 bits of word i of key b, times 2^-24 (exact); word
    i is lane i % 4 of counter i // 4."""
    def convert(*words):
        return (torch.stack(words, -1) >> 8).to(torch.float32) * 2.0**-24

    return _fill(keys, math.prod(shape), _UNIFORM, device, torch.float32, convert).reshape(keys.shape[0], *shape)


def normal(keys: torch.Tensor, shape: tuple[int, ...], device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, *shape) standard normal (computed in float64, returned as ``dtype``) by Box-Muller: pair p uses words
    2p (radius, u = (w + 1) 2^-32 in (0, 1], so no log 0) and 2p + 1 (angle); elements 2p and 2p + 1 are its
    cosine and sine outputs."""
    def convert(w0, w1, w2, w3):
        w = torch.stack((w0, w2), -1).to(torch.float64), torch.stack((w1, w3), -1).to(torch.float64)
        r = torch.sqrt(-2.0 * torch.log((w[0] + 1.0) * 2.0**-32))
        theta = (2.0 * math.pi * 2.0**-32) * w[1]
        return torch.stack((r * torch.cos(theta), r * torch.sin(theta)), -1).to(dtype)  # (B, n, 2, 2)

    return _fill(keys, math.prod(shape), _NORMAL, device, dtype, convert).reshape(keys.shape[0], *shape)


def permutation(keys: torch.Tensor, n: int, device) -> torch.Tensor:
    """int64 (B, n) uniform random permutations: argsort of the sort keys ``(r >> k << k) | j`` for j < n, where
    r is the 63-bit value of words 0 and 1 of counter j and k = bit length of n - 1; the keys are distinct and
    non-negative, so any (integer) sort orders them identically on every device."""
    k = max(1, (n - 1).bit_length())
    r = torch.empty((keys.shape[0], n), dtype=torch.int64, device=device)
    for start, (w0, w1, _, _) in _chunks(keys, n, _PERMUTATION, device):
        r[:, start:start + w0.shape[1]] = ((w0 & 0x7FFFFFFF) << 32) | w1
    j = torch.arange(n, dtype=torch.int64, device=device)
    return torch.argsort(((r >> k) << k) | j, dim=1)
