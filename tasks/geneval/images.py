"""Reading generated images for scoring, with errors that name the file."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vapi_bench.errors import DataError


def load_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (EXIF orientation applied, as GenEval does)."""
    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"image {path} is missing; re-run the sample stage.") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"image {path} is corrupt or unreadable ({exc}); delete it and re-run the sample stage.") from None


def stack_pixels(arrays: Sequence[np.ndarray], where: str) -> torch.Tensor:
    """HxWx3 uint8 arrays as one uint8 [B, 3, H, W] batch (what text-image scorers read)."""
    sizes = {array.shape for array in arrays}
    if len(sizes) != 1:
        raise DataError(f"{where}: images in one batch differ in size ({sorted(sizes)}); score one size at a time.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
