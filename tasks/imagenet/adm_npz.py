"""Stream sample sets into and out of the ADM evaluator's .npz format without holding them in RAM.

The ADM evaluator (guided-diffusion/evaluations/evaluator.py) reads `arr_0` = N x H x W x 3 uint8
(NHWC) from an .npz, streaming the .npy member in batches; class-conditional sample scripts also
store the labels as `arr_1`. 50k 256px images are 9.8 GB, so the writer streams `arr_0` into an
uncompressed (ZIP_STORED, zip64) member batch by batch and renames the file into place only when
complete; the reader parses the .npy header and yields row batches, as ADM's `NpzArrayReader` does.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from vapi_bench.errors import DataError


class AdmNpzWriter:
    """Write `count` HxWx3 uint8 images (+ optional labels) to an ADM-format .npz, atomically."""

    def __init__(self, path: Path | str, count: int, labels: np.ndarray | None = None) -> None:
        self.path = Path(path)
        self.count = count
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != count:
            raise ValueError(f"AdmNpzWriter: {len(self.labels)} labels for {count} images.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._member = None
        self._shape: tuple[int, ...] | None = None
        self.written = 0

    def write(self, batch: np.ndarray) -> None:
        """Append images [B, H, W, 3] uint8 (all batches must share H and W)."""
        batch = np.ascontiguousarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise DataError(f"ADM npz export expects uint8 [B, H, W, 3] batches, got {batch.dtype} {batch.shape}.")
        if self._member is None:
            self._shape = batch.shape[1:]
            self._member = self._zip.open("arr_0.npy", "w", force_zip64=True)
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                      "shape": (self.count, *self._shape)}
            np.lib.format.write_array_header_1_0(self._member, header)
        elif batch.shape[1:] != self._shape:
            raise DataError(f"ADM npz export: image size {batch.shape[1:3]} differs from earlier {self._shape[:2]}.")
        if self.written + len(batch) > self.count:
            raise DataError(f"ADM npz export: more than the declared {self.count} images were written.")
        self._member.write(batch.tobytes())
        self.written += len(batch)

    def close(self) -> Path:
        """Finish the file and move it into place; raises if fewer images than declared arrived."""
        if self.written != self.count or self._member is None:
            self.abort()
            raise DataError(f"ADM npz export: {self.written} of {self.count} images were written; file discarded.")
        self._member.close()
        if self.labels is not None:
            with self._zip.open("arr_1.npy", "w") as member:
                np.lib.format.write_array(member, self.labels)
        self._zip.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if self._member is not None:
            self._member.close()
        self._zip.close()
        self._tmp.unlink(missing_ok=True)


def npz_keys(path: Path | str) -> set[str]:
    """Array names stored in an .npz (without loading any)."""
    with zipfile.ZipFile(path) as zf:
        return {name[: -len(".npy")] for name in zf.namelist() if name.endswith(".npy")}


def iter_npz_images(path: Path | str, batch_size: int, key: str = "arr_0") -> Iterator[np.ndarray]:
    """Yield consecutive [<=batch_size, H, W, 3] uint8 batches of `key` from an .npz."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"Cannot open {path} as an .npz file: {exc}") from None
    with zf, zf.open(f"{key}.npy") as member:
        shape, fortran_order, dtype = _read_npy_header(member)
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or fortran_order:
            raise DataError(f"{path}: '{key}' must be a C-order uint8 [N, H, W, 3] array, got {dtype} {shape}.")
        row_bytes = int(np.prod(shape[1:]))
        for start in range(0, shape[0], batch_size):
            rows = min(batch_size, shape[0] - start)
            data = member.read(rows * row_bytes)
            if len(data) != rows * row_bytes:
                raise DataError(f"{path}: '{key}' is truncated at image {start}.")
            yield np.frombuffer(data, dtype=np.uint8).reshape(rows, *shape[1:])


def npz_image_count(path: Path | str, key: str = "arr_0") -> int:
    """Number of images in `key` of an .npz, read from the .npy header."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as member:
        shape, _, _ = _read_npy_header(member)
    return int(shape[0])


def _read_npy_header(member) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    return np.lib.format.read_array_header_2_0(member)
