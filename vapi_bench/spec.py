"""RunSpec: the fully resolved configuration of a run and the content hashes of its stages.

Each stage is keyed by the hash of exactly what it depends on:
- finetune: model fingerprint (name, params, checkpoint, generator.describe()), method and its
  params, dataset, seed, limit;
- sample:   finetune key, the task's item list, the sampling recipe, output size, seed;
- score:    sample key, task and its params.
So changing a sampling option recomputes sampling and scoring but never fine-tuning.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .hashing import stable_hash
from .interfaces import SampleItem, SamplingRecipe
from .params import Param

#: sampling options every run accepts through --set (None = the task's / generator's default)
SAMPLING_PARAMS: tuple[Param, ...] = (
    Param("cfg_scale", float, None, "classifier-free guidance scale (1 = off); replaces the task's variants",
          minimum=0.0),
    Param("temperature", float, None, "softmax temperature", exclusive_minimum=0.0),
    Param("top_k", int, None, "keep the k most likely tokens (0 = all)", minimum=0),
    Param("top_p", float, None, "nucleus sampling mass (1 = all)", exclusive_minimum=0.0, maximum=1.0),
    Param("cfg_interval", int, None, "stop CFG after this many tokens (-1 = never)", minimum=-1),
)


@dataclass
class RunSpec:
    """Everything that determines a run's results (recorded in run.json)."""

    model: str
    model_params: dict[str, Any]
    checkpoint: str | None
    model_fingerprint: str
    method: str
    method_params: dict[str, Any]
    dataset: str | None
    dataset_params: dict[str, Any]
    task: str
    task_params: dict[str, Any]
    sampling_overrides: dict[str, Any]
    seed: int
    limit: int | None
    precision: str = "fp32"
    method_identity: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def finetune_key(self) -> str:
        if self.method_identity:
            return "base-" + self.model_fingerprint
        return stable_hash(
            {
                "model": self.model_fingerprint,
                "method": self.method,
                "method_params": self.method_params,
                "dataset": self.dataset,
                "dataset_params": self.dataset_params,
                "seed": self.seed,
                "limit": self.limit,
                "precision": self.precision,
            }
        )

    def run_id(self) -> str:
        return stable_hash(asdict(self))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_identity(spec: RunSpec, recipe: SamplingRecipe) -> str:
    """What identifies a leaderboard row's configuration, apart from its seed: the model (name,
    parameters, checkpoint and its digest, the generator's own facts), the method and its
    parameters, the training data, the task and its parameters, the sampling recipe, the limit and
    the precision. Rows with equal identity and different seeds are repeats of one configuration;
    rows with different identities are never averaged together."""
    fields = {k: v for k, v in spec.as_dict().items() if k not in ("seed", "sampling_overrides")}
    return stable_hash({**fields, "recipe": recipe.as_dict()}, length=12)


def items_hash(items: list[SampleItem]) -> str:
    return stable_hash([(it.index, it.condition, dict(it.meta)) for it in items])


def sample_key(finetune_key: str, task: str, items: list[SampleItem], recipe: SamplingRecipe,
               seed: int, output_size: int | None) -> str:
    return stable_hash(
        {"finetune": finetune_key, "task": task, "items": items_hash(items), "recipe": recipe.as_dict(),
         "seed": seed, "output_size": output_size}
    )


def score_key(sample_key_: str, task: str, task_params: dict[str, Any]) -> str:
    return stable_hash({"samples": sample_key_, "task": task, "task_params": task_params})


def apply_overrides(recipes: list[SamplingRecipe], overrides: dict[str, Any]) -> list[SamplingRecipe]:
    """Apply non-None sampling overrides to every variant; identical results collapse to one."""
    given = {k: v for k, v in overrides.items() if v is not None}
    out: list[SamplingRecipe] = []
    for recipe in recipes:
        updated = SamplingRecipe(**{**recipe.as_dict(), **given})
        if updated not in out:
            out.append(updated)
    return out
