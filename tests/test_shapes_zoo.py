"""The shapes zoo: word encoder, `zoo build --quick` (manifest, determinism, sizes), loading.

One quick build runs through the CLI and one through `build_zoo` with the same seed; both must
produce byte-identical weights. Everything else reuses those two builds.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vapi_bench import load_generator
from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.plugins.shapes.words import VOCABULARY, ShapesWordEncoder
from vapi_bench.plugins.shapes.zoo.build import build_zoo
from vapi_bench.plugins.shapes.zoo.files import FILES, MANIFEST, MAX_TOTAL_BYTES, read_manifest
from vapi_bench.weights import sha256_file


# ---- word encoder ---------------------------------------------------------------------------


def test_word_encoder_left_pads_with_word_previous_word_and_position_blocks():
    encoder = ShapesWordEncoder(max_words=8)
    vocab = len(VOCABULARY)
    features, mask = encoder.encode(["a photo of two red circles", "a photo of a square"])
    assert features.shape == (2, 8, 2 * vocab + 8) and mask.dtype == torch.bool
    assert mask[0].tolist() == [False, False] + [True] * 6
    assert mask[1].tolist() == [False, False, False] + [True] * 5
    assert torch.all(features[~mask] == 0)
    # row 0 slot 6 is "red" (5th word, position 4) preceded by "two"
    red = features[0, 6]
    expected = torch.zeros_like(red)
    expected[VOCABULARY.index("red")] = 1
    expected[vocab + VOCABULARY.index("two")] = 1
    expected[2 * vocab + 4] = 1
    assert torch.equal(red, expected)
    # the first word has no previous-word bit; positions count from the caption start, not the slot
    first = features[1, 3]
    assert first[vocab : 2 * vocab].sum() == 0 and first[2 * vocab + 0] == 1


def test_word_encoder_is_deterministic_and_order_sensitive():
    encoder = ShapesWordEncoder()
    a = encoder.encode(["a photo of a red circle left of a blue square"])[0]
    b = ShapesWordEncoder().encode(["a photo of a red circle left of a blue square"])[0]
    swapped = encoder.encode(["a photo of a blue circle left of a red square"])[0]
    assert torch.equal(a, b)
    # the image tokens see the caption as a set of vectors: with positions left out, the two
    # captions hold the same words but different sets, because each word carries its neighbour
    words = 2 * len(VOCABULARY)
    assert sorted(map(tuple, a[0, :, :words].tolist())) != sorted(map(tuple, swapped[0, :, :words].tolist()))


def test_word_encoder_rejects_unknown_long_and_empty_captions():
    encoder = ShapesWordEncoder(max_words=6)
    with pytest.raises(UsageError, match="'dog'"):
        encoder.encode(["a photo of a dog"])
    with pytest.raises(UsageError, match="at most 6"):
        encoder.encode(["a photo of a red circle and a blue square"])
    with pytest.raises(UsageError, match="empty"):
        encoder.encode(["   "])


def test_class_captions_alternate_single_object_and_colors_prompts_the_encoder_reads():
    from vapi_bench.plugins.shapes.data import random_record
    from vapi_bench.plugins.shapes.vocab import NUM_CLASSES, class_attributes
    from vapi_bench.plugins.shapes.zoo.training_sets import class_captions

    import numpy as np

    labels = list(range(NUM_CLASSES)) * 2
    captions = class_captions(labels)
    for index, (label, caption) in enumerate(zip(labels, captions)):
        shape, colour = class_attributes(label)
        assert caption.endswith(f" {shape}")
        assert (colour in caption.split()) == (index % 2 == 1)
    ShapesWordEncoder().encode(captions)  # every word is in the vocabulary, within max_words
    # the same grammar as the GenEval prompts the t2i model is scored on
    rng = np.random.default_rng(0)
    prompts = {random_record(tag, rng)["prompt"] for tag in ("single_object", "colors") for _ in range(400)}
    assert set(captions) <= prompts, sorted(set(captions) - prompts)


# ---- quick build ----------------------------------------------------------------------------

QUICK_SMALL_DIM = 16  # zoo.config.QUICK's c2i_small_gpt width


def _cli(args: list[str]) -> None:
    """Run `vapi-bench <args>` in-process; it must succeed."""
    from vapi_bench.cli import main

    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), f"vapi-bench {' '.join(args)} exited with {exc.code}"


@pytest.fixture(scope="module")
def quick_zoos(tmp_path_factory) -> tuple[Path, Path]:
    """Two quick builds with seed 3: one via the CLI, one via build_zoo."""
    first = tmp_path_factory.mktemp("zoo-cli")
    second = tmp_path_factory.mktemp("zoo-api")
    _cli(["zoo", "build", "--quick", "--seed", "3", "--out", str(first)])
    build_zoo(second, seed=3, quick=True, show_progress=False)
    return first, second


def test_quick_build_writes_every_file_and_a_complete_manifest(quick_zoos):
    root, _ = quick_zoos
    manifest = json.loads((root / MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(FILES.values())
    assert manifest["seed"] == 3 and manifest["quick"] is True
    assert set(manifest["losses"]) == {"vq", "c2i", "t2i", "t2i-ls", "featnet", "c2i-small", "c2i-small-ls",
                                       "rewardnet", "var-vae", "var"}
    assert manifest["models"]["c2i-small"]["label_smoothing"] == 0.0
    assert manifest["models"]["c2i-small-ls"]["label_smoothing"] == 0.1
    assert manifest["models"]["t2i-ls"]["label_smoothing"] == 0.1 and "label_smoothing" not in manifest["models"]["t2i"]
    assert all(isinstance(v, float) for stage in manifest["losses"].values() for v in stage.values())
    assert len(manifest["data"]["sha256"]) == 64
    gates = manifest["quality"]["gates"]
    assert {"reconstruction_recovery", "c2i_class_accuracy", "t2i_single_object"} <= set(gates)
    assert manifest["models"]["t2i"]["config"]["cls_token_num"] == manifest["config"]["max_words"]
    for name, record in manifest["files"].items():
        assert sha256_file(root / name) == record["sha256"]
        assert (root / name).stat().st_size == record["bytes"]
    assert sum(r["bytes"] for r in manifest["files"].values()) <= MAX_TOTAL_BYTES
    assert not [p for p in root.iterdir() if p.name.startswith(".zoo-build-")]  # staging removed


def test_quick_build_is_deterministic_for_a_seed(quick_zoos):
    first, second = (json.loads((root / MANIFEST).read_text()) for root in quick_zoos)
    assert first["files"] == second["files"]
    assert first["losses"] == second["losses"]
    assert first["data"]["sha256"] == second["data"]["sha256"]
    assert first["quality"]["c2i_sweep"] == second["quality"]["c2i_sweep"]


def test_generators_load_from_a_zoo_and_sample(quick_zoos):
    root, _ = quick_zoos
    c2i = load_generator("shapes-c2i", zoo_dir=str(root))
    t2i = load_generator("shapes-t2i", zoo_dir=str(root))
    assert (c2i.family, c2i.default_dataset, c2i.num_classes) == ("shapes-c2i", "shapes-c2i", 24)
    assert (t2i.family, t2i.default_dataset, t2i.conditioning) == ("shapes-t2i", "shapes-captions", "text")
    assert c2i.default_recipe.cfg_scale > 1 and t2i.default_recipe.cfg_scale > 1
    tokens = c2i.sample([0, 5], seeds=[1, 2], recipe=c2i.default_recipe)
    assert tokens.shape == (2, 64) and c2i.decode(tokens).shape == (2, 3, 32, 32)
    again = c2i.sample([5], seeds=[2], recipe=c2i.default_recipe)
    assert torch.equal(again[0], tokens[1])  # index-seeded: independent of the batch
    prompts = ["a photo of a red circle", "a photo of two squares"]
    cond = t2i.prepare_conditions(prompts)
    text_tokens = t2i.sample(prompts, seeds=[1, 2], recipe=t2i.default_recipe)
    assert t2i.teacher_forced_logits(text_tokens, cond).shape == (2, 64, t2i.codebook_size)
    assert c2i.describe()["zoo_files"]["vq.safetensors"] == json.loads((root / MANIFEST).read_text())[
        "files"]["vq.safetensors"]["sha256"]


def test_checkpoint_replaces_the_gpt_weights_and_must_match(quick_zoos):
    root, other = quick_zoos
    gen = load_generator("shapes-c2i", checkpoint=str(other / "c2i.safetensors"), zoo_dir=str(root))
    assert gen.describe()["checkpoint"] == str(other / "c2i.safetensors")  # its digest is the runner's (checkpoint_sha256)
    with pytest.raises(CheckpointError):
        load_generator("shapes-c2i", checkpoint=str(other / "t2i.safetensors"), zoo_dir=str(root))


def test_a_changed_or_missing_zoo_file_is_a_clear_error(quick_zoos, tmp_path):
    damaged = tmp_path / "zoo"
    shutil.copytree(quick_zoos[0], damaged)
    data = bytearray((damaged / "c2i.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (damaged / "c2i.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="c2i.safetensors does not match its manifest"):
        read_manifest(damaged)
    shutil.copy(quick_zoos[0] / "c2i.safetensors", damaged / "c2i.safetensors")
    (damaged / "vq.safetensors").unlink()
    with pytest.raises(CheckpointError, match="vq.safetensors is missing"):
        load_generator("shapes-c2i", zoo_dir=str(damaged))
    with pytest.raises(CheckpointError, match="zoo build --out"):
        read_manifest(tmp_path / "nowhere")


def test_zoo_show_reports_files_and_gates(quick_zoos, capsys):
    _cli(["zoo", "show", "--dir", str(quick_zoos[0])])
    text = capsys.readouterr().out
    assert "c2i.safetensors" in text and "ok" in text and "c2i_class_accuracy" in text


def test_only_reward_net_rebuilds_that_file_alone_and_reproduces_it(quick_zoos, tmp_path):
    """`zoo build --only reward-net` into an existing zoo: the same bytes as the full build (same
    seed), the other files and their manifest records untouched."""
    root = tmp_path / "zoo"
    shutil.copytree(quick_zoos[0], root)
    before = json.loads((root / MANIFEST).read_text())
    (root / FILES["rewardnet"]).unlink()
    _cli(["zoo", "build", "--only", "reward-net", "--quick", "--out", str(root)])
    after = json.loads((root / MANIFEST).read_text())
    assert after["files"] == before["files"]
    assert sha256_file(root / FILES["rewardnet"]) == before["files"][FILES["rewardnet"]]["sha256"]


def test_reward_network_is_not_the_evaluation_network(quick_zoos):
    """shapes-perceptual (the reward) reads rewardnet, narrower than featnet (shapes-fid's)."""
    from vapi_bench.plugins.shapes.features import load_feature_net
    from vapi_bench.plugins.shapes.perceptual import ShapesPerceptual
    from vapi_bench.plugins.shapes.zoo.config import QUICK

    root, _ = quick_zoos
    reward = ShapesPerceptual(weights=root / FILES["rewardnet"])
    evaluation = load_feature_net(root / FILES["featnet"])
    assert reward.net.widths == tuple(QUICK.rewardnet_widths) != evaluation.widths
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    assert reward(image, image.flip(0)).shape == (2,)


def test_small_base_and_head_scale(quick_zoos):
    """shapes-c2i-small and -ls load their own GPTs; head_scale divides the logits exactly."""
    root, _ = quick_zoos
    small = load_generator("shapes-c2i-small", zoo_dir=str(root))
    assert small.family == "shapes-c2i-small" and small.policy.config.dim == QUICK_SMALL_DIM
    smoothed = load_generator("shapes-c2i-small-ls", zoo_dir=str(root))
    assert smoothed.family == "shapes-c2i-small-ls" and smoothed.policy.config.dim == QUICK_SMALL_DIM
    assert any(not torch.equal(a, b) for a, b in zip(small.policy.parameters(), smoothed.policy.parameters()))
    plain = load_generator("shapes-c2i", zoo_dir=str(root))
    scaled = load_generator("shapes-c2i", zoo_dir=str(root), head_scale=1.25)
    tokens = plain.sample([0, 3], seeds=[1, 2], recipe=plain.default_recipe)
    cond = plain.prepare_conditions([0, 3])
    with torch.no_grad():
        logits, scaled_logits = plain.teacher_forced_logits(tokens, cond), scaled.teacher_forced_logits(tokens, cond)
    # compared as products, not ratios: a logit near 0 makes its ratio ill-conditioned in fp32
    assert torch.allclose(scaled_logits * 1.25, logits, rtol=1e-4, atol=1e-5 * float(logits.abs().max()))
    assert not torch.allclose(scaled_logits, logits, rtol=1e-2)
    assert scaled.describe()["head_scale"] == 1.25


def test_smoothed_t2i_base_reads_captions_and_differs_from_shapes_t2i(quick_zoos):
    """shapes-t2i-ls is a text model like shapes-t2i (same word encoder and config), with its own
    GPT weights, and the va-pi recipe it gets is shapes-t2i's."""
    from vapi_bench.plugins.shapes.families import family_defaults
    from vapi_bench.training.recipes import recipe_defaults

    root, _ = quick_zoos
    plain = load_generator("shapes-t2i", zoo_dir=str(root))
    smoothed = load_generator("shapes-t2i-ls", zoo_dir=str(root))
    assert smoothed.conditioning == "text" and smoothed.family == "shapes-t2i-ls"
    assert smoothed.policy.config == plain.policy.config
    assert any(not torch.equal(a, b) for a, b in zip(plain.policy.parameters(), smoothed.policy.parameters()))
    tokens = smoothed.sample(["a photo of a red circle"], seeds=[0], recipe=smoothed.default_recipe)
    assert tokens.shape == (1, smoothed.policy.config.block_size)
    assert family_defaults()["shapes-t2i-ls"] == family_defaults()["shapes-t2i"]
    ls_recipe, source = recipe_defaults("va-pi", smoothed)
    assert source == "shapes-t2i-ls" and ls_recipe == recipe_defaults("va-pi", plain)[0]


def test_only_t2i_ls_rebuilds_the_full_builds_file_exactly(tmp_path):
    """`zoo build --only t2i-ls` on an existing zoo trains the same weights the whole build did
    (same data, tokens, warm start and seed), and leaves the other files untouched."""
    from vapi_bench.plugins.shapes.zoo.build import build_extra

    build_zoo(tmp_path, seed=5, quick=True, show_progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.safetensors")}
    (tmp_path / FILES["t2i-ls"]).unlink()
    build_extra(tmp_path, "t2i-ls", show_progress=False)
    after = {p.name: p.read_bytes() for p in tmp_path.glob("*.safetensors")}
    assert after == before


def test_label_smoothing_leaves_the_gpt_over_dispersed():
    """The mechanism of shapes-c2i-small-ls: from the same initialisation and batches, a GPT trained
    with label smoothing 0.1 puts more mass off the data's tokens (higher predictive entropy) than
    the one trained by maximum likelihood, so sampling it at T=1 draws too many off-mode tokens."""
    from vapi_bench.plugins.llamagen.gpt import GPT, GPTConfig
    from vapi_bench.plugins.shapes.zoo.train import OptimConfig, train_gpt

    cfg = GPTConfig(dim=16, n_layer=1, n_head=2, multiple_of=16, model_type="c2i", num_classes=2, vocab_size=16,
                    block_size=9, class_dropout_prob=0.0)
    tokens = torch.arange(9).repeat(4, 1)  # one deterministic sequence per row
    labels = torch.zeros(4, dtype=torch.long)
    entropies = []
    for smoothing in (0.0, 0.1):
        torch.manual_seed(0)
        gpt = GPT(cfg)
        train_gpt(gpt, tokens, lambda rows: labels[rows], OptimConfig(steps=60, batch_size=4, lr=1e-2, warmup=2), 0,
                  bf16=False, label_smoothing=smoothing)
        with torch.no_grad():
            probs = gpt(labels, tokens).float().softmax(-1)
        entropies.append(float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()))
    plain, smoothed = entropies
    assert smoothed > plain + 0.2


# ---- shapes-var -----------------------------------------------------------------------------


def test_only_var_rebuilds_the_full_builds_files_exactly(quick_zoos, tmp_path):
    """`zoo build --only var` into an existing zoo trains the same VQ-VAE and transformer bytes as the
    full build (same seed), leaves the other files alone and records the VAR's quality gates."""
    root = tmp_path / "zoo"
    shutil.copytree(quick_zoos[0], root)
    before = {p.name: p.read_bytes() for p in root.glob("*.safetensors")}
    manifest = json.loads((root / MANIFEST).read_text())
    for kind in ("var-vae", "var"):
        (root / FILES[kind]).unlink()
        del manifest["files"][FILES[kind]]
    del manifest["models"]["var"], manifest["quality"]["var"]
    (root / MANIFEST).write_text(json.dumps(manifest))
    _cli(["zoo", "build", "--only", "var", "--quick", "--out", str(root)])
    after = {p.name: p.read_bytes() for p in root.glob("*.safetensors")}
    assert after == before
    rebuilt = json.loads((root / MANIFEST).read_text())
    assert rebuilt["files"] == json.loads((quick_zoos[0] / MANIFEST).read_text())["files"]
    gates = rebuilt["quality"]["var"]["gates"]
    assert 0.0 <= gates["class_accuracy"] <= 1.0 and 0.0 <= gates["reconstruction_recovery"] <= 1.0
    assert set(rebuilt["quality"]["var"]["cfg_sweep"]) == {"1", "2", "3", "4"}


def test_shapes_var_loads_through_the_var_plugin_and_keeps_the_contract(quick_zoos):
    from vapi_bench.plugins.shapes.zoo.config import QUICK
    from vapi_bench.plugins.var import VARGenerator
    from vapi_bench.testing import check_generator

    root, _ = quick_zoos
    gen = load_generator("shapes-var", zoo_dir=str(root))
    assert isinstance(gen, VARGenerator)
    assert (gen.family, gen.default_dataset, gen.num_classes, gen.image_size) == ("shapes-var", "shapes-c2i", 24, 32)
    assert gen.num_tokens == sum(p * p for p in QUICK.var_vae["patch_nums"])
    assert gen.policy.config.embed_dim == QUICK.var["embed_dim"] and gen.class_names[0].startswith("red ")
    check_generator(gen, plugin="shapes")


def test_shapes_var_stores_fp16_parameters_and_loads_them_as_fp32(quick_zoos):
    from safetensors.torch import load_file

    root, _ = quick_zoos
    stored = load_file(str(root / FILES["var"]))
    assert stored["head.weight"].dtype == torch.float16
    assert stored["attn_bias_for_masking"].dtype == torch.float32  # the mask keeps its finite fp32 minimum
    assert bool(torch.isfinite(stored["attn_bias_for_masking"]).all())
    gen = load_generator("shapes-var", zoo_dir=str(root))
    assert all(p.dtype == torch.float32 for p in gen.policy.parameters())
    assert torch.equal(gen.policy.head.weight, stored["head.weight"].float())
    assert load_file(str(root / FILES["var-vae"]))["quantize.embedding.weight"].dtype == torch.float16


def test_shapes_var_family_and_recipes():
    """Its own pre-training's final lr (the shapes budget rule), VA-π with ξ = 0 (class-to-image) and
    shapes-c2i's CCA / AR-GRPO / DPO recipes."""
    from vapi_bench.plugins.shapes.families import family_defaults
    from vapi_bench.plugins.shapes.zoo.config import FULL
    from vapi_bench.plugins.shapes.zoo.train import final_lr
    from vapi_bench.training import post_training_lr
    from vapi_bench.training.recipes import recipe_defaults

    class Base:
        family = "shapes-var"

    class C2I:
        family = "shapes-c2i"

    budget = family_defaults()["shapes-var"]
    assert budget["lr"] == post_training_lr(final_lr(FULL.var_optim)) != family_defaults()["shapes-c2i"]["lr"]
    assert recipe_defaults("va-pi", Base())[0]["xi"] == 0.0
    for method in ("cca", "ar-grpo", "dpo"):
        values, source = recipe_defaults(method, Base())
        c2i = recipe_defaults(method, C2I())[0]
        assert source == "shapes-var" and values["lr"] == budget["lr"]
        assert {k: v for k, v in values.items() if k != "lr"} == {k: v for k, v in c2i.items() if k != "lr"}


def test_a_zoo_without_var_says_how_to_add_it(quick_zoos, tmp_path):
    root = tmp_path / "zoo"
    shutil.copytree(quick_zoos[0], root)
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["models"]["var"]
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="zoo build --only var"):
        load_generator("shapes-var", zoo_dir=str(root))
