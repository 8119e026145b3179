"""Quality gates of the SHIPPED shapes zoo (plugins/shapes/zoo), measured afresh on small sets.

The images and sampling seeds differ from those `zoo build` used for the manifest's figures
(other indices, another seed stream), so these are independent checks of the same gates:
- VQ round trips let the exact detector recover the true objects in >= 95% of held-out images;
- c2i samples with the default (CFG) recipe are classified as the requested class >= 80%;
- t2i samples score >= 0.8 on shapes-geneval single_object.

The shipped zoo (full build, 20.4 min on 2 threads) records reconstruction recovery 0.978, c2i
class accuracy 0.94 and t2i single_object 0.875 at the default CFG 2 in its manifest; these tests
re-measure them on draws the build never saw.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vapi_bench import load_generator
from vapi_bench.imageio import to_uint8
from vapi_bench.seeding import derive_seed
from vapi_bench.plugins.shapes.data import caption_dataset, class_dataset
from vapi_bench.plugins.shapes.detector import ShapesDetector, recovers_objects
from vapi_bench.plugins.shapes.features import load_feature_net
from vapi_bench.plugins.shapes.vocab import NUM_CLASSES
from vapi_bench.plugins.shapes.zoo.files import PACKAGED_ZOO, read_manifest

SEED = 2024  # not the build's seed: fresh held-out scenes and sampling seeds
FIRST = 1000  # skip the test-split indices the build measured on


@pytest.fixture(scope="module")
def c2i():
    return load_generator("shapes-c2i")


def _sample(generator, conditions, stream: str) -> np.ndarray:
    seeds = [derive_seed(SEED, i, stream) for i in range(len(conditions))]
    with torch.no_grad():
        tokens = generator.sample(conditions, seeds=seeds, recipe=generator.default_recipe)
        return to_uint8(generator.decode(tokens))


def test_shipped_zoo_matches_its_manifest():
    manifest = read_manifest(PACKAGED_ZOO)  # verifies every file's sha256
    assert manifest["quick"] is False
    assert manifest["quality"]["gates"]["reconstruction_recovery"] >= 0.95
    assert sum(r["bytes"] for r in manifest["files"].values()) <= 20 * 1024 * 1024


def test_manifest_records_passing_sampling_gates():
    gates = read_manifest(PACKAGED_ZOO)["quality"]["gates"]
    assert gates["c2i_class_accuracy"] >= 0.80
    assert gates["t2i_single_object"] >= 0.80


@pytest.mark.parametrize("make", [class_dataset, caption_dataset], ids=["class", "captions"])
def test_reconstructions_keep_every_object_detectable(c2i, make):
    dataset = make("test", FIRST + 60, 32, SEED)
    scenes = [dataset.scene(i) for i in range(FIRST, FIRST + 60)]
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
    with torch.no_grad():
        recon = to_uint8(c2i.decode(c2i.encode(images.float() / 127.5 - 1.0)))
    detector = ShapesDetector()
    recovered = np.mean([recovers_objects(detector(img), s.objects, 32) for img, s in zip(recon, scenes)])
    assert recovered >= 0.95, f"the detector recovers the objects of only {recovered:.1%} of reconstructions"


def test_c2i_samples_with_cfg_are_the_requested_class(c2i):
    labels = [i % NUM_CLASSES for i in range(4 * NUM_CLASSES)]
    images = _sample(c2i, labels, "test/c2i")
    net = load_feature_net()
    with torch.no_grad():
        predicted = net.logits(torch.from_numpy(images).permute(0, 3, 1, 2)).argmax(dim=1).numpy()
    accuracy = float(np.mean(predicted == np.array(labels)))
    assert accuracy >= 0.80, f"class accuracy {accuracy:.1%} with cfg {c2i.default_recipe.cfg_scale}"


def test_t2i_single_object_geneval_score():
    from vapi_bench.tasks.geneval.rules import summarize
    from vapi_bench.tasks.shapes.geneval_task import ShapesGenEvalTask

    t2i = load_generator("shapes-t2i")
    task = ShapesGenEvalTask(tags="single_object")
    records = [record for record in task.metadata for _ in range(16)]
    images = _sample(t2i, [r["prompt"] for r in records], "test/t2i")
    score = summarize([task.score_image(img, r) for img, r in zip(images, records)])["single_object"]
    assert score >= 0.80, f"shapes-geneval single_object {score:.2f} with cfg {t2i.default_recipe.cfg_scale}"
