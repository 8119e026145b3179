"""`cca`: Condition Contrastive Alignment (Chen et al., ICLR 2025), as the official LlamaGen script
runs it (thu-ml/CCA @ 7d5a073, LlamaGen_finetune.py).

A guidance-free method: it fine-tunes the policy so that sampling WITHOUT classifier-free guidance
behaves like guided sampling, by contrasting each data pair (x, c) with a mismatched condition c⁻
against a frozen copy of the initial model. No sampler is used in training: each step encodes its
images with the frozen tokenizer and runs the policy and the reference teacher-forced on
[x; x] with [c; c⁻] (L244-261). Evaluate it without CFG (the `no-cfg` leaderboard row).

- c⁻ rolls the conditions by one within each micro-batch (official, L234; its micro-batch is 2
  pairs), or over the whole global batch with `negatives=global`; text models roll captions;
- a random `uncond_ratio` of rows (drawn per image from (seed, step, position), so ranks do not
  matter) take the null condition in both c and c⁻ and count as positives (L237-241, L276);
- the loss is the sigmoid form with `uncond_ratio > 0` (L274-281) and the official linear
  −mean Δ⁺ + λ·mean Δ⁻ with `uncond_ratio = 0` (L282-283); see cca_objective;
- `accumulation=sum` (official): each micro-batch loss is back-propagated as it is, so a rank's
  step gradient is the SUM over its micro-batches, clipped (max_grad_norm 1.0) as a sum (L298-302);
  the engine then averages over ranks, as DDP does there (L195). The official step gradient is
  therefore gradient_accumulation_steps x the mean micro-batch gradient, and with a fixed
  batch_size and micro_batch it grows as the number of ranks falls (K = batch_size / (ranks x
  micro_batch) per rank), exactly as it does in the official script. `accumulation=mean` weights
  each micro-batch by its share of the rank's rows (the mean, independent of the number of ranks;
  what this plugin did before, and what the official VAR trainer does through its optimizer
  wrapper's 1/n_gradient_accumulation);
- the update runs in eval mode by default: the official code keeps dropout (0.1) on in policy and
  reference but switches condition dropout off (L106-118, L195-198), and this contract's train mode
  turns both on, which would null random rows of c and c⁻; `model_mode=train` runs train mode anyway;
- AdamW (0.9, 0.95), weight decay 0.05 on all but the *norm* parameters (official: on >= 2-D
  parameters, L39-61; the same set for LlamaGen, whose only 1-D weights are its norms), lr 1e-5,
  clip 1 (L435).
- `sharding=fsdp`: the policy trains sharded and the reference is a sharded frozen copy of the
  initial weights (vapi_bench.training.frozen_reference).
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from vapi_bench import distributed
from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Condition, Generator, Method, StageContext, require_capability
from vapi_bench.params import Param
from vapi_bench.seeding import derive_seed, torch_generator
from vapi_bench.training import (TRAINING_PARAMS, Batch, FrozenReference, MetricMeter, autocast,
                                 check_null_conditions_shardable, finetune_module, uses_fsdp, with_betas)

from .cca_objective import cca_linear_loss, cca_loss, rolled, sequence_logprob
from .recipes import CCA_LAMBDA, DEFAULT_LAMBDA

CCA_PARAMS: tuple[Param, ...] = with_betas(TRAINING_PARAMS, (0.9, 0.95)) + (
    Param("beta", float, 0.02, "β: scale of the log-likelihood ratios inside the sigmoid (unused at "
          "uncond_ratio=0, whose official loss is linear)", exclusive_minimum=0.0),
    Param("lam", float, None, "λ: weight of the negative term (the loss is divided by max(λ, 1)); None = by "
          "model: " + ", ".join(f"{k} {v:g}" for k, v in CCA_LAMBDA.items()) + f", others {DEFAULT_LAMBDA:g}", minimum=0.0),
    Param("uncond_ratio", float, 0.1, "fraction of rows given the null condition in both c and c⁻ (as positives); "
          "0 switches to the official linear loss −mean Δ⁺ + λ·mean Δ⁻ (LlamaGen_finetune.py L282-283)", minimum=0.0, exclusive_maximum=1.0),
    Param("negatives", str, "micro-batch", "roll conditions within each micro-batch (official) or over the "
          "global batch", choices=("micro-batch", "global")),
    # a new parameter on purpose (keyed at its default): runs recorded before it averaged the
    # micro-batch losses and used the sigmoid form at uncond_ratio = 0, so they must not share a
    # finetune key with runs that do what the official script does
    Param("accumulation", str, "sum", "'sum' (official LlamaGen_finetune.py: micro-batch losses back-propagated "
          "unscaled, the rank's sum clipped, then averaged over ranks; scales with batch_size / (ranks x "
          "micro_batch)) or 'mean' (each micro-batch weighted by its share of the rank's rows)",
          choices=("sum", "mean")),
    Param("model_mode", str, "eval", "'eval': no dropout, no condition dropout; 'train': the model's train mode "
          "(dropout AND its own condition dropout)", choices=("eval", "train")),
)


class Cca(Method):
    """CCA through the generator contract (needs `null_conditions` when uncond_ratio > 0)."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def finetune(self, generator: Generator, dataset: Any, ctx: StageContext) -> dict[str, Any]:
        params = dict(self.params)
        if params.get("lam") is None:
            params["lam"] = CCA_LAMBDA.get(generator.name, DEFAULT_LAMBDA)

        def make_step(cfg: dict[str, Any]) -> CcaStep:
            _check(cfg)
            if cfg["uncond_ratio"] > 0:
                require_capability(generator, "null_conditions", "method 'cca' (its null rows)")
                if uses_fsdp(cfg):
                    check_null_conditions_shardable(generator, "cca")
            reference = FrozenReference(generator, uses_fsdp(cfg), ctx.device, "cca")
            return CcaStep(generator, cfg, ctx.seed, reference)

        return finetune_module("cca", params, generator, dataset, ctx, module_name="policy",
                               module=generator.policy, make_step=make_step)


