"""Janus-Pro plugin on a tiny random transformers JanusConfig, fully offline.

The tiny checkpoint directory (transformers layout + a WordLevel tokenizer built here) is written
once per module; the official-layout directory is made from it by inverting our key table.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

import vapi_bench  # noqa: E402
from vapi_bench.errors import CheckpointError, OfflineError, UsageError  # noqa: E402
from vapi_bench.interfaces import SamplingRecipe, StageContext  # noqa: E402
from vapi_bench.plugins.janus_pro.generator import DECODER_FILE, POLICY_FILE, JanusProGenerator, vq_config_of  # noqa: E402
from vapi_bench.plugins.janus_pro.keymap import (  # noqa: E402
    convert_official_state_dict, hf_to_official, janus_config_from_official)
from vapi_bench.plugins.janus_pro.loading import load_janus  # noqa: E402
from vapi_bench.plugins.janus_pro.prompts import sft_prompt  # noqa: E402
from vapi_bench.plugins.janus_pro.sampler import GreedyDraw, TransformersDraw, sample_image_tokens  # noqa: E402
from vapi_bench.plugins.llamagen.vq import VQModel  # noqa: E402

SPECIALS = ["<unk>", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<begin_of_image>",
            "<end_of_image>", "<image_placeholder>"]
WORDS = ["<|User|>:", "<|Assistant|>:", "a", "red", "blue", "green", "circle", "square", "two", "big", "small"]
PROMPTS = ["a red circle", "two big blue squares"]  # different token lengths: exercises left padding
BOS, PAD, BOI = 1, 3, 4


def tiny_config():
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    return JanusConfig(
        text_config=LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=4, bos_token_id=BOS, pad_token_id=PAD,
                                eos_token_id=2),
        vision_config=JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=64,
                                        patch_size=16, projection_dim=64, num_image_tokens=16),
        vq_config=JanusVQVAEConfig(embed_dim=8, num_embeddings=16384, base_channels=32,
                                   channel_multiplier=[1, 1, 1, 1, 1], latent_channels=32, projection_dim=64,
                                   image_token_embed_dim=64),
        image_token_id=6, tie_word_embeddings=False,
    )


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token=SPECIALS[1],
                                   eos_token=SPECIALS[2], pad_token=SPECIALS[3],
                                   additional_special_tokens=SPECIALS[4:])


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    """A transformers-layout checkpoint: the model saved by save_pretrained, boi only in the tokenizer."""
    from transformers import JanusForConditionalGeneration

    torch.manual_seed(0)
    model = JanusForConditionalGeneration(tiny_config()).eval()
    with torch.no_grad():  # peaky, prompt-dependent logits, so CFG and the filters matter
        model.model.generation_head.vision_head.weight.normal_(0.0, 0.5)
        model.model.language_model.embed_tokens.weight.normal_(0.0, 1.0)
    directory = tmp_path_factory.mktemp("janus-hf")
    model.save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def gen(ckpt_dir) -> JanusProGenerator:
    return vapi_bench.load_generator("janus-pro-1b", checkpoint=str(ckpt_dir))


def fresh(ckpt_dir, **params) -> JanusProGenerator:
    return vapi_bench.load_generator("janus-pro-1b", checkpoint=str(ckpt_dir), **params)


# ---- loading, prompt, registry ------------------------------------------------------------------
def test_loads_with_janus_geometry_and_untied_embeddings(gen):
    assert (gen.image_size, gen.num_tokens, gen.codebook_size) == (64, 16, 16384)
    assert gen.family == "janus-pro" and gen.conditioning == "text" and gen.default_dataset == "captions-jsonl"
    assert gen.default_recipe == SamplingRecipe(cfg_scale=5.0, temperature=1.0)
    lm = gen.model.model.language_model
    assert gen.model.lm_head.weight.data_ptr() != lm.embed_tokens.weight.data_ptr()
    assert not torch.equal(gen.model.lm_head.weight, lm.embed_tokens.weight)
    # boi came from the tokenizer and is recorded where transformers' generate looks for it
    assert gen.model.generation_config.generation_kwargs["boi_token_id"] == BOI
    assert gen.describe()["transformers_version"] == transformers.__version__


def test_prompt_is_the_sft_template_then_begin_of_image(gen):
    assert sft_prompt("a red circle") == "<|User|>: a red circle\n\n<|Assistant|>:"
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    cond = gen.prepare_conditions(PROMPTS)
    expected_short = [BOS] + [vocab[w] for w in ["<|User|>:", "a", "red", "circle", "<|Assistant|>:"]] + [BOI]
    assert cond.input_ids[0].tolist() == [PAD] + expected_short  # left-padded to the longer prompt
    assert cond.attention_mask[0].tolist() == [0] + [1] * len(expected_short)
    assert cond.input_ids[:, -1].tolist() == [BOI, BOI]
    uncond = cond.unconditional_ids()
    assert uncond[0].tolist() == [PAD, BOS] + [PAD] * 5 + [BOI]
    assert uncond[1].tolist() == [BOS] + [PAD] * 6 + [BOI]


def test_both_sizes_are_registered_with_documented_params():
    from vapi_bench.registry import get_registry

    registry = get_registry()
    for name, dtype in (("janus-pro-1b", "float32"), ("janus-pro-7b", "bfloat16")):
        entry = registry.get("generators", name)
        params = {p.name: p for p in entry.params}
        assert params["tf_alignment"].default == "standard"
        assert params["dtype"].default == dtype


def test_bad_inputs_give_clear_errors(gen, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="text-conditional"):
        gen.prepare_conditions([3])
    with pytest.raises(UsageError, match=r"\[B, 3, 64, 64\]"):
        gen.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(UsageError, match="seeds"):
        gen.sample(PROMPTS, seeds=[1])
    with pytest.raises(UsageError, match="cfg_interval"):
        gen.sample(PROMPTS[:1], seeds=[1], recipe=SamplingRecipe(cfg_interval=3))
    with pytest.raises(UsageError, match="tf_alignment"):
        JanusProGenerator(gen.loaded, name="x", tf_alignment="sideways")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_janus(str(tmp_path / "nowhere" / "deeper"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type 'llama'"):
        load_janus(str(tmp_path))
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    for spelling in ("vapi-bench-tests/no-such-janus", "hf://vapi-bench-tests/no-such-janus"):
        with pytest.raises(OfflineError, match="vapi-bench-tests/no-such-janus.*local directory"):
            load_janus(spelling)


# ---- sampling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, recipe", [
    (dict(do_sample=False), SamplingRecipe(cfg_scale=5.0, temperature=0.0)),
    (dict(do_sample=True, temperature=1.0, top_k=0), SamplingRecipe(cfg_scale=5.0)),
    (dict(do_sample=True, temperature=0.8, top_k=200, top_p=0.9),
     SamplingRecipe(cfg_scale=5.0, temperature=0.8, top_k=200, top_p=0.9)),
    # transformers' GenerationConfig silently defaults top_k to 50 (docs/janus.md)
    (dict(do_sample=True), SamplingRecipe(cfg_scale=5.0, top_k=50)),
])
def test_sampler_reproduces_transformers_generate(gen, settings, recipe):
    """Same torch seed, same settings, CFG 5: our loop gives transformers' tokens exactly."""
    cond = gen.prepare_conditions(["a red circle", "a big green square"])  # equal lengths: no padding
    torch.manual_seed(1234)
    reference = gen.model.generate(cond.input_ids, attention_mask=cond.attention_mask, generation_mode="image",
                                   guidance_scale=5.0, **settings)
    torch.manual_seed(1234)
    ours = sample_image_tokens(gen.model, cond, num_tokens=gen.num_tokens, recipe=recipe,
                               draw=TransformersDraw() if settings["do_sample"] else GreedyDraw())
    assert torch.equal(ours, reference)
    assert len(set(ours.flatten().tolist())) > 4  # not a degenerate constant sequence


