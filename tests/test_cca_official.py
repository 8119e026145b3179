"""`cca` against a transcription of the official training loop (thu-ml/CCA @ 7d5a073,
`LlamaGen_finetune.py`): micro-batch losses are back-propagated as they are, so a step's gradient is
the SUM of the micro-batch gradients, clipped as a sum (L298-302); with `uncond_ratio=0` the CCA loss
is the linear −mean Δ⁺ + λ·mean Δ⁻ (L282-283), with `uncond_ratio>0` the sigmoid form (L274-281).

The transcription below runs the official formulas on the tiny LlamaGen of the other tests. Two
pieces of plumbing come from the project on purpose, because they are not what these tests check:
the data order (the engine's `step_indices`) and the null-row draw (`CcaStep.null_rows`; the official
draws `torch.rand(bz) < uncond_ratio` per micro-batch, L239).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from helpers_toy_generator import RandomImages, tiny_llamagen
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.peers.cca import CCA_PARAMS, Cca, CcaStep
from vapi_bench.plugins.peers.cca_objective import cca_loss
from vapi_bench.training import (Batch, FrozenReference, MetricMeter, load_batch, resolve_method_params,
                                 step_indices)

CPU = torch.device("cpu")
# K = 8 / 2 = 4 micro-batches per step; β·λ and the perturbation put ‖Σ g‖ above the clip (1.0) and
# ‖Σ g‖ / K below it: the range where the official sum and a mean give different updates
RUN = dict(steps=3, batch_size=8, micro_batch=2, ckpt_every=10, precision="fp32", lr=1e-3, beta=0.05, lam=4.0,
           uncond_ratio=0.25, max_grad_norm=1.0)


# ---- the official loop, transcribed ---------------------------------------------------------------
def official_micro_loss(model, ref_model, z_indices, c_indices, TBM, args):  # noqa: N803 (official names)
    """One micro-batch's loss as thu-ml/CCA LlamaGen_finetune.py L226-296 computes it (CCA branch).

    `model(labels, tokens)` is the project's LlamaGen forward, the official
    `model(cond_idx=..., idx=z[:, :-1], targets=z)` (logits for all N image tokens)."""
    c_indices = c_indices.clone()
    # L234: negatives by rolling the micro-batch's labels
    shuffled_c_indices = torch.roll(c_indices, shifts=-1, dims=0)
    # L237-241: null rows take the null class in both c and c⁻
    if args.uncond_ratio > 0.0:
        shuffled_c_indices[TBM] = args.num_classes
        c_indices[TBM] = args.num_classes
    # L244-246
    bz = c_indices.shape[0]
    all_c_indices = torch.cat([c_indices, shuffled_c_indices])
    all_z_indices = torch.cat([z_indices, z_indices])
    # L248-251: reference logits without gradient
    with torch.no_grad():
        ref_all_logits = ref_model(all_c_indices, all_z_indices)
        ref_logits, shuffled_ref_logits = ref_all_logits[:bz], ref_all_logits[bz:]
    # L256-258
    all_logits = model(all_c_indices, all_z_indices)
    logits, shuffled_logits = all_logits[:bz], all_logits[bz:]
    # L263-268: sequence log-likelihoods (sums over image tokens) and their gaps to the reference
    img_logps = torch.gather(logits.log_softmax(-1), dim=2, index=z_indices.unsqueeze(2)).squeeze(2).sum(-1)
    negative_img_logps = torch.gather(shuffled_logits.log_softmax(-1), dim=2, index=z_indices.unsqueeze(2)).squeeze(2).sum(-1)
    img_ref_logps = torch.gather(ref_logits.log_softmax(-1), dim=2, index=z_indices.unsqueeze(2)).squeeze(2).sum(-1)
    negative_img_ref_logps = torch.gather(shuffled_ref_logits.log_softmax(-1), dim=2, index=z_indices.unsqueeze(2)).squeeze(2).sum(-1)
    img_logp_gap = img_logps - img_ref_logps
    negative_img_logp_gap = negative_img_logps - negative_img_ref_logps
    # L273-283: loss_type == "CCA"
    if args.uncond_ratio > 0:
        neg_weight = (TBM | (shuffled_c_indices == c_indices))
        mixed_weight = torch.ones_like(neg_weight) * args.lambda_
        mixed_weight[neg_weight] = 1.0
        loss = -F.logsigmoid((img_logp_gap) * args.beta).mean() - (mixed_weight * F.logsigmoid(((neg_weight.float() * 2 - 1) * negative_img_logp_gap) * args.beta)).mean()
        loss = loss / max(args.lambda_, 1.0)
    else:
        loss = - img_logp_gap.mean() + args.lambda_ * negative_img_logp_gap.mean()
    return loss


def official_optimizer(model, weight_decay, learning_rate, betas):
    """thu-ml/CCA LlamaGen_finetune.py L39-61 (`creat_optimizer`): decay on >= 2-D parameters.
    (Unfused here: the fused kernel is the same update, and is CUDA-only in the project.)"""
    param_dict = {pn: p for pn, p in model.named_parameters() if p.requires_grad}
    decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
    nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
    optim_groups = [{"params": decay_params, "weight_decay": weight_decay},
                    {"params": nodecay_params, "weight_decay": 0.0}]
    return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas)


def official_accumulate(model, ref_model, micro_batches, args):
    """L298: `scaler.scale(loss).backward()` per micro-batch (the scaler is a no-op outside fp16):
    no division by `gradient_accumulation_steps`, so .grad holds the sum. Returns the losses."""
    losses = []
    for z, c, tbm in micro_batches:
        loss = official_micro_loss(model, ref_model, z, c, tbm, args)
        loss.backward()
        losses.append(loss.item())
    return losses


def official_step(model, ref_model, optimizer, micro_batches, args) -> float:
    """L298-307: accumulate, clip the SUM to max_grad_norm (L300-302), step, zero the gradients.
    Returns the pre-clip norm (what clip_grad_norm_ returns; the engine logs it as grad_norm)."""
    official_accumulate(model, ref_model, micro_batches, args)
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


# ---- helpers --------------------------------------------------------------------------------------
def _gen():
    return tiny_llamagen(dropout=False, class_dropout_prob=0.1)  # a null class row; eval = official w/o dropout


def _perturb(module, scale=0.05):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def _ctx(tmp_path, records=None):
    return StageContext(out_dir=tmp_path, device=CPU, seed=0,
                        log=(records.append if records is not None else (lambda r: None)))


def _resolved(gen, tmp_path, **overrides):
    params = resolve_params(CCA_PARAMS, {**RUN, **overrides}, "cca")
    return resolve_method_params("cca", params, gen)


def _args(cfg, gen):
    return SimpleNamespace(uncond_ratio=cfg["uncond_ratio"], lambda_=cfg["lam"], beta=cfg["beta"],
                           num_classes=gen.num_classes, max_grad_norm=cfg["max_grad_norm"])


def _micro_batches(step: CcaStep, gen, data, step_no: int, cfg) -> tuple[list, Batch]:
    """The official loader's view of the engine's step `step_no`: (codes, labels, TBM) per micro-batch."""
    indices = step_indices(0, step_no, len(data), cfg["batch_size"])
    batch = load_batch(data, step_no, indices, list(range(cfg["batch_size"])), CPU)
    tokens = gen.encode(batch.images).long()
    labels = torch.tensor(batch.conditions)
    null = step.null_rows(batch)
    m = cfg["micro_batch"]
    return [(tokens[i:i + m], labels[i:i + m], null[i:i + m]) for i in range(0, len(labels), m)], batch


def _grads(module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters()}


def _norm(grads):
    return torch.cat([g.reshape(-1) for g in grads.values()]).norm().item()


# ---- (a) one step: the sum of the micro-batch gradients, clipped as a sum -------------------------
def test_step_gradient_is_the_official_sum_of_micro_batch_gradients(tmp_path):
    gen = _gen()
    cfg = _resolved(gen, tmp_path)
    assert cfg["accumulation"] == "sum"
    ref_model = copy.deepcopy(gen.policy).eval()
    step = CcaStep(gen, cfg, 0, FrozenReference(gen, False, CPU, "cca"))
    _perturb(gen.policy)  # π_θ ≠ π_ref
    gen.policy.eval()
    model = copy.deepcopy(gen.policy)
    data = RandomImages()
    micro, batch = _micro_batches(step, gen, data, 0, cfg)
    assert len(micro) == 4 and any(m[2].any() for m in micro)  # K = 4, some null rows

    official_accumulate(model, ref_model, micro, _args(cfg, gen))
    official = _grads(model)
    for loss in step(batch, MetricMeter()):  # what the engine does with the yielded losses
        loss.backward()
    ours = _grads(gen.policy)
    for name, grad in official.items():
        torch.testing.assert_close(ours[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert _norm(ours) == pytest.approx(_norm(official), rel=1e-6)
    # the official per-micro-batch gradients, each back-propagated alone, add up to it
    parts = []
    for one in micro:
        model.zero_grad(set_to_none=True)
        official_accumulate(model, ref_model, [one], _args(cfg, gen))
        parts.append(_grads(model))
    for name, grad in official.items():
        torch.testing.assert_close(sum(p[name] for p in parts), grad, rtol=1e-5, atol=1e-6, msg=name)
    # the test's range: the sum is clipped at 1.0, the mean (1/K of it) would not be
    assert _norm(official) > 1.0 > _norm(official) / 4


def _official_setup(tmp_path, **overrides):
    """A perturbed tiny model, its resolved CCA config, a CcaStep (only for its null-row draw) and
    the official loop's own copies: policy, reference (both θ_0) and optimiser."""
    gen = _gen()
    _perturb(gen.policy)
    start = copy.deepcopy(gen.policy).eval()  # θ_ref = θ_0 (the engine's reference is the initial policy)
    cfg = _resolved(gen, tmp_path, **overrides)
    model, ref_model = copy.deepcopy(start), copy.deepcopy(start)
    optimizer = official_optimizer(model, cfg["weight_decay"], cfg["lr"], tuple(cfg["betas"]))
    return gen, start, cfg, CcaStep(gen, cfg, 0, None), model, ref_model, optimizer


