"""Improved precision and recall (Kynkäänniemi et al. 2019) as the ADM evaluator computes them.

ADM's `ManifoldEstimator` (guided-diffusion/evaluations/evaluator.py), reproduced here in torch:
- distances are *squared* Euclidean, ||u||^2 - 2 u.v + ||v||^2 clamped at 0, computed in float16
  block by block; a block with any non-finite value is recomputed in float32 (ADM's `tf.cond`).
  We emulate float16 rather than run it: inputs and every intermediate (squares, norms, the matrix
  product, the sums) are rounded to float16, while sums and the matrix product accumulate in
  float32, as a GPU half-precision GEMM does. This gives the same numbers on CPU and CUDA, and keeps
  CPU speed (torch's CPU float16 GEMM is about 200x slower than float32);
- a point's radius is its (k+1)-th smallest distance to its own set, self included (= k-th NN);
- precision = fraction of fake points inside at least one real ball (`<=`), recall = fraction of
  real points inside at least one fake ball.
Blocks keep memory at `batch_size` x N distances, so 50k x 10k sets fit on one GPU or in RAM.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

DistanceDtype = Literal["float16", "float32", "float64"]


def _squared_distances(u: torch.Tensor, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    u, v = u.to(dtype), v.to(dtype)
    norm_u = (u * u).sum(dim=1, keepdim=True)
    norm_v = (v * v).sum(dim=1).unsqueeze(0)
    return (norm_u - 2 * (u @ v.T) + norm_v).clamp_min(0)


def _round16(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values to the nearest float16 (overflow becomes inf), kept as float32."""
    return x.half().float()


def _squared_distances_fp16(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ADM's float16 distance block, emulated in float32 arithmetic (see module docstring)."""
    u, v = _round16(u.float()), _round16(v.float())
    norm_u = _round16(_round16(u * u).sum(dim=1, keepdim=True))
    norm_v = _round16(_round16(v * v).sum(dim=1)).unsqueeze(0)
    cross = _round16(2 * _round16(u @ v.T))
    return _round16(_round16(norm_u - cross) + norm_v).clamp_min(0)


def _block_distances(u: torch.Tensor, v: torch.Tensor, distance_dtype: DistanceDtype) -> torch.Tensor:
    """Squared distances [len(u), len(v)] in float32 (float64 if asked), with ADM's fp16 fallback."""
    if distance_dtype == "float64":
        return _squared_distances(u, v, torch.float64)
    if distance_dtype == "float16":
        half = _squared_distances_fp16(u, v)
        if torch.isfinite(half).all():
            return half
    return _squared_distances(u, v, torch.float32)


def manifold_radii(
    features: torch.Tensor, k: int, distance_dtype: DistanceDtype = "float16", batch_size: int = 2048
) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest neighbour in its own set (self excluded)."""
    if len(features) < k + 1:
        raise ValueError(f"precision/recall with k={k} needs at least {k + 1} points per set, got {len(features)}.")
    radii = [
        _block_distances(block, features, distance_dtype).kthvalue(k + 1, dim=1).values
        for block in features.split(batch_size)
    ]
    return torch.cat(radii)


def precision_recall(
    real: np.ndarray,
    fake: np.ndarray,
    k: int = 3,
    *,
    distance_dtype: DistanceDtype = "float16",
    batch_size: int = 2048,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """(precision, recall) of fake [M, D] against real [N, D] with k-NN manifolds (ADM: k=3)."""
    real_np, fake_np = np.asarray(real), np.asarray(fake)
    if real_np.ndim != 2 or fake_np.ndim != 2 or real_np.shape[1] != fake_np.shape[1]:
        raise ValueError(
            f"precision_recall expects [N, D] and [M, D] features, got {real_np.shape} and {fake_np.shape}."
        )
    if distance_dtype not in ("float16", "float32", "float64"):
        raise ValueError(
            f"precision_recall: distance_dtype must be float16, float32 or float64, got {distance_dtype!r}."
        )
    store = torch.float64 if distance_dtype == "float64" else torch.float32
    real_t = torch.as_tensor(real_np, dtype=store, device=device)
    fake_t = torch.as_tensor(fake_np, dtype=store, device=device)
    real_radii = manifold_radii(real_t, k, distance_dtype, batch_size)
    fake_radii = manifold_radii(fake_t, k, distance_dtype, batch_size)

    fake_inside = torch.zeros(len(fake_t), dtype=torch.bool, device=fake_t.device)
    real_inside = torch.zeros(len(real_t), dtype=torch.bool, device=real_t.device)
    for start in range(0, len(fake_t), batch_size):
        block = fake_t[start : start + batch_size]
        dist = _block_distances(block, real_t, distance_dtype)  # [b, N]
        fake_inside[start : start + len(block)] = (dist <= real_radii.unsqueeze(0)).any(dim=1)
        real_inside |= (dist <= fake_radii[start : start + len(block)].unsqueeze(1)).any(dim=0)
    return float(fake_inside.double().mean()), float(real_inside.double().mean())