def test_index_seeded_rows_ignore_batch_mates_and_order(gen):
    seeds = [11, 22, 33]
    prompts = ["a red circle", "two big blue squares", "a small green circle"]
    together = gen.sample(prompts, seeds=seeds)
    reversed_rows = gen.sample(prompts[::-1], seeds=seeds[::-1])
    alone = torch.cat([gen.sample([p], seeds=[s]) for p, s in zip(prompts, seeds)])
    assert torch.equal(together, alone)
    assert torch.equal(together, reversed_rows.flip(0))
    assert not torch.equal(gen.sample(prompts[:1], seeds=[12]), together[:1])  # the seed matters
    assert together.dtype == torch.long and ((0 <= together) & (together < gen.codebook_size)).all()


def _lm_batch_sizes(gen, recipe):
    """Batch sizes the language model sees while sampling PROMPTS with `recipe`."""
    seen = []
    hook = gen.model.model.language_model.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True)
    try:
        tokens = gen.sample(PROMPTS, seeds=[5, 6], recipe=recipe)
    finally:
        hook.remove()
    assert tokens.shape == (2, gen.num_tokens)
    return set(seen)


def test_guidance_scale_one_runs_without_a_doubled_batch(gen):
    assert _lm_batch_sizes(gen, SamplingRecipe(cfg_scale=1.0)) == {2}
    assert _lm_batch_sizes(gen, gen.default_recipe) == {4}  # CFG 5: [cond; uncond]


