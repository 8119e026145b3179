"""`dpo`: Direct Preference Optimization on image-token sequences (Rafailov et al. 2023), with TRL's
loss definitions (dpo_objective.py: sigmoid / cDPO label smoothing, IPO, hinge).

Per pair (condition c, chosen tokens y_w, rejected tokens y_l) the loss is
−log σ(β[(log π_θ(y_w|c) − log π_ref(y_w|c)) − (log π_θ(y_l|c) − log π_ref(y_l|c))]), the log-probs
summed over the image tokens of the generator's teacher-forced CONDITIONAL logits (no CFG, T = 1),
π_ref a frozen copy of the policy (vapi_bench.training.FrozenReference). The policy runs in eval
mode, as TRL's `disable_dropout=True` default does (here it also keeps the model's condition dropout
off, which would otherwise null random conditions).

Where the pairs come from (`pairs=`):
- `best-vs-worst` / `all-vs-worst` (offline): K samples of the BASE model per condition
  (index-seeded, with `pair_cfg`), scored by the reward scorers (`rewards=`, AR-GRPO's RewardMix);
  drawn once and cached as a stage shared by every seed and lr (dpo_pair_stage.py);
- `online`: flow_grpo's DPO mode (yifan123/flow_grpo @ ac4c86e, scripts/train_sd3_dpo.py L614-620
  and config/dpo.py): each step's conditions (the engine's batch) get K fresh samples from the
  reference, best vs worst; every `online_every` steps the reference is reset to the current policy
  (flow_grpo's `ref_update_step`, whose comment suggests 40 for "OnlineDPO"). Sample (p, k) of step
  s is seeded from (seed, s, p·K + k), so pairs do not depend on the number of ranks; the reference
  in force is kept on disk so that a resumed run continues with the very same one;
- `file`: a user's JSONL of pairs (dpo_pair_file.py).

Logged per step (TRL's names without the slash): rewards_chosen / rewards_rejected (β·log-ratio),
reward_margin, reward_accuracy (implicit reward of y_w above y_l), logratio_chosen /
logratio_rejected (log π_θ − log π_ref), and pair_gap (the scorer's reward difference).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch

from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Generator, Method, SamplingRecipe, StageContext
from vapi_bench.params import Param
from vapi_bench.seeding import derive_seed
from vapi_bench.store import atomic_write
from vapi_bench.training import (TRAINING_PARAMS, Batch, FrozenReference, MetricMeter, autocast, finetune_module,
                                 training_dataset, uses_fsdp)
from vapi_bench.training.recipes import recipe_keys, resolve_outside_a_run

from .dpo_objective import LOSS_TYPES, dpo_loss, sequence_logps
from .dpo_pair_file import read_pair_file
from .dpo_pair_stage import offline_pairs
from .dpo_pairs import PairDataset, PairSet, best_vs_worst_rows, draw_groups
from .rewards import RewardMix, class_texts

_RECIPE = "; None = the recipe's (recipes.DPO_RECIPES)"
PAIR_SOURCES = ("best-vs-worst", "all-vs-worst", "online", "file")
DPO_PARAMS: tuple[Param, ...] = TRAINING_PARAMS + (
    Param("beta", float, None, "β: scale of the log-likelihood ratios (TRL default 0.1)" + _RECIPE,
          from_recipe=True, exclusive_minimum=0.0),
    Param("loss_type", str, "sigmoid", "'sigmoid' (DPO), 'ipo' (IPO, on per-token mean log-probs as TRL) or "
          "'hinge' (SLiC)", choices=LOSS_TYPES),
    Param("label_smoothing", float, 0.0, "ε of conservative DPO (sigmoid only): the label is flipped with "
          "probability ε (TRL: in [0, 0.5))", minimum=0.0, exclusive_maximum=0.5),
    Param("pairs", str, "best-vs-worst", "where the pairs come from: 'best-vs-worst' / 'all-vs-worst' (base-model "
          "samples scored by `rewards`, made once and cached), 'online' (re-drawn from the policy, flow_grpo's "
          "DPO mode) or 'file' (pairs_file)", choices=PAIR_SOURCES),
    Param("pairs_file", str, "", "pairs=file: JSONL, one {\"condition\", \"chosen\", \"rejected\"} per line "
          "(token lists or image paths)"),
    Param("group_size", int, None, "K: samples per condition a pair is picked from" + _RECIPE, from_recipe=True,
          minimum=2),
    Param("pair_groups", int, None, "offline: conditions sampled (class g mod C; text: captions of the data)"
          + _RECIPE, from_recipe=True, minimum=1),
    Param("pair_seed", int, 0, "offline: seed of the pair samples (independent of the run's seed, so every "
          "seed of a lab shares one pair set)", minimum=0),
    Param("online_every", int, 40, "online: reset the reference (the sampler) to the policy every N steps "
          "(flow_grpo's ref_update_step)", minimum=1),
    Param("pair_cfg", float, None, "classifier-free guidance scale of the pair samples" + _RECIPE,
          from_recipe=True, minimum=1.0),
    Param("temperature", float, 1.0, "sampling temperature of the pair samples", exclusive_minimum=0.0),
    Param("top_k", int, 0, "top-k of the pair samples (0 = off)", minimum=0),
    Param("top_p", float, 1.0, "nucleus filter of the pair samples (1 = off)", exclusive_minimum=0.0, maximum=1.0),
    Param("rewards", str, None, "reward scorers and weights that rank a condition's samples, "
          "'name:w,name[key=value,...]:w' (as ar-grpo)" + _RECIPE, from_recipe=True),
    Param("class_names", str, "", "class-conditional models, text rewards: file with one class name per line"),
    Param("class_prompt", str, "", "class-conditional models, text rewards: the text of a class, {} = its name"),
    Param("decode_chunk", int, None, "pair samples drawn, decoded and scored per batch" + _RECIPE,
          from_recipe=True, minimum=1),
)

REFERENCE_FILE = "dpo_reference_rank{rank}.pt"


class Dpo(Method):
    """DPO through the generator contract (any generator with `sample` and `teacher_forced_logits`)."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def finetune(self, generator: Generator, dataset: Any, ctx: StageContext) -> dict[str, Any]:
        cfg, ctx = _resolved(self.params, generator, ctx)
        _check(cfg)
        where = "method 'dpo'"
        recipe = SamplingRecipe(cfg_scale=cfg["pair_cfg"], temperature=cfg["temperature"], top_k=cfg["top_k"],
                                top_p=cfg["top_p"])

        def make_rewards() -> RewardMix:
            return RewardMix(cfg["rewards"], ctx.device, where,
                             classes=class_texts(generator, cfg["class_names"], cfg["class_prompt"], where))

        record: dict[str, Any] = {}
        if cfg["pairs"] == "file":
            pairs: PairSet | None = read_pair_file(cfg["pairs_file"], generator)
            record = {"pair_file": cfg["pairs_file"], "pairs": len(pairs)}
        elif cfg["pairs"] == "online":
            pairs = None
        else:
            data = training_dataset(dataset, cfg["dataset"], generator.image_size)
            pairs, record = offline_pairs(generator, cfg, data, ctx, recipe, make_rewards)
            if not len(pairs):
                raise UsageError(f"{where}: every condition's {cfg['group_size']} samples got the same reward, so "
                                 "there is no preference to learn; raise group_size or pair_groups, or use other "
                                 "rewards.")
        train_on = PairDataset(pairs, generator.image_size) if pairs is not None else dataset

        def make_step(resolved: dict[str, Any]) -> DpoStep:
            reference = FrozenReference(generator, uses_fsdp(resolved), ctx.device, "dpo")
            online = (OnlinePairs(generator, resolved, recipe, make_rewards(), ctx.seed, Path(ctx.out_dir), ctx.rank)
                      if pairs is None else None)
            return DpoStep(generator, resolved, reference, pairs, online)

        summary = finetune_module("dpo", cfg, generator, train_on, ctx, module_name="policy",
                                  module=generator.policy, make_step=make_step)
        return {**summary, **record}


