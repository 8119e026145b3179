"""Index-seeded randomness: sample i's seed derives from (global seed, i), never from the rank."""
from __future__ import annotations

import hashlib

import torch


def derive_seed(global_seed: int, index: int, stream: str = "sample") -> int:
    """A 63-bit seed from (global_seed, index, stream), stable across processes and platforms."""
    digest = hashlib.sha256(f"{stream}:{global_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator seeded with `seed` on `device` (CPU generators for CPU tensors)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
