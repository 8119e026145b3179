"""The `va-pi` method: one sampling phase and one update phase per optimiser step (docs/reference/vapi.md §8).

Sampling (no grad, eval mode): ground-truth tokens from the frozen tokenizer, optional context
noise ξ, ONE teacher-forced forward, G sequences drawn position-wise, decoded and rewarded
against the original image, group-normalised advantages.
Update (train mode, grad): token-level PPO-clip on those advantages + β · cross-entropy of the same
teacher-forced logits on the true tokens (+ optional k3 KL to the initial model).

Two update modes compute the same estimator:
- `shared`: the G rows of an image share its context, so one forward per image gives all G
  rows' log-probs (≈ 1/G of the compute; dropout and label dropout are shared by the group);
- `per-row`: the official structure, G rows per image through the network, each with its own
  dropout and label-dropout draw.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Condition, Generator, Method, StageContext
from vapi_bench.params import Param
from vapi_bench.seeding import derive_seed, torch_generator
from vapi_bench.training import (PIXEL_PARAMS, TRAINING_PARAMS, Batch, MetricMeter, PixelObjective, autocast,
                                 build_pixel_objective, decoded_distances, draw_group, finetune_module,
                                 group_advantages, k3_kl, ppo_clip_loss, swapped_parameters, teacher_forced_ce)

from .objective import corrupt_context

VAPI_PARAMS: tuple[Param, ...] = TRAINING_PARAMS + PIXEL_PARAMS + (
    Param("group_size", int, None, "G: sequences sampled per image from its teacher-forced logits; None = the "
          "recipe's (8)", from_recipe=True, minimum=2),
    Param("beta", float, None, "β: weight of the teacher-forced cross-entropy (prior) term; None = the recipe's "
          "(0.1)", from_recipe=True, minimum=0.0),
    Param("clip_eps", float, 0.2, "PPO clip range ε", exclusive_minimum=0.0),
    Param("adv_clip", float, None, "clamp group-normalised advantages to ±adv_clip; None = the recipe's (5)",
          from_recipe=True, exclusive_minimum=0.0),
    Param("xi", float, None, "context noise ξ: probability of replacing each context token; None = the recipe's "
          "(c2i 0, LlamaGen T2I 0.5, Janus-Pro 0.95)", from_recipe=True, minimum=0.0, maximum=1.0),
    Param("noise_kernel", str, "paper", "'paper': replacement excludes the true token (Eq. 28-29); "
          "'official': uniform over the whole vocabulary, as the released code", choices=("paper", "official")),
    Param("temperature", float, 1.0, "sampling temperature (also divides the update's logits)", exclusive_minimum=0.0),
    Param("top_k", int, 0, "top-k filter for sampling (0 = off)", minimum=0),
    Param("top_p", float, 1.0, "nucleus filter for sampling (1 = off)", exclusive_minimum=0.0, maximum=1.0),
    Param("use_kl", bool, False, "add kl_coef · k3 KL to a frozen copy of the initial model (builds the copy)"),
    Param("kl_coef", float, 0.01, "weight of the k3 KL term when use_kl", minimum=0.0),
    Param("update_mode", str, "shared", "'shared': one forward per image serves its G rows; "
          "'per-row': G rows per image through the network (official)", choices=("shared", "per-row")),
)


class VaPi(Method):
    """Variational policy alignment (Liao et al. 2025) through the generator contract."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def finetune(self, generator: Generator, dataset: Any, ctx: StageContext) -> dict[str, Any]:
        def make_step(cfg: dict[str, Any]) -> VaPiStep:
            if cfg["use_kl"] and cfg["sharding"] == "fsdp" and ctx.world_size > 1:
                raise UsageError("va-pi: use_kl needs sharding=ddp (its frozen reference swaps plain "
                                 "tensors into the policy, which FSDP shards).")
            # the KL reference is the policy before any update (cloned before a resume restores)
            reference = [p.detach().clone() for p in generator.policy.parameters()] if cfg["use_kl"] else None
            return VaPiStep(generator, cfg, build_pixel_objective(cfg, ctx.device), ctx.seed, reference)

        return finetune_module("va-pi", self.params, generator, dataset, ctx, module_name="policy",
                               module=generator.policy, make_step=make_step)


