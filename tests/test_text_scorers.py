"""Text-image scorers (hpsv2, hpsv2.1, clip-score) on tiny random open_clip models: each checked
against its official formula written out here independently, plus checkpoint loading and errors."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from geneval_testing import register_tiny_clip, register_tiny_hps, write_tiny_hps_checkpoint
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

import vapi_bench
from vapi_bench.errors import CheckpointError, DataError, OfflineError, UsageError

#: The key names of an HPS v2 / v2.1 checkpoint's state_dict (open_clip ViT-H-14), layer index as N.
HPS_KEY_NAMES = sorted(
    ["ln_final.bias", "ln_final.weight", "logit_scale", "positional_embedding", "text_projection",
     "token_embedding.weight", "visual.class_embedding", "visual.conv1.weight", "visual.ln_post.bias",
     "visual.ln_post.weight", "visual.ln_pre.bias", "visual.ln_pre.weight", "visual.positional_embedding",
     "visual.proj"]
    + [f"{tower}transformer.resblocks.N.{name}" for tower in ("", "visual.") for name in (
        "attn.in_proj_bias", "attn.in_proj_weight", "attn.out_proj.bias", "attn.out_proj.weight", "ln_1.bias",
        "ln_1.weight", "ln_2.bias", "ln_2.weight", "mlp.c_fc.bias", "mlp.c_fc.weight", "mlp.c_proj.bias",
        "mlp.c_proj.weight")]
)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PROMPTS = ["a red car", "two cats on a mat", "an apple", "a blue sky over a field"]


def _normalised_keys(state: dict) -> list[str]:
    return sorted({re.sub(r"resblocks\.\d+\.", "resblocks.N.", key) for key in state})


@pytest.fixture(scope="module")
def tiny_hps_arch() -> str:
    return register_tiny_hps()


@pytest.fixture(scope="module")
def hps_checkpoint(tmp_path_factory):
    """A random tiny model saved in HPS's checkpoint layout, and the model."""
    path = tmp_path_factory.mktemp("hps") / "HPS_v2.1_compressed.pt"
    return path, write_tiny_hps_checkpoint(path)


@pytest.fixture(scope="module")
def hps_scorer(tiny_hps_arch, hps_checkpoint):
    return vapi_bench.load_scorer("hpsv2.1", weights=str(hps_checkpoint[0]), arch=tiny_hps_arch)


def _images(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _pil(images: torch.Tensor) -> list[Image.Image]:
    """The PNG the sample stage would write: clamp(127.5 x + 128) as uint8."""
    pixels = torch.clamp(127.5 * images + 128, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(p) for p in pixels]


def _hps_official(model, tokenizer, image: Image.Image, prompt: str, size: int) -> float:
    """hpsv2.score for one image: preprocess_val (RGB, ToTensor, ResizeMaxSize on the tensor with
    zero padding, Normalize), model(image, text) -> normalised features, diag(img @ txt.T)."""
    x = T.ToTensor()(image.convert("RGB"))
    height, width = x.shape[-2:]
    scale = size / max(height, width)
    new = [round(height * scale), round(width * scale)]
    x = TF.resize(x, new, interpolation=T.InterpolationMode.BICUBIC)
    pad_h, pad_w = size - new[0], size - new[1]
    x = TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    x = T.Normalize(OPENAI_MEAN, OPENAI_STD)(x)
    with torch.no_grad():
        image_features, text_features, _ = model(x.unsqueeze(0), tokenizer([prompt]))
    return float(torch.diagonal(image_features @ text_features.T)[0])


@pytest.mark.parametrize("height,width", [(32, 32), (40, 40), (20, 28)])
def test_hps_matches_the_package_formula(hps_scorer, hps_checkpoint, tiny_hps_arch, height, width):
    import open_clip

    _, model = hps_checkpoint
    tokenizer = open_clip.get_tokenizer(tiny_hps_arch)
    images = _images(4, height, width, seed=height + width)
    expected = [_hps_official(model, tokenizer, image, prompt, 32) for image, prompt in zip(_pil(images), PROMPTS)]
    got = hps_scorer(images, conditions=PROMPTS)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hps_scorer.score(images, conditions=PROMPTS), got)
    assert len(set(np.round(got.numpy(), 6))) == 4  # the prompts really change the score


def test_hps_checkpoint_keys_load_exactly(hps_scorer, hps_checkpoint):
    _, model = hps_checkpoint
    own, reference = hps_scorer.model.state_dict(), model.state_dict()
    assert list(own) == list(reference)
    assert all(torch.equal(own[k], reference[k]) for k in own)
    assert _normalised_keys(own) == HPS_KEY_NAMES
    assert not any(p.requires_grad for p in hps_scorer.parameters())


