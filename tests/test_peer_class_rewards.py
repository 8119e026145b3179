"""`ar-grpo` with text-image rewards on class-conditional generators: the reward spec's scorer options,
the exact text each class label becomes (generator names, a class_names file, the prompt), the
ImageNet names LlamaGen c2i models carry, and the clear error when a text scorer meets a model with
no class names. Scorers are tiny random open_clip models."""
from __future__ import annotations

import pytest
import torch
from geneval_testing import register_tiny_clip, register_tiny_hps, write_tiny_hps_checkpoint
from helpers_toy_generator import RandomImages, tiny_llamagen

import vapi_bench
from vapi_bench.errors import UsageError
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.peers.ar_grpo import AR_GRPO_PARAMS, ArGrpo
from vapi_bench.plugins.peers.rewards import RewardMix, RewardTerm, class_texts, parse_reward_spec
from vapi_bench.plugins.scorers.clip_score import ClipScoreScorer
from vapi_bench.plugins.scorers.hps import HpsScorer

CPU = torch.device("cpu")
NAMES = ("tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark", "tiger shark")


@pytest.fixture
def seen_texts(monkeypatch):
    """Every text list the clip-score and HPS scorers are asked to score, in call order."""
    calls: list[list[str]] = []
    for cls in (ClipScoreScorer, HpsScorer):
        original = cls.score_pixels

        def spy(self, pixels, texts, _original=original):
            calls.append(list(texts))
            return _original(self, pixels, texts)

        monkeypatch.setattr(cls, "score_pixels", spy)
    return calls


def _clip_spec(weight: float = 1.0) -> str:
    return f"clip-score[arch={register_tiny_clip()},weights=random]:{weight:g}"


def test_reward_spec_takes_scorer_options():
    terms = parse_reward_spec("clip-score[arch=ViT-B-32, weights=hf://a/b.pt]:5,hpsv2.1 , x:0.5", "w")
    assert terms == [RewardTerm("clip-score", 5.0, {"arch": "ViT-B-32", "weights": "hf://a/b.pt"}),
                     RewardTerm("hpsv2.1", 1.0, {}), RewardTerm("x", 0.5, {})]
    for bad, message in (("a[arch]:1", "not key=value"), ("a[k=v:1", "not name:weight"), ("a[k=v]:x", "not a number")):
        with pytest.raises(UsageError, match=message):
            parse_reward_spec(bad, "w")


def test_shapes_c2i_labels_become_geneval_style_texts(seen_texts):
    """The shapes generator names its 24 classes; clip-score sees 'a photo of a <colour> <shape>'."""
    generator = vapi_bench.load_generator("shapes-c2i")
    classes = class_texts(generator, "", "", "w")
    mix = RewardMix(_clip_spec(2), CPU, "w", classes=classes)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    total, parts = mix(images, [0, 7, 23])
    expected_texts = ["a photo of a red circle", "a photo of a yellow square", "a photo of a white cross"]
    assert seen_texts == [expected_texts]
    by_text = mix.scorers[0](images, conditions=expected_texts)
    torch.testing.assert_close(parts["clip-score"], by_text)
    torch.testing.assert_close(total, 2 * by_text)
    assert generator.num_classes == len(generator.class_names) == 24


def test_class_names_file_and_prompt_override_the_generator(tmp_path, seen_texts):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{n}\n" for n in NAMES))
    generator = tiny_llamagen(dropout=False)  # 4 classes, no names of its own
    classes = class_texts(generator, str(names), "an image of {}", "w")
    mix = RewardMix(_clip_spec(), CPU, "w", classes=classes)
    mix(torch.zeros(2, 3, 32, 32), [1, 0])
    assert seen_texts == [["an image of goldfish, Carassius auratus", "an image of tench, Tinca tinca"]]
    generator.class_names = ("a", "b", "c", "d")
    own = RewardMix(_clip_spec(), CPU, "w", classes=class_texts(generator, "", "", "w"))
    own(torch.zeros(1, 3, 32, 32), [3])
    assert seen_texts[-1] == ["a photo of d"]  # LlamaGen's prompt is AR-GRPO's "a photo of {}"


