"""LlamaGen sampler: CFG, filtering and the inverse-CDF draw against independent references;
guidance end to end against teacher forcing; index-seeded determinism; cache reuse."""
import math

import pytest
import torch

import vapi_bench
from vapi_bench.errors import NON_FINITE_PROBABILITIES
from vapi_bench.interfaces import SamplingRecipe
from vapi_bench.plugins.llamagen.gpt import GPT, GPTConfig
from vapi_bench.plugins.llamagen.sampling import (
    cfg_combine,
    filter_logits,
    generate,
    inverse_cdf_draw,
    logits_to_probs,
)

V = 512


def tiny_gpt(model_type="c2i", seed=0, **kw) -> GPT:
    base = dict(dim=64, n_layer=2, n_head=4, vocab_size=V, num_classes=10, block_size=16)
    if model_type == "t2i":
        base.update(model_type="t2i", cls_token_num=6, caption_dim=32)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**base, **kw}))
    torch.nn.init.normal_(model.output.weight, std=0.1)
    return model.eval()


# ---- independent references ----------------------------------------------------------------

def reference_filter(row: list[float], top_k: int, top_p: float) -> list[bool]:
    """Which tokens survive, written directly from the HF v3.2 description, in plain Python."""
    keep = [True] * len(row)
    if top_k > 0:
        kth = sorted(row, reverse=True)[min(top_k, len(row)) - 1]
        keep = [x >= kth for x in row]
    if top_p < 1.0:
        alive = [(x, i) for i, x in enumerate(row) if keep[i]]
        order = sorted(alive, key=lambda t: (-t[0], t[1]))
        z = sum(math.exp(x - order[0][0]) for x, _ in order)
        mass = 0.0
        survivors = set()
        for rank, (x, i) in enumerate(order):
            if rank == 0 or mass <= top_p:  # mass of the tokens ranked above this one
                survivors.add(i)
            mass += math.exp(x - order[0][0]) / z
        keep = [i in survivors for i in range(len(row))]
    return keep


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (5, 1.0), (7, 0.6), (1, 1.0), (40, 0.3), (0, 0.999)])
def test_filter_logits_matches_reference(top_k, top_p):
    torch.manual_seed(1)
    logits = torch.randn(6, 40) * 2
    logits[0, :4] = 3.0  # ties at the top
    out = filter_logits(logits, top_k, top_p)
    for i in range(logits.shape[0]):
        keep = reference_filter(logits[i].double().tolist(), top_k, top_p)
        assert (out[i] > float("-inf")).tolist() == keep
        assert torch.equal(out[i][torch.tensor(keep)], logits[i][torch.tensor(keep)])


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert (filter_logits(logits, 0, 0.7) > float("-inf")).tolist() == [[True, True, False, False]]
    assert (filter_logits(logits, 0, 0.5) > float("-inf")).tolist() == [[True, True, False, False]]
    assert (filter_logits(logits, 0, 0.4) > float("-inf")).tolist() == [[True, False, False, False]]
    assert (filter_logits(logits, 2, 0.99) > float("-inf")).tolist() == [[True, True, False, False]]


def test_cfg_combination_and_temperature_order():
    c, u = torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    torch.testing.assert_close(cfg_combine(c, u, 1.5), torch.tensor([[2.5, -0.5, 1.0]]))
    probs = logits_to_probs(torch.tensor([[2.0, 1.0, 0.0]]), SamplingRecipe(temperature=0.5, top_k=2))
    want = torch.softmax(torch.tensor([4.0, 2.0, float("-inf")]), 0)
    torch.testing.assert_close(probs[0], want)


def test_inverse_cdf_matches_python_loop_and_skips_zero_probability():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(50, 30), dim=-1)
    probs[:, ::3] = 0  # filtered tokens
    probs = probs / probs.sum(-1, keepdim=True)
    u = torch.rand(50)
    u[0], u[1] = 0.0, 1.0 - 1e-8
    got = inverse_cdf_draw(probs, u)
    for i in range(50):
        target, acc, pick = u[i].item() * probs[i].double().sum().item(), 0.0, None
        for j, p in enumerate(probs[i].double().tolist()):
            acc += p
            if p > 0 and acc > target:
                pick = j
                break
        pick = pick if pick is not None else max(j for j, p in enumerate(probs[i].tolist()) if p > 0)
        assert got[i].item() == pick
        assert probs[i, got[i]] > 0


def test_inverse_cdf_frequencies_follow_probabilities():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    u = torch.rand(40000, generator=torch.Generator().manual_seed(3))
    draws = inverse_cdf_draw(probs.expand(40000, 4), u)
    freq = torch.bincount(draws, minlength=4).float() / 40000
    torch.testing.assert_close(freq, probs, atol=0.01, rtol=0)
    assert freq[1] == 0


# ---- guidance end to end -------------------------------------------------------------------

def greedy(recipe: SamplingRecipe) -> SamplingRecipe:
    return SamplingRecipe(cfg_scale=recipe.cfg_scale, temperature=1e-6, cfg_interval=recipe.cfg_interval)


@pytest.mark.parametrize("cfg_interval", [-1, 2])
def test_greedy_cfg_tokens_match_teacher_forced_guidance(cfg_interval):
    model = tiny_gpt()
    labels = torch.tensor([1, 4, 7])
    recipe = greedy(SamplingRecipe(cfg_scale=3.0, cfg_interval=cfg_interval))
    tokens = generate(model, labels, num_tokens=16, recipe=recipe, uniforms=torch.rand(3, 16))
    with torch.no_grad():
        cond = model(labels, tokens)
        uncond = model(torch.full_like(labels, 10), tokens)
    guided = cfg_combine(cond, uncond, 3.0)
    for t in range(16):
        use_cfg = cfg_interval < 0 or t <= cfg_interval + 1
        expected = (guided if use_cfg else cond)[:, t].argmax(-1)
        assert torch.equal(tokens[:, t], expected), t