def _check(cfg: dict[str, Any]) -> None:
    where = "method 'cca'"
    if not 0.0 <= cfg["uncond_ratio"] < 1.0:
        raise UsageError(f"{where}: uncond_ratio must be in [0, 1), got {cfg['uncond_ratio']}.")
    if cfg["beta"] <= 0 or cfg["lam"] < 0:
        raise UsageError(f"{where}: beta must be > 0 and lam >= 0, got beta={cfg['beta']}, lam={cfg['lam']}.")


class CcaStep:
    """The step function handed to the training engine (see vapi_bench.training.StepFn)."""

    def __init__(self, generator: Generator, cfg: dict[str, Any], seed: int, reference: FrozenReference) -> None:
        self.gen, self.cfg, self.seed, self.reference = generator, cfg, seed, reference

    def negatives(self, batch: Batch) -> list[Condition]:
        """c⁻ of this rank's rows: rolled within each micro-batch, or over the global batch."""
        conds, m = batch.conditions, self.cfg["micro_batch"]
        if self.cfg["negatives"] == "micro-batch":
            return [c for start in range(0, len(conds), m) for c in rolled(conds[start:start + m])]
        everyone = distributed.all_gather_list(list(conds))  # rank order = global position order
        return [everyone[(pos + 1) % len(everyone)] for pos in batch.positions]

    def null_rows(self, batch: Batch) -> torch.Tensor:
        """Bool [b]: rows whose c and c⁻ become the null condition, drawn per global position."""
        draws = [torch.rand(1, generator=torch_generator(derive_seed(self.seed, pos, f"cca-null-step{batch.step}")))
                 for pos in batch.positions]
        return torch.cat(draws) < self.cfg["uncond_ratio"]

    def pair_logprobs(self, tokens: torch.Tensor, conds: Sequence[Condition], negs: Sequence[Condition],
                      null: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence log-likelihoods of x under c and under c⁻ (one forward over [c; c⁻]).

        A null row is nulled from its own condition on both sides, so that c and c⁻ are the very
        same input there (a text null condition keeps its caption's mask, as LlamaGen's does)."""
        gen = self.gen
        negs = [c if drop else neg for c, neg, drop in zip(conds, negs, null.tolist())]
        cond = gen.prepare_conditions(list(conds) + negs)
        if bool(null.any()):
            cond = gen.null_conditions(cond, torch.cat([null, null]))
        both = torch.cat([tokens, tokens])
        with autocast(tokens.device, self.cfg["precision"]):
            logits = gen.teacher_forced_logits(both, cond)
        return sequence_logprob(logits, both).chunk(2)

    def micro_loss(self, tokens: torch.Tensor, conds: Sequence[Condition], negs: Sequence[Condition],
                   null: torch.Tensor, meter: MetricMeter) -> torch.Tensor:
        cfg = self.cfg
        with torch.no_grad(), self.reference.active():
            ref_pos, ref_neg = self.pair_logprobs(tokens, conds, negs, null)
        pol_pos, pol_neg = self.pair_logprobs(tokens, conds, negs, null)
        delta_pos, delta_neg = pol_pos - ref_pos, pol_neg - ref_neg
        if cfg["uncond_ratio"] > 0:  # thu-ml/CCA LlamaGen_finetune.py L274-281
            same = torch.tensor([a == b for a, b in zip(conds, negs)], dtype=torch.bool, device=tokens.device)
            loss = cca_loss(delta_pos, delta_neg, null.to(tokens.device) | same, cfg["beta"], cfg["lam"])
        else:  # L282-283: the linear form, no β, no sigmoid
            loss = cca_linear_loss(delta_pos, delta_neg, cfg["lam"])
        meter.add("cca_loss", loss)
        meter.add("acc", (delta_pos > delta_neg).float().mean())
        meter.add("margin", (delta_pos - delta_neg).detach().mean())
        meter.add("delta_pos", delta_pos.detach().mean())
        meter.add("delta_neg", delta_neg.detach().mean())
        return loss

    def __call__(self, batch: Batch, meter: MetricMeter) -> Iterator[torch.Tensor]:
        """Yield the micro-batch losses: as they are with `accumulation=sum` (the official loop's
        `scaler.scale(loss).backward()` per micro-batch, thu-ml/CCA LlamaGen_finetune.py L298, so
        the engine's clip sees the sum, L299-302), or weighted by their share of the rank's rows
        with `accumulation=mean`. The engine's "loss" metric is the sum of what is yielded."""
        tokens = self.gen.encode(batch.images).long()
        negs, null = self.negatives(batch), self.null_rows(batch)
        meter.add("null_frac", null.float().mean())
        self.gen.policy.train(self.cfg["model_mode"] == "train")
        size, m = len(batch), self.cfg["micro_batch"]
        for start in range(0, size, m):
            rows = slice(start, min(start + m, size))
            loss = self.micro_loss(tokens[rows], batch.conditions[rows], negs[rows], null[rows], meter)
            yield loss if self.cfg["accumulation"] == "sum" else loss * ((rows.stop - rows.start) / size)
