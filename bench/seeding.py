"""Per-image random streams, independent of batch size, batch order and sharding.

Every random quantity of the protocol (tie-breaking permutation, random-baseline order, replacement
draws, random heatmaps) is drawn from a generator seeded by ``(seed, stream, image_id)`` only, so the
same image gets the same draws whichever batch or shard it lands in, and all methods evaluated with
the same seed see the same replacement values (paired comparison, SPEC §4).
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, stream: str, key: str) -> int:
    """A 63-bit seed from (seed, stream, key), stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{int(seed)}\x1f{stream}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(seed: int, stream: str, key: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for one image and one stream (draws are moved to the device after)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, stream, key))
    return g


def rand_per_image(seed: int, stream: str, keys: list[str], shape: tuple[int, ...]) -> torch.Tensor:
    """``len(keys) × shape`` uniform [0, 1) draws; row i depends only on (seed, stream, keys[i])."""
    return torch.stack([torch.rand(shape, generator=generator(seed, stream, k)) for k in keys])


def randperm_per_image(seed: int, stream: str, keys: list[str], n: int) -> torch.Tensor:
    """``len(keys) × n`` random permutations; row i depends only on (seed, stream, keys[i])."""
    return torch.stack([torch.randperm(n, generator=generator(seed, stream, k)) for k in keys])