def test_engine_clips_the_sum_and_logs_its_norm(tmp_path):
    gen, start, cfg, helper, model, ref_model, optimizer = _official_setup(tmp_path)
    micro, _ = _micro_batches(helper, gen, RandomImages(), 0, cfg)
    expected_norm = official_step(model, ref_model, optimizer, micro, _args(cfg, gen))

    records = []
    Cca(**resolve_params(CCA_PARAMS, {**RUN, "steps": 1}, "cca")).finetune(gen, RandomImages(), _ctx(tmp_path, records))
    assert records[0]["grad_norm"] == pytest.approx(expected_norm, rel=1e-5)
    assert expected_norm > 1.0  # clipped
    for (name, p), q in zip(gen.policy.named_parameters(), model.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0.0, atol=1e-6, msg=name)


# ---- (b) three AdamW steps equal the official loop's ---------------------------------------------
@pytest.mark.parametrize("uncond_ratio", [0.25, 0.0])
def test_three_adamw_steps_match_the_official_loop(tmp_path, uncond_ratio):
    # the linear form (uncond_ratio = 0) has no β and no 1/λ: its norms are ~80 here, so the clip moves
    # into the range instead (sum clipped, sum / K not)
    overrides = dict(uncond_ratio=uncond_ratio) if uncond_ratio else dict(uncond_ratio=0.0, lam=0.5,
                                                                           max_grad_norm=40.0)
    gen, start, cfg, helper, model, ref_model, optimizer = _official_setup(tmp_path, **overrides)
    norms = []
    for step_no in range(cfg["steps"]):
        micro, _ = _micro_batches(helper, gen, RandomImages(), step_no, cfg)
        norms.append(official_step(model, ref_model, optimizer, micro, _args(cfg, gen)))

    records = []
    method = Cca(**resolve_params(CCA_PARAMS, {**RUN, **overrides}, "cca"))
    method.finetune(gen, RandomImages(), _ctx(tmp_path, records))
    assert [r["grad_norm"] for r in records] == pytest.approx(norms, rel=1e-5)
    # some step in the range where the sum is clipped and the mean (1/K) would not be
    assert any(n > cfg["max_grad_norm"] > n / 4 for n in norms), norms
    # (accumulation=mean, 1/K of these norms, ends max |Δθ| 1.7e-4 (σ) / 1.5e-4 (linear) away)
    for (name, p), q in zip(gen.policy.named_parameters(), model.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0.0, atol=1e-6, msg=name)
    assert any(not torch.equal(p, q) for p, q in zip(gen.policy.parameters(), start.parameters()))


