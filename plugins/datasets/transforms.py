"""Image preprocessing of the official training pipelines, PIL in, [-1, 1] tensor out."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

CROPS = ("adm", "resize-crop")


def adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM's `center_crop_arr` (LlamaGen / VA-π C2I): BOX-halve while the short side is ≥ 2·size,
    BICUBIC-resize the short side to `size`, centre-crop size×size."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.array(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return Image.fromarray(arr[top : top + size, left : left + size])


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision Resize(size, BICUBIC) + CenterCrop(size), as VA-π's Janus data pipeline."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    return CenterCrop(size)(Resize(size, interpolation=InterpolationMode.BICUBIC)(image))


def to_model_tensor(image: Image.Image, size: int, crop: str) -> torch.Tensor:
    """RGB, crop to size×size, then ToTensor + Normalize(0.5, 0.5): [3, size, size] in [-1, 1]."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    image = image.convert("RGB")
    image = adm_center_crop(image, size) if crop == "adm" else resize_center_crop(image, size)
    arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return arr / 127.5 - 1.0