def _resolved(params: dict[str, Any], generator: Generator, ctx: StageContext) -> tuple[dict[str, Any], StageContext]:
    """The parameters with every recipe key filled (the runner did it already in a run; a method
    built outside one does the runner's lookup here, before the pair stage needs K and rewards)."""
    if all(params.get(k) is not None for k in recipe_keys(DPO_PARAMS)):
        return dict(params), ctx
    values, source = resolve_outside_a_run("dpo", params, generator, ctx.precision)
    return values, replace(ctx, recipe=source)


def _check(cfg: dict[str, Any]) -> None:
    where = "method 'dpo'"
    if cfg["label_smoothing"] and cfg["loss_type"] != "sigmoid":
        raise UsageError(f"{where}: label_smoothing applies to loss_type=sigmoid only (TRL ignores it for "
                         f"{cfg['loss_type']}); set label_smoothing=0.")
    if (cfg["pairs"] == "file") != bool(cfg["pairs_file"]):
        raise UsageError(f"{where}: pairs=file and pairs_file=PATH go together (got pairs={cfg['pairs']}, "
                         f"pairs_file={cfg['pairs_file']!r}).")
    if cfg["pairs"] == "online" and uses_fsdp(cfg):
        raise UsageError(f"{where}: pairs=online resets the reference to the policy, which sharding=fsdp keeps as "
                         "a sharded copy of the initial weights; use sharding=ddp or offline pairs.")


