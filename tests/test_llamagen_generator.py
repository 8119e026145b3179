"""LlamaGenGenerator and its registered entries: offline tiny models, official-format checkpoints,
the Generator contract, fine-tuned save/load."""
import argparse

import pytest
import torch

import vapi_bench
from vapi_bench.errors import CheckpointError, OfflineError, UsageError
from vapi_bench.interfaces import SamplingRecipe
from vapi_bench.plugins.llamagen import GPT, GPTConfig, LlamaGenGenerator, VQConfig, VQModel
from vapi_bench.plugins.llamagen.text import left_pad
from vapi_bench.registry import get_registry

V = 256
TINY = dict(dim=64, n_layer=2, n_head=4, num_classes=10, codebook_size=V, vq_ch=32, vq_ch_mult=(1, 1, 1),
            vq_z_channels=32, image_size=16)


def tiny(name="llamagen-b", **kw):
    params = {**TINY, **kw}
    if "t2i" in name:
        params.pop("num_classes")
    return vapi_bench.load_generator(name, random_init=True, **params)


def test_all_models_are_registered_with_official_defaults():
    registry = get_registry()
    names = {"llamagen-b", "llamagen-l", "llamagen-xl", "llamagen-xxl", "llamagen-3b", "llamagen-t2i-xl"}
    assert names <= set(registry.names("generators"))
    xxl = {p.name: p.default for p in registry.get("generators", "llamagen-xxl").params}
    assert (xxl["dim"], xxl["n_layer"], xxl["n_head"], xxl["image_size"]) == (1536, 48, 24, 384)
    assert xxl["vq_ch"] == 128 and xxl["vq_ch_mult"] == (1, 1, 2, 2, 4) and xxl["codebook_size"] == 16384
    t2i = {p.name: p.default for p in registry.get("generators", "llamagen-t2i-xl").params}
    assert t2i["cls_token_num"] == 120 and t2i["caption_dim"] == 2048 and t2i["t5_path"] == "google/flan-t5-xl"


def test_tiny_generator_contract_and_recipes():
    gen = tiny("llamagen-xxl")
    assert isinstance(gen, LlamaGenGenerator)
    assert (gen.conditioning, gen.num_tokens, gen.codebook_size, gen.num_classes) == ("class", 16, V, 10)
    assert gen.default_recipe == SamplingRecipe(cfg_scale=1.75, top_k=0, top_p=1.0)
    assert (gen.family, gen.default_dataset) == ("llamagen-c2i", "imagenet")
    assert tiny("llamagen-xl").default_recipe.cfg_scale == 2.0
    t2i = tiny("llamagen-t2i-xl", cls_token_num=4, caption_dim=32)
    assert t2i.default_recipe == SamplingRecipe(cfg_scale=7.5, top_k=2000, top_p=1.0)
    assert (t2i.family, t2i.default_dataset, t2i.conditioning) == ("llamagen-t2i", "captions-jsonl", "text")


def test_random_init_is_seeded():
    a, b, c = tiny(init_seed=1), tiny(init_seed=1), tiny(init_seed=2)
    sa, sb, sc = a.policy.state_dict(), b.policy.state_dict(), c.policy.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["tok_embeddings.weight"], sc["tok_embeddings.weight"])
    assert torch.equal(a.codebook, b.codebook)


def test_bad_parameters_are_usage_errors():
    with pytest.raises(UsageError, match="Did you mean n_layer"):
        tiny(n_layers=3)
    with pytest.raises(UsageError, match="multiples of 32"):
        tiny(vq_ch=48)
    with pytest.raises(UsageError, match="not a multiple of the VQ downsampling"):
        tiny(image_size=18)


def test_released_weights_missing_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path))
    with pytest.raises(OfflineError, match="c2i_B_384.pt"):
        vapi_bench.load_generator("llamagen-b")
    with pytest.raises(CheckpointError, match=r"no released checkpoint at image_size 256 \(released: \[384\]\)"):
        vapi_bench.load_generator("llamagen-xxl", image_size=256)


