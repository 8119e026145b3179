"""The `va-pi` method on a tiny random LlamaGen: update modes, recipes, logging, KL, resume."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import vapi_bench
from helpers_toy_generator import RandomImages, tiny_llamagen
from vapi_bench.errors import TrainingDiverged, UsageError
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.va_pi.method import VAPI_PARAMS, VaPi, VaPiStep
from vapi_bench.training import (MetricMeter, PixelObjective, build_pixel_objective, load_batch, resolve_method_params,
                                 resolve_run_recipes)

SMALL = dict(lr=1e-3, steps=2, batch_size=4, micro_batch=2, group_size=4, w_perceptual=0.0, ckpt_every=1,
             precision="fp32")


def _params(**overrides):
    return resolve_params(VAPI_PARAMS, {**SMALL, **overrides}, "va-pi")


def _ctx(tmp_path, records=None, **kw):
    return StageContext(out_dir=tmp_path, device=torch.device("cpu"), seed=0,
                        log=(records.append if records is not None else (lambda r: None)), **kw)


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_shared_and_per_row_updates_give_the_same_loss_and_gradients(tmp_path):
    """With dropout and label dropout off, one forward per image (shared) computes exactly the
    per-row (official) loss, so the gradients agree too."""
    generator = tiny_llamagen(dropout=False)
    cfg = resolve_method_params("va-pi", _params(xi=0.3), generator)
    step = VaPiStep(generator, cfg, PixelObjective(1.0, 0.0, None), seed=0)
    batch = load_batch(RandomImages(), 0, [0, 1, 2], [0, 1, 2], torch.device("cpu"))
    roll = step.rollout(batch)
    assert roll["samples"].shape == (3, 4, generator.num_tokens) and "context" in roll
    results = {}
    for mode in ("shared", "per-row"):
        step.cfg = {**cfg, "update_mode": mode}
        generator.policy.train()
        generator.policy.zero_grad(set_to_none=True)
        loss = step.micro_loss(batch.conditions, roll, slice(0, 3), MetricMeter())
        loss.backward()
        results[mode] = (loss.detach(), _grads(generator.policy))
    (loss_s, grads_s), (loss_r, grads_r) = results["shared"], results["per-row"]
    torch.testing.assert_close(loss_s, loss_r, rtol=1e-5, atol=1e-7)
    assert grads_s.keys() == grads_r.keys() and len(grads_s) == len(list(generator.policy.parameters()))
    for name in grads_s:
        torch.testing.assert_close(grads_s[name], grads_r[name], rtol=1e-4, atol=1e-7, msg=name)


def test_rollout_rewards_are_minus_the_pixel_distance_of_decoded_samples(tmp_path):
    generator = tiny_llamagen(dropout=False)
    cfg = resolve_method_params("va-pi", _params(w_perceptual=0.5, perceptual="l1"), generator)
    objective = build_pixel_objective(cfg, torch.device("cpu"))
    batch = load_batch(RandomImages(), 0, [3, 5], [0, 1], torch.device("cpu"))
    roll = VaPiStep(generator, cfg, objective, seed=0).rollout(batch)
    decoded = generator.decode(roll["samples"][1, 2][None])  # image 1, row 2
    target = batch.images[1:2]
    expected = (decoded - target).pow(2).mean() + 0.5 * (decoded - target).abs().mean()
    assert roll["rewards"][1, 2].item() == pytest.approx(-expected.item(), rel=1e-5)
    torch.testing.assert_close(roll["reward_mse"] + 0.5 * roll["reward_perceptual"], -roll["rewards"].flatten())


def test_run_logs_metrics_and_records_resolved_recipe(tmp_path):
    generator = tiny_llamagen()
    before = {n: p.clone() for n, p in generator.policy.named_parameters()}
    vq_before = {n: p.clone() for n, p in generator.vq.named_parameters()}
    records = []
    params = resolve_params(VAPI_PARAMS, dict(steps=2, batch_size=4, group_size=4, w_perceptual=0.0,
                                              update_mode="per-row"), "va-pi")
    summary = VaPi(**params).finetune(generator, RandomImages(), _ctx(tmp_path, records))
    resolved = summary["params"]
    assert resolved["recipe"] == "llamagen-c2i"
    assert (resolved["lr"], resolved["weight_decay"], resolved["beta"], resolved["adv_clip"], resolved["xi"]) == \
        (1e-6, 1e-4, 0.1, 5.0, 0.0)  # Table 7, LlamaGen C2I
    assert resolved["precision"] == "fp32" and resolved["dataset"] == generator.default_dataset
    assert [r["step"] for r in records] == [1, 2]
    for key in ("reward_mean", "reward_std", "adv_abs_mean", "clip_frac", "ce", "pg_loss", "grad_norm", "lr",
                "images_per_s", "loss"):
        assert key in records[0], key
    assert "kl" not in records[0]  # KL is off by default
    assert records[0]["lr"] == 1e-6
    assert any(not torch.equal(p, before[n]) for n, p in generator.policy.named_parameters())
    assert all(torch.equal(p, vq_before[n]) for n, p in generator.vq.named_parameters())
    assert not generator.policy.training


def test_kl_to_the_initial_model_starts_at_zero(tmp_path):
    generator = tiny_llamagen(dropout=False)
    records = []
    VaPi(**_params(use_kl=True, kl_coef=0.5, lr=1e-2)).finetune(generator, RandomImages(), _ctx(tmp_path, records))
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-7)  # θ = θ_ref before the first update
    assert records[1]["kl"] > 0


def test_resumed_vapi_run_matches_uninterrupted(tmp_path):
    full = tiny_llamagen()
    VaPi(**_params(steps=3, xi=0.5)).finetune(full, RandomImages(), _ctx(tmp_path / "a"))
    part = tiny_llamagen()
    VaPi(**_params(steps=3, xi=0.5)).finetune(part, RandomImages(), _ctx(tmp_path / "b", limit=2))
    resumed = tiny_llamagen()  # a fresh process would rebuild the base model, then resume
    summary = VaPi(**_params(steps=3, xi=0.5)).finetune(resumed, RandomImages(), _ctx(tmp_path / "b"))
    assert summary["resumed_from"] == 2
    for (name, a), b in zip(full.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), name


def test_bf16_autocast_runs_on_cpu(tmp_path):
    records = []
    summary = VaPi(**_params(steps=1, precision="bf16")).finetune(tiny_llamagen(), RandomImages(),
                                                                  _ctx(tmp_path, records))
    assert summary["params"]["precision"] == "bf16"
    assert torch.isfinite(torch.tensor(records[0]["loss"]))


def test_non_finite_logits_stop_training_as_diverged(tmp_path):
    """Inf logits reach draw_group's multinomial (with replacement: on CUDA a process-ending
    device assert, on the CPU an unrecognised message); the step must end as TrainingDiverged."""
    generator = tiny_llamagen()
    with torch.no_grad():
        generator.policy.output.weight.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="step 1.*logits"):
        VaPi(**_params(steps=1)).finetune(generator, RandomImages(), _ctx(tmp_path))


def test_family_recipes():
    values = resolve_params(VAPI_PARAMS, {}, "va-pi")

    def gen(family, conditioning="text"):
        return SimpleNamespace(name=family, family=family, conditioning=conditioning, default_dataset="d")

    def resolve(generator):
        (out, source), = resolve_run_recipes({"va-pi": (VAPI_PARAMS, values)}, generator, precision="fp32").values()
        return {**out, "recipe": source}

    janus = resolve(gen("janus-pro"))
    assert (janus["lr"], janus["xi"], janus["perceptual"], janus["steps"]) == (1e-7, 0.95, "lpips-alex", 100)
    t2i = resolve(gen("llamagen-t2i"))
    assert (t2i["xi"], t2i["steps"], t2i["perceptual"]) == (0.5, 200, "lpips-vgg")
    shapes = resolve(gen("shapes", "class"))
    assert shapes["recipe"] == "shapes-c2i" and shapes["perceptual"] == "shapes-perceptual"
    with pytest.raises(UsageError, match=r"family 'my-model'.*va-pi: lr, .*--set lr=.*Known families: .*llamagen-c2i"):
        resolve(gen("my-model"))  # never another model's recipe in silence
    values = {**values, "lr": 3e-4}
    assert resolve(gen("janus-pro"))["lr"] == 3e-4  # explicit wins


def test_bad_settings_fail_clearly(tmp_path):
    with pytest.raises(UsageError, match="group_size"):
        VaPi(**_params(group_size=1)).finetune(tiny_llamagen(), RandomImages(), _ctx(tmp_path))
    with pytest.raises(UsageError, match="xi"):
        VaPi(**_params(xi=1.5)).finetune(tiny_llamagen(), RandomImages(), _ctx(tmp_path))
    with pytest.raises(UsageError, match=r"\(8, 8\).*16x16"):
        VaPi(**_params()).finetune(tiny_llamagen(), RandomImages(size=8), _ctx(tmp_path))
    with pytest.raises(UsageError, match="update_mode"):
        vapi_bench.load_method("va-pi", update_mode="sometimes")
