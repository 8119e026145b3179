"""GenEval's scoring rules, detector-agnostic (djghosh13/geneval `evaluation/evaluate_images.py`).

Input is one image's detections in mmdet-2.x result form, so any detector plugs in and parity with
the official script is direct:

    Detections = (bboxes, masks)
    bboxes[c]: np.ndarray [n, 5] of (x1, y1, x2, y2, score) for class index c (vocabulary order)
    masks[c]:  list of n HxW bool arrays in the same order (or `masks` is None: box-only detector)

Rules (docs/reference/evaluation.md §5.3): per class keep detections with score > threshold (counting_threshold
for "counting" prompts), highest score first, at most max_objects, optional greedy NMS with the
+1-pixel IoU when max_overlap < 1; include clauses are ANDed over the top-`count` detections of
their class, with optional colour and relative-position checks; exclude clauses fail the image
when a class has >= count kept detections. `summarize` gives per-tag accuracy and the headline
"overall" = unweighted mean of the tag accuracies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from vapi_bench.errors import DataError

from .prompts import GENEVAL_COLOURS

Detections = tuple[list[np.ndarray], list[list[np.ndarray]] | None]

#: colour_classifier(image HxWx3 uint8, mask HxW bool or None, bbox [5], colour choices) -> colour
ColourClassifier = Callable[[np.ndarray, np.ndarray | None, np.ndarray, list[str]], str]


@runtime_checkable
class ClassAwareColourClassifier(Protocol):
    """A colour classifier whose text prompts name the object (GenEval's CLIP templates do).

    `evaluate_image` calls `for_class(class_name)` when the classifier has it and uses the returned
    plain `ColourClassifier`; plain callables are used as they are.
    """

    def for_class(self, class_name: str) -> ColourClassifier: ...


@dataclass(frozen=True)
class GenEvalOptions:
    """GenEval's `--options` with their defaults (the published protocol)."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0  # 1.0 = no NMS
    position_threshold: float = 0.1
    colours: tuple[str, ...] = GENEVAL_COLOURS
    bgcolor: str = "#999"  # background of colour crops; "original" keeps the image
    crop: bool = True  # crop colour crops to the detection box


# One kept detection: its [5] box row and its mask (or None).
Detected = tuple[np.ndarray, np.ndarray | None]


def box_iou_plus_one(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU with the inclusive-pixel convention (width = x2 - x1 + 1), as GenEval's NMS uses."""

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def filter_detections(
    detections: Detections, class_names: Sequence[str], threshold: float, options: GenEvalOptions
) -> dict[str, list[Detected]]:
    """Per class name, the detections the rules look at, highest score first (classes with none omitted)."""
    bboxes, masks = detections
    if len(bboxes) != len(class_names):
        raise DataError(
            f"detections have {len(bboxes)} classes but the vocabulary has {len(class_names)}; "
            "bboxes must hold one [n, 5] array per class in vocabulary order."
        )
    kept: dict[str, list[Detected]] = {}
    for index, name in enumerate(class_names):
        # keep the detector's dtype (mmdet: float32): `score > 0.3` then compares in float32, as in GenEval
        boxes = np.asarray(bboxes[index]).reshape(-1, 5)
        if not np.issubdtype(boxes.dtype, np.floating):
            boxes = boxes.astype(np.float32)
        class_masks = None if masks is None else masks[index]
        if class_masks is not None and len(class_masks) != len(boxes):
            raise DataError(f"class {name!r}: {len(boxes)} boxes but {len(class_masks)} masks.")
        order = np.argsort(boxes[:, 4])[::-1]
        order = order[boxes[order, 4] > threshold][: options.max_objects].tolist()
        chosen: list[Detected] = []
        while order:
            best = order.pop(0)
            chosen.append((boxes[best], None if class_masks is None else np.asarray(class_masks[best], dtype=bool)))
            if options.max_overlap < 1:
                order = [o for o in order if box_iou_plus_one(boxes[best], boxes[o]) < options.max_overlap]
        if chosen:
            kept[name] = chosen
    return kept


def relative_position(box_a: np.ndarray, box_b: np.ndarray, position_threshold: float) -> set[str]:
    """Relations of box A to box B ("left of", "right of", "above", "below"), GenEval's rule.

    Centre offsets shrink by position_threshold x (sum of the two sizes) per axis; nothing is
    related when both shrunk offsets vanish; otherwise a direction counts when its component of
    the shrunk offset, divided by the full offset's length, exceeds 0.5.
    """
    # the boxes' own dtype (float32 from mmdet), as in GenEval: borderline cases round alike
    corners = np.array([box_a[:4], box_b[:4]]).reshape(2, 2, 2)
    centre_a, centre_b = corners.mean(axis=1)
    size_a, size_b = np.abs(corners[:, 1] - corners[:, 0])
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - position_threshold * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def evaluate_image(
    metadata: dict[str, Any],
    detections: Detections,
    image: np.ndarray,
    *,
    class_names: list[str],
    colour_classifier: ColourClassifier | ClassAwareColourClassifier | None,
    options: GenEvalOptions = GenEvalOptions(),
) -> dict[str, Any]:
    """Judge one generated image against its GenEval metadata.

    Returns {"correct", "reason" (GenEval's wording, one failure per line), "tag", "prompt",
    "detections": {class: [[x1, y1, x2, y2, score], ...]} of the kept detections}.
    """
    tag = metadata.get("tag", "")
    threshold = options.counting_threshold if tag == "counting" else options.threshold
    objects = filter_detections(detections, class_names, threshold, options)
    correct = True
    reasons: list[str] = []
    matched_groups: list[list[Detected] | None] = []

    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = objects.get(name, [])[:count]
        matched = len(found) >= count
        if not matched:
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        if matched and "color" in clause:
            failure = _colour_failure(clause, found, image, colour_classifier, options)
            if failure:
                matched = False
                reasons.append(failure)
        if matched and "position" in clause:
            failure = _position_failure(clause, found, matched_groups, options)
            if failure:
                matched = False
                reasons.append(failure)
        correct &= matched
        matched_groups.append(found if matched else None)

    for clause in metadata.get("exclude", []):
        name, count = clause["class"], clause["count"]
        present = len(objects.get(name, []))
        if present >= count:
            correct = False
            reasons.append(f"expected {name}<{count}, found {present}")

    return {
        "correct": bool(correct),
        "reason": "\n".join(reasons),
        "tag": tag,
        "prompt": metadata.get("prompt", ""),
        "detections": {name: [box.tolist() for box, _ in found] for name, found in objects.items()},
    }


def _colour_failure(
    clause: dict[str, Any],
    found: list[Detected],
    image: np.ndarray,
    colour_classifier: ColourClassifier | ClassAwareColourClassifier | None,
    options: GenEvalOptions,
) -> str:
    name, count, wanted = clause["class"], clause["count"], clause["color"]
    if colour_classifier is None:
        raise DataError(f"prompt asks for a {wanted} {name} but no colour classifier was given.")
    classify = colour_classifier.for_class(name) if isinstance(colour_classifier, ClassAwareColourClassifier) else colour_classifier
    choices = list(options.colours)
    colours = [classify(image, mask, box, choices) for box, mask in found]
    hits = colours.count(wanted)
    if hits >= count:
        return ""
    seen = ", ".join(f"{colours.count(c)} {c}" for c in choices if c in colours)
    return f"expected {wanted} {name}>={count}, found {hits} {wanted}; and {seen}"


def _position_failure(
    clause: dict[str, Any],
    found: list[Detected],
    matched_groups: list[list[Detected] | None],
    options: GenEvalOptions,
) -> str:
    name = clause["class"]
    expected, target = clause["position"]
    targets = matched_groups[target] if target < len(matched_groups) else None
    if targets is None:
        return f"no target for {name} to be {expected}"
    for box, _ in found:
        for target_box, _ in targets:
            relations = relative_position(box, target_box, options.position_threshold)
            if expected not in relations:
                # sorted: GenEval joins a set, whose order varies between processes
                return f"expected {name} {expected} target, found {' and '.join(sorted(relations))} target"
    return ""


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """GenEval's summary: accuracy per tag (first-seen order), "overall" = unweighted mean of them.

    Also "correct_images" (fraction of all images) and "correct_prompts" (fraction of prompts with
    at least one correct image, grouped by (tag, prompt)); GenEval prints both but headlines "overall".
    """
    if not records:
        raise DataError("no scored GenEval images to summarise.")
    by_tag: dict[str, list[bool]] = {}
    by_prompt: dict[tuple[str, str], bool] = {}
    for record in records:
        ok = bool(record["correct"])
        by_tag.setdefault(record["tag"], []).append(ok)
        key = (record["tag"], record.get("prompt", ""))
        by_prompt[key] = by_prompt.get(key, False) or ok
    summary = {tag: float(np.mean(flags)) for tag, flags in by_tag.items()}
    summary["overall"] = float(np.mean(list(summary.values())))
    summary["correct_images"] = float(np.mean([bool(r["correct"]) for r in records]))
    summary["correct_prompts"] = float(np.mean(list(by_prompt.values())))
    return summary


def group_by_class(
    labels: np.ndarray,
    scores: np.ndarray,
    boxes: np.ndarray,
    masks: np.ndarray | None,
    num_classes: int,
) -> Detections:
    """Convert flat instances (mmdet-3.x `pred_instances` style) to mmdet-2.x per-class form.

    labels [n] int in [0, num_classes), scores [n], boxes [n, 4] xyxy, masks [n, H, W] bool or None.
    Instance order within a class is preserved.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not len(labels) == len(scores) == len(boxes):
        raise DataError(f"instance arrays disagree in length: {len(labels)} labels, {len(scores)} scores, {len(boxes)} boxes.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"instance labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}.")
    rows = np.concatenate([boxes, scores[:, None]], axis=1)
    per_class_boxes = [rows[labels == c] for c in range(num_classes)]
    if masks is None:
        return per_class_boxes, None
    masks = np.asarray(masks, dtype=bool)
    per_class_masks = [list(masks[labels == c]) for c in range(num_classes)]
    return per_class_boxes, per_class_masks
