"""The `geneval` task: items, GenEval folder layout round trip, scoring mechanics and resume."""
import json
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from geneval_testing import tiny_clip, tiny_mask2former
from PIL import Image

import vapi_bench
from vapi_bench.errors import DataError, UsageError
from vapi_bench.interfaces import StageContext
from vapi_bench.tasks.geneval import layout
from vapi_bench.tasks.geneval import task as task_module
from vapi_bench.tasks.geneval.prompts import coco_class_names
from vapi_bench.tasks.geneval.task import GenEvalTask

TEXT_MODEL = SimpleNamespace(name="t2i", conditioning="text")
RECORDS = [
    {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
    {"tag": "counting", "include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog", "count": 3}],
     "prompt": "a photo of two dogs"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
    {"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a dog left of a cat"},
]


@pytest.fixture
def metadata_file(tmp_path):
    path = tmp_path / "meta.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return str(path)


def test_items_cover_553_prompts_times_4_in_index_order():
    task = vapi_bench.load_task("geneval")
    items = task.items(TEXT_MODEL)
    assert len(items) == 553 * 4 and [i.index for i in items] == list(range(2212))
    assert items[5].meta["prompt_index"] == 1 and items[5].meta["image_index"] == 1
    assert items[5].condition == items[5].meta["metadata"]["prompt"]
    assert len(task.items(TEXT_MODEL, limit=6)) == 6
    with pytest.raises(UsageError, match="text-conditional"):
        task.items(SimpleNamespace(name="c2i", conditioning="class"))
    assert len(vapi_bench.load_task("geneval", images_per_prompt="2").items(TEXT_MODEL)) == 1106


def test_layout_round_trip_is_what_the_official_scripts_read(tmp_path, metadata_file):
    task = GenEvalTask(metadata_file=metadata_file, images_per_prompt=2)
    items = task.items(TEXT_MODEL)
    task.write_layout(tmp_path, items)
    for item in items:
        path = task.image_path(tmp_path, item)
        assert path.relative_to(tmp_path).as_posix() == f"{item.meta['prompt_index']:05d}/samples/{item.meta['image_index']:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(path)
    (tmp_path / "00000" / "samples" / "grid.png").write_bytes(b"")  # ignored, like GenEval does
    (tmp_path / "notes").mkdir()
    found = official_reader(tmp_path)
    assert [(p, j) for p, j, _, _ in found] == [(i.meta["prompt_index"], i.meta["image_index"]) for i in items]
    assert all(metadata == RECORDS[p] for p, _, metadata, _ in found)
    assert layout.read_prompt_metadata(tmp_path, 3) == RECORDS[3]


def official_reader(root):
    """How GenEval's evaluate_images.py walks a folder: numeric subfolders, json.load of
    metadata.jsonl, files matching \\d+\\.png in samples/ (sorted here for comparison)."""
    found = []
    for sub in sorted(os.listdir(root)):
        folder = os.path.join(root, sub)
        if not os.path.isdir(folder) or not sub.isdigit():
            continue
        with open(os.path.join(folder, "metadata.jsonl")) as fp:
            metadata = json.load(fp)
        for name in sorted(os.listdir(os.path.join(folder, "samples"))):
            if os.path.isfile(os.path.join(folder, "samples", name)) and re.match(r"\d+\.png", name):
                found.append((int(sub), int(name[:-4]), metadata, name))
    return found


class EveryClassOnce:
    """A detector that finds one object of every class, filling the whole image."""

    name = "every-class-once"

    def __init__(self):
        self.calls = 0

    def describe(self):
        return {"backend": self.name}

    def detect(self, image):
        self.calls += 1
        h, w = image.shape[:2]
        box = np.array([[0, 0, w, h, 0.95]], np.float32)
        return [box.copy() for _ in range(80)], [[np.ones((h, w), bool)] for _ in range(80)]


class AlwaysRed:
    def __init__(self, clip, **kwargs):
        pass

    def for_class(self, name):
        return lambda image, mask, bbox, choices: "red"


def write_samples(task, root, items):
    task.write_layout(root, items)
    for item in items:
        path = task.image_path(root, item)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(path)


def test_score_applies_rules_per_image_and_resumes(tmp_path, metadata_file, monkeypatch):
    detector = EveryClassOnce()
    monkeypatch.setattr(task_module, "build_detector", lambda *a, **k: detector)
    monkeypatch.setattr(task_module, "load_clip", lambda *a, **k: SimpleNamespace(description={"arch": "fake"}))
    monkeypatch.setattr(task_module, "ClipColourClassifier", AlwaysRed)
    task = GenEvalTask(metadata_file=metadata_file, images_per_prompt=2)
    items = task.items(TEXT_MODEL)
    write_samples(task, tmp_path / "samples", items)
    ctx = StageContext(out_dir=tmp_path / "score", device=torch.device("cpu"), seed=0)

    result = task.score(tmp_path / "samples", items, ctx)
    by_tag = {r["tag"]: r for r in result.per_sample}
    assert by_tag["single_object"]["correct"] and by_tag["colors"]["correct"]
    assert by_tag["counting"]["reason"] == "expected dog>=2, found 1"
    assert by_tag["position"]["reason"] == "expected dog left of target, found  target"  # same box
    assert result.metrics == {"single_object": 1.0, "counting": 0.0, "colors": 1.0, "position": 0.0,
                              "overall": 0.5, "correct_images": 0.5, "correct_prompts": 0.5}
    assert [r["index"] for r in result.per_sample] == list(range(8)) and detector.calls == 8
    assert result.per_sample[0]["detections"]["cat"] == [[0.0, 0.0, 16.0, 16.0, pytest.approx(0.95)]]
    assert result.extra["settings"]["options"]["counting_threshold"] == 0.9

    again = task.score(tmp_path / "samples", items, ctx)  # resumes from the records file
    assert detector.calls == 8 and again.metrics == result.metrics


