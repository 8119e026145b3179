"""The exact shapes detector: geometry rules, exact recovery on held-out renders, mmdet form."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from vapi_bench.plugins.shapes import vocab
from vapi_bench.plugins.shapes.data import (
    CAPTION_RADIUS,
    CLASS_RADIUS,
    ShapeObject,
    caption_dataset,
    class_dataset,
    mask_box,
    object_mask,
    render_scene,
)
from vapi_bench.plugins.shapes.detector import ShapesDetector, classify_shape, colour_lookup, recovers_objects, to_mmdet
from vapi_bench.tasks.geneval.rules import GenEvalOptions, evaluate_image, filter_detections

DETECTOR = ShapesDetector()


@pytest.mark.parametrize("shape", vocab.SHAPES)
def test_classify_shape_on_every_size_and_subpixel_offset(shape):
    rng = np.random.default_rng(0)
    for size in (32, 64):
        for _ in range(150):  # every radius either dataset draws, at any sub-pixel centre
            r = rng.uniform(CAPTION_RADIUS[0], CLASS_RADIUS[1]) * size / 32
            obj = ShapeObject(shape, "red", rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1), r)
            assert classify_shape(object_mask(obj, size)) == shape, obj


def test_non_shapes_are_rejected():
    line = np.zeros((32, 32), dtype=bool)
    line[10, 2:30] = True
    assert classify_shape(line) is None
    ring = np.zeros((32, 32), dtype=bool)
    ring[5:25, 5] = ring[5:25, 24] = ring[5, 5:25] = ring[24, 5:25] = True
    assert classify_shape(ring) is None


@pytest.mark.parametrize("maker,size,n", [(class_dataset, 32, 300), (caption_dataset, 32, 300),
                                          (class_dataset, 64, 40), (caption_dataset, 64, 60)])
def test_exact_object_recovery_on_held_out_scenes(maker, size, n):
    data = maker("test", n, size, seed=11)
    recovered = sum(recovers_objects(DETECTOR(s.image), s.objects, size) for s in map(data.scene, range(n)))
    assert recovered / n >= 0.99, f"{recovered}/{n}"


def test_recovery_survives_decoder_like_blur_and_noise():
    """Midpoint segmentation keeps sizes and corners of blurred objects (decoded images are soft)."""
    data = caption_dataset("test", 150, 32, seed=12)
    scenes = [data.scene(i) for i in range(len(data))]
    pixels = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float()
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(0))
    soft = (gaussian_blur(pixels, [5, 5], [0.8, 0.8]) + 6 * noise).clamp(0, 255).round().to(torch.uint8)
    images = soft.permute(0, 2, 3, 1).numpy()
    recovered = sum(recovers_objects(DETECTOR(im), s.objects, 32) for im, s in zip(images, scenes))
    assert recovered / len(scenes) >= 0.97, f"{recovered}/{len(scenes)}"


def test_detections_carry_class_colour_score_box_and_mask():
    objects = [ShapeObject("circle", "yellow", 8.0, 8.0, 5.0), ShapeObject("cross", "purple", 22.0, 22.0, 5.0)]
    image = render_scene(objects, 32, np.random.default_rng(2))
    detections = DETECTOR(image)
    found = {(d.shape, d.colour) for d in detections}
    assert found == {("circle", "yellow"), ("cross", "purple")}
    for det in detections:
        assert det.score == 1.0 and det.mask.dtype == bool and det.mask.shape == (32, 32)
        assert det.bbox == mask_box(det.mask)
    assert DETECTOR(render_scene([], 32, np.random.default_rng(3))) == []
    with pytest.raises(ValueError, match="uint8"):
        DETECTOR(image.astype(np.float32))


def test_to_mmdet_is_mmdet2_result_form():
    scene = caption_dataset("test", 3, 32, 0).scene(2)  # counting: 2-4 objects of one shape
    detections = DETECTOR(scene.image)
    bboxes, masks = to_mmdet(detections, vocab.SHAPES)
    assert len(bboxes) == len(masks) == len(vocab.SHAPES)
    for c, name in enumerate(vocab.SHAPES):
        assert bboxes[c].dtype == np.float32 and bboxes[c].shape == (len(masks[c]), 5)
        mine = [d for d in detections if d.shape == name]
        assert len(mine) == len(masks[c])
        for row, mask, det in zip(bboxes[c], masks[c], mine):
            assert mask is det.mask
            assert row.tolist() == [*map(float, det.bbox), 1.0]
    with pytest.raises(ValueError, match="not among the class names"):
        to_mmdet(detections, ["dog"])


def test_colour_lookup_answers_from_the_segmentation():
    scene = caption_dataset("test", 6, 32, 0).scene(5)  # color_attr
    detections = DETECTOR(scene.image)
    classify = colour_lookup(detections)
    for det in detections:
        assert classify(scene.image, det.mask, np.array([*det.bbox, 1.0]), list(vocab.GENEVAL_COLOURS)) == det.colour
        assert classify(scene.image, det.mask.copy(), np.zeros(5), list(vocab.GENEVAL_COLOURS)) == det.colour
    with pytest.raises(LookupError):
        classify(scene.image, np.zeros((32, 32), dtype=bool), np.zeros(5), list(vocab.GENEVAL_COLOURS))


def test_geneval_rules_on_detector_output_accept_every_clean_caption():
    data = caption_dataset("test", 120, 32, seed=4)
    options = GenEvalOptions()
    wrong = []
    for i in range(len(data)):
        scene = data.scene(i)
        detections = DETECTOR(scene.image)
        verdict = evaluate_image(scene.metadata, to_mmdet(detections, vocab.SHAPES), scene.image,
                                 class_names=list(vocab.SHAPES), colour_classifier=colour_lookup(detections),
                                 options=options)
        if not verdict["correct"]:
            wrong.append((scene.caption, verdict["reason"]))
    assert len(wrong) <= 1, wrong


def test_counting_threshold_keeps_detections_with_score_one():
    scene = caption_dataset("test", 3, 32, 0).scene(2)
    kept = filter_detections(to_mmdet(DETECTOR(scene.image), vocab.SHAPES), vocab.SHAPES, 0.9, GenEvalOptions())
    assert sum(len(v) for v in kept.values()) == len(scene.objects)