class OnlinePairs:
    """flow_grpo's DPO mode: the reference samples K images per condition of each step (best vs
    worst), and is reset to the policy every `online_every` steps."""

    def __init__(self, generator: Generator, cfg: dict[str, Any], recipe: SamplingRecipe, rewards: RewardMix,
                 seed: int, out_dir: Path, rank: int) -> None:
        self.gen, self.cfg, self.recipe, self.rewards, self.seed = generator, cfg, recipe, rewards, seed
        self.path = out_dir / REFERENCE_FILE.format(rank=rank)
        self.synced: int | None = None  # the step the reference in memory was taken at

    def reference_for(self, step: int, reference: FrozenReference) -> FrozenReference:
        """The reference in force at `step`: the policy at the last multiple of online_every (taken
        now, or read back from disk after a resume)."""
        every = self.cfg["online_every"]
        start = step - step % every
        if self.synced == start:
            return reference
        if step == start:
            reference = FrozenReference(self.gen, False, reference.device, "dpo")
            tensors = [t.cpu() for t in reference.tensors]
            atomic_write(self.path, lambda tmp: torch.save({"step": start, "tensors": tensors}, tmp))
        else:
            stored = torch.load(self.path, weights_only=True) if self.path.exists() else {"step": None}
            if stored["step"] != start:
                raise UsageError(f"method 'dpo': step {step + 1} samples from the reference of step {start + 1}, but "
                                 f"{self.path} does not hold it; resume from a checkpoint at a multiple of "
                                 "online_every or start afresh.")
            reference.tensors = [t.to(p.device) for t, p in zip(stored["tensors"], self.gen.policy.parameters())]
        self.synced = start
        return reference

    @torch.no_grad()
    def draw(self, batch: Batch, reference: FrozenReference) -> PairSet:
        """One best-vs-worst pair per condition of this rank's batch, sampled from `reference`."""
        k = self.cfg["group_size"]
        seeds = [derive_seed(self.seed, pos * k + j, f"dpo-online-step{batch.step}")
                 for pos in batch.positions for j in range(k)]
        self.gen.policy.eval()
        with reference.active():
            tokens, rewards = draw_groups(self.gen, batch.conditions, k, seeds, self.recipe, self.rewards,
                                          self.cfg["decode_chunk"])
        return best_vs_worst_rows(batch.conditions, tokens, rewards)


class DpoStep:
    """The step function handed to the training engine (see vapi_bench.training.StepFn)."""

    def __init__(self, generator: Generator, cfg: dict[str, Any], reference: FrozenReference,
                 pairs: PairSet | None, online: OnlinePairs | None) -> None:
        self.gen, self.cfg, self.reference, self.pairs, self.online = generator, cfg, reference, pairs, online

    def logps(self, tokens: torch.Tensor, conds: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence log-probs of [chosen; rejected] under their condition, one forward (grad when enabled)."""
        both = torch.cat([tokens[0], tokens[1]])
        cond = self.gen.prepare_conditions(conds + conds)
        with autocast(both.device, self.cfg["precision"]):
            logits = self.gen.teacher_forced_logits(both, cond)
        return sequence_logps(logits, both, mean=self.cfg["loss_type"] == "ipo").chunk(2)

    def micro_loss(self, pairs: PairSet, meter: MetricMeter) -> torch.Tensor:
        """Mean weighted DPO loss of `pairs` (TRL's `losses.mean()` when every weight is 1)."""
        tokens = (pairs.chosen, pairs.rejected)
        with torch.no_grad(), self.reference.active():
            ref_chosen, ref_rejected = self.logps(tokens, pairs.conditions)
        chosen, rejected = self.logps(tokens, pairs.conditions)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, self.cfg["beta"], self.cfg["loss_type"],
            self.cfg["label_smoothing"])
        loss = (losses * pairs.weight).mean()
        rows = float(len(pairs))
        meter.add("dpo_loss", loss, rows)
        meter.add("rewards_chosen", chosen_rewards.mean(), rows)
        meter.add("rewards_rejected", rejected_rewards.mean(), rows)
        meter.add("reward_margin", (chosen_rewards - rejected_rewards).mean(), rows)
        meter.add("reward_accuracy", (chosen_rewards > rejected_rewards).float().mean(), rows)
        meter.add("logratio_chosen", (chosen - ref_chosen).detach().mean(), rows)
        meter.add("logratio_rejected", (rejected - ref_rejected).detach().mean(), rows)
        gap = pairs.gap[~torch.isnan(pairs.gap)]
        if len(gap):
            meter.add("pair_gap", gap.mean(), float(len(gap)))
        return loss

    def batch_pairs(self, batch: Batch) -> PairSet:
        """This rank's pairs: the stored ones the engine drew (offline, file) or fresh ones (online)."""
        if self.online is None:
            assert self.pairs is not None
            return self.pairs.rows(batch.indices).to(batch.images.device)
        self.reference = self.online.reference_for(batch.step, self.reference)
        return self.online.draw(batch, self.reference).to(batch.images.device)

    def __call__(self, batch: Batch, meter: MetricMeter) -> Iterator[torch.Tensor]:
        """Yield the micro-batch losses (`micro_batch` pairs = 2·micro_batch sequences per forward),
        each weighted by its share of the rank's pairs, so that they sum to the rank's mean loss."""
        pairs = self.batch_pairs(batch)
        meter.add("pairs_without_preference", 1.0 - pairs.weight.mean())
        self.gen.policy.eval()  # TRL's disable_dropout; here it also keeps condition dropout off
        size, m = len(pairs), self.cfg["micro_batch"]
        for start in range(0, size, m):
            rows = list(range(start, min(start + m, size)))
            yield self.micro_loss(pairs.rows(rows), meter) * (len(rows) / size)