def test_greedy_t2i_cfg_uses_uncond_embedding_with_the_same_mask():
    model = tiny_gpt("t2i")
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    features = torch.randn(2, 6, 32) * mask[..., None]
    recipe = greedy(SamplingRecipe(cfg_scale=4.0))
    tokens = generate(model, (features, mask), num_tokens=16, recipe=recipe, uniforms=torch.rand(2, 16))
    null = model.cls_embedding.uncond_embedding.expand(2, -1, -1)
    with torch.no_grad():
        guided = cfg_combine(model((features, mask), tokens), model((null, mask), tokens), 4.0)
    assert torch.equal(tokens, guided.argmax(-1))


def test_no_cfg_at_scale_one_runs_a_single_half():
    model = tiny_gpt()
    generate(model, torch.tensor([1, 2]), num_tokens=4, recipe=SamplingRecipe(cfg_scale=1.0), uniforms=torch.rand(2, 4))
    assert model.layers[0].attention.kv_cache.k.shape[0] == 2
    generate(model, torch.tensor([1, 2]), num_tokens=4, recipe=SamplingRecipe(cfg_scale=1.5), uniforms=torch.rand(2, 4))
    assert model.layers[0].attention.kv_cache.k.shape[0] == 4


# ---- determinism and cache -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_generator():
    gen = vapi_bench.load_generator(
        "llamagen-b", random_init=True, dim=64, n_layer=2, n_head=4, num_classes=10, codebook_size=V,
        vq_ch=32, vq_ch_mult=(1, 1, 1), vq_z_channels=32, image_size=16,
    )
    with torch.no_grad():
        gen.policy.output.weight.normal_(std=0.1)
    return gen


RECIPE = SamplingRecipe(cfg_scale=2.0, temperature=1.0, top_k=100, top_p=0.95)


def test_samples_do_not_depend_on_batch_size_or_order(tiny_generator):
    conds, seeds = [0, 3, 3, 9, 5], [11, 12, 13, 14, 15]
    whole = tiny_generator.sample(conds, seeds=seeds, recipe=RECIPE)
    parts = torch.cat([
        tiny_generator.sample(conds[:2], seeds=seeds[:2], recipe=RECIPE),
        tiny_generator.sample(conds[2:], seeds=seeds[2:], recipe=RECIPE),
    ])
    reverse = tiny_generator.sample(conds[::-1], seeds=seeds[::-1], recipe=RECIPE).flip(0)
    single = torch.cat([tiny_generator.sample([c], seeds=[s], recipe=RECIPE) for c, s in zip(conds, seeds)])
    assert torch.equal(whole, parts) and torch.equal(whole, reverse) and torch.equal(whole, single)
    assert whole.shape == (5, 16) and whole.dtype == torch.long
    assert not torch.equal(whole[1], whole[2])  # same class, different seed


def test_sampling_keeps_the_policy_mode_and_state_dict(tiny_generator):
    policy = tiny_generator.policy.train()
    tiny_generator.sample([1], seeds=[0], recipe=RECIPE)
    assert policy.training
    assert not any("kv_cache" in k for k in policy.state_dict())
    assert len(policy.state_dict()) == 18
    policy.eval()


def test_cache_is_allocated_once_per_shape(tiny_generator):
    tiny_generator.sample([1, 2], seeds=[0, 1], recipe=RECIPE)
    cache = tiny_generator.policy.layers[0].attention.kv_cache
    tiny_generator.sample([3, 4], seeds=[2, 3], recipe=RECIPE)
    assert tiny_generator.policy.layers[0].attention.kv_cache is cache
    tiny_generator.sample([3, 4, 5], seeds=[2, 3, 4], recipe=RECIPE)
    assert tiny_generator.policy.layers[0].attention.kv_cache is not cache


def test_bf16_autocast_sampling_runs_with_a_bf16_cache():
    model = tiny_gpt()
    tokens = generate(model, torch.tensor([1, 2]), num_tokens=16, recipe=RECIPE, uniforms=torch.rand(2, 16),
                      autocast_dtype=torch.bfloat16)
    assert tokens.shape == (2, 16) and int(tokens.min()) >= 0 and int(tokens.max()) < V
    assert model.layers[0].attention.kv_cache.k.dtype == torch.bfloat16


def test_non_finite_logits_raise_the_multinomial_message_and_never_draw_an_id_past_the_vocabulary():
    """A NaN row used to give id V, which the next embedding lookup rejects (on CUDA: a device-side
    assert that ends the process); the sampler now says what torch.multinomial says, once."""
    nan_row = torch.full((1, V), math.nan)
    assert inverse_cdf_draw(nan_row, torch.tensor([0.5])).tolist() == [V - 1]
    model = tiny_gpt()
    with torch.no_grad():
        model.output.weight.fill_(math.inf)
    with pytest.raises(RuntimeError) as info:
        generate(model, torch.tensor([1, 2]), num_tokens=16, recipe=RECIPE, uniforms=torch.rand(2, 16))
    assert str(info.value) == NON_FINITE_PROBABILITIES


def test_generate_validates_its_inputs():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="uniforms must be"):
        generate(model, torch.tensor([1, 2]), num_tokens=16, recipe=RECIPE, uniforms=torch.rand(2, 8))
    with pytest.raises(ValueError, match="num_tokens"):
        generate(model, torch.tensor([1]), num_tokens=17, recipe=RECIPE, uniforms=torch.rand(1, 17))
