"""GenEval's rules on hand-built detections (mmdet-2.x form) and the summary formula."""
import numpy as np
import pytest

from vapi_bench.errors import DataError
from vapi_bench.tasks.geneval.rules import (
    GenEvalOptions,
    box_iou_plus_one,
    evaluate_image,
    filter_detections,
    group_by_class,
    relative_position,
    summarize,
)

NAMES = ["person", "cat", "dog", "clock"]
H = W = 64
IMAGE = np.zeros((H, W, 3), np.uint8)


def dets(**per_class):
    """per_class: name -> list of (x1, y1, x2, y2, score); masks are the boxes' pixels."""
    bboxes, masks = [], []
    for name in NAMES:
        rows = per_class.get(name, [])
        bboxes.append(np.array(rows, dtype=np.float32).reshape(-1, 5))
        class_masks = []
        for x1, y1, x2, y2, _ in rows:
            m = np.zeros((H, W), bool)
            m[int(y1):int(y2), int(x1):int(x2)] = True
            class_masks.append(m)
        masks.append(class_masks)
    return bboxes, masks


def judge(metadata, detections, colour=None, **options):
    return evaluate_image(metadata, detections, IMAGE, class_names=NAMES, colour_classifier=colour,
                          options=GenEvalOptions(**options))


def test_single_object_uses_threshold_0_3_strictly():
    md = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}
    assert judge(md, dets(cat=[(0, 0, 8, 8, 0.31)]))["correct"]
    out = judge(md, dets(cat=[(0, 0, 8, 8, 0.3)]))
    assert not out["correct"] and out["reason"] == "expected cat>=1, found 0"
    assert out["tag"] == "single_object" and out["detections"] == {}


def test_counting_uses_0_9_and_exclusion_demands_exactly_n():
    md = {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}],
          "prompt": "a photo of two clocks"}
    two = [(0, 0, 8, 8, 0.95), (20, 0, 28, 8, 0.92)]
    assert judge(md, dets(clock=two))["correct"]
    # a third clock below 0.9 does not count ...
    assert judge(md, dets(clock=two + [(40, 0, 48, 8, 0.85)]))["correct"]
    # ... a third one above it violates the exclude clause
    out = judge(md, dets(clock=two + [(40, 0, 48, 8, 0.91)]))
    assert not out["correct"] and out["reason"] == "expected clock<3, found 3"
    out = judge(md, dets(clock=[two[0], (20, 0, 28, 8, 0.89)]))
    assert out["reason"] == "expected clock>=2, found 1"


def test_two_object_clauses_are_anded():
    md = {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}], "prompt": "p"}
    assert judge(md, dets(cat=[(0, 0, 8, 8, 0.5)], dog=[(20, 0, 28, 8, 0.5)]))["correct"]
    out = judge(md, dets(cat=[(0, 0, 8, 8, 0.5)]))
    assert not out["correct"] and out["reason"] == "expected dog>=1, found 0"


def test_max_objects_caps_per_class_detections_after_sorting():
    md = {"tag": "counting", "include": [{"class": "cat", "count": 3}], "exclude": [{"class": "cat", "count": 4}], "prompt": "p"}
    five = [(i * 10, 0, i * 10 + 8, 8, 0.91 + i * 0.01) for i in range(5)]
    assert not judge(md, dets(cat=five))["correct"]
    assert judge(md, dets(cat=five), max_objects=3)["correct"]
    kept = filter_detections(dets(cat=five), NAMES, 0.9, GenEvalOptions(max_objects=3))["cat"]
    assert [round(float(b[4]), 2) for b, _ in kept] == [0.95, 0.94, 0.93]


