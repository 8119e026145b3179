"""Caption sets for text-to-image fine-tuning: a JSONL file, one {"image": path, "caption": text}
per line (paths relative to the file's directory unless absolute)."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from vapi_bench.errors import DataError, UsageError, decode_utf8
from vapi_bench.params import Param

from .base import ON_CORRUPT, ImageConditionDataset
from .transforms import CROPS

CAPTIONS_PARAMS = (
    Param("path", str, "", "JSONL file of {image, caption} records"),
    Param("image_size", int, 256, "pixels per side after cropping (the runner sets the generator's)"),
    Param("image_key", str, "image", "record key of the image path"),
    Param("caption_key", str, "caption", "record key of the caption"),
    Param("crop", str, "adm", "'adm': ADM center_crop_arr; 'resize-crop': Resize + CenterCrop (VA-π's Janus data)",
          choices=CROPS),
    Param("on_corrupt", str, "skip", "a corrupt image is skipped with a warning, or fails", choices=ON_CORRUPT),
)


class CaptionsJsonl(ImageConditionDataset):
    def __init__(self, path: str, image_size: int, image_key: str, caption_key: str, crop: str,
                 on_corrupt: str) -> None:
        super().__init__(image_size, crop, on_corrupt)
        if not path:
            raise UsageError("Dataset 'captions-jsonl' needs its file: --set dataset.path=/path/to/captions.jsonl")
        file = Path(path).expanduser()
        if not file.is_file():
            raise DataError(f"Caption file {file} does not exist.")
        self.items: list[tuple[Path, str]] = []
        for number, line in enumerate(decode_utf8(file.read_bytes(), file).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                image, caption = record[image_key], record[caption_key]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"{file} line {number}: expected a JSON object with '{image_key}' and "
                                f"'{caption_key}' ({type(exc).__name__}: {exc}).") from None
            if not isinstance(caption, str):
                raise DataError(f"{file} line {number}: '{caption_key}' must be a string.")
            image_path = Path(image).expanduser()
            self.items.append((image_path if image_path.is_absolute() else file.parent / image_path, caption))
        if not self.items:
            raise DataError(f"Caption file {file} has no records.")

    def __len__(self) -> int:
        return len(self.items)

    def open_image(self, index: int) -> Image.Image:
        with Image.open(self.items[index][0]) as image:
            image.load()
            return image.copy()

    def condition(self, index: int) -> str:
        return self.items[index][1]

    def describe(self, index: int) -> str:
        return str(self.items[index][0])
