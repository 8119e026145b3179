"""The procedural shapes data: determinism, disjoint splits, palette separation, exact captions."""
from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
import torch

from vapi_bench.errors import DataError
from vapi_bench.imageio import to_uint8
from vapi_bench.plugins.shapes import vocab
from vapi_bench.plugins.shapes.data import (
    CaptionShapes,
    ClassShapes,
    ShapeObject,
    caption_dataset,
    class_dataset,
    mask_box,
    object_mask,
    random_record,
    relation_components,
    render_record,
    render_scene,
)
from vapi_bench.plugins.shapes.datasets import register_datasets_impl
from vapi_bench.plugins.shapes.detector import COLOUR_DISTANCE
from vapi_bench.tasks.geneval.prompts import dump_metadata_jsonl, generate_metadata
from vapi_bench.tasks.geneval.rules import GenEvalOptions, evaluate_image, relative_position


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_vocabulary_is_a_geneval_subset_with_class_ids():
    assert len(vocab.SHAPES) >= 4 and len(vocab.COLOURS) >= 6
    assert set(vocab.COLOURS) <= set(vocab.GENEVAL_COLOURS)
    assert vocab.NUM_CLASSES == len(vocab.SHAPES) * len(vocab.COLOURS)
    for label in range(vocab.NUM_CLASSES):
        shape, colour = vocab.class_attributes(label)
        assert vocab.class_id(shape, colour) == label
        assert label == vocab.SHAPES.index(shape) * len(vocab.COLOURS) + vocab.COLOURS.index(colour)
    with pytest.raises(ValueError, match="outside"):
        vocab.class_attributes(vocab.NUM_CLASSES)
    assert vocab.plural("cross") == "crosses" and vocab.plural("circle") == "circles"


