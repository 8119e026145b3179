"""`ar-grpo`: online GRPO with free-running rollouts (Yuan et al. 2025; docs/reference/peers.md §1).

One engine step = one rollout batch and one optimiser step, as the official launch scripts run it:
1. rollouts: each prompt of the step is sampled G times through the generator's own KV-cached,
   index-seeded sampler with CFG (2.0 c2i, 4.0 t2i), T = 1, no top-k / top-p; row (p, g) of step
   s is seeded from (seed, s, p·G + g), so rollouts do not depend on the number of ranks;
2. rewards: decoded images scored by reward scorers, Σ w_k r_k (`rewards=name:w,...`); text
   scorers read a class label as `class_prompt.format(name)` (see rewards.py);
3. advantages: (R − mean_g) / (std_g + 1e-4), unbiased std, within each prompt's G rollouts;
4. loss per token: −min(ρA, clip(ρ, 1−ε, 1+ε)A) + β·k3(π_ref ‖ π_θ), mean over tokens.

Official behaviour reproduced by default (switches document each):
- log-probs come from the CONDITIONAL branch only (teacher-forced, no CFG) although rollouts are
  guided: ARG's `ImgGen_HF.forward` is never given a cfg_scale. `logprob_cfg=guided` scores
  tokens under u + s(c − u) at the rollout scale instead, with gradients through both branches;
- one optimiser step per rollout batch (`num_iterations=1`): π_old is π_θ detached, so ρ ≡ 1
  and the clip never acts (a REINFORCE step with a group baseline plus the KL term).
  `num_iterations=k` reuses each rollout batch for k steps with the rollout-time log-probs as
  π_old (TRL's semantics); the batch is kept on disk so a resumed run replays it exactly;
- the update forward runs in eval mode (ARG's forward calls `gpt.eval()`; dropout and condition
  dropout are 0 in its scripts), so the unconditional branch gets no direct gradient.

`sharding=fsdp`: the policy trains sharded; rollouts sample from its gathered shards (the KV-cached
sampler calls more than the forward) and the KL reference is a sharded frozen copy of the initial
weights (vapi_bench.training.frozen_reference).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from vapi_bench import distributed
from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Condition, Generator, Method, SamplingRecipe, StageContext, require_capability
from vapi_bench.params import Param
from vapi_bench.seeding import derive_seed
from vapi_bench.store import atomic_write
from vapi_bench.training import (TRAINING_PARAMS, Batch, FrozenReference, MetricMeter, autocast,
                                 check_null_conditions_shardable, finetune_module, group_advantages, k3_kl,
                                 ppo_clip_loss, uses_fsdp)

from .rewards import RewardMix, class_texts

_RECIPE = "; None = the recipe's (recipes.AR_GRPO_RECIPES)"
AR_GRPO_PARAMS: tuple[Param, ...] = TRAINING_PARAMS + (
    Param("group_size", int, None, "G: rollouts per prompt" + _RECIPE, from_recipe=True, minimum=2),
    Param("rollout_cfg", float, None, "classifier-free guidance scale of the rollouts" + _RECIPE, from_recipe=True, minimum=1.0),
    Param("beta", float, None, "β: weight of the k3 KL to the frozen initial model (0 = no reference model)" + _RECIPE,
          from_recipe=True, minimum=0.0),
    Param("rewards", str, None, "reward scorers and weights, 'name:w,name[key=value,...]:w' (summed with nansum; "
          "brackets set the scorer's own parameters, e.g. clip-score[arch=ViT-B-32])" + _RECIPE, from_recipe=True),
    Param("class_names", str, "", "class-conditional models, text rewards: file with one class name per line "
          "(line i = class i); empty = the generator's own names (LlamaGen ImageNet: the 1,000 WordNet names)"),
    Param("class_prompt", str, "", "class-conditional models, text rewards: the text of a class, {} = its name; "
          "empty = the generator's ('a photo of {}' as AR-GRPO; shapes: 'a photo of a {}')"),
    Param("decode_chunk", int, None, "rollouts decoded and scored per batch" + _RECIPE, from_recipe=True, minimum=1),
    Param("clip_eps", float, 0.2, "PPO clip range ε (acts only with num_iterations > 1)", exclusive_minimum=0.0),
    Param("adv_eps", float, 1e-4, "added to the group std of the advantage (TRL: 1e-4)", exclusive_minimum=0.0),
    Param("temperature", float, 1.0, "rollout temperature (also divides the update's logits)", exclusive_minimum=0.0),
    Param("top_k", int, 0, "rollout top-k (0 = off, official)", minimum=0),
    Param("top_p", float, 1.0, "rollout nucleus filter (1 = off, official)", exclusive_minimum=0.0, maximum=1.0),
    Param("num_iterations", int, 1, "optimiser steps per rollout batch; 1 (official) makes the PPO ratio 1 "
          "so the clip never acts", minimum=1),
    Param("logprob_cfg", str, "conditional", "'conditional': log-probs of the conditional branch (official, "
          "although rollouts are guided); 'guided': of u + s(c - u) at rollout_cfg",
          choices=("conditional", "guided")),
)

ROLLOUT_FILE = "ar_grpo_rollout_rank{rank}.pt"


class ArGrpo(Method):
    """AR-GRPO through the generator contract (any generator with `sample` and a null condition)."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def finetune(self, generator: Generator, dataset: Any, ctx: StageContext) -> dict[str, Any]:
        def make_step(cfg: dict[str, Any]) -> ArGrpoStep:
            _check(cfg)
            where = "method 'ar-grpo'"
            if cfg["logprob_cfg"] == "guided":
                require_capability(generator, "null_conditions", "method 'ar-grpo' with logprob_cfg=guided")
                if uses_fsdp(cfg):
                    check_null_conditions_shardable(generator, "ar-grpo")
            # the KL reference is the policy before any update (made before a resume restores)
            reference = FrozenReference(generator, uses_fsdp(cfg), ctx.device, "ar-grpo") if cfg["beta"] else None
            classes = class_texts(generator, cfg["class_names"], cfg["class_prompt"], where)
            rewards = RewardMix(cfg["rewards"], ctx.device, where, classes=classes)
            return ArGrpoStep(generator, cfg, rewards, ctx.seed, reference, Path(ctx.out_dir), ctx.rank)

        return finetune_module("ar-grpo", self.params, generator, dataset, ctx, module_name="policy",
                               module=generator.policy, make_step=make_step)