def test_vit_h_14_has_the_hps_checkpoint_key_names():
    """The architecture we build for the released files has exactly their 686 keys (on meta: no memory)."""
    import open_clip

    with torch.device("meta"):
        model = open_clip.create_model("ViT-H-14", pretrained=None, device="meta")
    state = model.state_dict()
    assert len(state) == 14 + 12 * (32 + 24) and _normalised_keys(state) == HPS_KEY_NAMES
    assert tuple(state["visual.proj"].shape) == (1280, 1024) and tuple(state["text_projection"].shape) == (1024, 1024)


def test_bad_hps_checkpoints_fail_clearly(tiny_hps_arch, hps_checkpoint, tmp_path):
    path, model = hps_checkpoint
    state = model.state_dict()
    bare, partial, extra = tmp_path / "bare.pt", tmp_path / "partial.pt", tmp_path / "extra.pt"
    torch.save(state, bare)
    torch.save({"state_dict": {k: v for k, v in state.items() if k != "visual.proj"}}, partial)
    torch.save({"state_dict": {**state, "visual.attn_pool.query": torch.zeros(1)}}, extra)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        vapi_bench.load_scorer("hpsv2", weights=str(bare), arch=tiny_hps_arch)
    with pytest.raises(CheckpointError, match=r"missing \['visual.proj'\]"):
        vapi_bench.load_scorer("hpsv2", weights=str(partial), arch=tiny_hps_arch)
    with pytest.raises(CheckpointError, match="visual.attn_pool.query"):
        vapi_bench.load_scorer("hpsv2", weights=str(extra), arch=tiny_hps_arch)
    with pytest.raises(OfflineError, match="does not exist"):
        vapi_bench.load_scorer("hpsv2", weights=str(tmp_path / "nope.pt"))


def test_hps_default_weights_offline_name_the_release_file(tmp_path, monkeypatch):
    from vapi_bench.prepare import prepare
    from vapi_bench.registry import get_registry

    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    with pytest.raises(OfflineError, match=r"HPS_v2\.1_compressed\.pt"):
        vapi_bench.load_scorer("hpsv2.1")
    with pytest.raises(OfflineError, match=r"xswu/HPSv2/resolve/main/HPS_v2_compressed\.pt"):
        vapi_bench.load_scorer("hpsv2")
    entry = get_registry().get("scorers", "hpsv2.1")
    outcomes = prepare(entry.requirements(weights=""), offline=True)
    assert [(o.status, o.path) for o in outcomes] == [("missing", tmp_path / "hpsv2.1" / "HPS_v2.1_compressed.pt")]


def test_class_conditions_become_prompts(hps_scorer, tiny_hps_arch, hps_checkpoint, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("tench, Tinca tinca\ngoldfish, Carassius auratus\n")
    scorer = vapi_bench.load_scorer("hpsv2.1", weights=str(hps_checkpoint[0]), arch=tiny_hps_arch,
                                    class_names=str(names))
    images = _images(2, 32, 32, seed=5)
    expected = hps_scorer(images, conditions=["a photo of goldfish, Carassius auratus", "a photo of tench, Tinca tinca"])
    torch.testing.assert_close(scorer(images, conditions=[1, 0]), expected)
    with pytest.raises(UsageError, match="outside the 2 names"):
        scorer(images, conditions=[2, 0])
    with pytest.raises(UsageError, match="class_names"):
        hps_scorer(images, conditions=[1, 0])
    with pytest.raises(UsageError, match="2 images but 1 conditions"):
        hps_scorer.score(images, conditions=["a"])
    with pytest.raises(UsageError, match="pass conditions"):
        hps_scorer.score(images)
    names.write_text("tench\n\ngoldfish\n")
    with pytest.raises(DataError, match="line 2 is blank"):
        vapi_bench.load_scorer("hpsv2.1", weights=str(hps_checkpoint[0]), arch=tiny_hps_arch,
                               class_names=str(names))(images, conditions=[0, 1])


def test_pair_scorers_keep_their_form_through_score():
    pred, target = _images(2, 8, 8, 1), _images(2, 8, 8, 2)
    mse = vapi_bench.load_scorer("mse")
    torch.testing.assert_close(mse.score(pred, reference=target), mse(pred, target))
    with pytest.raises(UsageError, match="reference"):
        mse.score(pred, conditions=["a", "b"])


@pytest.fixture(scope="module")
def tiny_clip_score():
    torch.manual_seed(1)
    return vapi_bench.load_scorer("clip-score", arch=register_tiny_clip(), weights="random")


def test_clip_score_is_the_cosine_of_clip_embeddings(tiny_clip_score):
    """open_clip's validation transform on the saved PNG, normalised features, their dot product."""
    import open_clip

    model = tiny_clip_score.model
    transform = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32),
                           T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    images = _images(4, 24, 24, seed=9)
    with torch.no_grad():
        image = model.encode_image(torch.stack([transform(p) for p in _pil(images)]))
        text = model.encode_text(open_clip.get_tokenizer(register_tiny_clip())(PROMPTS))
    expected = (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1)
    torch.testing.assert_close(tiny_clip_score(images, conditions=PROMPTS), expected, rtol=1e-4, atol=1e-5)
    assert tiny_clip_score.higher_is_better and not tiny_clip_score.differentiable