def test_mean_accumulation_is_the_sum_over_k(tmp_path):
    """`accumulation=mean` (the project's earlier rule) gives 1/K of the official step gradient."""
    grads = {}
    for rule in ("sum", "mean"):
        gen = _gen()
        cfg = _resolved(gen, tmp_path, accumulation=rule)
        step = CcaStep(gen, cfg, 0, FrozenReference(gen, False, CPU, "cca"))
        _perturb(gen.policy)
        micro, batch = _micro_batches(step, gen, RandomImages(), 0, cfg)
        for loss in step(batch, MetricMeter()):
            loss.backward()
        grads[rule] = _grads(gen.policy)
    for name, grad in grads["sum"].items():
        torch.testing.assert_close(grads["mean"][name] * 4, grad, rtol=1e-5, atol=1e-6, msg=name)


# ---- (c) the loss form: linear at uncond_ratio = 0, sigmoid above ----------------------------------
@pytest.mark.parametrize("uncond_ratio", [0.0, 0.3])
def test_micro_loss_is_the_official_form(tmp_path, uncond_ratio):
    gen = _gen()
    cfg = _resolved(gen, tmp_path, uncond_ratio=uncond_ratio, lam=300.0, beta=0.02)
    ref_model = copy.deepcopy(gen.policy).eval()
    step = CcaStep(gen, cfg, 0, FrozenReference(gen, False, CPU, "cca"))
    _perturb(gen.policy)
    gen.policy.eval()
    batch = load_batch(RandomImages(), 0, [0, 1, 2, 3], [0, 1, 2, 3], CPU)
    tokens = gen.encode(batch.images).long()
    conds = [0, 2, 2, 1]  # rolled: [2, 2, 1, 0] -> row 1's c⁻ equals its c
    null = torch.tensor([False, False, False, True]) if uncond_ratio else torch.zeros(4, dtype=torch.bool)
    negs = [2, 2, 1, 0]
    got = step.micro_loss(tokens, conds, negs, null, MetricMeter())
    expected = official_micro_loss(copy.deepcopy(gen.policy), ref_model, tokens, torch.tensor(conds), null,
                                   _args(cfg, gen))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the other branch's form on the same rows is far from it: the test tells the two apart
    flipped = SimpleNamespace(**{**vars(_args(cfg, gen)), "uncond_ratio": 0.3 - uncond_ratio})
    other = official_micro_loss(copy.deepcopy(gen.policy), ref_model, tokens, torch.tensor(conds), null, flipped)
    assert abs(other.item() - expected.item()) > 1e-2


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_loss_forms_on_hand_values():
    from vapi_bench.plugins.peers.cca_objective import cca_linear_loss

    dp, dn = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.5, -4.0])
    # L283: - img_logp_gap.mean() + args.lambda_ * negative_img_logp_gap.mean()  (no β, no /λ, no σ)
    assert cca_linear_loss(dp, dn, 4.0).item() == pytest.approx(-(1.0 - 2.0 + 0.5) / 3 + 4.0 * (3.0 + 0.5 - 4.0) / 3)
    # L280-281, as before
    pos_as_neg = torch.tensor([False, True, False])
    positive = -sum(_logsig(0.5 * x) for x in dp.tolist()) / 3
    negative = -sum((1.0 if p else 4.0) * _logsig((1 if p else -1) * 0.5 * x)
                    for x, p in zip(dn.tolist(), pos_as_neg.tolist())) / 3
    assert cca_loss(dp, dn, pos_as_neg, 0.5, 4.0).item() == pytest.approx((positive + negative) / 4.0, rel=1e-6)


