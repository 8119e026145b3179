"""LlamaGen's 2D rotary position embedding (gpt.py `precompute_freqs_cis_2d`, `apply_rotary_emb`).

Layout facts that checkpoint compatibility depends on:
- each head of size D is rotated as D/2 complex pairs `(x[2i], x[2i+1])` (interleaved, Meta-LLaMA
  style, not HF's rotate_half);
- the first D/4 pairs rotate by the token's row index, the last D/4 by its column index, each
  with frequencies `1 / base ** (arange(0, D/2, 2) / (D/2))`; image tokens are in raster order;
- the `cls_token_num` condition positions get all-zero rows (cos = sin = 0), so their queries and
  keys are multiplied by zero. This is what the released weights were trained with.
"""
from __future__ import annotations

import torch


def rope_table_2d(grid_size: int, head_dim: int, base: float, cls_token_num: int) -> torch.Tensor:
    """Table [cls_token_num + grid_size**2, head_dim // 2, 2] of (cos, sin), fp32, on the CPU."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}.")
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2, device="cpu")[: half // 2].float() / half))
    positions = torch.arange(grid_size, device="cpu").float()
    angles = torch.outer(positions, freqs)  # [g, D/4]
    grid = torch.cat(
        [angles[:, None, :].expand(-1, grid_size, -1), angles[None, :, :].expand(grid_size, -1, -1)],
        dim=-1,
    )  # [g(row), g(col), D/2]
    table = torch.stack([torch.cos(grid), torch.sin(grid)], dim=-1).flatten(0, 1)
    return torch.cat([torch.zeros(cls_token_num, half, 2, device="cpu"), table])


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, S, H, D] by table [S, D/2, 2] (rows for x's positions); math in fp32."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    rot = table.view(1, pairs.shape[1], 1, pairs.shape[3], 2)
    out = torch.stack(
        [
            pairs[..., 0] * rot[..., 0] - pairs[..., 1] * rot[..., 1],
            pairs[..., 1] * rot[..., 0] + pairs[..., 0] * rot[..., 1],
        ],
        dim=-1,
    )
    return out.flatten(3).type_as(x)
