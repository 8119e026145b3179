"""Reading generated images for scoring, with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
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
