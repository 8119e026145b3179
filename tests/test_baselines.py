"""Baselines: none, sft, post-train-tokenizer and ste on a tiny random LlamaGen."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vapi_bench
from helpers_toy_generator import RandomImages, tiny_llamagen
from vapi_bench.interfaces import StageContext
from vapi_bench.plugins.baselines.ste import hard_gumbel_softmax

SMALL = dict(lr=1e-3, steps=2, batch_size=4, micro_batch=2, ckpt_every=1, precision="fp32")


def _ctx(tmp_path, records=None):
    return StageContext(out_dir=tmp_path, device=torch.device("cpu"), seed=0,
                        log=(records.append if records is not None else (lambda r: None)))


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(module, before):
    return {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}


def test_registered_with_typed_params():
    assert vapi_bench.load_method("none").is_identity
    for name in ("sft", "post-train-tokenizer", "ste"):
        assert not vapi_bench.load_method(name).is_identity
    assert vapi_bench.load_method("pt").__class__.__name__ == "PostTrainTokenizer"  # alias


def test_sft_trains_the_policy_on_nll_only(tmp_path):
    generator = tiny_llamagen()
    policy_before, vq_before = _snapshot(generator.policy), _snapshot(generator.vq)
    records = []
    summary = vapi_bench.load_method("sft", **SMALL).finetune(generator, RandomImages(), _ctx(tmp_path, records))
    assert set(records[0]) >= {"ce", "loss", "grad_norm"}
    assert records[0]["loss"] == pytest.approx(records[0]["ce"])
    assert _changed(generator.policy, policy_before) and not _changed(generator.vq, vq_before)
    assert summary["params"]["recipe"] == "llamagen-c2i"


def test_sft_loss_is_teacher_forced_cross_entropy(tmp_path):
    generator = tiny_llamagen(dropout=False)
    data = RandomImages()
    records = []
    vapi_bench.load_method("sft", **{**SMALL, "steps": 1, "batch_size": 32, "micro_batch": 32}).finetune(
        generator, data, _ctx(tmp_path, records))
    fresh = tiny_llamagen(dropout=False)
    gt = fresh.encode(data.images)
    with torch.no_grad():
        fresh.policy.train()
        logits = fresh.teacher_forced_logits(gt, fresh.prepare_conditions(data.labels))
    expected = F.cross_entropy(logits.flatten(0, 1), gt.flatten())
    assert records[0]["ce"] == pytest.approx(expected.item(), rel=1e-5)  # all 32 images, one step


def test_post_train_tokenizer_changes_only_the_decoder(tmp_path):
    generator = tiny_llamagen()
    policy_before = _snapshot(generator.policy)
    decoder_before = _snapshot(generator.tokenizer_decoder)
    encoder_before = _snapshot(generator.vq.encoder)
    records = []
    vapi_bench.load_method("post-train-tokenizer", **SMALL, w_perceptual=0.0, samples_per_image=2).finetune(
        generator, RandomImages(), _ctx(tmp_path, records))
    assert _changed(generator.tokenizer_decoder, decoder_before)
    assert not _changed(generator.policy, policy_before) and not _changed(generator.vq.encoder, encoder_before)
    assert records[0]["pixel_loss"] == pytest.approx(records[0]["mse"])
    written = generator.save_finetuned(tmp_path / "weights")
    assert any(p.name == "vq.safetensors" for p in written)  # the sampler gets the new decoder


def test_ste_forward_is_the_hard_decode_and_backward_reaches_the_policy(tmp_path):
    generator = tiny_llamagen(dropout=False)
    logits = torch.randn(2, generator.num_tokens, generator.codebook_size, requires_grad=True)
    gumbel = -torch.log(-torch.log(torch.rand(logits.shape)))
    onehot = hard_gumbel_softmax(logits, tau=0.7, gumbel=gumbel)
    tokens = (logits + gumbel).argmax(-1)
    assert torch.equal(onehot.detach(), F.one_hot(tokens, generator.codebook_size).float())
    image = generator.decode_embeddings(onehot @ generator.codebook.detach())
    torch.testing.assert_close(image, generator.decode(tokens), rtol=1e-4, atol=1e-5)
    image.pow(2).mean().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # straight-through gradient

    decoder_before, policy_before = _snapshot(generator.tokenizer_decoder), _snapshot(generator.policy)
    records = []
    vapi_bench.load_method("ste", **SMALL, w_perceptual=0.0, beta=0.0).finetune(
        generator, RandomImages(), _ctx(tmp_path, records))
    assert records[0]["loss"] == pytest.approx(records[0]["pixel_loss"])  # β = 0: pixel term only
    changed = _changed(generator.policy, policy_before)
    assert "layers.0.attention.wqkv.weight" in changed  # pixel gradients reached the transformer
    assert not _changed(generator.tokenizer_decoder, decoder_before)


def test_baselines_share_the_va_pi_budget(tmp_path):
    """sft/ste/post-train-tokenizer resolve steps and images per step from the same recipe as va-pi."""
    generator = tiny_llamagen()
    from vapi_bench.training import resolve_method_params

    budgets = set()
    for name in ("va-pi", "sft", "post-train-tokenizer", "ste"):
        entry = vapi_bench.registry.get_registry().get("methods", name)
        values = vapi_bench.params.resolve_params(entry.params, {}, name)
        resolved = resolve_method_params(name, values, generator)
        budgets.add((resolved["steps"], resolved["batch_size"], resolved["lr"]))
    assert budgets == {(100, 128, 1e-6)}
