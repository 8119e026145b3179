"""The shapes world's verifiable rewards (`shapes-class-prob`, `shapes-geneval`) and the caption
index the t2i reward reads prompts through."""
from __future__ import annotations

import pytest
import torch

import vapi_bench
from vapi_bench.errors import UsageError
from vapi_bench.imageio import to_uint8
from vapi_bench.plugins.shapes.caption_records import record_for_prompt
from vapi_bench.plugins.shapes.data import caption_dataset, class_dataset
from vapi_bench.plugins.shapes.features import DEFAULT_WEIGHTS, REWARD_WEIGHTS, load_feature_net
from vapi_bench.plugins.shapes.rewards import REWARD_NETWORK
from vapi_bench.tasks.shapes.geneval_task import ShapesGenEvalTask, shapes_metadata


def test_every_caption_the_data_and_the_task_draw_maps_back_to_its_record():
    data = caption_dataset("train", n=48)
    for i in range(len(data)):
        record = data.metadata(i)
        assert record_for_prompt(record["prompt"]) == record
    for record in shapes_metadata():
        assert record_for_prompt(record["prompt"]) == record
    with pytest.raises(UsageError, match="not a caption"):
        record_for_prompt("a photo of a dog")


def test_geneval_reward_is_the_tasks_per_image_correctness():
    data = caption_dataset("test", n=12)
    images = torch.stack([data[i][0] for i in range(len(data))])
    prompts = [data[i][1] for i in range(len(data))]
    wrong = prompts[1:] + prompts[:1]  # every image scored against its neighbour's caption
    reward = vapi_bench.load_scorer("shapes-geneval")
    assert reward.higher_is_better and not reward.needs_reference and reward.needs_conditions
    task = ShapesGenEvalTask()
    pixels = to_uint8(images)
    for captions in (prompts, wrong):
        expected = [float(task.score_image(p, record_for_prompt(c))["correct"]) for p, c in zip(pixels, captions)]
        assert reward(images, conditions=captions).tolist() == expected
    assert reward(images, conditions=prompts).tolist() == [1.0] * len(data)  # renders satisfy their captions
    assert reward(images, conditions=wrong).mean() < 1.0
    with pytest.raises(UsageError, match="needs the condition"):
        reward(images)


def test_class_probability_is_the_feature_networks_softmax_at_the_requested_class():
    data = class_dataset("test", n=24)
    images = torch.stack([data[i][0] for i in range(24)])
    labels = list(range(24))
    reward = vapi_bench.load_scorer("shapes-class-prob")
    assert REWARD_NETWORK == REWARD_WEIGHTS != DEFAULT_WEIGHTS  # the reward is never the metric's network
    net = load_feature_net(REWARD_WEIGHTS)
    with torch.no_grad():
        probs = torch.softmax(net(images)["logits"], dim=1)
    expected = torch.tensor([probs[i, c].item() for i, c in enumerate(labels)])
    got = reward(images, conditions=labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.mean() > 0.5  # clean renders of the requested class
    shuffled = labels[5:] + labels[:5]
    assert reward(images, conditions=shuffled).mean() < 0.2
    explicit = vapi_bench.load_scorer("shapes-class-prob", weights=str(REWARD_WEIGHTS))
    torch.testing.assert_close(explicit(images, conditions=labels), got)
    evaluation = vapi_bench.load_scorer("shapes-class-prob", weights=str(DEFAULT_WEIGHTS))
    assert not torch.allclose(evaluation(images, conditions=labels), got)  # a different network
    with pytest.raises(UsageError, match=r"\[0, 24\)"):
        reward(images[:1], conditions=[24])
    with pytest.raises(UsageError, match="ints"):
        reward(images[:1], conditions=["a photo of a circle"])