def test_top_k_one_equals_greedy(gen):
    greedy = gen.sample(PROMPTS, seeds=[1, 2], recipe=SamplingRecipe(cfg_scale=5.0, temperature=0.0))
    top1 = gen.sample(PROMPTS, seeds=[3, 4], recipe=SamplingRecipe(cfg_scale=5.0, top_k=1))
    assert torch.equal(greedy, top1)


def test_bf16_autocast_sampling_runs(ckpt_dir):
    tokens = fresh(ckpt_dir, autocast_bf16=True).sample(PROMPTS, seeds=[1, 2])
    assert tokens.shape == (2, 16)


# ---- teacher forcing ------------------------------------------------------------------------------
def _cached_logits(gen, cond, tokens):
    """Logits of the KV-cached loop (CFG 1) when it is forced to emit `tokens`."""
    steps = []
    sample_image_tokens(gen.model, cond, num_tokens=tokens.shape[1], recipe=SamplingRecipe(cfg_scale=1.0),
                        draw=lambda step, logits: tokens[:, step],
                        on_logits=lambda step, logits: steps.append(logits.clone()))
    return torch.stack(steps, dim=1)


def test_teacher_forced_logits_equal_step_by_step_cached_logits(gen):
    tokens = gen.sample(PROMPTS, seeds=[7, 8])
    cond = gen.prepare_conditions(PROMPTS)
    cached = _cached_logits(gen, cond, tokens)
    with torch.no_grad():
        forced = gen.teacher_forced_logits(tokens, cond)
    assert forced.shape == (2, gen.num_tokens, gen.codebook_size)
    torch.testing.assert_close(forced, cached, atol=2e-5, rtol=1e-5)
    # a (noisy) context changes only what follows the first changed position
    context = tokens.clone()
    context[:, 5] = (context[:, 5] + 1) % gen.codebook_size
    with torch.no_grad():
        noisy = gen.teacher_forced_logits(tokens, cond, context)
    torch.testing.assert_close(noisy[:, :6], forced[:, :6], atol=2e-5, rtol=1e-5)
    assert not torch.allclose(noisy[:, 6:], forced[:, 6:])