def test_clip_score_architectures_and_default_weights(tmp_path, monkeypatch):
    from vapi_bench.registry import get_registry

    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path))
    entry = get_registry().get("scorers", "clip")  # alias
    assert entry.name == "clip-score"
    b32, = entry.requirements(arch="ViT-B-32", weights="")
    l14, = entry.requirements(arch="ViT-L-14", weights="")
    assert b32.url.endswith("vit_base_patch32_clip_224.openai/open_clip_pytorch_model.bin")
    assert l14.url.endswith("vit_large_patch14_clip_224.openai/open_clip_pytorch_model.bin")
    assert b32.location() != l14.location()  # same file name, different cache folders
    assert entry.requirements(arch="ViT-B-32", weights="random") == []
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    with pytest.raises(OfflineError, match="vit_base_patch32"):
        vapi_bench.load_scorer("clip-score", arch="ViT-B-32")
    with pytest.raises(UsageError, match="no default weights"):
        vapi_bench.load_scorer("clip-score", arch="RN50")


@pytest.fixture(scope="module")
def pickscore_folder(tmp_path_factory):
    """A tiny random transformers CLIPModel with PickScore's layout (OpenAI BPE vocabulary size)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(2)
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16)
    folder = tmp_path_factory.mktemp("pickscore")
    CLIPModel(config).save_pretrained(folder)
    return folder


def _pooled(output) -> torch.Tensor:
    return output if torch.is_tensor(output) else output.pooler_output


def test_pickscore_is_logit_scale_times_cosine(pickscore_folder):
    """PickScore README: processor(images), processor(text) -> get_*_features, normalise,
    logit_scale.exp() * text @ image.T (diagonal)."""
    import open_clip

    scorer = vapi_bench.load_scorer("pickscore", weights=str(pickscore_folder))
    model = scorer.model
    transform = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32),
                           T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    images = _images(4, 40, 48, seed=11)
    tokens = open_clip.get_tokenizer("ViT-H-14")(PROMPTS)
    with torch.no_grad():
        image = _pooled(model.get_image_features(pixel_values=torch.stack([transform(p) for p in _pil(images)])))
        text = _pooled(model.get_text_features(input_ids=tokens))
        masked = _pooled(model.get_text_features(input_ids=tokens, attention_mask=(tokens != 0).long()))
    torch.testing.assert_close(text, masked)  # padding after end-of-text cannot change the feature
    expected = model.logit_scale.exp() * (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1)
    torch.testing.assert_close(scorer(images, conditions=PROMPTS), expected, rtol=1e-4, atol=1e-4)


def test_pickscore_weights_default_and_errors(tmp_path, monkeypatch):
    from vapi_bench.registry import get_registry

    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    requirements = get_registry().get("scorers", "pickscore").requirements(weights="")
    assert [r.url for r in requirements] == ["hf://yuvalkirstain/PickScore_v1/config.json",
                                             "hf://yuvalkirstain/PickScore_v1/pytorch_model.bin"]
    with pytest.raises(OfflineError, match="PickScore_v1/resolve/main/config.json"):
        vapi_bench.load_scorer("pickscore")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="PickScore model folder"):
        vapi_bench.load_scorer("pickscore", weights=str(tmp_path / "broken"))


def test_prepare_lists_a_scorers_files_offline(capsys, tmp_path, monkeypatch):
    """`vapi-bench prepare --scorer hpsv2.1 --offline` checks the scorer's file and names where it goes."""
    from vapi_bench.cli import main

    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path))
    with pytest.raises(SystemExit) as info:
        main(["prepare", "--scorer", "hpsv2.1", "--offline"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert info.value.code == 1 and "hpsv2.1" in text and "missing" in text and "1 of 1 files" in text
    with pytest.raises(SystemExit) as info:
        main(["prepare", "-s", "clip-score", "--set", "arch=ViT-B-32", "--offline"])
    assert info.value.code == 1 and "clip-b32" in capsys.readouterr().out
