"""dpo's offline pair set as a cached stage: drawn once from the base model, shared by every
fine-tune that asks for the same pairs (each seed and learning rate of a lab grid).

The stage stores the scored GROUPS (K samples per condition and their rewards), keyed by what
they depend on and nothing else: the base model's fingerprint (`generator.describe()`: config,
weight digests, precision), the reward spec and its class texts, K, the conditions, the sampling
recipe and `pair_seed`. The fine-tune's lr, seed, steps, β and loss never enter the key, and
neither does the pairing rule (best-vs-worst and all-vs-worst read the same groups). The file
lives under the runs directory's shared cache (`ctx.cache_dir`/dpo-pairs/<key>.pt; a method built
outside a run keeps it under its own output folder). Groups are drawn over ranks (group g on rank
g mod world) and gathered, so the file is the same on any number of ranks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from vapi_bench import distributed
from vapi_bench.hashing import stable_hash
from vapi_bench.interfaces import Condition, Generator, SamplingRecipe, StageContext
from vapi_bench.seeding import derive_seed, torch_generator
from vapi_bench.store import atomic_write

from .dpo_pairs import PairSet, draw_groups, pairs_from_groups

CACHE_FOLDER = "dpo-pairs"
FORMAT = 1  # bump when what a stored file means changes


def pair_conditions(generator: Generator, dataset: Any, groups: int, pair_seed: int) -> list[Condition]:
    """The condition of each group: class g mod C for class models (every class as often), else
    the caption of the training item at position g of a `pair_seed` permutation (cycled)."""
    if generator.conditioning == "class":
        return [g % generator.num_classes for g in range(groups)]
    rng = torch_generator(derive_seed(pair_seed, 0, "dpo-pair-prompts"))
    order: list[int] = []
    while len(order) < groups:
        order.extend(torch.randperm(len(dataset), generator=rng).tolist())
    return [_condition(dataset[i][1]) for i in order[:groups]]


def _condition(value: Any) -> Condition:
    return value.item() if isinstance(value, torch.Tensor) else value


def pair_identity(generator: Generator, cfg: dict[str, Any], conditions: Sequence[Condition],
                  recipe: SamplingRecipe) -> dict[str, Any]:
    """Everything the stored groups depend on (hashed into the file name)."""
    return {"format": FORMAT, "model": generator.describe(), "rewards": cfg["rewards"],
            "class_names": cfg["class_names"], "class_prompt": cfg["class_prompt"], "group_size": cfg["group_size"],
            "conditions": list(conditions), "recipe": recipe.as_dict(), "pair_seed": cfg["pair_seed"]}


def offline_pairs(generator: Generator, cfg: dict[str, Any], dataset: Any, ctx: StageContext,
                  recipe: SamplingRecipe, make_rewards: Callable[[], nn.Module]) -> tuple[PairSet, dict[str, Any]]:
    """The pair set (cfg["pairs"]: best-vs-worst or all-vs-worst) and what the run records about it:
    its file, its key, whether it was reused, its size."""
    conditions = pair_conditions(generator, dataset, cfg["pair_groups"], cfg["pair_seed"])
    identity = pair_identity(generator, cfg, conditions, recipe)
    key = stable_hash(identity)
    path = Path(ctx.cache_dir or Path(ctx.out_dir)) / CACHE_FOLDER / f"{key}.pt"
    # every rank must agree, since drawing is collective
    reused = distributed.all_reduce_min(torch.tensor([1.0 if path.exists() else 0.0])).item() == 1.0
    if reused:
        stored = torch.load(path, weights_only=True)
        tokens, rewards = stored["tokens"], stored["rewards"]
    else:
        tokens, rewards = _draw_all(generator, conditions, cfg, recipe, make_rewards())
        stored = {"identity": stable_hash(identity, 64), "conditions": conditions, "tokens": tokens, "rewards": rewards}
        distributed.on_main(lambda: atomic_write(path, lambda tmp: torch.save(stored, tmp)))
    pairs = pairs_from_groups(conditions, tokens, rewards, cfg["pairs"])
    record = {"pair_file": str(path), "pair_key": key, "pairs_reused": reused, "pairs": len(pairs),
              "pair_groups_without_preference": int((rewards.max(1).values <= rewards.min(1).values).sum()),
              "pair_reward_mean": float(rewards.mean())}
    return pairs, record


def _draw_all(generator: Generator, conditions: Sequence[Condition], cfg: dict[str, Any], recipe: SamplingRecipe,
              rewards: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Every group's K samples and rewards, group g drawn on rank g mod world, gathered in group order."""
    info, k = distributed.current(), cfg["group_size"]
    mine = list(range(info.rank, len(conditions), info.world_size))
    seeds = [derive_seed(cfg["pair_seed"], g * k + j, "dpo-pairs") for g in mine for j in range(k)]
    generator.policy.eval()
    tokens, scores = draw_groups(generator, [conditions[g] for g in mine], k, seeds, recipe, rewards,
                                 cfg["decode_chunk"])
    parts = distributed.all_gather_list([(g, tokens[i * k:(i + 1) * k].cpu(), scores[i]) for i, g in enumerate(mine)])
    parts.sort(key=lambda part: part[0])
    return torch.cat([p[1] for p in parts]), torch.stack([p[2] for p in parts])
