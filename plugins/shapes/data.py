"""Procedural shapes data: deterministic scenes of coloured shapes on a textured grey background.

Two datasets serve the shapes world:
- `class_dataset`: one object per image, class = shape_index * n_colours + colour_index
  (class-conditional generators, the feature network, FID reference sets);
- `caption_dataset`: 1-4 objects with a caption in GenEval's grammar and its GenEval metadata
  (include / exclude clauses), rendered so that the caption holds exactly (text generators).

Item i of a split is drawn from its own generator seeded by derive_seed(seed, i, stream), with a
different stream per (dataset kind, split), so items are independent of access order and the
train / test / ref / val splits never share a scene. Rendering is numpy-only and hard-edged (no
anti-aliasing): every pixel is either background or exactly one object, which is what lets the
classical detector in `detector.py` be exact on clean renders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from vapi_bench.errors import DataError
from vapi_bench.seeding import derive_seed

from .vocab import (
    COLOURS,
    NUM_CLASSES,
    NUMBER_WORDS,
    PALETTE,
    POSITIONS,
    SHAPES,
    TAGS,
    class_attributes,
    plural,
    with_article,
)

Split = Literal["train", "test", "ref", "val"]
#: 'ref' is shapes-fid's test reference, 'val' its validation reference (lab tune chooses settings on it)
SPLITS: tuple[str, ...] = ("train", "test", "ref", "val")
SIZES: tuple[int, ...] = (32, 64)

# Geometry in pixels at 32x32; scaled linearly for other sizes.
CLASS_RADIUS = (5.0, 11.0)  # one big object per image
CAPTION_RADIUS = (4.5, 6.0)  # up to four objects must fit without touching
OBJECT_GAP = 2.0  # minimum free pixels between two objects' boxes
BORDER = 1.0  # minimum free pixels between an object and the image border
# Position captions must hold under GenEval's relative_position with a margin: the named
# direction's normalised component beyond RELATION_STRONG, the other axis below RELATION_WEAK.
RELATION_STRONG = 0.7
RELATION_WEAK = 0.4
MAX_PLACEMENT_TRIES = 500


@dataclass(frozen=True)
class ShapeObject:
    """One object: shape and colour names, centre (cx, cy) in pixels, half-extent r in pixels."""

    shape: str
    colour: str
    cx: float
    cy: float
    r: float

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise DataError(f"Unknown shape {self.shape!r}; the shapes world has {list(SHAPES)}.")
        if self.colour not in PALETTE:
            raise DataError(f"Unknown colour {self.colour!r}; the shapes world has {list(COLOURS)}.")
        if self.r <= 0:
            raise DataError(f"Shape radius must be positive, got r={self.r}.")

    def as_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "colour": self.colour, "cx": self.cx, "cy": self.cy, "r": self.r}


@dataclass
class Scene:
    """A rendered scene with its ground truth (objects, class label or caption + metadata)."""

    image: np.ndarray  # HxWx3 uint8
    objects: list[ShapeObject]
    label: int | None = None
    caption: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# ---- rendering ------------------------------------------------------------------------------


def object_mask(obj: ShapeObject, size: int) -> np.ndarray:
    """Boolean HxW mask of the pixels whose centres fall inside `obj` (hard edges)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy, r = x - obj.cx, y - obj.cy, obj.r
    if obj.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if obj.shape == "square":
        half = 0.9 * r
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if obj.shape == "triangle":  # apex up, base down: half-width grows from 0 to r over 2r rows
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2.0)
    if obj.shape == "cross":  # plus sign, arms a third of the extent thick
        arm = r / 3.0
        return ((np.abs(dx) <= r) & (np.abs(dy) <= arm)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    raise DataError(f"Unknown shape {obj.shape!r}.")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x1, y1, x2, y2) box of a mask with mmdet's convention x2 = last column + 1."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise DataError("mask_box: the mask is empty.")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Grey, gently lit and textured: a random level, a linear gradient, two low-frequency waves."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size - 0.5
    level = rng.uniform(95.0, 140.0)
    gx, gy = rng.uniform(-20.0, 20.0, size=2)
    field_ = level + gx * x + gy * y
    for _ in range(2):
        fx, fy = rng.uniform(1.0, 4.0, size=2) * 2.0 * math.pi
        phase = rng.uniform(0.0, 2.0 * math.pi)
        field_ = field_ + rng.uniform(2.0, 6.0) * np.sin(fx * x + fy * y + phase)
    tint = rng.uniform(-4.0, 4.0, size=3)  # a faint colour cast, far from every object colour
    return field_[..., None] + tint


