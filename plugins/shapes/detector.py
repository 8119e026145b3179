"""The exact shapes detector: colour segmentation, connected components, shape geometry.

Why classical: the shapes world's palette is far from the grey background and from itself, and
shapes are drawn hard-edged without rotation, so palette segmentation plus a few geometric
measurements recovers every object of a clean render exactly (tests measure this on held-out
scenes). Segmentation thresholds at the midpoint between background and colour, so soft
(decoded, generated) images keep their objects' size and corners; blobs that fit no shape are
dropped rather than guessed.

Detections convert to mmdet-2.x result form (`to_mmdet`) so GenEval's scoring rules run on them
unchanged, and `colour_lookup` answers GenEval's colour question from the segmentation instead
of CLIP.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from .data import ShapeObject, mask_box, object_mask
from .vocab import PALETTE

# Pixels farther than this (RGB) from every palette colour are surely background: they anchor the
# background estimate. The background is >= ~95 away from every palette colour.
COLOUR_DISTANCE = 70.0
# Largest distance of an object pixel from its background->colour segment (clean renders: <= ~25;
# palette colours are >= 100 apart).
RESIDUAL_LIMIT = 45.0
FALLBACK_GREY = 118.0
MIN_AREA_32 = 8  # smallest component kept at 32x32 (scaled with the image area)
# Geometry thresholds (see classify_shape); measured on renders of every shape and size.
SQUARE_FILL = 0.915
SQUARE_FILL_WITH_CORNERS = 0.85
TRIANGLE_TOP_SHARE = 0.375
CROSS_CORNER_FILL = 0.15
MIN_FILL = 0.35
MAX_ASPECT = 1.6

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class Detection:
    """One detected object: shape class, colour, score, box (x1, y1, x2, y2; x2 exclusive), mask."""

    shape: str
    colour: str
    score: float
    bbox: tuple[int, int, int, int]
    mask: np.ndarray  # HxW bool

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.bbox
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def classify_shape(mask: np.ndarray) -> str | None:
    """Name the shape of a single component mask, or None if it fits no shape of this world.

    In order (thresholds measured on renders of every shape at every size, 32 and 64 px, with
    radius >= 4.5 px at 32 px):
    - square: fills >= 91.5% of its box (circles <= 90%, even blurred squares that lost their
      four corner pixels >= 93%), or >= 85% with at least three box-corner pixels set (a circle
      never sets one);
    - cross: its four corner ninths are nearly empty (< 15%; circles >= 19%, triangles >= 38%);
    - triangle (apex up): under 37.5% of its pixels lie in the top half of its box (<= 33%;
      circles and crosses >= 38%);
    - circle: otherwise.
    Components much longer than wide, or sparser than any shape, are rejected.
    """
    x1, y1, x2, y2 = mask_box(mask)
    crop = mask[y1:y2, x1:x2]
    h, w = crop.shape
    area = float(crop.sum())
    if max(h, w) > MAX_ASPECT * min(h, w):
        return None
    fill = area / (h * w)
    if fill < MIN_FILL:
        return None
    corner_pixels = int(crop[0, 0]) + int(crop[0, -1]) + int(crop[-1, 0]) + int(crop[-1, -1])
    if fill >= SQUARE_FILL or (fill >= SQUARE_FILL_WITH_CORNERS and corner_pixels >= 3):
        return "square"
    ch, cw = max(h // 3, 1), max(w // 3, 1)
    corners = [crop[:ch, :cw], crop[:ch, w - cw :], crop[h - ch :, :cw], crop[h - ch :, w - cw :]]
    if float(np.mean([c.mean() for c in corners])) < CROSS_CORNER_FILL:
        return "cross"
    rows = crop.sum(axis=1).astype(np.float64)
    top = rows[: h // 2].sum() + (rows[h // 2] / 2.0 if h % 2 else 0.0)
    if top / area < TRIANGLE_TOP_SHARE:
        return "triangle"
    return "circle"


class ShapesDetector:
    """Detect shapes in HxWx3 uint8 images: palette segmentation against a fitted background
    (`segment`), 8-connected components per colour, then `classify_shape` on each component.

    Every detection has score 1.0 (the detector is deterministic and exact on clean renders).
    Detections are ordered by decreasing area, then top-left position, so results are stable.
    """

    def __init__(self, palette: dict[str, tuple[int, int, int]] | None = None,
                 colour_distance: float = COLOUR_DISTANCE, residual_limit: float = RESIDUAL_LIMIT,
                 min_area_32: int = MIN_AREA_32) -> None:
        self.palette = dict(palette or PALETTE)
        self.colours = list(self.palette)
        self._rgb = np.asarray([self.palette[c] for c in self.colours], dtype=np.float32)
        self.colour_distance = colour_distance
        self.residual_limit = residual_limit
        self.min_area_32 = min_area_32

    def background(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 background estimate: a per-channel plane fitted to the pixels that are clearly
        background (farther than colour_distance from every palette colour), which follows the
        renderer's lighting gradient. Without such pixels, the world's mid grey."""
        pixels = image.astype(np.float64)
        h, w, _ = pixels.shape
        distance = np.linalg.norm(pixels[:, :, None, :] - self._rgb[None, None], axis=-1).min(axis=-1)
        clear = distance > self.colour_distance
        ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
        design = np.stack([np.ones_like(xs), xs, ys], axis=-1)
        if clear.sum() < 3:
            return np.full_like(pixels, FALLBACK_GREY)
        coef, *_ = np.linalg.lstsq(design[clear], pixels[clear], rcond=None)
        return design @ coef

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel palette index (HxW int), -1 for background.

        A pixel p belongs to colour c when, on the segment from the local background b to c, it
        lies past the midpoint (t = (p-b).(c-b)/|c-b|^2 > 0.5) and close to the segment (residual
        < residual_limit). The midpoint is where a blurred edge crosses the true edge, so objects
        keep their size and corners in decoded images, whatever their contrast to the background.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"ShapesDetector expects an HxWx3 uint8 image, got {image.dtype} {image.shape}.")
        background = self.background(image)
        towards = self._rgb[None, None] - background[:, :, None, :]  # HxWxKx3
        offset = (image.astype(np.float64) - background)[:, :, None, :]  # HxWx1x3
        t = (offset * towards).sum(-1) / (towards * towards).sum(-1)
        residual = np.linalg.norm(offset - t[..., None] * towards, axis=-1)
        residual = np.where((t > 0.5) & (residual < self.residual_limit), residual, np.inf)
        nearest = residual.argmin(axis=-1)
        return np.where(np.isfinite(residual.min(axis=-1)), nearest, -1)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        labels = self.segment(image)
        h, w = labels.shape
        min_area = max(1, round(self.min_area_32 * h * w / 1024))
        detections: list[Detection] = []
        for colour_index, colour in enumerate(self.colours):
            components, count = ndimage.label(labels == colour_index, structure=_EIGHT_CONNECTED)
            for component in range(1, count + 1):
                mask = ndimage.binary_fill_holes(components == component)
                if mask.sum() < min_area:
                    continue
                shape = classify_shape(mask)
                if shape is not None:
                    detections.append(Detection(shape, colour, 1.0, mask_box(mask), mask))
        detections.sort(key=lambda d: (-d.area, d.bbox[1], d.bbox[0]))
        return detections