def _check(cfg: dict[str, Any]) -> None:
    where = "method 'ar-grpo'"
    if cfg["group_size"] < 2:
        raise UsageError(f"{where}: group_size must be at least 2 (advantages are normalised within a group).")
    if cfg["num_iterations"] < 1:
        raise UsageError(f"{where}: num_iterations must be at least 1, got {cfg['num_iterations']}.")
    if cfg["rollout_cfg"] < 1.0:
        raise UsageError(f"{where}: rollout_cfg must be >= 1 (1 = no guidance), got {cfg['rollout_cfg']}.")
    if cfg["beta"] < 0:
        raise UsageError(f"{where}: beta must be >= 0, got {cfg['beta']}.")


class ArGrpoStep:
    """The step function handed to the training engine (see vapi_bench.training.StepFn)."""

    def __init__(self, generator: Generator, cfg: dict[str, Any], rewards: RewardMix, seed: int,
                 reference: FrozenReference | None, out_dir: Path, rank: int = 0) -> None:
        self.gen, self.cfg, self.rewards, self.seed, self.reference = generator, cfg, rewards, seed, reference
        self.rollout_path = Path(out_dir) / ROLLOUT_FILE.format(rank=rank)

    @property
    def recipe(self) -> SamplingRecipe:
        cfg = self.cfg
        return SamplingRecipe(cfg_scale=cfg["rollout_cfg"], temperature=cfg["temperature"], top_k=cfg["top_k"],
                              top_p=cfg["top_p"])

    # ---- log-probs ------------------------------------------------------------------------------
    def token_logprobs(self, tokens: torch.Tensor, conds: Sequence[Condition]) -> torch.Tensor:
        """log π(tokens[:, t] | cond, tokens[:, :t]) [R, T] at the rollout temperature; conditional
        logits, or guided ones under `logprob_cfg=guided`. Grad flows when enabled."""
        gen, cfg = self.gen, self.cfg
        cond = gen.prepare_conditions(conds)
        with autocast(tokens.device, cfg["precision"]):
            logits = gen.teacher_forced_logits(tokens, cond).float()
            if cfg["logprob_cfg"] == "guided" and cfg["rollout_cfg"] != 1.0:
                uncond = gen.teacher_forced_logits(tokens, gen.null_conditions(cond)).float()
                logits = uncond + cfg["rollout_cfg"] * (logits - uncond)
        logp = F.log_softmax(logits / cfg["temperature"], dim=-1)
        return logp.gather(-1, tokens[..., None]).squeeze(-1)

    # ---- rollout phase --------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, batch: Batch) -> dict[str, Any]:
        """Rollouts, rewards, advantages and the no-grad log-probs (reference; π_old when reused)."""
        cfg, gen = self.cfg, self.gen
        group, rows_per_pass = cfg["group_size"], cfg["micro_batch"] * cfg["group_size"]
        conds = [c for c in batch.conditions for _ in range(group)]
        seeds = [derive_seed(self.seed, pos * group + g, f"ar-grpo-step{batch.step}")
                 for pos in batch.positions for g in range(group)]
        gen.policy.eval()
        with distributed.gathered(gen.policy):  # FSDP: the sampler calls more than the forward
            tokens = torch.cat([gen.sample(conds[i:i + rows_per_pass], seeds=seeds[i:i + rows_per_pass],
                                           recipe=self.recipe)
                                for i in range(0, len(conds), rows_per_pass)]).to(batch.images.device)
        totals, parts = [], {}
        for i in range(0, len(conds), cfg["decode_chunk"]):
            images = gen.decode(tokens[i:i + cfg["decode_chunk"]]).float()
            total, part = self.rewards(images, conds[i:i + cfg["decode_chunk"]])
            totals.append(total)
            for name, value in part.items():
                parts.setdefault(name, []).append(value)
        rewards = torch.cat(totals).view(len(batch), group)
        out: dict[str, Any] = {
            "conditions": list(batch.conditions), "tokens": tokens, "rewards": rewards,
            "advantages": group_advantages(rewards, math.inf, cfg["adv_eps"]),
            "reward_parts": {name: torch.cat(v) for name, v in parts.items()},
        }
        if self.reference is not None:
            with self.reference.active():
                out["ref_logp"] = self._all_logprobs(tokens, conds)
        if cfg["num_iterations"] > 1:
            out["old_logp"] = self._all_logprobs(tokens, conds)
        return out

    def _all_logprobs(self, tokens: torch.Tensor, conds: Sequence[Condition]) -> torch.Tensor:
        rows = self.cfg["micro_batch"] * self.cfg["group_size"]
        return torch.cat([self.token_logprobs(tokens[i:i + rows], conds[i:i + rows])
                          for i in range(0, len(conds), rows)])

    def _rollout_for(self, batch: Batch) -> dict[str, Any]:
        """A fresh rollout every num_iterations steps; in between, the stored one (kept on disk
        so that a run resumed mid-cycle continues with the very same batch)."""
        k = self.cfg["num_iterations"]
        if k == 1:
            return self.rollout(batch)
        first = batch.step - batch.step % k
        if batch.step != first and self.rollout_path.exists():
            stored = torch.load(self.rollout_path, weights_only=True)
            if stored["step"] == first:
                return stored["rollout"]
        if batch.step != first:
            raise UsageError(f"method 'ar-grpo': step {batch.step + 1} reuses the rollout of step {first + 1}, "
                             f"but {self.rollout_path} does not hold it; resume from a checkpoint at a multiple "
                             "of num_iterations or start afresh.")
        roll = self.rollout(batch)
        atomic_write(self.rollout_path, lambda tmp: torch.save({"step": first, "rollout": roll}, tmp))
        return roll

    # ---- update phase ---------------------------------------------------------------------------
    def micro_loss(self, roll: dict[str, Any], rows: slice, meter: MetricMeter) -> torch.Tensor:
        """Token-mean GRPO loss of rollout rows `rows` (eval mode, with grad)."""
        cfg = self.cfg
        group = cfg["group_size"]
        conds = [c for c in roll["conditions"] for _ in range(group)][rows]
        tokens = roll["tokens"][rows]
        logp = self.token_logprobs(tokens, conds)
        old = roll["old_logp"][rows] if "old_logp" in roll else logp.detach()
        pg, clip_frac = ppo_clip_loss(logp, old, roll["advantages"].flatten()[rows], cfg["clip_eps"])
        meter.add("pg_loss", pg)
        meter.add("clip_frac", clip_frac)
        meter.add("ratio_mean", torch.exp(logp.detach() - old).mean())
        loss = pg
        if "ref_logp" in roll:
            kl = k3_kl(roll["ref_logp"][rows], logp)
            meter.add("kl", kl)
            loss = loss + cfg["beta"] * kl
        return loss

    def __call__(self, batch: Batch, meter: MetricMeter) -> Iterator[torch.Tensor]:
        roll = self._rollout_for(batch)
        rewards = roll["rewards"]
        meter.add("reward_mean", rewards.mean())
        meter.add("reward_std", rewards.std())
        meter.add("frac_reward_zero_std", (rewards.std(dim=1) == 0).float().mean())
        meter.add("adv_abs_mean", roll["advantages"].abs().mean())
        for name, value in roll["reward_parts"].items():
            meter.add(f"reward_{name}", value.nanmean())
        self.gen.policy.eval()  # ARG's forward: no dropout, no condition dropout
        total_rows = rewards.numel()
        step_rows = self.cfg["micro_batch"] * self.cfg["group_size"]
        for start in range(0, total_rows, step_rows):
            rows = slice(start, min(start + step_rows, total_rows))
            yield self.micro_loss(roll, rows, meter) * ((rows.stop - rows.start) / total_rows)