def test_class_items_are_deterministic_balanced_and_in_range():
    data = class_dataset("train", 50, 32, seed=3)
    again = class_dataset("train", 50, 32, seed=3)
    for i in (49, 0, 17):  # any access order gives the same item
        image, label = data[i]
        assert torch.equal(image, again[i][0]) and label == again[i][1] == i % vocab.NUM_CLASSES
    image, _ = data[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.min() >= -1.0 and image.max() <= 1.0
    # pixels survive the core's float -> uint8 conversion exactly
    assert np.array_equal(to_uint8(image[None])[0], data.scene(0).image)
    assert data.labels() == [i % vocab.NUM_CLASSES for i in range(50)]
    assert not np.array_equal(class_dataset("train", 1, 32, seed=4).scene(0).image, data.scene(0).image)


def test_splits_use_disjoint_seed_streams():
    digests = {split: {_digest(class_dataset(split, 100, 32, 0).scene(i).image) for i in range(100)}
               for split in ("train", "test", "ref")}
    for a, b in itertools.combinations(digests, 2):
        assert not digests[a] & digests[b], (a, b)
    assert all(len(d) == 100 for d in digests.values())


def test_background_is_far_from_every_object_colour():
    palette = np.array([vocab.PALETTE[c] for c in vocab.COLOURS], dtype=np.float64)
    data = caption_dataset("train", 60, 32, 0)
    for i in range(60):
        scene = data.scene(i)
        objects = np.zeros((32, 32), dtype=bool)
        for obj in scene.objects:
            objects |= object_mask(obj, 32)
        background = scene.image[~objects].astype(np.float64)
        distance = np.linalg.norm(background[:, None] - palette[None], axis=-1)
        assert distance.min() > COLOUR_DISTANCE + 10
        assert background.std() > 3.0  # textured, not flat


def test_size_64_and_bad_arguments():
    image, _ = class_dataset("test", 2, 64, 0)[1]
    assert image.shape == (3, 64, 64)
    with pytest.raises(DataError, match="32 or 64"):
        class_dataset("train", 2, 48, 0)
    with pytest.raises(DataError, match="split"):
        caption_dataset("validation", 2, 32, 0)
    with pytest.raises(DataError, match="shape"):
        ShapeObject("hexagon", "red", 10, 10, 4)
    with pytest.raises(IndexError):
        class_dataset("train", 2, 32, 0)[2]


def test_render_scene_draws_each_object_in_its_colour():
    rng = np.random.default_rng(0)
    obj = ShapeObject("square", "blue", 16.0, 16.0, 6.0)
    image = render_scene([obj], 32, rng)
    inside = image[object_mask(obj, 32)].astype(float)
    assert np.abs(inside.mean(axis=0) - vocab.PALETTE["blue"]).max() < 12
    assert mask_box(object_mask(obj, 32)) == (11, 11, 21, 21)


def test_caption_records_are_genevals_own_lines():
    """Every caption record is byte-identical to a line GenEval's generator emits for the vocabulary."""
    official = set(dump_metadata_jsonl(generate_metadata(list(vocab.SHAPES), list(vocab.COLOURS), seed=0, n=3000,
                                                         uncoloured_class=None)).splitlines())
    rng = np.random.default_rng(1)
    seen_by_tag: dict[str, set[str]] = {}
    for i in range(1200):
        tag = vocab.TAGS[i % 6]
        line = dump_metadata_jsonl([random_record(tag, rng)]).strip()
        assert line in official, line
        seen_by_tag.setdefault(tag, set()).add(line)
    # the small tag spaces are covered completely
    assert len(seen_by_tag["single_object"]) == len(vocab.SHAPES)
    assert len(seen_by_tag["counting"]) == 3 * len(vocab.SHAPES)
    assert len(seen_by_tag["colors"]) == len(vocab.SHAPES) * len(vocab.COLOURS)


def _truth_as_detections(objects, size):
    boxes = [[] for _ in vocab.SHAPES]
    masks = [[] for _ in vocab.SHAPES]
    colour_of = {}
    for obj in objects:
        mask = object_mask(obj, size)
        c = vocab.SHAPES.index(obj.shape)
        boxes[c].append([*mask_box(mask), 1.0])
        masks[c].append(mask)
        colour_of[id(mask)] = obj.colour
    detections = ([np.asarray(b, dtype=np.float32).reshape(-1, 5) for b in boxes], masks)
    return detections, lambda image, mask, bbox, choices: colour_of[id(mask)]


@pytest.mark.parametrize("size", [32, 64])
def test_captions_hold_exactly_under_genevals_rules(size):
    data = caption_dataset("test", 240 if size == 32 else 60, size, 5)
    tags = []
    for i in range(len(data)):
        scene = data.scene(i)
        assert scene.caption == scene.metadata["prompt"] == data[i][1]
        assert 1 <= len(scene.objects) <= 4
        masks = [object_mask(o, size) for o in scene.objects]
        assert all(m.any() for m in masks)
        for a, b in itertools.combinations(masks, 2):
            assert not (a & b).any()
        detections, colour = _truth_as_detections(scene.objects, size)
        verdict = evaluate_image(scene.metadata, detections, scene.image, class_names=list(vocab.SHAPES),
                                 colour_classifier=colour, options=GenEvalOptions())
        assert verdict["correct"], (scene.caption, verdict["reason"])
        tags.append(scene.metadata["tag"])
    assert tags[:6] == list(vocab.TAGS)


def test_render_record_realises_any_geneval_record():
    records = generate_metadata(list(vocab.SHAPES), list(vocab.COLOURS), n=20, uncoloured_class=None)
    for k, record in enumerate(records):
        scene = render_record(record, 32, np.random.default_rng(k))
        wanted = sum(clause["count"] for clause in record["include"])
        assert len(scene.objects) == wanted
    with pytest.raises(DataError, match="not a shape"):
        render_record({"tag": "single_object", "prompt": "a photo of a dog",
                       "include": [{"class": "dog", "count": 1}]}, 32, np.random.default_rng(0))


def test_dataset_entries_build_the_datasets():
    entries = []
    register_datasets_impl(entries.append)
    by_name = {e.name: e for e in entries}
    assert set(by_name) == {"shapes-c2i", "shapes-captions"}
    for entry in entries:
        assert [p.name for p in entry.params] == ["n", "size", "seed", "split"]
    c2i = by_name["shapes-c2i"].factory(n=5, size=32, seed=1, split="ref")
    captions = by_name["shapes-captions"].factory(n=7, size=64, seed=0, split="train")
    assert isinstance(c2i, ClassShapes) and len(c2i) == 5 and c2i.split == "ref"
    assert isinstance(captions, CaptionShapes) and captions[6][0].shape == (3, 64, 64)


def test_relation_components_agree_with_genevals_relative_position():
    rng = np.random.default_rng(0)
    for _ in range(500):
        boxes = []
        for _ in range(2):
            x1, y1 = rng.uniform(0, 24, size=2)
            boxes.append((x1, y1, x1 + rng.uniform(2, 8), y1 + rng.uniform(2, 8)))
        dx, dy = relation_components(*boxes)
        mine = {name for name, hit in (("left of", dx < -0.5), ("right of", dx > 0.5), ("above", dy < -0.5),
                                       ("below", dy > 0.5)) if hit}
        assert mine == relative_position(np.array(boxes[0]), np.array(boxes[1]), 0.1)