def test_hps_reward_reads_the_same_class_texts(tmp_path, seen_texts):
    checkpoint = tmp_path / "hps.pt"
    write_tiny_hps_checkpoint(checkpoint)
    generator = tiny_llamagen(dropout=False)
    generator.class_names = NAMES
    spec = f"hpsv2.1[weights={checkpoint},arch={register_tiny_hps()}]:5"
    mix = RewardMix(spec, CPU, "w", classes=class_texts(generator, "", "", "w"))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    total, _ = mix(images, [2, 3])
    texts = ["a photo of great white shark", "a photo of tiger shark"]
    assert seen_texts == [texts]
    torch.testing.assert_close(total, 5 * mix.scorers[0](images, conditions=texts))


def test_a_text_reward_on_a_nameless_class_model_is_a_clear_error(tmp_path):
    generator = tiny_llamagen(dropout=False)
    params = resolve_params(AR_GRPO_PARAMS, {"steps": 1, "batch_size": 2, "group_size": 2, "rewards": _clip_spec()},
                            "ar-grpo")
    ctx = StageContext(out_dir=tmp_path, device=CPU, seed=0)
    with pytest.raises(UsageError, match=r"'clip-score' scores images against text.*class_names=<file"):
        ArGrpo(**params).finetune(generator, RandomImages(), ctx)
    names = tmp_path / "three.txt"
    names.write_text("a\nb\nc\n")
    with pytest.raises(UsageError, match=r"names 3 classes but generator 'llamagen-b' has 4"):
        class_texts(generator, str(names), "", "w")
    with pytest.raises(UsageError, match="must contain"):
        class_texts(generator, "", "a photo", "w")
    assert class_texts(vapi_bench.load_generator("shapes-t2i"), "", "", "w") is None  # prompts are the texts


def test_ar_grpo_trains_a_c2i_model_on_clip_rewards_of_its_class_names(tmp_path, seen_texts):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{n}\n" for n in NAMES))
    generator = tiny_llamagen(dropout=False, class_dropout_prob=0.1)
    before = {n: p.clone() for n, p in generator.policy.named_parameters()}
    records: list[dict] = []
    params = resolve_params(AR_GRPO_PARAMS, {"steps": 1, "batch_size": 2, "group_size": 2, "lr": 1e-3,
                                             "rewards": _clip_spec(5), "class_names": str(names)}, "ar-grpo")
    data = RandomImages()
    ArGrpo(**params).finetune(generator, data, StageContext(out_dir=tmp_path, device=CPU, seed=0, log=records.append))
    assert "reward_clip-score" in records[0]
    assert records[0]["reward_mean"] == pytest.approx(5 * records[0]["reward_clip-score"], rel=1e-5)
    prompts = {text for call in seen_texts for text in call}
    assert prompts <= {f"a photo of {n}" for n in NAMES} and len(seen_texts[0]) == 4  # 2 classes x G = 2
    assert any(not torch.equal(p, before[n]) for n, p in generator.policy.named_parameters())


def test_llamagen_imagenet_models_carry_the_wordnet_class_names():
    from vapi_bench.plugins.llamagen.factory import imagenet_class_names

    names = imagenet_class_names()
    assert len(names) == 1000 and names[:2] == ("tench, Tinca tinca", "goldfish, Carassius auratus")
    assert names[134] == names[517] == "crane" and names[639] == "maillot, tank suit"
    timm_data = pytest.importorskip("timm.data")
    info = timm_data.ImageNetInfo()
    assert names == tuple(info.index_to_description(i) for i in range(1000))  # timm's WordNet lemmas
    imagenet = tiny_llamagen(num_classes=1000)
    assert imagenet.class_names == names and imagenet.class_prompt == "a photo of {}"
    assert tiny_llamagen().class_names == ()  # 4 classes: not ImageNet, no names