def render_scene(objects: list[ShapeObject], size: int, rng: np.random.Generator) -> np.ndarray:
    """Render objects over a textured grey background; returns HxWx3 uint8.

    Each object gets a slight colour jitter and every pixel mild noise, so a tokenizer cannot
    reconstruct the image trivially while the palette stays unambiguous.
    """
    if size <= 0:
        raise DataError(f"Image size must be positive, got {size}.")
    image = _background(size, rng)
    for obj in objects:
        colour = np.asarray(PALETTE[obj.colour], dtype=np.float64) + rng.uniform(-10.0, 10.0, size=3)
        image[object_mask(obj, size)] = colour
    image = image + rng.normal(0.0, 4.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> [3,H,W] float in [-1,1] (inverse of vapi_bench.imageio.to_uint8)."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


# ---- placement ------------------------------------------------------------------------------


def _scale(size: int) -> float:
    return size / 32.0


def _random_object(shape: str, colour: str, size: int, radius: tuple[float, float],
                   rng: np.random.Generator) -> ShapeObject:
    s = _scale(size)
    r = rng.uniform(*radius) * s
    low, high = r + BORDER * s, size - r - BORDER * s
    cx, cy = rng.uniform(low, high, size=2)
    return ShapeObject(shape, colour, float(cx), float(cy), float(r))


def _free_object(shape: str, colour: str, size: int, radius: tuple[float, float], rng: np.random.Generator,
                 placed: list[ShapeObject], candidates: int = 64) -> ShapeObject | None:
    """A random object whose box stays OBJECT_GAP away from every placed box, or None.

    One radius and a batch of candidate centres per call (vectorised), the first free centre wins.
    """
    s = _scale(size)
    r = rng.uniform(*radius) * s
    low, high = r + BORDER * s, size - r - BORDER * s
    centres = rng.uniform(low, high, size=(candidates, 2))
    free = np.ones(candidates, dtype=bool)
    for other in placed:
        reach = r + other.r + OBJECT_GAP * s
        free &= (np.abs(centres[:, 0] - other.cx) >= reach) | (np.abs(centres[:, 1] - other.cy) >= reach)
    hits = np.flatnonzero(free)
    if hits.size == 0:
        return None
    cx, cy = centres[hits[0]]
    return ShapeObject(shape, colour, float(cx), float(cy), float(r))


def relation_components(box_a: tuple[float, ...], box_b: tuple[float, ...],
                        threshold: float = 0.1) -> tuple[float, float]:
    """GenEval's relative_position of box a to box b as the normalised (dx, dy) it thresholds.

    offset = c_a - c_b, shrunk by threshold * (d_a + d_b) per axis; GenEval reads dx < -0.5 as
    'left of', dx > 0.5 'right of', dy < -0.5 'above', dy > 0.5 'below' (y points down).
    """
    ca = np.array([(box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2])
    cb = np.array([(box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2])
    da = np.array([box_a[2] - box_a[0], box_a[3] - box_a[1]])
    db = np.array([box_b[2] - box_b[0], box_b[3] - box_b[1]])
    offset = ca - cb
    norm = float(np.linalg.norm(offset))
    if norm == 0.0:
        return 0.0, 0.0
    rev = np.maximum(np.abs(offset) - threshold * (da + db), 0.0) * np.sign(offset)
    return float(rev[0] / norm), float(rev[1] / norm)


def _relation_holds(a: ShapeObject, b: ShapeObject, relation: str, size: int) -> bool:
    dx, dy = relation_components(mask_box(object_mask(a, size)), mask_box(object_mask(b, size)))
    along, across = {"left of": (-dx, dy), "right of": (dx, dy), "above": (-dy, dx), "below": (dy, dx)}[relation]
    return along > RELATION_STRONG and abs(across) < RELATION_WEAK


def place_objects(specs: list[tuple[str, str]], size: int, rng: np.random.Generator,
                  radius: tuple[float, float] = CAPTION_RADIUS,
                  relation: tuple[int, str, int] | None = None) -> list[ShapeObject]:
    """Place (shape, colour) specs without overlap (boxes at least OBJECT_GAP apart).

    relation=(a, rel, b) additionally requires object a to be `rel` of object b under GenEval's
    rule with a margin. Raises DataError if no placement is found (impossible specs).
    """
    for _ in range(MAX_PLACEMENT_TRIES):
        placed: list[ShapeObject] = []
        for shape, colour in specs:
            candidate = _free_object(shape, colour, size, radius, rng, placed)
            if candidate is None:
                break
            placed.append(candidate)
        if len(placed) != len(specs):
            continue
        if relation is not None:
            a, rel, b = relation
            if not _relation_holds(placed[a], placed[b], rel, size):
                continue
        return placed
    raise DataError(f"Could not place {len(specs)} shapes on a {size}x{size} image after {MAX_PLACEMENT_TRIES} tries.")


# ---- captions in GenEval's grammar -----------------------------------------------------------


def _pick(rng: np.random.Generator, options: tuple[str, ...], k: int = 1) -> list[str]:
    return [options[i] for i in rng.choice(len(options), size=k, replace=False)]


def random_record(tag: str, rng: np.random.Generator) -> dict[str, Any]:
    """A random GenEval metadata record for `tag` over the shapes vocabulary.

    Same grammar and schema as GenEval's create_prompts.py (include / exclude clauses, counts
    2-4 with an exclude of count + 1, position clauses pointing at include index 0).
    """
    if tag == "single_object":
        (shape,) = _pick(rng, SHAPES)
        return {"tag": tag, "include": [{"class": shape, "count": 1}], "prompt": f"a photo of {with_article(shape)}"}
    if tag == "two_object":
        a, b = _pick(rng, SHAPES, 2)
        return {"tag": tag, "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
                "prompt": f"a photo of {with_article(a)} and {with_article(b)}"}
    if tag == "counting":
        (shape,) = _pick(rng, SHAPES)
        count = int(rng.integers(2, 4, endpoint=True))
        return {"tag": tag, "include": [{"class": shape, "count": count}],
                "exclude": [{"class": shape, "count": count + 1}],
                "prompt": f"a photo of {NUMBER_WORDS[count]} {plural(shape)}"}
    if tag == "colors":
        (shape,) = _pick(rng, SHAPES)
        (colour,) = _pick(rng, COLOURS)
        return {"tag": tag, "include": [{"class": shape, "count": 1, "color": colour}],
                "prompt": f"a photo of {with_article(colour)} {shape}"}
    if tag == "position":
        a, b = _pick(rng, SHAPES, 2)
        (relation,) = _pick(rng, POSITIONS)
        return {"tag": tag, "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}],
                "prompt": f"a photo of {with_article(a)} {relation} {with_article(b)}"}
    if tag == "color_attr":
        a, b = _pick(rng, SHAPES, 2)
        ca, cb = _pick(rng, COLOURS, 2)
        return {"tag": tag, "include": [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}],
                "prompt": f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}"}
    raise DataError(f"Unknown GenEval tag {tag!r}; expected one of {list(TAGS)}.")


def realise_record(record: dict[str, Any], size: int, rng: np.random.Generator,
                   radius: tuple[float, float] = CAPTION_RADIUS) -> list[ShapeObject]:
    """Objects that satisfy a GenEval record exactly: `count` objects per include clause (its
    colour, or a random one), nothing else (so every exclude clause holds), and each position
    clause's relation to the first object of its target clause, with a margin."""
    specs: list[tuple[str, str]] = []
    first_of_clause: list[int] = []
    relation: tuple[int, str, int] | None = None
    for clause in record.get("include", []):
        if clause.get("class") not in SHAPES:
            raise DataError(f"Record {record.get('prompt')!r} names {clause.get('class')!r}, "
                            f"not a shape of {list(SHAPES)}.")
        first_of_clause.append(len(specs))
        if "position" in clause:
            if clause["count"] != 1 or relation is not None:
                raise DataError(f"Record {record.get('prompt')!r}: only one single-object position clause "
                                "is supported.")
            rel, target = clause["position"]
            relation = (len(specs), rel, first_of_clause[target])
        for _ in range(clause["count"]):
            specs.append((clause["class"], clause.get("color") or _pick(rng, COLOURS)[0]))
    return place_objects(specs, size, rng, radius=radius, relation=relation)


def render_record(record: dict[str, Any], size: int, rng: np.random.Generator) -> Scene:
    """A rendered scene for which the record's caption holds exactly."""
    objects = realise_record(record, size, rng)
    return Scene(render_scene(objects, size, rng), objects, caption=record["prompt"], metadata=record)


# ---- datasets -------------------------------------------------------------------------------


def _check(split: str, n: int, size: int) -> None:
    if split not in SPLITS:
        raise DataError(f"Unknown shapes split {split!r}; expected one of {list(SPLITS)}.")
    if n < 0:
        raise DataError(f"Dataset size must be >= 0, got n={n}.")
    if size not in SIZES:
        raise DataError(f"Shapes images are {' or '.join(map(str, SIZES))} pixels, got size={size}.")


class ShapesDataset(Dataset):
    """Common base of the shapes datasets: split, size, seed and per-item seeded generators."""

    kind = ""

    def __init__(self, split: str, n: int, size: int, seed: int) -> None:
        _check(split, n, size)
        self.split, self.n, self.size, self.seed = split, n, size, seed

    def __len__(self) -> int:
        return self.n

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.n:
            raise IndexError(f"{type(self).__name__} index {index} out of range [0, {self.n}).")
        return np.random.default_rng(derive_seed(self.seed, index, stream=f"shapes/{self.kind}/{self.split}"))

    def scene(self, index: int) -> Scene:
        """Item `index` with its ground truth (each subclass renders its own kind of scene)."""
        raise NotImplementedError


class ClassShapes(ShapesDataset):
    """One shape per image; item = (image [3,H,W] in [-1,1], class id). Classes cycle 0..K-1."""

    kind = "c2i"

    def scene(self, index: int) -> Scene:
        rng = self._rng(index)
        label = index % NUM_CLASSES
        shape, colour = class_attributes(label)
        objects = [_random_object(shape, colour, self.size, CLASS_RADIUS, rng)]
        return Scene(render_scene(objects, self.size, rng), objects, label=label)

    def labels(self) -> list[int]:
        return [i % NUM_CLASSES for i in range(self.n)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        scene = self.scene(index)
        return to_tensor(scene.image), int(scene.label)


class CaptionShapes(ShapesDataset):
    """1-4 shapes per image with a GenEval-grammar caption; item = (image [3,H,W], caption).

    Tags cycle through GenEval's six tags by index; `scene(i).metadata` is the GenEval record.
    """

    kind = "captions"

    def scene(self, index: int) -> Scene:
        rng = self._rng(index)
        return render_record(random_record(TAGS[index % len(TAGS)], rng), self.size, rng)

    def metadata(self, index: int) -> dict[str, Any]:
        return self.scene(index).metadata

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        scene = self.scene(index)
        return to_tensor(scene.image), str(scene.caption)


def class_dataset(split: Split = "train", n: int = 10_000, size: int = 32, seed: int = 0) -> ClassShapes:
    """The class-conditional shapes set (one object per image, classes balanced by index)."""
    return ClassShapes(split, n, size, seed)


def caption_dataset(split: Split = "train", n: int = 10_000, size: int = 32, seed: int = 0) -> CaptionShapes:
    """The captioned shapes set (GenEval's six tags in turn, captions hold exactly)."""
    return CaptionShapes(split, n, size, seed)