def test_loads_official_format_checkpoints_from_local_paths(tmp_path):
    source = tiny(init_seed=5)
    with torch.no_grad():
        source.policy.output.weight.normal_(std=0.1)
    gpt_file, vq_file = tmp_path / "c2i_tiny.pt", tmp_path / "vq_tiny.pt"
    torch.save({"model": source.policy.state_dict(), "optimizer": {"state": {}}, "steps": 10,
                "args": argparse.Namespace(gpt_model="GPT-B")}, gpt_file)
    torch.save({"model": source.vq.state_dict(), "discriminator": {}, "steps": 3}, vq_file)
    loaded = vapi_bench.load_generator("llamagen-b", checkpoint=str(gpt_file), vq_checkpoint=str(vq_file),
                                       **{k: v for k, v in TINY.items()})
    src, dst = source.policy.state_dict(), loaded.policy.state_dict()
    assert all(torch.equal(src[k], dst[k]) for k in src)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in loaded.policy.parameters())
    tokens = source.sample([1, 2], seeds=[0, 1], recipe=SamplingRecipe(cfg_scale=2.0))
    assert torch.equal(tokens, loaded.sample([1, 2], seeds=[0, 1], recipe=SamplingRecipe(cfg_scale=2.0)))
    facts = loaded.describe()
    assert facts["checkpoint"] == str(gpt_file) and len(facts["checkpoint_sha256"]) == 64
    with pytest.raises(CheckpointError, match=r"cls_embedding.embedding_table.weight: checkpoint \(11, 64\) vs model \(21, 64\)"):
        vapi_bench.load_generator("llamagen-b", checkpoint=str(gpt_file), vq_checkpoint=str(vq_file),
                                  **{**TINY, "num_classes": 20})


def test_tokenizer_paths_agree():
    gen = tiny()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    tokens = gen.encode(images)
    assert tokens.shape == (2, 16)
    decoded = gen.decode(tokens)
    assert decoded.shape == (2, 3, 16, 16)
    torch.testing.assert_close(gen.decode_embeddings(gen.codebook[tokens]), decoded, atol=0, rtol=0)
    assert not any(p.requires_grad for p in gen.vq.parameters())
    with pytest.raises(UsageError, match=r"expected tokens \[B, 16\]"):
        gen.decode(tokens[:, :5])
    with pytest.raises(UsageError, match=r"expected images \[B, 3, 16, 16\]"):
        gen.encode(torch.zeros(1, 3, 32, 32))


def test_teacher_forced_logits_use_context_when_given():
    gen = tiny()
    with torch.no_grad():
        gen.policy.output.weight.normal_(std=0.1)
    gen.policy.eval()
    cond = gen.prepare_conditions([1, 2])
    tokens, context = torch.randint(0, V, (2, 16)), torch.randint(0, V, (2, 16))
    with torch.no_grad():
        plain = gen.teacher_forced_logits(tokens, cond)
        noisy = gen.teacher_forced_logits(tokens, cond, context=context)
        torch.testing.assert_close(noisy, gen.policy(cond, context))
        torch.testing.assert_close(plain, gen.policy(cond, tokens))
    assert plain.shape == (2, 16, V)


def test_prepare_conditions_rejects_bad_input():
    gen = tiny()
    with pytest.raises(UsageError, match=r"class indices in \[0, 10\)"):
        gen.prepare_conditions([3, 10])
    with pytest.raises(UsageError, match="class indices"):
        gen.prepare_conditions(["a cat"])
    with pytest.raises(UsageError, match="seeds"):
        gen.sample([1, 2], seeds=[0])