def test_vapi_official_alignment_is_shifted_by_one(ckpt_dir, gen):
    official = fresh(ckpt_dir, tf_alignment="vapi-official")
    tokens = gen.sample(PROMPTS, seeds=[7, 8])
    cond = gen.prepare_conditions(PROMPTS)
    cached = _cached_logits(gen, cond, tokens)
    with torch.no_grad():
        shifted = official.teacher_forced_logits(tokens, official.prepare_conditions(PROMPTS))
    # logit i comes from the hidden state AT token i, i.e. the cached prediction of token i + 1
    torch.testing.assert_close(shifted[:, :-1], cached[:, 1:], atol=2e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(ckpt_dir, gen):
    tokens = gen.sample(PROMPTS, seeds=[7, 8])
    grads, mlp_calls = [], []
    for flag in (False, True):
        g = fresh(ckpt_dir, gradient_checkpointing=flag)
        g.policy.train()
        mlp = g.model.model.language_model.layers[0].mlp
        calls = []
        mlp.register_forward_pre_hook(lambda *args: calls.append(1))
        logits = g.teacher_forced_logits(tokens, g.prepare_conditions(PROMPTS))
        F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
        grads.append(mlp.up_proj.weight.grad.clone())
        mlp_calls.append(len(calls))
    torch.testing.assert_close(grads[0], grads[1])
    assert mlp_calls == [1, 2]  # checkpointing recomputes the layer in backward


# ---- tokenizer ------------------------------------------------------------------------------------
def test_decode_matches_transformers_decode_image_tokens(gen):
    tokens = gen.sample(PROMPTS, seeds=[1, 2])
    with torch.no_grad():
        ours = gen.decode(tokens)
        reference = gen.model.decode_image_tokens(tokens)  # channel-last [B, H, W, 3]
        from_codes = gen.decode_embeddings(gen.codebook[tokens])
    assert ours.shape == (2, 3, 64, 64)
    torch.testing.assert_close(ours, reference.permute(0, 3, 1, 2), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(from_codes, ours)


def test_encode_is_the_l2_normalised_nearest_neighbour(gen):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    hf_vq = gen.model.model.vqmodel
    with torch.no_grad():
        z = hf_vq.quant_conv(hf_vq.encoder(images)).permute(0, 2, 3, 1).reshape(-1, 8)
        codebook = hf_vq.quantize.embedding.weight
        independent = torch.cdist(F.normalize(z, dim=-1), F.normalize(codebook, dim=-1)).argmin(dim=1)
        transformers_encode = hf_vq.encode(images).image_tokens
    ours = gen.encode(images)
    assert ours.shape == (2, 16)
    assert torch.equal(ours.flatten(), independent)
    assert not torch.equal(transformers_encode, independent)  # transformers skips the normalisation


def test_policy_is_everything_but_the_vq(gen):
    policy = {id(p) for p in gen.policy.parameters()}
    vq = {id(p) for p in gen.model.model.vqmodel.parameters()}
    everything = {id(p) for p in gen.model.parameters()}
    assert policy.isdisjoint(vq) and policy | vq == everything
    decoder = {p.data_ptr() for p in gen.tokenizer_decoder.parameters()}
    assert decoder == {p.data_ptr() for n, p in gen.model.model.vqmodel.named_parameters()
                       if n.startswith(("decoder.", "post_quant_conv."))}


# ---- checkpoints ----------------------------------------------------------------------------------
def test_finetuned_state_round_trips_through_safetensors(ckpt_dir, gen, tmp_path):
    tuned = fresh(ckpt_dir)
    with torch.no_grad():
        for p in tuned.policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    written = tuned.save_finetuned(tmp_path / "a")
    assert [p.name for p in written] == [POLICY_FILE]  # decoder unchanged: not saved
    with torch.no_grad():
        tuned.tokenizer_decoder.decoder.conv_out.bias.add_(0.5)
    assert sorted(p.name for p in tuned.save_finetuned(tmp_path / "b")) == sorted([POLICY_FILE, DECODER_FILE])

    restored = fresh(ckpt_dir)
    restored.load_finetuned(tmp_path / "b")
    tokens = gen.sample(PROMPTS, seeds=[1, 2])
    cond = gen.prepare_conditions(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(restored.teacher_forced_logits(tokens, cond), tuned.teacher_forced_logits(tokens, cond))
        torch.testing.assert_close(restored.decode(tokens), tuned.decode(tokens))
        assert not torch.allclose(restored.decode(tokens), gen.decode(tokens))
    # the policy file loads into a stock transformers model (HF key names)
    from safetensors.torch import load_file

    missing, unexpected = gen.model.__class__(gen.model.config).load_state_dict(
        load_file(str(tmp_path / "b" / POLICY_FILE)), strict=False)
    assert unexpected == [] and all(k.startswith("model.vqmodel.") for k in missing)


def test_mismatched_finetuned_file_is_a_checkpoint_error(gen, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="no policy.safetensors"):
        gen.load_finetuned(tmp_path)
    state = gen.policy_state()
    state.pop("lm_head.weight")
    state["extra.weight"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / POLICY_FILE))
    with pytest.raises(CheckpointError, match=r"missing \['lm_head.weight'\].*unexpected \['extra.weight'\]"):
        gen.load_finetuned(tmp_path)


# ---- deepseek's original layout -------------------------------------------------------------------
def test_key_table_round_trip_matches_official_names(gen):
    hf_state = gen.model.state_dict()
    official = hf_to_official(hf_state)
    # names and shapes an independent implementation of each official module gives
    from transformers import LlamaForCausalLM

    llama = LlamaForCausalLM(gen.model.config.text_config).state_dict()
    assert {k for k in official if k.startswith("language_model.")} == {f"language_model.{k}" for k in llama}
    vq = VQModel(vq_config_of(gen.model.config)).state_dict()
    assert {k: tuple(v.shape) for k, v in official.items() if k.startswith("gen_vision_model.")} == {
        f"gen_vision_model.{k}": tuple(v.shape) for k, v in vq.items()}
    assert official["vision_model.vision_tower.blocks.0.attn.qkv.weight"].shape == (96, 32)
    assert official["vision_model.vision_tower.pos_embed"].shape == (1, 16, 32)
    for key in ("gen_embed.weight", "gen_aligner.layers.2.weight", "aligner.layers.0.bias",
                "gen_head.output_mlp_projector.weight", "gen_head.vision_head.bias", "vision_model.vision_tower.norm.weight"):
        assert key in official
    # what the official checkpoint has and Janus never uses is dropped on import
    official["vision_model.vision_tower.attn_pool.latent"] = torch.zeros(1, 1, 32)
    official["vision_model.vision_tower.attn_pool.kv.weight"] = torch.zeros(64, 32)
    back = convert_official_state_dict(official)
    assert back.keys() == hf_state.keys()
    assert all(torch.equal(back[k], hf_state[k]) for k in hf_state)
    with pytest.raises(CheckpointError, match="not in the conversion table"):
        convert_official_state_dict({**official, "vision_model.vision_tower.head.weight": torch.zeros(1)})


def test_deepseek_layout_directory_loads_and_samples_identically(ckpt_dir, gen, tmp_path):
    official = hf_to_official(gen.model.state_dict())
    official["gen_vision_model.quantize.codebook_used"] = torch.arange(65536.0)
    torch.save(official, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "multi_modality"}))
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded = load_janus(str(tmp_path), config=tiny_config())
    assert loaded.layout == "deepseek" and loaded.special.boi == BOI
    other = JanusProGenerator(loaded, name="janus-pro-1b")
    assert torch.equal(other.sample(PROMPTS, seeds=[3, 4]), gen.sample(PROMPTS, seeds=[3, 4]))
    # a checkpoint missing a tensor names it
    official.pop("gen_head.vision_head.bias")
    torch.save(official, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="missing.*generation_head.vision_head.bias"):
        load_janus(str(tmp_path), config=tiny_config())