def to_mmdet(detections: Sequence[Detection],
             class_names: Sequence[str]) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """mmdet-2.x result form: per class index c, bboxes[c] [n,5] float32 (x1,y1,x2,y2,score)
    and masks[c] a list of HxW bool arrays in the same order."""
    index = {name: i for i, name in enumerate(class_names)}
    boxes: list[list[list[float]]] = [[] for _ in class_names]
    masks: list[list[np.ndarray]] = [[] for _ in class_names]
    for det in detections:
        if det.shape not in index:
            raise ValueError(f"Detected shape {det.shape!r} is not among the class names {list(class_names)}.")
        c = index[det.shape]
        boxes[c].append([*map(float, det.bbox), det.score])
        masks[c].append(det.mask)
    bboxes = [np.asarray(b, dtype=np.float32).reshape(-1, 5) for b in boxes]
    return bboxes, masks


def colour_lookup(detections: Sequence[Detection]) -> Callable[[np.ndarray, np.ndarray, np.ndarray, list[str]], str]:
    """A GenEval colour classifier that answers from the segmentation, not from CLIP.

    GenEval calls it with (image, mask, bbox, colour_choices) for a detection it kept; the
    detection is found by its mask (identity, else equal mask) and its segmented colour returned.
    """

    def classify(image: np.ndarray, mask: np.ndarray, bbox: np.ndarray, choices: list[str]) -> str:
        for det in detections:
            if det.mask is mask:
                return _checked(det.colour, choices)
        for det in detections:
            if det.mask.shape == np.shape(mask) and np.array_equal(det.mask, mask):
                return _checked(det.colour, choices)
        box = list(np.asarray(bbox)[:4])
        raise LookupError(f"colour_lookup: no detection has the mask of the object at box {box}.")

    return classify


def _checked(colour: str, choices: list[str]) -> str:
    if colour not in choices:
        raise ValueError(f"Segmented colour {colour!r} is not among GenEval's colour choices {choices}.")
    return colour


def recovers_objects(detections: Sequence[Detection], objects: Sequence[ShapeObject], size: int,
                     min_iou: float = 0.5) -> bool:
    """True iff the detections are exactly the objects: same count, and a one-to-one match in
    which each pair agrees on shape and colour and their boxes overlap with IoU >= min_iou."""
    if len(detections) != len(objects):
        return False
    unused = list(detections)
    for obj in objects:
        truth = mask_box(object_mask(obj, size))
        match = next((d for d in unused if d.shape == obj.shape and d.colour == obj.colour
                      and _box_iou(d.bbox, truth) >= min_iou), None)
        if match is None:
            return False
        unused.remove(match)
    return True


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0

