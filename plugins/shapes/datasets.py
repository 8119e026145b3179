"""Registry entries for the shapes datasets (`shapes-c2i`, `shapes-captions`)."""
from __future__ import annotations

from vapi_bench.interfaces import Entry
from vapi_bench.params import Param

from .data import SIZES, SPLITS, caption_dataset, class_dataset


def _params(default_n: int) -> tuple[Param, ...]:
    return (
        Param("n", int, default_n, "number of images"),
        Param("size", int, 32, "image size in pixels", choices=SIZES),
        Param("seed", int, 0, "data seed (item i is drawn from derive_seed(seed, i, split stream))"),
        Param("split", str, "train", "train / test / ref / val (disjoint seed streams)", choices=SPLITS),
    )


def register_datasets_impl(register) -> None:
    """Called by plugins/shapes/__init__.py's register_datasets hookimpl."""
    register(Entry(
        "shapes-c2i",
        factory=class_dataset,
        summary="procedural shapes, one object per image, class = shape x colour (24 classes)",
        params=_params(10_000),
    ))
    register(Entry(
        "shapes-captions",
        factory=caption_dataset,
        summary="procedural scenes of 1-4 shapes captioned in GenEval's grammar (six tags)",
        params=_params(10_000),
    ))
