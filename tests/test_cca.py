"""`cca` on tiny random generators: the official loss written out here, rolled negatives within the
micro-batch vs over the global batch, null rows, text negatives, resume and the recipe."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers_toy_generator import RandomImages, assert_resume_matches_uninterrupted, tiny_llamagen
from vapi_bench.errors import UsageError
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.peers import cca as cca_module
from vapi_bench.plugins.peers.cca import CCA_PARAMS, Cca, CcaStep
from vapi_bench.plugins.peers.cca_objective import cca_loss, rolled
from vapi_bench.plugins.peers.recipes import CCA_RECIPES
from vapi_bench.training import Batch, FrozenReference, MetricMeter, load_batch, resolve_method_params

CPU = torch.device("cpu")
SMALL = dict(steps=2, batch_size=4, micro_batch=2, ckpt_every=1, precision="fp32", lr=1e-3)


def _gen(**kw):
    return tiny_llamagen(dropout=False, class_dropout_prob=0.1, **kw)  # a null class row


def _ctx(tmp_path, records=None, **kw):
    return StageContext(out_dir=tmp_path, device=CPU, seed=0,
                        log=(records.append if records is not None else (lambda r: None)), **kw)


def _step(gen, tmp_path, **overrides):
    params = resolve_params(CCA_PARAMS, {**SMALL, "lam": 10.0, **overrides}, "cca")
    cfg = resolve_method_params("cca", params, gen)
    return CcaStep(gen, cfg, 0, FrozenReference(gen, False, CPU, "cca"))


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_loss_matches_the_official_formula_on_hand_values():
    dp, dn = [1.0, -2.0, 0.5], [3.0, 0.5, -4.0]
    pos_as_neg = [False, True, False]
    beta, lam = 0.5, 4.0
    positive = -sum(_logsig(beta * x) for x in dp) / 3
    negative = -sum((1.0 if p else lam) * _logsig((1 if p else -1) * beta * x) for x, p in zip(dn, pos_as_neg)) / 3
    got = cca_loss(torch.tensor(dp), torch.tensor(dn), torch.tensor(pos_as_neg), beta, lam)
    assert got.item() == pytest.approx((positive + negative) / lam, rel=1e-6)
    small_lambda = cca_loss(torch.tensor(dp), torch.tensor(dn), torch.tensor(pos_as_neg), beta, 0.5)
    negative_half = -sum((1.0 if p else 0.5) * _logsig((1 if p else -1) * beta * x) for x, p in zip(dn, pos_as_neg)) / 3
    assert small_lambda.item() == pytest.approx(positive + negative_half, rel=1e-6)  # divided by max(λ, 1) = 1


def test_step_loss_is_the_formula_on_sequence_log_likelihoods(tmp_path):
    gen = _gen()
    step = _step(gen, tmp_path, beta=0.02, lam=300.0)
    batch = load_batch(RandomImages(), 0, [0, 1, 2, 3], [0, 1, 2, 3], CPU)
    tokens = gen.encode(batch.images).long()
    _perturb(gen.policy)  # π_θ ≠ π_ref
    gen.policy.eval()
    conds, negs = [0, 1, 2, 2], [1, 0, 2, 3]
    null = torch.tensor([False, False, False, True])
    meter = MetricMeter()
    loss = step.micro_loss(tokens, conds, negs, null, meter)

    def seq_logp(module_weights, labels):
        with torch.no_grad() if module_weights == "ref" else torch.enable_grad():
            logits = (reference if module_weights == "ref" else gen.policy)(torch.tensor(labels), tokens)
        return F.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1).sum(-1)

    reference = _gen()  # the unperturbed initial weights
    reference = reference.policy.eval()
    nulled = lambda labels: [gen.num_classes if n else c for c, n in zip(labels, null.tolist())]  # noqa: E731
    dp = seq_logp("policy", nulled(conds)) - seq_logp("ref", nulled(conds))
    dn = seq_logp("policy", nulled(negs)) - seq_logp("ref", nulled(negs))
    # row 2: c⁻ == c; row 3: a null row -> both count as positives
    pos_as_neg = torch.tensor([False, False, True, True])
    expected = cca_loss(dp, dn, pos_as_neg, 0.02, 300.0)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert meter.sums["acc"] == pytest.approx((dp > dn).float().mean().item())


def _perturb(module, scale=0.05):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def test_negatives_roll_within_the_micro_batch_or_over_the_global_batch(tmp_path):
    assert rolled([1, 2, 3]) == [2, 3, 1] and rolled([7]) == [7]
    gen = _gen()
    batch = Batch(0, torch.zeros(4, 3, 16, 16), [10, 11, 12, 13], [0, 1, 2, 3], [0, 1, 2, 3])
    assert _step(gen, tmp_path).negatives(batch) == [11, 10, 13, 12]  # official: micro-batches of 2
    assert _step(gen, tmp_path, negatives="global").negatives(batch) == [11, 12, 13, 10]
    assert _step(gen, tmp_path, micro_batch=4).negatives(batch) == [11, 12, 13, 10]


def test_null_rows_are_drawn_per_global_position(tmp_path):
    step = _step(_gen(), tmp_path, uncond_ratio=0.5)
    whole = Batch(3, torch.zeros(8, 3, 1, 1), list(range(8)), list(range(8)), list(range(8)))
    share = Batch(3, torch.zeros(4, 3, 1, 1), list(range(4, 8)), list(range(4, 8)), list(range(4, 8)))
    assert torch.equal(step.null_rows(whole)[4:], step.null_rows(share))  # rank 1 of 2 draws the same
    many = Batch(0, torch.zeros(1), [0] * 2000, list(range(2000)), list(range(2000)))
    assert _step(_gen(), tmp_path).null_rows(many).float().mean().item() == pytest.approx(0.1, abs=0.02)


def test_text_conditions_use_mismatched_captions_and_the_null_caption(tmp_path):
    from test_llamagen_generator import V, WordEncoder
    from vapi_bench.plugins.llamagen import GPT, GPTConfig, LlamaGenGenerator, VQConfig, VQModel

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(dim=32, n_layer=1, n_head=2, vocab_size=V, model_type="t2i", cls_token_num=5,
                        caption_dim=16, block_size=16, token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0))
    torch.nn.init.normal_(gpt.output.weight, std=0.1)
    vq = VQModel(VQConfig(codebook_size=V, ch=32, ch_mult=(1, 1, 1), z_channels=32))
    gen = LlamaGenGenerator(gpt, vq, name="t2i-tiny", image_size=16, text_encoder=WordEncoder(5, 16),
                            family="llamagen-t2i")
    captions = ["a red cat", "dog", "two blue dogs", "a cat"]
    images = RandomImages(n=4)
    data = [(images[i][0], captions[i]) for i in range(4)]
    step = _step(gen, tmp_path)
    batch = load_batch(data, 0, [0, 1, 2, 3], [0, 1, 2, 3], CPU)
    assert step.negatives(batch) == ["dog", "a red cat", "a cat", "two blue dogs"]
    tokens = gen.encode(batch.images).long()
    null = torch.tensor([False, True, False, False])
    pos, neg = step.pair_logprobs(tokens, captions, step.negatives(batch), null)
    features, mask = gen.prepare_conditions(captions)
    features[1] = gen.policy.cls_embedding.uncond_embedding
    gen.policy.eval()
    logits = gen.policy((features, mask), tokens)
    expected = F.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(pos, expected, rtol=1e-5, atol=1e-4)
    assert neg[1].item() == pytest.approx(pos[1].item(), abs=1e-4)  # a null row is null in c⁻ too
    records = []
    summary = Cca(**resolve_params(CCA_PARAMS, {**SMALL, "steps": 1}, "cca")).finetune(gen, data, _ctx(tmp_path / "r", records))
    assert summary["params"]["recipe"] == "llamagen-t2i" and "margin" in records[0]


def test_run_uses_the_official_optimiser_and_lambda_per_model(tmp_path):
    records = []
    gen = _gen()
    before = {n: p.clone() for n, p in gen.policy.named_parameters()}
    summary = Cca(**resolve_params(CCA_PARAMS, {"steps": 1, "batch_size": 4}, "cca")).finetune(
        gen, RandomImages(), _ctx(tmp_path, records))
    cfg = summary["params"]
    assert cfg["recipe"] == "llamagen-c2i" and gen.name == "llamagen-b"
    assert (cfg["lr"], cfg["weight_decay"], tuple(cfg["betas"]), cfg["beta"], cfg["lam"], cfg["uncond_ratio"],
            cfg["micro_batch"], cfg["accumulation"]) == (1e-5, 0.05, (0.9, 0.95), 0.02, 1000.0, 0.1, 2, "sum")
    assert CCA_RECIPES["llamagen-c2i"]["batch_size"] == 256
    for key in ("cca_loss", "acc", "margin", "delta_pos", "delta_neg", "null_frac", "grad_norm", "loss"):
        assert key in records[0], key
    assert records[0]["margin"] == pytest.approx(0.0, abs=1e-4)  # θ = θ_ref at the first step
    assert any(not torch.equal(p, before[n]) for n, p in gen.policy.named_parameters())
    large = tiny_llamagen(dropout=False, class_dropout_prob=0.1)
    large.name = "llamagen-l"
    summary = Cca(**resolve_params(CCA_PARAMS, {"steps": 1, "batch_size": 2}, "cca")).finetune(
        large, RandomImages(), _ctx(tmp_path / "l"))
    assert summary["params"]["lam"] == 300.0


def test_resumed_run_matches_uninterrupted(tmp_path):
    params = resolve_params(CCA_PARAMS, {**SMALL, "steps": 3, "uncond_ratio": 0.3}, "cca")
    assert_resume_matches_uninterrupted(lambda: Cca(**params), _gen, _ctx, tmp_path)


def test_bad_settings_are_clear_errors(tmp_path):
    gen = tiny_llamagen(dropout=False)  # class_dropout_prob = 0: no null class row
    with pytest.raises(UsageError, match="no null class row"):
        Cca(**resolve_params(CCA_PARAMS, {"steps": 1, "batch_size": 2, "uncond_ratio": 0.9}, "cca")).finetune(
            gen, RandomImages(), _ctx(tmp_path))
    stranger = tiny_llamagen(dropout=False, class_dropout_prob=0.1)
    stranger.family = "my-own-family"
    with pytest.raises(UsageError, match=r"family 'my-own-family'.*cca: lr, weight_decay, steps.* --set lr=1e-05"):
        Cca(**resolve_params(CCA_PARAMS, {"batch_size": 2}, "cca")).finetune(stranger, RandomImages(), _ctx(tmp_path))
    with pytest.raises(UsageError, match="uncond_ratio"):
        cca_module._check({"uncond_ratio": 1.0, "beta": 0.02, "lam": 1.0, "sharding": "ddp"})


def test_accumulation_is_in_every_runs_key():
    """Runs recorded before `accumulation` existed averaged the micro-batch losses (and used the sigmoid
    form at uncond_ratio = 0): the parameter is keyed at its default, so no new run, official or
    `mean`, shares their finetune key (vapi_bench.spec.RunSpec.finetune_key hashes method_params)."""
    from vapi_bench.params import keyed_params

    declared = {p.name: p for p in CCA_PARAMS}["accumulation"]
    assert declared.default == "sum" and declared.keyed_at_default
    for given in ({}, {"accumulation": "mean"}):
        values = resolve_params(CCA_PARAMS, given, "cca")
        assert keyed_params(CCA_PARAMS, values)["accumulation"] == given.get("accumulation", "sum")
    with pytest.raises(UsageError, match="accumulation"):
        resolve_params(CCA_PARAMS, {"accumulation": "avg"}, "cca")