# ---- DDP / FSDP: each rank sums its micro-batches, the ranks are averaged ----------------------------
# 2 ranks x 4 rows: K = 2 micro-batches per rank; the clip sits between the averaged per-rank sums
# norm (~0.9) and the mean's (1/2 of it), so a mean would step differently, and below the 1-rank sum's
DIST_RUN = dict(RUN, steps=2, ckpt_every=1, max_grad_norm=0.7)


def _dist_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from helpers_gloo import gloo_rank

    with gloo_rank(rank, world, port):
        for sharding in ("ddp", "fsdp"):
            gen = _gen()
            _perturb(gen.policy)
            ctx = StageContext(out_dir=Path(out_dir) / sharding, device=CPU, seed=0, rank=rank, world_size=world)
            method = Cca(**resolve_params(CCA_PARAMS, {**DIST_RUN, "sharding": sharding}, "cca"))
            method.finetune(gen, RandomImages(), ctx)
            if rank == 0:
                torch.save(gen.policy.state_dict(), Path(out_dir) / f"{sharding}.pt")


def test_two_ranks_average_the_per_rank_sums_as_official_ddp(tmp_path):
    """Official on W GPUs (LlamaGen_finetune.py L195, L298-302): each rank back-propagates its own
    micro-batch losses into a DDP model, whose all-reduce AVERAGES the ranks' summed gradients, then
    clips. So with a fixed batch and micro-batch the step gradient depends on W (here 2 ranks x K = 2
    is half of 1 rank x K = 4), and 2 gloo ranks must equal that emulated loop, under DDP and FSDP."""
    from helpers_gloo import spawn_ranks

    gen, start, cfg, helper, model, ref_model, optimizer = _official_setup(tmp_path, **DIST_RUN)
    args = _args(cfg, gen)
    norms = []
    for step_no in range(cfg["steps"]):
        micro, _ = _micro_batches(helper, gen, RandomImages(), step_no, cfg)
        per_rank = []
        for rank_micro in (micro[:2], micro[2:]):  # rank r: rows [4r, 4r + 4), two micro-batches
            official_accumulate(model, ref_model, rank_micro, args)
            per_rank.append([p.grad.clone() for p in model.parameters()])
            model.zero_grad(set_to_none=True)
        for p, g0, g1 in zip(model.parameters(), *per_rank):
            p.grad = (g0 + g1) / 2  # DDP's all-reduce mean
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert all(n > args.max_grad_norm > n / 2 for n in norms), norms

    spawn_ranks(_dist_worker, str(tmp_path / "two"))
    expected = model.state_dict()
    for sharding in ("ddp", "fsdp"):
        got = torch.load(tmp_path / "two" / f"{sharding}.pt", weights_only=True)
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=0.0, atol=1e-6, msg=f"{sharding}: {name}")
