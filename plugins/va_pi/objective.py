"""VA-π's own piece of the objective: the context-corruption kernel K_ξ (docs/reference/vapi.md §1.2).

The rest of the objective (group sampling, advantages, PPO-clip, k3 KL, cross-entropy) is shared
with the other methods: vapi_bench.training.losses.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch

NoiseKernel = Literal["paper", "official"]


def corrupt_context(
    tokens: torch.Tensor,
    xi: float,
    vocab_size: int,
    kernel: NoiseKernel,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """K_ξ(· | x*): replace each token with probability ξ by a uniform random token.

    'paper' (Eq. 28-29) draws the replacement from the vocabulary *without* the true token;
    'official' (`perturb_teacher_forcing_inputs`) draws from the whole vocabulary, so it may
    redraw the true token. Row b uses generators[b] (per-image randomness, rank independent).
    """
    if kernel not in ("paper", "official"):
        raise ValueError(f"noise kernel must be 'paper' or 'official', got {kernel!r}")
    out = tokens.clone()
    for b, gen in enumerate(generators):
        row = tokens[b]
        replace = torch.rand(row.shape, generator=gen, device=row.device) < xi
        if kernel == "paper":
            draw = torch.randint(0, vocab_size - 1, row.shape, generator=gen, device=row.device)
            draw = draw + (draw >= row).long()  # skip over the true token
        else:
            draw = torch.randint(0, vocab_size, row.shape, generator=gen, device=row.device)
        out[b] = torch.where(replace, draw, row)
    return out