def test_official_janus_pro_1b_config_converts_to_the_released_architecture():
    """The real deepseek-ai/Janus-Pro-1B config.json, built on the meta device (nothing allocated)."""
    from transformers import JanusForConditionalGeneration

    raw = {
        "model_type": "multi_modality",
        "language_config": {"hidden_size": 2048, "intermediate_size": 5632, "max_position_embeddings": 16384,
                            "model_type": "llama", "num_attention_heads": 16, "num_hidden_layers": 24,
                            "num_key_value_heads": 16, "torch_dtype": "bfloat16", "vocab_size": 102400},
        "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision",
                          "params": {"image_size": 384, "model_name": "siglip_large_patch16_384",
                                     "select_feature": "same", "select_layer": -1}},
        "aligner_config": {"cls": "MlpProjector", "model_type": "aligner",
                           "params": {"depth": 2, "input_dim": 1024, "n_embed": 2048, "projector_type": "mlp_gelu"}},
        "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision",
                              "params": {"image_token_size": 16384, "n_embed": 8}},
        "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner",
                               "params": {"depth": 2, "input_dim": 8, "n_embed": 2048, "projector_type": "mlp_gelu"}},
        "gen_head_config": {"cls": "vision_head", "model_type": "gen_head",
                            "params": {"image_token_embed": 2048, "image_token_size": 16384, "n_embed": 2048}},
    }
    config = janus_config_from_official(raw, bos_token_id=100000, eos_token_id=100001, pad_token_id=100015,
                                        image_token_id=100581)
    assert config.tie_word_embeddings is False
    assert config.vision_config.num_image_tokens == 576 and config.vq_config.num_patches == 24
    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    official = hf_to_official(model.state_dict())
    assert official["vision_model.vision_tower.blocks.23.attn.qkv.weight"].shape == (3072, 1024)
    assert official["vision_model.vision_tower.pos_embed"].shape == (1, 576, 1024)
    assert official["gen_vision_model.quantize.embedding.weight"].shape == (16384, 8)
    assert official["language_model.lm_head.weight"].shape == (102400, 2048)
    with torch.device("meta"):
        vq16 = VQModel().state_dict()  # the official VQ-16 (344 keys)
    assert {k for k in official if k.startswith("gen_vision_model.")} == {f"gen_vision_model.{k}" for k in vq16}
    assert convert_official_state_dict(official).keys() == model.state_dict().keys()


