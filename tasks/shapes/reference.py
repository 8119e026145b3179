"""Reference features for `shapes-fid`, cached by content hash.

The reference set is the 'ref' split of the class-conditional shapes data (the test reference) or
its 'val' split (the validation reference `lab tune` selects settings on; disjoint from 'ref' and
from the training split), rendered at the samples' size. Its feature-net features are cached under
`cache_dir()/shapes-ref/<key>.npz`, where the key hashes the reference pixels themselves and the
feature network's weights: a change to the renderer, the data parameters or the network gives a
new key, and an unchanged reference is never recomputed. A small index keyed by the recipe (n,
size, seed, split, network digest and the renderer's code) finds that file without rendering the
reference again.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from vapi_bench.integrity import load_npz, read_marker
from vapi_bench.metrics import gaussian_stats
from vapi_bench.store import atomic_write, atomic_write_json
from vapi_bench.plugins.shapes import data as shapes_data, vocab as shapes_vocab
from vapi_bench.plugins.shapes.data import class_dataset
from vapi_bench.weights import cache_dir

if TYPE_CHECKING:
    from vapi_bench.plugins.shapes.features import ShapesFeatureNet


@dataclass
class ReferenceFeatures:
    features: np.ndarray  # [N, D] float64
    mu: np.ndarray
    sigma: np.ndarray
    key: str
    path: Path
    cached: bool  # True when read from the cache


@functools.lru_cache(maxsize=4)
def reference_images(n: int, size: int, seed: int, split: str = "ref") -> np.ndarray:
    """The first n images of a reference split ('ref' = test, 'val' = validation) as NHWC uint8
    (classes balanced by index). Kept in memory: a lab process scores many runs against the same
    reference, and rendering it is what computes its cache key."""
    data = class_dataset(split, n, size, seed)
    return np.stack([data.scene(i).image for i in range(n)])


def reference_key(images: np.ndarray, weights_digest: str) -> str:
    h = hashlib.sha256()
    h.update(f"{images.shape}|{weights_digest}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:20]


def recipe_key(n: int, size: int, seed: int, weights_digest: str, split: str = "ref") -> str:
    """What determines the reference pixels and features, the renderer's code included."""
    h = hashlib.sha256(f"{n}|{size}|{seed}|{weights_digest}|{split}|".encode())
    for module in (shapes_data, shapes_vocab):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:20]


def _cached(key: str, path: Path) -> ReferenceFeatures | None:
    """The cached features of `key`, or None when absent or damaged (a damaged file is named and set
    aside: a zero-byte .npz would otherwise fail every later run)."""
    arrays = load_npz(path, ("features", "mu", "sigma"))
    if arrays is None:
        return None
    return ReferenceFeatures(arrays["features"], arrays["mu"], arrays["sigma"], key, path, cached=True)


def load_reference(net: "ShapesFeatureNet", weights_digest: str, n: int, size: int, seed: int,
                   batch_size: int = 256, on_batch: Callable[[int], None] | None = None,
                   split: str = "ref") -> ReferenceFeatures:
    """Reference features and Gaussian statistics, from the cache when the content matches."""
    folder = cache_dir() / "shapes-ref"
    index = folder / f"recipe-{recipe_key(n, size, seed, weights_digest, split)}.json"
    key = (read_marker(index, ("key",)) or {}).get("key")
    found = _cached(key, folder / f"{key}.npz") if isinstance(key, str) and key else None
    if found is not None:
        return found
    images = reference_images(n, size, seed, split)
    key = reference_key(images, weights_digest)
    path = folder / f"{key}.npz"
    found = _cached(key, path)
    if found is not None:
        atomic_write_json(index, {"key": key})
        return found
    from vapi_bench.plugins.shapes.features import extract

    features, _ = extract(net, images, batch_size, on_batch)
    mu, sigma = gaussian_stats(features)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, features=features, mu=mu, sigma=sigma)

    atomic_write(path, write)
    atomic_write_json(index, {"key": key})
    return ReferenceFeatures(features, mu, sigma, key, path, cached=False)