def test_save_and_load_finetuned_round_trip(tmp_path):
    gen = tiny(init_seed=3)
    gen.sample([1], seeds=[0], recipe=SamplingRecipe(cfg_scale=2.0))  # leaves a KV cache behind
    with torch.no_grad():
        gen.policy.output.weight.normal_(std=0.1)
    written = {p.name for p in gen.save_finetuned(tmp_path / "ft")}
    assert written == {"gpt.safetensors", "llamagen.json"}  # tokenizer unchanged: not saved
    from safetensors.torch import load_file

    assert not any("kv_cache" in k for k in load_file(str(tmp_path / "ft" / "gpt.safetensors")))
    with torch.no_grad():
        gen.tokenizer_decoder.decoder.conv_out.bias.add_(0.5)
    assert "vq.safetensors" in {p.name for p in gen.save_finetuned(tmp_path / "ft2")}

    other = tiny(init_seed=4)
    other.load_finetuned(tmp_path / "ft2")
    a, b = gen.policy.state_dict(), other.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(other.vq.decoder.conv_out.bias, gen.vq.decoder.conv_out.bias)

    wrong = tiny(dim=32, n_head=2)
    with pytest.raises(CheckpointError, match="does not match the model"):
        wrong.load_finetuned(tmp_path / "ft")
    with pytest.raises(CheckpointError, match="no fine-tuned weights"):
        wrong.load_finetuned(tmp_path / "empty")


class WordEncoder:
    """A deterministic toy TextEncoder: one fixed random vector per word, left-padded."""

    def __init__(self, length: int, dim: int):
        self.length, self.dim = length, dim

    def encode(self, prompts):
        rows = []
        for prompt in prompts:
            vecs = [torch.randn(self.dim, generator=torch.Generator().manual_seed(sum(map(ord, w)))) for w in prompt.split()]
            rows.append(torch.stack(vecs) if vecs else torch.zeros(0, self.dim))
        return left_pad(rows, self.length, self.dim)


def test_t2i_generator_with_a_swapped_text_encoder():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(dim=64, n_layer=2, n_head=4, vocab_size=V, model_type="t2i", cls_token_num=5,
                        caption_dim=16, block_size=16))
    torch.nn.init.normal_(gpt.output.weight, std=0.1)
    vq = VQModel(VQConfig(codebook_size=V, ch=32, ch_mult=(1, 1, 1), z_channels=32))
    gen = LlamaGenGenerator(gpt, vq, name="t2i-tiny", image_size=16, text_encoder=WordEncoder(5, 16),
                            family="llamagen-t2i")
    features, mask = gen.prepare_conditions(["a red cat", "dog"])
    assert mask.tolist() == [[False, False, True, True, True], [False, False, False, False, True]]
    assert torch.count_nonzero(features[1, :4]) == 0
    recipe = SamplingRecipe(cfg_scale=4.0, top_k=50)
    prompts, seeds = ["a red cat", "dog", "two blue dogs"], [1, 2, 3]
    whole = gen.sample(prompts, seeds=seeds, recipe=recipe)
    singles = torch.cat([gen.sample([p], seeds=[s], recipe=recipe) for p, s in zip(prompts, seeds)])
    assert torch.equal(whole, singles)
    with pytest.raises(UsageError, match="prompt strings"):
        gen.prepare_conditions([3])
    with pytest.raises(UsageError, match="needs a text encoder"):
        LlamaGenGenerator(gpt, vq, name="x", image_size=16)
    with pytest.raises(UsageError, match="token grid"):
        LlamaGenGenerator(gpt, vq, name="x", image_size=32, text_encoder=WordEncoder(5, 16))


def test_requirements_list_the_released_files_without_building():
    entry = get_registry().get("generators", "llamagen-xxl")
    defaults = {p.name: p.default for p in entry.params}
    gpt_file, vq_file = entry.requirements(checkpoint=None, **defaults)
    assert gpt_file.url == "hf://FoundationVision/LlamaGen/c2i_XXL_384.pt"
    assert vq_file.url == "hf://FoundationVision/LlamaGen/vq_ds16_c2i.pt"
    assert gpt_file.location().name == "c2i_XXL_384.pt"
    local = entry.requirements(checkpoint="/data/mine.pt", **defaults)[0]
    assert local.is_local() and str(local.location()) == "/data/mine.pt"
    assert entry.requirements(checkpoint=None, **{**defaults, "random_init": True}) == []
    t2i = get_registry().get("generators", "llamagen-t2i-xl")
    t2i_defaults = {p.name: p.default for p in t2i.params}
    assert [r.url for r in t2i.requirements(checkpoint=None, **{**t2i_defaults, "image_size": 512})] == [
        "hf://peizesun/llamagen_t2i/t2i_XL_stage2_512.pt", "hf://peizesun/llamagen_t2i/vq_ds16_t2i.pt"]
