"""Training datasets: ADM crop parity, ImageFolder / Hugging Face / JSONL readers, corrupt images."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import vapi_bench
from vapi_bench.errors import DataError, UsageError
from vapi_bench.plugins.datasets.base import CorruptImageWarning
from vapi_bench.plugins.datasets.transforms import to_model_tensor


def _official_center_crop_arr(pil_image, image_size):
    """ADM / LlamaGen `center_crop_arr`, verbatim logic."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return Image.fromarray(arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size])


def _random_image(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _write(path, w=40, h=30, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    _random_image(w, h, seed).save(path)
    return path


def test_adm_crop_matches_official_and_normalises_to_pm1():
    image = _random_image(100, 70, 1)  # short side 70 >= 2*16: BOX halving happens twice
    got = to_model_tensor(image, 16, "adm")
    ref = np.asarray(_official_center_crop_arr(image, 16), dtype=np.float32)
    expected = torch.from_numpy(ref).permute(2, 0, 1) / 255.0
    expected = (expected - 0.5) / 0.5  # ToTensor + Normalize(0.5, 0.5)
    torch.testing.assert_close(got, expected)
    assert got.shape == (3, 16, 16) and got.min() >= -1 and got.max() <= 1


def test_resize_crop_shape():
    assert to_model_tensor(_random_image(50, 20, 2), 16, "resize-crop").shape == (3, 16, 16)


def test_imagefolder_tree_sorted_classes_and_split_subfolder(tmp_path):
    for cls, n in (("n02", 2), ("n01", 1)):
        for i in range(n):
            _write(tmp_path / "train" / cls / f"{i}.JPEG", seed=i)
    ds = vapi_bench.load_dataset("imagenet", root=str(tmp_path), image_size=16)
    assert len(ds) == 3
    labels = sorted(ds[i][1] for i in range(3))
    assert labels == [0, 1, 1]  # n01 -> 0, n02 -> 1 (ImageFolder order)
    assert ds[0][0].shape == (3, 16, 16)


def test_corrupt_image_is_skipped_with_warning_or_fails(tmp_path):
    _write(tmp_path / "a" / "0.png")
    bad = tmp_path / "a" / "1.png"
    bad.write_bytes(b"not a png at all")
    _write(tmp_path / "b" / "2.png", seed=3)
    ds = vapi_bench.load_dataset("imagenet", root=str(tmp_path), image_size=16)
    bad_index = [str(p) for p, _ in ds.samples].index(str(bad))
    with pytest.warns(CorruptImageWarning, match="1.png"):
        image, label = ds[bad_index]
    torch.testing.assert_close(image, ds[bad_index + 1][0])  # the next readable item replaces it
    strict = vapi_bench.load_dataset("imagenet", root=str(tmp_path), image_size=16, on_corrupt="fail")
    with pytest.raises(DataError, match="1.png"):
        strict[bad_index]


def test_hf_load_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [_random_image(24, 20, i) for i in range(3)]
    table = datasets.Dataset.from_dict({"image": images, "label": [5, 6, 7]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.Value("int64")}))
    datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "hf"))
    ds = vapi_bench.load_dataset("imagenet", root=str(tmp_path / "hf"), image_size=16)
    image, label = ds[1]
    assert label == 6
    torch.testing.assert_close(image, to_model_tensor(images[1], 16, "adm"))
    with pytest.raises(DataError, match="splits"):
        vapi_bench.load_dataset("imagenet", root=str(tmp_path / "hf"), split="validation")


def test_captions_jsonl(tmp_path):
    _write(tmp_path / "img" / "x.png")
    (tmp_path / "caps.jsonl").write_text(
        json.dumps({"image": "img/x.png", "caption": "a red circle"}) + "\n\n"
        + json.dumps({"image": str(tmp_path / "img" / "x.png"), "caption": "again"}) + "\n")
    ds = vapi_bench.load_dataset("captions-jsonl", path=str(tmp_path / "caps.jsonl"), image_size=16)
    assert len(ds) == 2 and ds[0][1] == "a red circle" and ds[1][0].shape == (3, 16, 16)
    (tmp_path / "broken.jsonl").write_text(json.dumps({"img": "x.png", "caption": "c"}) + "\n")
    with pytest.raises(DataError, match="line 1"):
        vapi_bench.load_dataset("captions-jsonl", path=str(tmp_path / "broken.jsonl"))


def test_missing_locations_say_what_to_set(tmp_path):
    with pytest.raises(UsageError, match="dataset.root"):
        vapi_bench.load_dataset("imagenet")
    with pytest.raises(DataError, match="does not exist"):
        vapi_bench.load_dataset("imagenet", root=str(tmp_path / "nowhere"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UsageError, match="dataset.path"):
            vapi_bench.load_dataset("captions-jsonl")