def test_no_nms_by_default_and_plus_one_iou_nms_when_enabled():
    overlapping = [(0, 0, 9, 9, 0.9), (1, 0, 10, 9, 0.8), (30, 30, 39, 39, 0.7)]
    assert len(filter_detections(dets(cat=overlapping), NAMES, 0.3, GenEvalOptions())["cat"]) == 3
    # +1 convention: boxes 10x10 px; intersection 9x10 = 90; union 110 -> IoU 0.818
    assert box_iou_plus_one(overlapping[0], overlapping[1]) == pytest.approx(90 / 110)
    kept = filter_detections(dets(cat=overlapping), NAMES, 0.3, GenEvalOptions(max_overlap=0.8))["cat"]
    assert [float(b[4]) for b, _ in kept] == pytest.approx([0.9, 0.7])
    kept = filter_detections(dets(cat=overlapping), NAMES, 0.3, GenEvalOptions(max_overlap=0.85))["cat"]
    assert len(kept) == 3


class FakeColours:
    """Returns the colour painted in the crop's mask: maps box x1 -> colour; records calls."""

    def __init__(self, by_x1):
        self.by_x1, self.calls = by_x1, []

    def __call__(self, image, mask, bbox, choices):
        self.calls.append((bbox[:4].tolist(), mask.sum(), tuple(choices)))
        return self.by_x1[int(bbox[0])]


def test_colour_clause_checks_the_top_count_objects_only():
    md = {"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "red"}], "prompt": "a photo of a red cat"}
    fake = FakeColours({0: "red", 20: "blue"})
    assert judge(md, dets(cat=[(0, 0, 8, 8, 0.9), (20, 0, 28, 8, 0.5)]), fake)["correct"]
    assert len(fake.calls) == 1 and fake.calls[0][1] == 64  # only the best one, with its mask
    assert fake.calls[0][2] == GenEvalOptions().colours
    out = judge(md, dets(cat=[(20, 0, 28, 8, 0.9), (0, 0, 8, 8, 0.5)]), fake)
    assert not out["correct"]
    assert out["reason"] == "expected red cat>=1, found 0 red; and 1 blue"


def test_colour_attribution_reports_each_failing_clause():
    md = {"tag": "color_attr", "include": [{"class": "cat", "count": 1, "color": "red"},
                                           {"class": "dog", "count": 1, "color": "green"}], "prompt": "p"}
    fake = FakeColours({0: "red", 20: "red"})
    out = judge(md, dets(cat=[(0, 0, 8, 8, 0.9)], dog=[(20, 0, 28, 8, 0.9)]), fake)
    assert not out["correct"] and out["reason"] == "expected green dog>=1, found 0 green; and 1 red"


def test_class_aware_classifier_receives_the_class_name():
    class Aware:
        def __init__(self):
            self.asked = []

        def for_class(self, name):
            self.asked.append(name)
            return lambda image, mask, bbox, choices: "white"

    aware = Aware()
    md = {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "white"}], "prompt": "p"}
    assert judge(md, dets(dog=[(0, 0, 8, 8, 0.9)]), aware)["correct"] and aware.asked == ["dog"]


