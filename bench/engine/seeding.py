"""Per-image random streams, made on the device, the same bits on every device (DEFINITIONS §4).

Every random quantity of the protocol (tie-breaking permutation, random-baseline order, replacement
draws, random heatmaps, noise of SmoothGrad / integrated gradients / continuity) is a pure function of
``(seed, stream, image id, element index)``: the image's key ``derive_seed(seed, stream, id)`` is hashed
once on the host, and the draws are made by a counter-based generator (Philox-4x32-10, bench/engine/counter_rng.py)
in plain tensor operations on the device that uses them. So the same image gets the same draws whichever
batch, shard or device (CPU or GPU) it lands on, and all methods evaluated with the same seed see the same
replacement values (paired comparison).
"""

from __future__ import annotations

import hashlib

import torch

from . import counter_rng


def derive_seed(seed: int, stream: str, key: str) -> int:
    """A 63-bit seed from (seed, stream, key), stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{int(seed)}\x1f{stream}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keys_of(seed: int, stream: str, keys: list[str]) -> torch.Tensor:
    """int64 (B,) per-image generator keys ``derive_seed(seed, stream, key)``."""
    return torch.tensor([derive_seed(seed, stream, str(k)) for k in keys], dtype=torch.int64)


def rand_per_image(seed: int, stream: str, keys: list[str], shape: tuple[int, ...], device="cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``len(keys) × shape`` uniform [0, 1) draws on ``device``; row i depends only on (seed, stream, keys[i])."""
    return counter_rng.uniform(keys_of(seed, stream, keys), tuple(shape), device).to(dtype)


def randn_per_image(seed: int, stream: str, keys: list[str], shape: tuple[int, ...], device="cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``len(keys) × shape`` standard normal draws on ``device``; row i depends only on (seed, stream, keys[i])."""
    return counter_rng.normal(keys_of(seed, stream, keys), tuple(shape), device, dtype)


def randperm_per_image(seed: int, stream: str | tuple[str, ...], keys: list[str], n: int,
                       device="cpu") -> torch.Tensor:
    """``len(keys) × n`` random permutations on ``device``; row i depends only on (seed, stream, keys[i]).
    Several streams at once (one generator call): ``len(streams) × len(keys) × n``."""
    if isinstance(stream, str):
        return counter_rng.permutation(keys_of(seed, stream, keys), n, device)
    all_keys = torch.cat([keys_of(seed, s, keys) for s in stream])
    return counter_rng.permutation(all_keys, n, device).view(len(stream), len(keys), n)


def randperm_ragged(seed: int, stream: str, keys: list[str], counts: list[int], n: int, device="cpu") -> torch.Tensor:
    """``len(keys) × n``: row i is a random permutation of 0 … counts[i]−1 (``randperm_per_image`` of that size,
    so it depends only on (seed, stream, keys[i], counts[i])), followed by counts[i] … n−1 in order: per-image
    superpixels, padded to the batch's largest count."""
    out = torch.arange(n, device=device).repeat(len(keys), 1)
    for count in sorted(set(counts)):
        rows = [i for i, c in enumerate(counts) if c == count]
        perm = randperm_per_image(seed, stream, [keys[i] for i in rows], count, device)
        out[torch.tensor(rows, device=device), :count] = perm
    return out
