"""Pixel conversions and PNG I/O shared by sampling and scoring.

The float -> uint8 conversion is LlamaGen's (and VA-π's) sampling pipeline: optional bicubic
F.interpolate (no antialias) to the evaluation size, then clamp(127.5 x + 128, 0, 255) truncated
to uint8. Recording this exact rule is what makes FIDs comparable with the published ones.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DataError
from .store import atomic_write

CONVERSION = "bicubic-no-antialias+clamp(127.5x+128).uint8"


def to_uint8(images: torch.Tensor, size: int | None = None) -> np.ndarray:
    """[B,3,H,W] floats in [-1,1] -> [B,H,W,3] uint8, resized (bicubic) to `size` if given."""
    images = images.detach().float()
    if size is not None and images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
    pixels = torch.clamp(127.5 * images + 128.0, 0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def save_png(path: Path | str, pixels: np.ndarray) -> Path:
    """Write one HxWx3 uint8 image atomically."""
    return atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def load_png(path: Path | str) -> np.ndarray:
    """Read an image as HxWx3 uint8; a missing or corrupt file raises DataError naming it."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read image {path}: {exc}") from None


def image_grid(pixels: list[np.ndarray], columns: int = 8) -> np.ndarray:
    """Tile HxWx3 uint8 images into one grid (row-major), padding the last row with black."""
    if not pixels:
        raise ValueError("image_grid needs at least one image")
    h, w, _ = pixels[0].shape
    rows = (len(pixels) + columns - 1) // columns
    cols = min(columns, len(pixels))
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, img in enumerate(pixels):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return grid
