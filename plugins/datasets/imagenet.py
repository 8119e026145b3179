"""ImageNet for fine-tuning (docs/reference/vapi.md §3): a torchvision ImageFolder tree
(`root/[split/]<wnid>/*.JPEG`, classes sorted) or a Hugging Face `save_to_disk` copy
(`load_from_disk`, a DatasetDict with a `split` split and `image` + `label`/`labels` columns),
the official `--data-loader builtin` and `hf` respectively. ADM centre crop, no flip, [-1, 1]."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from vapi_bench.errors import DataError, UsageError
from vapi_bench.params import Param

from .base import ON_CORRUPT, ImageConditionDataset
from .transforms import CROPS

IMAGENET_PARAMS = (
    Param("root", str, "", "ImageFolder directory (class sub-folders, or a `split` sub-folder of them) or a "
          "Hugging Face dataset saved with save_to_disk"),
    Param("image_size", int, 256, "pixels per side after cropping (the runner sets the generator's)"),
    Param("split", str, "train", "split sub-folder (ImageFolder) or DatasetDict key (Hugging Face)"),
    Param("format", str, "auto", "how to read root", choices=("auto", "imagefolder", "hf")),
    Param("crop", str, "adm", "'adm': ADM center_crop_arr (LlamaGen); 'resize-crop': Resize + CenterCrop",
          choices=CROPS),
    Param("on_corrupt", str, "skip", "a corrupt image is skipped with a warning, or fails", choices=ON_CORRUPT),
)


def build_imagenet(root: str, image_size: int, split: str, format: str, crop: str, on_corrupt: str) -> ImageConditionDataset:
    if not root:
        raise UsageError("Dataset 'imagenet' needs its location: --set dataset.root=/path/to/imagenet "
                         "(an ImageFolder tree or a Hugging Face save_to_disk directory).")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"ImageNet root {path} does not exist.")
    is_hf = (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()
    if format == "hf" or (format == "auto" and is_hf):
        return HFImageDataset(path, split, image_size, crop, on_corrupt)
    return ImageFolderDataset(path, split, image_size, crop, on_corrupt)


class ImageFolderDataset(ImageConditionDataset):
    """torchvision ImageFolder semantics (sorted class folders → indices), our own decoding."""

    def __init__(self, root: Path, split: str, image_size: int, crop: str, on_corrupt: str) -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        super().__init__(image_size, crop, on_corrupt)
        directory = root / split if (root / split).is_dir() else root
        try:
            classes, class_to_idx = find_classes(str(directory))
            self.samples = make_dataset(str(directory), class_to_idx, extensions=IMG_EXTENSIONS)
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"Cannot read an ImageFolder tree at {directory}: {exc}") from None
        self.classes = classes

    def __len__(self) -> int:
        return len(self.samples)

    def open_image(self, index: int) -> Image.Image:
        with Image.open(self.samples[index][0]) as image:
            image.load()
            return image.copy()

    def condition(self, index: int) -> int:
        return self.samples[index][1]

    def describe(self, index: int) -> str:
        return self.samples[index][0]


class HFImageDataset(ImageConditionDataset):
    """A `datasets.load_from_disk` copy with `image` and `label` (or `labels`) columns."""

    def __init__(self, root: Path, split: str, image_size: int, crop: str, on_corrupt: str) -> None:
        super().__init__(image_size, crop, on_corrupt)
        try:
            import datasets
        except ImportError:
            raise UsageError("Reading a Hugging Face dataset needs the `datasets` package: pip install datasets") from None
        loaded: Any = datasets.load_from_disk(str(root))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{root} has splits {sorted(loaded)}, not '{split}'.")
            loaded = loaded[split]
        columns = set(loaded.column_names)
        label_key = next((k for k in ("label", "labels") if k in columns), None)
        if "image" not in columns or label_key is None:
            raise DataError(f"{root} needs 'image' and 'label' (or 'labels') columns; it has {sorted(columns)}.")
        # keep the encoded bytes: decoding happens in open_image(), where a corrupt image is named
        self.table = loaded.cast_column("image", datasets.Image(decode=False))
        self.label_key, self.root, self.split = label_key, root, split

    def __len__(self) -> int:
        return len(self.table)

    def open_image(self, index: int) -> Image.Image:
        import io

        record = self.table[index]["image"]
        source = record.get("path") if record.get("bytes") is None else io.BytesIO(record["bytes"])
        with Image.open(source) as image:
            image.load()
            return image.copy()

    def condition(self, index: int) -> int:
        return int(self.table[index][self.label_key])

    def describe(self, index: int) -> str:
        path = self.table[index]["image"].get("path")
        return f"row {index} of {self.root} [{self.split}]" + (f" ({path})" if path else "")
