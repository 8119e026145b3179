"""`ar-grpo` on tiny random generators: the official advantage and loss written out here, the
ratio-1 quirk, guided vs conditional log-probs, index-seeded rollouts, resume, and c2i / t2i /
Janus through the generator contract."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import vapi_bench
from helpers_toy_generator import RandomImages, assert_resume_matches_uninterrupted, tiny_llamagen
from vapi_bench.errors import UsageError
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.peers import ar_grpo
from vapi_bench.plugins.peers.ar_grpo import AR_GRPO_PARAMS, ArGrpo, ArGrpoStep
from vapi_bench.plugins.peers.rewards import RewardMix, parse_reward_spec
from vapi_bench.plugins.peers.recipes import AR_GRPO_RECIPES
from vapi_bench.training import FrozenReference, resolve_method_params
from vapi_bench.training import MetricMeter, load_batch

SMALL = dict(steps=2, batch_size=2, micro_batch=1, group_size=4, ckpt_every=1, precision="fp32", lr=1e-3,
             rewards="shapes-class-prob:1", decode_chunk=8)
CPU = torch.device("cpu")


class Brightness(torch.nn.Module):
    """A reward that varies from image to image: mean pixel value (stands in for RewardMix)."""

    def forward(self, images, conditions):
        value = images.float().mean(dim=(1, 2, 3))
        return value, {"brightness": value}


def _gen(**kw):
    return tiny_llamagen(dropout=False, class_dropout_prob=0.1, **kw)  # a null class row for CFG


def _ctx(tmp_path, records=None, **kw):
    return StageContext(out_dir=tmp_path, device=CPU, seed=0,
                        log=(records.append if records is not None else (lambda r: None)), **kw)


def _cfg(gen, tmp_path, **overrides):
    params = resolve_params(AR_GRPO_PARAMS, {**SMALL, **overrides}, "ar-grpo")
    return resolve_method_params("ar-grpo", params, gen)


def _step(gen, tmp_path, reference=True, **overrides):
    ref = FrozenReference(gen, False, CPU, "ar-grpo") if reference else None
    return ArGrpoStep(gen, _cfg(gen, tmp_path, **overrides), Brightness(), 0, ref, tmp_path)


def _batch(indices=(0, 1), positions=(0, 1)):
    return load_batch(RandomImages(), 0, list(indices), list(positions), CPU)


def _perturb(module, scale=0.05, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def _hand_logp(gen, labels, tokens, scale=None):
    """log-probs of the sampled tokens straight from the GPT (null class = num_classes)."""
    cond = gen.policy(torch.tensor(labels), tokens)
    logits = cond
    if scale is not None:
        uncond = gen.policy(torch.full((len(labels),), gen.num_classes), tokens)
        logits = uncond + scale * (cond - uncond)
    return F.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def test_advantages_and_loss_follow_the_official_formulas(tmp_path):
    gen = _gen()
    step = _step(gen, tmp_path, beta=0.3)
    batch = _batch()
    roll = step.rollout(batch)
    group = 4
    assert roll["tokens"].shape == (2 * group, gen.num_tokens)
    for b in range(2):  # (R - mean) / (unbiased std + 1e-4)
        r = roll["rewards"][b].tolist()
        mean = sum(r) / group
        std = math.sqrt(sum((x - mean) ** 2 for x in r) / (group - 1))
        for g in range(group):
            assert roll["advantages"][b, g].item() == pytest.approx((r[g] - mean) / (std + 1e-4), rel=1e-5, abs=1e-6)
    gen.policy.eval()
    ref = _hand_logp(gen, [c for c in batch.conditions for _ in range(group)], roll["tokens"]).detach()
    torch.testing.assert_close(roll["ref_logp"], ref, rtol=1e-5, atol=1e-5)
    _perturb(gen.policy)
    labels = [c for c in batch.conditions for _ in range(group)]
    with torch.no_grad():  # a π_old away from π_θ, so that the clip acts on some tokens
        noise = (torch.rand(roll["tokens"].shape, generator=torch.Generator().manual_seed(2)) - 0.5) * 0.8
        roll["old_logp"] = _hand_logp(gen, labels, roll["tokens"]) + noise
    meter = MetricMeter()
    loss = step.micro_loss(roll, slice(0, 2 * group), meter)
    new = _hand_logp(gen, labels, roll["tokens"])
    ratio = torch.exp(new - roll["old_logp"])
    adv = roll["advantages"].flatten()[:, None]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
    d = roll["ref_logp"] - new
    expected = (-surrogate + 0.3 * (torch.exp(d) - d - 1)).mean()  # token mean over the micro-batch
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    clipped = ((ratio > 1.2) & (adv > 0)) | ((ratio < 0.8) & (adv < 0))
    assert 0 < clipped.float().mean() < 1
    assert meter.sums["clip_frac"] == pytest.approx(clipped.float().mean().item())


def test_one_inner_iteration_makes_the_ratio_one_and_the_step_reinforce(tmp_path):
    """The official quirk: π_old = π_θ.detach(), so ρ ≡ 1, the clip never acts, and the gradient is
    −mean_t[A ∇log π] + β ∇KL."""
    gen = _gen()
    step = _step(gen, tmp_path, beta=0.3)
    roll = step.rollout(_batch())
    _perturb(gen.policy)
    gen.policy.eval()
    meter = MetricMeter()
    gen.policy.zero_grad(set_to_none=True)
    step.micro_loss(roll, slice(0, 8), meter).backward()
    got = {n: p.grad.clone() for n, p in gen.policy.named_parameters()}
    assert meter.sums["ratio_mean"] == 1.0 and meter.sums["clip_frac"] == 0.0
    gen.policy.zero_grad(set_to_none=True)
    labels = [_batch().conditions[i // 4] for i in range(8)]
    new = _hand_logp(gen, labels, roll["tokens"])
    d = roll["ref_logp"] - new
    reinforce = -(roll["advantages"].flatten()[:, None] * new).mean() + 0.3 * (torch.exp(d) - d - 1).mean()
    reinforce.backward()
    for name, p in gen.policy.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_more_inner_iterations_reuse_the_rollout_and_move_the_ratio(tmp_path, monkeypatch):
    monkeypatch.setattr(ar_grpo, "RewardMix", lambda spec, device, where, **_: Brightness())
    records = []
    params = resolve_params(AR_GRPO_PARAMS, {**SMALL, "steps": 2, "num_iterations": 2, "lr": 3e-2}, "ar-grpo")
    ArGrpo(**params).finetune(_gen(), RandomImages(), _ctx(tmp_path, records))
    assert records[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # the first pass is still on-policy
    assert abs(records[1]["ratio_mean"] - 1.0) > 1e-3  # the same rollouts after one update
    assert records[0]["reward_mean"] == records[1]["reward_mean"]
    assert (tmp_path / "ar_grpo_rollout_rank0.pt").exists()


def test_guided_log_probs_combine_both_branches_and_train_the_null_condition(tmp_path):
    gen = _gen()
    batch = _batch()
    tokens = gen.sample(batch.conditions, seeds=[1, 2], recipe=vapi_bench.SamplingRecipe(cfg_scale=2.0))
    gen.policy.eval()
    null_row = gen.policy.cls_embedding.embedding_table.weight
    grads = {}
    for mode, scale in (("conditional", None), ("guided", 2.0)):
        step = _step(gen, tmp_path, logprob_cfg=mode, rollout_cfg=2.0)
        logp = step.token_logprobs(tokens, batch.conditions)
        torch.testing.assert_close(logp, _hand_logp(gen, batch.conditions, tokens, scale), rtol=1e-5, atol=1e-5)
        gen.policy.zero_grad(set_to_none=True)
        logp.sum().backward()
        grads[mode] = null_row.grad[gen.num_classes].abs().sum().item()
    assert grads["conditional"] == 0.0  # officially the unconditional branch gets no gradient
    assert grads["guided"] > 0.0
    assert not torch.allclose(_hand_logp(gen, batch.conditions, tokens), _hand_logp(gen, batch.conditions, tokens, 2.0))


def test_rollouts_are_index_seeded(tmp_path):
    gen = _gen()
    step = _step(gen, tmp_path, reference=False, beta=0.0)
    both = step.rollout(_batch((0, 1), (0, 1)))
    alone = step.rollout(_batch((1,), (1,)))  # image 1 at global position 1, e.g. on another rank
    assert torch.equal(both["tokens"][4:], alone["tokens"])
    assert len({tuple(row.tolist()) for row in both["tokens"]}) > 1


@pytest.mark.parametrize("iterations", [1, 2])
def test_resumed_run_matches_uninterrupted(tmp_path, monkeypatch, iterations):
    monkeypatch.setattr(ar_grpo, "RewardMix", lambda spec, device, where, **_: Brightness())
    params = resolve_params(AR_GRPO_PARAMS, {**SMALL, "steps": 3, "num_iterations": iterations}, "ar-grpo")
    # with 2 inner iterations the stop after step 2 falls in the middle of a rollout cycle
    assert_resume_matches_uninterrupted(lambda: ArGrpo(**params), _gen, _ctx, tmp_path)


def test_c2i_run_logs_the_official_recipe_and_reward_terms(tmp_path):
    records = []
    gen = _gen()
    before = {n: p.clone() for n, p in gen.policy.named_parameters()}
    params = resolve_params(AR_GRPO_PARAMS, {"steps": 1, "batch_size": 2, "group_size": 2,
                                             "rewards": "shapes-class-prob:2"}, "ar-grpo")
    summary = ArGrpo(**params).finetune(gen, RandomImages(), _ctx(tmp_path, records))
    cfg = summary["params"]
    assert cfg["recipe"] == "llamagen-c2i"
    assert (cfg["lr"], cfg["beta"], cfg["rollout_cfg"], cfg["weight_decay"], cfg["num_iterations"]) == \
        (1e-5, 0.1, 2.0, 0.0, 1)
    assert AR_GRPO_RECIPES["llamagen-c2i"]["steps"] == 400 and AR_GRPO_RECIPES["llamagen-t2i"]["steps"] == 600
    record = records[0]
    for key in ("reward_mean", "reward_std", "reward_shapes-class-prob", "kl", "clip_frac", "ratio_mean",
                "pg_loss", "adv_abs_mean", "frac_reward_zero_std", "grad_norm", "loss", "lr", "images_per_s"):
        assert key in record, key
    assert record["reward_mean"] == pytest.approx(2 * record["reward_shapes-class-prob"])
    assert record["kl"] == pytest.approx(0.0, abs=1e-7)  # θ = θ_ref at the first step
    assert any(not torch.equal(p, before[n]) for n, p in gen.policy.named_parameters())


def tiny_t2i():
    """A random tiny LlamaGen t2i generator (family 'llamagen-t2i') reading captions word by word."""
    from test_llamagen_generator import V, WordEncoder
    from vapi_bench.plugins.llamagen import GPT, GPTConfig, LlamaGenGenerator, VQConfig, VQModel

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(dim=32, n_layer=1, n_head=2, vocab_size=V, model_type="t2i", cls_token_num=5,
                        caption_dim=16, block_size=16, token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0))
    torch.nn.init.normal_(gpt.output.weight, std=0.1)
    vq = VQModel(VQConfig(codebook_size=V, ch=32, ch_mult=(1, 1, 1), z_channels=32))
    return LlamaGenGenerator(gpt, vq, name="t2i-tiny", image_size=16, text_encoder=WordEncoder(5, 16),
                             family="llamagen-t2i")


def test_t2i_llamagen_runs_with_text_rollouts_and_guided_log_probs(tmp_path, monkeypatch):
    gen = tiny_t2i()
    captions = ["a red cat", "dog", "two blue dogs", "a cat"]
    data = [(torch.zeros(3, 16, 16), c) for c in captions]
    monkeypatch.setattr(ar_grpo, "RewardMix", lambda spec, device, where, **_: Brightness())
    records = []
    params = resolve_params(AR_GRPO_PARAMS, {"steps": 1, "batch_size": 2, "group_size": 2, "logprob_cfg": "guided",
                                             "lr": 1e-3}, "ar-grpo")
    before = {n: p.clone() for n, p in gen.policy.named_parameters()}
    cfg = ArGrpo(**params).finetune(gen, data, _ctx(tmp_path, records))["params"]
    assert (cfg["recipe"], cfg["rollout_cfg"], cfg["beta"]) == ("llamagen-t2i", 4.0, 1.0)
    assert records[0]["ratio_mean"] == 1.0
    assert any(not torch.equal(p, before[n]) for n, p in gen.policy.named_parameters())
    features, mask = gen.prepare_conditions(["a red cat", "dog"])
    null_features, null_mask = gen.null_conditions((features, mask), torch.tensor([False, True]))
    assert torch.equal(null_features[0], features[0]) and torch.equal(null_mask, mask)
    assert torch.equal(null_features[1], gen.policy.cls_embedding.uncond_embedding)


def test_janus_runs_through_the_contract(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from test_janus_pro import tiny_config, tiny_tokenizer
    from transformers import JanusForConditionalGeneration

    torch.manual_seed(0)
    model = JanusForConditionalGeneration(tiny_config()).eval()
    model.save_pretrained(tmp_path / "janus")
    tiny_tokenizer().save_pretrained(tmp_path / "janus")
    gen = vapi_bench.load_generator("janus-pro-1b", checkpoint=str(tmp_path / "janus"))
    data = [(torch.zeros(3, gen.image_size, gen.image_size), c) for c in ("a red circle", "two big blue squares")]
    monkeypatch.setattr(ar_grpo, "RewardMix", lambda spec, device, where, **_: Brightness())
    before = {k: v.clone() for k, v in gen.policy_state().items() if k.startswith("model.generation_head.")}
    records = []
    params = resolve_params(AR_GRPO_PARAMS, {"steps": 1, "batch_size": 2, "micro_batch": 1, "group_size": 2,
                                             "logprob_cfg": "guided", "lr": 1e-3}, "ar-grpo")
    cfg = ArGrpo(**params).finetune(gen, data, _ctx(tmp_path / "run", records))["params"]
    assert (cfg["recipe"], cfg["rollout_cfg"]) == ("janus-pro", 5.0)
    after = gen.policy_state()
    assert any(not torch.equal(v, after[k]) for k, v in before.items())
    prompts = gen.prepare_conditions(["a red circle", "two big blue squares"])
    null = gen.null_conditions(prompts, torch.tensor([True, False]))
    assert torch.equal(null.input_ids[0], prompts.unconditional_ids()[0])
    assert torch.equal(null.input_ids[1], prompts.input_ids[1])


def test_reward_spec_and_mix(tmp_path):
    assert [(t.name, t.weight) for t in parse_reward_spec("a:1, b:0.5,c", "x")] == [("a", 1.0), ("b", 0.5), ("c", 1.0)]
    for bad, message in (("a:x", "not a number"), ("", "empty"), ("a:1,a:2", "named twice")):
        with pytest.raises(UsageError, match=message):
            parse_reward_spec(bad, "x")
    with pytest.raises(UsageError, match="not a reward"):
        RewardMix("mse:1", CPU, "x")
    mix = RewardMix("shapes-class-prob:2", CPU, "x")
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    total, parts = mix(images, [0, 1, 2])
    torch.testing.assert_close(total, 2 * parts["shapes-class-prob"])