def test_colour_clause_without_classifier_is_a_clear_error():
    md = {"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "red"}], "prompt": "p"}
    with pytest.raises(DataError, match="no colour classifier"):
        judge(md, dets(cat=[(0, 0, 8, 8, 0.9)]))


POSITION = {"tag": "position", "prompt": "a photo of a dog right of a cat",
            "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}


def test_position_rule_and_its_threshold():
    cat = (0, 0, 10, 10, 0.9)
    assert judge(POSITION, dets(cat=[cat], dog=[(20, 0, 30, 10, 0.9)]))["correct"]
    # exact diagonal: revised offset (18, 18) / |(20, 20)| = 0.64 > 0.5 on both axes -> both relations
    assert judge(POSITION, dets(cat=[cat], dog=[(20, 20, 30, 30, 0.9)]))["correct"]
    # steeper: offset (20, 30) -> dx = 18 / 36.06 = 0.499, not "right of"
    out = judge(POSITION, dets(cat=[cat], dog=[(20, 30, 30, 40, 0.9)]))
    assert not out["correct"]
    assert out["reason"] == "expected dog right of target, found below target"
    # centre offset d along x, both boxes 10 px wide: revised = d - 0.1 * 20 = d - 2; "right of"
    # needs (d - 2) / d > 0.5, i.e. d > 4
    assert judge(POSITION, dets(cat=[cat], dog=[(5, 0, 15, 10, 0.9)]))["correct"]
    out = judge(POSITION, dets(cat=[cat], dog=[(4, 0, 14, 10, 0.9)]))
    assert not out["correct"] and out["reason"] == "expected dog right of target, found  target"
    # with threshold 0.05 the same boxes are "right of": (4 - 1) / 4 = 0.75
    assert judge(POSITION, dets(cat=[cat], dog=[(4, 0, 14, 10, 0.9)]), position_threshold=0.05)["correct"]
    # inside the dead zone (d = 2) there is no relation at all
    assert relative_position(np.array([2, 0, 12, 10]), np.array(cat[:4]), 0.1) == set()


def test_relative_position_matches_geneval_formula():
    a, b = np.array([40, 10, 50, 20]), np.array([0, 0, 10, 10])
    assert relative_position(a, b, 0.1) == {"right of"}  # offset (40, 10), revised (38, 8)
    assert relative_position(b, a, 0.1) == {"left of"}
    assert relative_position(np.array([0, 40, 10, 50]), b, 0.1) == {"below"}
    assert relative_position(b, np.array([0, 40, 10, 50]), 0.1) == {"above"}
    assert relative_position(b, b, 0.1) == set()


def test_missing_target_group_fails_the_position_clause():
    out = judge(POSITION, dets(dog=[(20, 0, 30, 10, 0.9)]))
    assert not out["correct"]
    assert out["reason"] == "expected cat>=1, found 0\nno target for dog to be right of"


def test_detections_must_cover_the_vocabulary():
    with pytest.raises(DataError, match="4 classes|vocabulary"):
        evaluate_image(POSITION, ([np.zeros((0, 5))], [[]]), IMAGE, class_names=NAMES, colour_classifier=None)


def test_summary_is_the_unweighted_mean_of_tag_accuracies():
    records = (
        [{"tag": "single_object", "prompt": "a", "correct": True}] * 3
        + [{"tag": "single_object", "prompt": "b", "correct": False}]
        + [{"tag": "counting", "prompt": "c", "correct": False}] * 2
        + [{"tag": "position", "prompt": "d", "correct": c} for c in (True, False, False, False, False, False)]
    )
    summary = summarize(records)
    assert summary["single_object"] == 0.75 and summary["counting"] == 0.0 and summary["position"] == pytest.approx(1 / 6)
    assert summary["overall"] == pytest.approx((0.75 + 0 + 1 / 6) / 3)
    assert summary["correct_images"] == pytest.approx(4 / 12)
    assert summary["correct_prompts"] == pytest.approx(2 / 4)
    with pytest.raises(DataError):
        summarize([])


def test_group_by_class_builds_mmdet2_form():
    masks = np.zeros((3, 4, 4), bool)
    masks[1, 0, 0] = True
    bboxes, per_class_masks = group_by_class(
        np.array([2, 0, 2]), np.array([0.5, 0.6, 0.7]), np.arange(12).reshape(3, 4), masks, num_classes=4
    )
    assert [b.shape for b in bboxes] == [(1, 5), (0, 5), (2, 5), (0, 5)]
    np.testing.assert_allclose(bboxes[2], [[0, 1, 2, 3, 0.5], [8, 9, 10, 11, 0.7]])
    assert per_class_masks[0][0][0, 0] and len(per_class_masks[2]) == 2
    with pytest.raises(DataError, match="labels"):
        group_by_class(np.array([4]), np.array([0.5]), np.zeros((1, 4)), None, num_classes=4)