class VaPiStep:
    """The step function handed to the training engine (see vapi_bench.training.StepFn)."""

    def __init__(self, generator: Generator, cfg: dict[str, Any], objective: PixelObjective, seed: int,
                 reference: list[torch.Tensor] | None = None) -> None:
        self.gen, self.cfg, self.objective, self.seed, self.reference = generator, cfg, objective, seed, reference

    # ---- sampling phase -------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Everything the update needs, computed without grad in eval mode."""
        cfg, gen = self.cfg, self.gen
        group = cfg["group_size"]
        rngs = [torch_generator(derive_seed(self.seed, pos, f"va-pi-step{batch.step}"), batch.images.device)
                for pos in batch.positions]
        gt = gen.encode(batch.images).long()
        context = (corrupt_context(gt, cfg["xi"], gen.codebook_size, cfg["noise_kernel"], rngs)
                   if cfg["xi"] > 0 else None)
        samples, old_logp, ref_logp = [], [], []
        gen.policy.eval()
        chunk = cfg["micro_batch"] * group
        for start in range(0, len(batch), chunk):
            rows = slice(start, start + chunk)
            logits = self._logits(batch.conditions[rows], gt[rows], _rows(context, rows))
            for b, row_logits in zip(range(rows.start, min(rows.stop, len(batch))), logits):
                tokens, logp = draw_group(row_logits, group, rngs[b], cfg["temperature"], cfg["top_k"], cfg["top_p"])
                samples.append(tokens)
                old_logp.append(logp)
            if self.reference is not None:
                with swapped_parameters(gen.policy, self.reference):
                    ref_logits = self._logits(batch.conditions[rows], gt[rows], _rows(context, rows))
                for tokens, row_logits in zip(samples[rows], ref_logits):
                    logp = F.log_softmax(row_logits.float() / cfg["temperature"], dim=-1)
                    ref_logp.append(logp.gather(-1, tokens.T).T)
        samples_t = torch.stack(samples)  # [B, G, T]
        distance, parts = decoded_distances(gen, samples_t.flatten(0, 1), batch.images, group, self.objective,
                                            cfg["decode_chunk"])
        rewards = -distance.view(len(batch), group)
        out = {"gt": gt, "samples": samples_t, "old_logp": torch.stack(old_logp), "rewards": rewards,
               "advantages": group_advantages(rewards, cfg["adv_clip"]),
               **{f"reward_{k}": v for k, v in parts.items()}}
        if context is not None:
            out["context"] = context
        if self.reference is not None:
            out["ref_logp"] = torch.stack(ref_logp)
        return out

    def _logits(self, conds: Sequence[Condition], tokens: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        with autocast(tokens.device, self.cfg["precision"]):
            return self.gen.teacher_forced_logits(tokens, self.gen.prepare_conditions(conds), context)

    # ---- update phase ---------------------------------------------------------------------------
    def micro_loss(self, conds: Sequence[Condition], roll: dict[str, torch.Tensor], rows: slice,
                   meter: MetricMeter) -> torch.Tensor:
        """PPO-clip + β·CE (+ KL) for the images in `rows` (train mode, with grad)."""
        cfg = self.cfg
        group = cfg["group_size"]
        gt, samples = roll["gt"][rows], roll["samples"][rows]  # [m, T], [m, G, T]
        context = _rows(roll.get("context"), rows)
        if cfg["update_mode"] == "shared":
            logits = self._logits(conds, gt, context)  # [m, T, V]
            logp = F.log_softmax(logits.float() / cfg["temperature"], dim=-1)
            new_logp = logp.gather(-1, samples.transpose(1, 2)).transpose(1, 2).flatten(0, 1)
            ce = teacher_forced_ce(logits, gt)
        else:
            repeat = lambda t: None if t is None else t.repeat_interleave(group, dim=0)  # noqa: E731
            logits = self._logits([c for c in conds for _ in range(group)], repeat(gt), repeat(context))
            logp = F.log_softmax(logits.float() / cfg["temperature"], dim=-1)
            new_logp = logp.gather(-1, samples.flatten(0, 1)[..., None]).squeeze(-1)
            ce = teacher_forced_ce(logits, repeat(gt))
        pg, clip_frac = ppo_clip_loss(new_logp, roll["old_logp"][rows].flatten(0, 1),
                                      roll["advantages"][rows].flatten(), cfg["clip_eps"])
        loss = pg + cfg["beta"] * ce
        meter.add("pg_loss", pg)
        meter.add("ce", ce)
        meter.add("clip_frac", clip_frac)
        if "ref_logp" in roll:
            kl = k3_kl(roll["ref_logp"][rows].flatten(0, 1), new_logp)
            loss = loss + cfg["kl_coef"] * kl
            meter.add("kl", kl)
        return loss

    def __call__(self, batch: Batch, meter: MetricMeter) -> Iterator[torch.Tensor]:
        roll = self.rollout(batch)
        rewards, adv = roll["rewards"], roll["advantages"]
        meter.add("reward_mean", rewards.mean())
        meter.add("reward_std", rewards.std())
        meter.add("adv_abs_mean", adv.abs().mean())
        meter.add("adv_clipped_frac", (adv.abs() >= self.cfg["adv_clip"]).float().mean())
        for name in ("reward_mse", "reward_perceptual"):
            if name in roll:
                meter.add(name, roll[name].mean())
        self.gen.policy.train()
        size, m = len(batch), self.cfg["micro_batch"]
        for start in range(0, size, m):
            rows = slice(start, min(start + m, size))
            loss = self.micro_loss(batch.conditions[rows], roll, rows, meter)
            yield loss * ((rows.stop - rows.start) / size)


def _rows(tensor: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return None if tensor is None else tensor[rows]