def test_missing_or_corrupt_image_is_named(tmp_path, metadata_file, monkeypatch):
    monkeypatch.setattr(task_module, "build_detector", lambda *a, **k: EveryClassOnce())
    task = GenEvalTask(metadata_file=metadata_file, images_per_prompt=1)
    items = task.items(TEXT_MODEL)[:1]
    task.write_layout(tmp_path, items)
    ctx = StageContext(out_dir=tmp_path / "s", device=torch.device("cpu"), seed=0)
    with pytest.raises(DataError, match="00000/samples/0000.png is missing"):
        task.score(tmp_path, items, ctx)
    task.image_path(tmp_path, items[0]).parent.mkdir(parents=True)
    task.image_path(tmp_path, items[0]).write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match="0000.png is corrupt"):
        task.score(tmp_path, items, ctx)


def test_random_weight_mask2former_and_clip_score_end_to_end(tmp_path, metadata_file, monkeypatch):
    from vapi_bench.tasks.geneval.mask2former import Mask2FormerDetector

    monkeypatch.setattr(task_module, "build_detector", lambda *a, **k: Mask2FormerDetector(tiny_mask2former(), scale=(64, 48)))
    monkeypatch.setattr(task_module, "load_clip", lambda *a, **k: tiny_clip())
    task = GenEvalTask(metadata_file=metadata_file, images_per_prompt=1, threshold=0.0, counting_threshold=0.0)
    items = task.items(TEXT_MODEL)
    write_samples(task, tmp_path / "samples", items)
    result = task.score(tmp_path / "samples", items, StageContext(out_dir=tmp_path / "s", device=torch.device("cpu"), seed=0))
    assert set(result.metrics) == {"single_object", "counting", "colors", "position", "overall", "correct_images", "correct_prompts"}
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    # threshold 0 keeps every class the random model proposes (100 proposals, <= 16 per class)
    assert sum(len(v) for v in result.per_sample[0]["detections"].values()) > 0
    assert result.extra["detector"]["backend"] == "hf-mask2former"


def test_custom_metadata_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    with pytest.raises(DataError, match="bad.jsonl:2"):
        GenEvalTask(metadata_file=str(bad))
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"tag": "single_object", "include": [{"class": "unicorn", "count": 1}], "prompt": "p"}))
    with pytest.raises(DataError, match="unicorn"):
        GenEvalTask(metadata_file=str(unknown))
    with pytest.raises(UsageError, match="detector"):
        vapi_bench.load_task("geneval", detector="yolo")


def test_registered_with_documented_params():
    from vapi_bench.registry import get_registry

    entry = get_registry().get("tasks", "geneval")
    names = {p.name for p in entry.params}
    assert {"images_per_prompt", "detector", "detector_weights", "clip_weights", "threshold", "max_overlap"} <= names
    assert len(coco_class_names()) == 80


def test_requirements_name_detector_and_clip_files():
    default = GenEvalTask().requirements()  # GenEval's own checkpoint, sha256-checked and converted
    assert [r.url for r in default] == [
        "https://download.openmmlab.com/mmdetection/v2.0/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/"
        "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth",
        "hf://timm/vit_large_patch14_clip_224.openai/open_clip_pytorch_model.bin"]
    assert default[0].sha256 == "743b7d99" and default[0].derive is not None
    urls = [r.url for r in GenEvalTask(detector="hf-mask2former").requirements()]
    assert urls == ["hf://facebook/mask2former-swin-small-coco-instance/config.json",
                    "hf://facebook/mask2former-swin-small-coco-instance/pytorch_model.bin",
                    "hf://timm/vit_large_patch14_clip_224.openai/open_clip_pytorch_model.bin"]
    assert GenEvalTask(detector_weights="random", clip_weights="random").requirements() == []
    mmdet = GenEvalTask(detector="mmdet", detector_weights="/ckpt.pth", clip_weights="random").requirements()
    assert [(r.what, r.spec) for r in mmdet] == [("mmdet", "/ckpt.pth")]


def test_core_sampling_engine_fills_the_geneval_layout(tmp_path, metadata_file, monkeypatch):
    from vapi_bench.interfaces import SamplingRecipe
    from vapi_bench.sampling import sample_to_dir

    class FakeTextGenerator:
        name, conditioning, policy = "fake-t2i", "text", torch.nn.Identity()
        num_tokens, codebook_size = 1, 97  # the core checks every sampled batch against these

        def sample(self, conds, *, seeds, recipe):
            return torch.tensor([[s % 97] for s in seeds])

        def decode(self, tokens):
            return (tokens.float().view(-1, 1, 1, 1) / 97).expand(-1, 3, 12, 12) * 2 - 1

    monkeypatch.setattr(task_module, "build_detector", lambda *a, **k: EveryClassOnce())
    task = GenEvalTask(metadata_file=metadata_file, images_per_prompt=2)
    items = task.items(TEXT_MODEL)[:4]  # single_object and counting prompts: no colour check
    task.write_layout(tmp_path, items)
    assert sample_to_dir(FakeTextGenerator(), task, items, SamplingRecipe(), seed=0, sample_dir=tmp_path) == 4
    assert [(p, j) for p, j, _, _ in official_reader(tmp_path)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    result = task.score(tmp_path, items, StageContext(out_dir=tmp_path / "s", device=torch.device("cpu"), seed=0))
    assert result.metrics["single_object"] == 1.0 and result.metrics["counting"] == 0.0