# ---- one VA-π step --------------------------------------------------------------------------------
class _Captions(torch.utils.data.Dataset):
    def __init__(self, size: int):
        rng = torch.Generator().manual_seed(0)
        self.images = torch.rand(4, 3, size, size, generator=rng) * 2 - 1
        self.captions = ["a red circle", "two big blue squares", "a small green circle", "a blue square"]

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i):
        return self.images[i], self.captions[i]


def test_one_vapi_step_runs_and_changes_the_policy_only(ckpt_dir, tmp_path):
    g = fresh(ckpt_dir)
    policy_before = {k: v.clone() for k, v in g.policy_state().items()}
    vq_before = {k: v.clone() for k, v in g.vq.state_dict().items()}
    method = vapi_bench.load_method("va-pi", steps=1, batch_size=2, micro_batch=1, group_size=2, lr=1e-3,
                                    w_perceptual=0.0, xi=0.95, ckpt_every=1)
    summary = method.finetune(g, _Captions(g.image_size), StageContext(out_dir=tmp_path, device=torch.device("cpu"), seed=0))
    assert summary["params"]["recipe"] == "janus-pro"
    after = g.policy_state()
    changed = [k for k in policy_before if not torch.equal(policy_before[k], after[k])]
    assert any(k.startswith("model.generation_head.") for k in changed)
    assert any(k.startswith("model.language_model.layers.") for k in changed)
    assert all(torch.equal(v, g.vq.state_dict()[k]) for k, v in vq_before.items())


def test_too_old_transformers_is_a_plain_error(monkeypatch):
    from vapi_bench.errors import VapiError
    from vapi_bench.plugins.janus_pro import require_transformers

    import transformers as current  # transformers swaps its own sys.modules entry on lazy imports

    monkeypatch.setattr(current, "__version__", "5.3.0")
    with pytest.raises(VapiError, match=r"transformers>=5\.24.*found 5\.3\.0"):
        require_transformers()


def test_passes_the_conformance_kit(gen):
    from vapi_bench.testing import check_generator

    check_generator(gen)
