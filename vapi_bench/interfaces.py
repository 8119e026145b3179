"""The contracts between the core and its plugins (DESIGN.md, "The contracts").

A plugin registers *entries* (name, factory, summary, typed params) through the hooks in
`hookspecs.py`. The core instantiates them with resolved parameters and only ever talks to the
objects through the abstract classes below, so nothing model-, method- or task-specific leaks
into `vapi_bench/`.

Conventions shared by every plugin:
- images are float tensors [B, 3, H, W] with pixels in [-1, 1] (decoders may overshoot; clamp
  only when converting to uint8);
- tokens are int64 tensors [B, T] in raster order;
- a *condition* is an int class index (class-conditional models) or a str prompt (text models).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import torch
from torch import nn

from .errors import UsageError, VapiError
from .params import Param

Condition = int | str


@dataclass(frozen=True)
class Entry:
    """What a plugin registers: a named factory with documented parameters.

    factory(**resolved_params) builds the object; generator factories additionally receive
    `checkpoint: str | None` and `device: torch.device` keyword arguments.
    requirements(**resolved_params) (generators also get `checkpoint=`) lists the files the object
    will need (`vapi_bench.prepare.WeightRequirement`s) WITHOUT building it, so `vapi-bench
    prepare` can fetch them on a connected machine. Objects may instead expose `requirements()`.
    `provider` is filled in by the registry (the plugin that registered it).
    """

    name: str
    factory: Callable[..., Any]
    summary: str
    params: tuple[Param, ...] = ()
    aliases: tuple[str, ...] = ()
    provider: str = ""
    requirements: Callable[..., list[Any]] | None = None
    #: methods only: named fixed settings the lab runs as rows of their own (`lab tune --methods
    #: va-pi:reward-only`), e.g. {"reward-only": {"beta": "0"}}
    variants: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: methods only: named ablations for `lab ablate NAME`: (row label, fixed settings) in order
    ablations: Mapping[str, Sequence[tuple[str, Mapping[str, str]]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """A model family's shared post-training defaults, declared by the MODEL's plugin through
    `register_families`: what every method of a comparison gets on this family unless the method's
    own `Recipe` says otherwise (learning rate, steps, images per step, the perceptual scorer suited
    to its images...). A generator belongs to the family named by its `family` attribute (or that
    name + '-c2i' / '-t2i'). Resolution order: vapi_bench.training.recipes.
    """

    name: str
    defaults: Mapping[str, Any]
    summary: str = ""
    provider: str = ""


@dataclass(frozen=True)
class Recipe:
    """A method's own values on one model family, declared by the METHOD's plugin through
    `register_recipes` (VA-π's β, G and ξ for LlamaGen; AR-GRPO's whole table). They take
    precedence over the family's shared defaults; `source` cites where they come from."""

    method: str
    family: str
    values: Mapping[str, Any]
    source: str = ""
    provider: str = ""

    @property
    def name(self) -> str:
        """The registry key: '<method>@<family>'."""
        return f"{self.method}@{self.family}"

    @property
    def summary(self) -> str:
        """What `vapi-bench list recipes` shows: the values and where they come from."""
        values = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"{values} ({self.source})" if self.source else values


class MissingCapability(UsageError):
    """A method asked a generator for an optional capability it does not provide."""


#: optional generator members: a method that needs one says so through `require_capability`
OPTIONAL_CAPABILITIES = ("decode_embeddings", "codebook", "tokenizer_decoder", "null_conditions")


def has_capability(generator: "Generator", capability: str) -> bool:
    """Whether `generator`'s class provides the optional `capability` (overrides the default)."""
    if capability not in OPTIONAL_CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; known: {OPTIONAL_CAPABILITIES}")
    return getattr(type(generator), capability, None) is not getattr(Generator, capability)


def require_capability(generator: "Generator", capability: str, needed_by: str) -> None:
    """Raise MissingCapability (a clear UsageError) unless `generator` provides `capability`."""
    if not has_capability(generator, capability):
        raise _missing(generator, capability, needed_by)


def _missing(generator: Any, capability: str, needed_by: str) -> MissingCapability:
    name = getattr(generator, "name", type(generator).__name__)
    return MissingCapability(
        f"Generator '{name}' does not provide `{capability}`, which {needed_by} needs. Choose a method "
        f"that does not need it, or implement `{capability}` in the generator's class "
        f"(docs/plugins.md, 'Optional capabilities')."
    )


@dataclass(frozen=True)
class SamplingRecipe:
    """How tokens are drawn at inference (recorded in every run and leaderboard row)."""

    cfg_scale: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_interval: int = -1

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Generator(ABC):
    """A loaded autoregressive image generator plus its frozen VQ tokenizer.

    Methods fine-tune `policy` (an nn.Module holding every trainable AR parameter) and, for the
    post-train-tokenizer baseline, `tokenizer_decoder`. Tasks only need `sample` and `decode`.
    """

    name: str
    conditioning: Literal["class", "text"]
    image_size: int  # pixels (square)
    num_tokens: int  # T, tokens per image
    codebook_size: int  # V
    num_classes: int = 0  # class-conditional models only
    #: class-conditional models: the name of each class (index i = class i), which text scorers
    #: read as "class_prompt.format(name)" when a method scores class-conditional images against
    #: text (ar-grpo's clip-score / hpsv2 rewards); empty = the model does not know its names
    class_names: tuple[str, ...] = ()
    class_prompt: str = "a photo of {}"  # AR-GRPO's C2I text; shapes: "a photo of a {}"
    default_recipe: SamplingRecipe = SamplingRecipe()
    default_dataset: str = ""  # registry name of the data methods fine-tune on by default
    family: str = ""  # e.g. "llamagen-c2i", "llamagen-t2i", "janus-pro", "shapes": method defaults key
    device: torch.device = torch.device("cpu")

    # ---- tokenizer -------------------------------------------------------------------------
    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Quantise images [B,3,H,W] in [-1,1] to token ids [B,T] (no grad, frozen tokenizer)."""

    @abstractmethod
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decode token ids [B,T] to images [B,3,H,W], roughly in [-1,1], unclamped."""

    # optional capabilities: only the methods that need them ask (see `require_capability`)
    def decode_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        """Optional. Decode code vectors [B,T,D] (already l2-normalised codebook rows) to images.

        Differentiable; used by the straight-through (STE) baseline.
        """
        raise _missing(self, "decode_embeddings", "a method that backpropagates through the decoder (e.g. ste)")

    @property
    def codebook(self) -> torch.Tensor:
        """Optional. The codebook rows [V, D] exactly as `decode` uses them (l2-normalised if the VQ is)."""
        raise _missing(self, "codebook", "a method that reads code vectors (e.g. ste)")

    # ---- conditions ------------------------------------------------------------------------
    @abstractmethod
    def prepare_conditions(self, conds: Sequence[Condition]) -> Any:
        """Turn raw conditions into the model's batch form (label tensor, text features...).

        The result is opaque to the core; it is passed back to `teacher_forced_logits`.
        """

    def null_conditions(self, cond: Any, rows: torch.Tensor | None = None) -> Any:
        """Optional. `cond` (from prepare_conditions) with `rows` (a bool mask [B]; None = every
        row) replaced by the model's null condition, the one classifier-free guidance and condition
        dropout use. Methods that need the unconditional branch call it (ar-grpo's guided
        log-probs, cca's null rows)."""
        raise _missing(self, "null_conditions", "a method that runs the unconditional branch (e.g. cca, "
                       "ar-grpo with logprob_cfg=guided)")

    # ---- the policy ------------------------------------------------------------------------
    @property
    @abstractmethod
    def policy(self) -> nn.Module:
        """The trainable autoregressive network (train()/eval() toggles dropout + cond dropout)."""

    @property
    def tokenizer_decoder(self) -> nn.Module:
        """Optional. The tokenizer's decoder half (for decoder post-training)."""
        raise _missing(self, "tokenizer_decoder", "a method that fine-tunes the tokenizer (e.g. post-train-tokenizer)")

    @abstractmethod
    def teacher_forced_logits(
        self, tokens: torch.Tensor, cond: Any, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B,T,V] where position t predicts tokens[:, t] from cond and the prefix.

        The prefix is `context[:, :t]` when a (noisy) context is given, else `tokens[:, :t]`.
        Runs with grad when grad is enabled; honours the policy's train/eval mode (dropout and
        label dropout are active in train mode, as in the official training code).
        """

    @abstractmethod
    def sample(
        self,
        conds: Sequence[Condition],
        *,
        seeds: Sequence[int],
        recipe: SamplingRecipe = SamplingRecipe(),
    ) -> torch.Tensor:
        """KV-cached autoregressive sampling; returns tokens [B,T].

        Row i's randomness comes only from seeds[i], so a sample is the same whatever the batch
        size, batch order or number of ranks.
        """

    # ---- checkpoints -----------------------------------------------------------------------
    @abstractmethod
    def save_finetuned(self, directory: Path) -> list[Path]:
        """Save the fine-tunable state (policy and, if changed, tokenizer) as safetensors."""

    @abstractmethod
    def load_finetuned(self, directory: Path) -> None:
        """Load what `save_finetuned` wrote (strict: mismatches raise CheckpointError)."""

    def describe(self) -> dict[str, Any]:
        """Facts recorded in run.json (config, checkpoint digests...)."""
        return {"name": self.name, "image_size": self.image_size, "num_tokens": self.num_tokens}


@dataclass
class StageContext:
    """What the runner hands to a method or task for one stage."""

    out_dir: Path
    device: torch.device
    seed: int
    progress: Any = None  # a vapi_bench.progress.Progress (rich) or None
    log: Callable[[dict[str, Any]], None] = lambda record: None  # per-step JSONL metrics
    limit: int | None = None  # cap on images/steps for smoke runs (--limit)
    precision: Literal["fp32", "bf16"] = "fp32"
    rank: int = 0
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    recipe: str = ""  # fine-tune stage: the family recipe the method's parameters came from ("" = none)
    #: a folder shared by every run of the same runs directory (runs_dir/cache), for artefacts that do not
    #: depend on a run's own seed or hyper-parameters (dpo's offline pair set); None outside a run
    cache_dir: Path | None = None


class Method(ABC):
    """An alignment method: turns (generator, dataset) into a fine-tuned generator in place."""

    @abstractmethod
    def finetune(self, generator: Generator, dataset: Any, ctx: StageContext) -> dict[str, Any]:
        """Fine-tune `generator` in place; return a summary (final metrics, steps, minutes).

        Must checkpoint under ctx.out_dir and resume from it if a checkpoint exists.
        """

    #: True for `none`: the runner skips the fine-tune stage entirely
    is_identity: bool = False


@dataclass(frozen=True)
class SampleItem:
    """One image to generate: a global index (drives the seed), its condition, task metadata."""

    index: int
    condition: Condition
    meta: Mapping[str, Any] = field(default_factory=dict)


#: which way a metric improves
Direction = Literal["lower", "higher"]


@dataclass
class TaskResult:
    """Metrics of one scored sample set plus optional per-sample records (merged into JSONL)."""

    metrics: dict[str, float]
    per_sample: list[dict[str, Any]] | None = None
    evaluator: str = ""
    evaluator_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Validation:
    """How a task is validated, for tools that choose settings (`vapi-bench lab tune`): the --set
    overrides that turn it into its validation setting (a reference or prompt set disjoint from the
    test one), the metric that selects, whether lower or higher is better, and the leaderboard
    variant read (None: the run's only row, for tasks that score one sampling recipe)."""

    overrides: Mapping[str, str]
    metric: str
    mode: Literal["min", "max"]
    variant: str | None = None


class Task(ABC):
    """An evaluation task: what to sample, and how to score a finished sample set.

    `validation` (None: none declared) is the task's validation setting and selection metric.
    `key_metrics` names the few metrics a person reads first, each with its direction ("lower" or
    "higher" is better), first the headline one: the run's terminal table, its verdict lines and
    the report's verdict panel show these (and colour a difference by this direction); every other
    metric stays in the CSV. () = none declared: the table shows the first metrics of the row."""

    conditioning: Literal["class", "text"]
    validation: Validation | None = None
    key_metrics: tuple[tuple[str, Direction], ...] = ()

    @abstractmethod
    def items(self, generator: Generator, limit: int | None = None) -> list[SampleItem]:
        """The images to generate, in index order (limit caps the count for smoke runs)."""

    def variants(self, generator: Generator) -> list[SamplingRecipe]:
        """Sampling recipes scored as separate leaderboard rows (e.g. without and with CFG)."""
        return [generator.default_recipe]

    @staticmethod
    def cfg_variants(generator: Generator, which: str = "both") -> list[SamplingRecipe]:
        """'without' (scale 1), 'with' (the generator's recipe) or 'both' (two rows, as the paper
        reports); one row when the generator's recipe uses no CFG."""
        with_cfg = generator.default_recipe
        without_cfg = SamplingRecipe(**{**with_cfg.as_dict(), "cfg_scale": 1.0})
        if which == "without" or with_cfg.cfg_scale == 1.0:
            return [without_cfg]
        if which == "with":
            return [with_cfg]
        return [without_cfg, with_cfg]

    def output_size(self, generator: Generator) -> int | None:
        """Resize generated images to this many pixels before saving (None keeps them)."""
        return None

    def write_layout(self, sample_dir: Path, items: Sequence[SampleItem]) -> None:
        """Hook to write task-specific layout files (e.g. GenEval metadata.jsonl folders)."""

    def image_path(self, sample_dir: Path, item: SampleItem) -> Path:
        """Where the image of `item` is stored (tasks with a fixed layout override this)."""
        return sample_dir / "images" / f"{item.index:06d}.png"

    @abstractmethod
    def score(self, sample_dir: Path, items: Sequence[SampleItem], ctx: StageContext) -> TaskResult:
        """Score the images of `items` found under sample_dir."""


class Scorer(nn.Module):
    """An image scorer shared by methods (as a reward term) and tasks (as a metric).

    Two kinds, told apart by `needs_reference` / `needs_conditions`:
    - pair scorers (mse, l1, lpips-*): `forward(pred, target)` -> per-image distance [B], lower
      is better;
    - conditioned scorers (hpsv2, clip-score, pickscore, ...):
      `forward(images, conditions=None, reference=None)` -> per-image score [B], higher is better;
      `conditions` holds one condition per image (a prompt str, or an int class the scorer maps
      to text).
    Images are in [-1, 1]. Generic callers (reward combinations, tasks) use `score()`, which
    takes keywords, checks that what the scorer needs was given, and calls the right form.
    `differentiable` says whether gradients flow to the images.
    """

    differentiable: bool = True
    higher_is_better: bool = False
    needs_reference: bool = True
    needs_conditions: bool = False

    def score(
        self,
        images: torch.Tensor,
        conditions: Sequence[Condition] | None = None,
        reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-image values [B] whatever the scorer's kind (see the class docstring)."""
        name = type(self).__name__
        if self.needs_reference and reference is None:
            raise UsageError(f"scorer {name} compares with a reference image; pass reference=<images>.")
        if self.needs_conditions and conditions is None:
            raise UsageError(f"scorer {name} scores images against their conditions; pass conditions=<prompts>.")
        if self.needs_conditions and len(conditions) != len(images):
            raise UsageError(f"scorer {name}: {len(images)} images but {len(conditions)} conditions.")
        if self.needs_reference and not self.needs_conditions:
            return self(images, reference)
        return self(images, conditions=conditions, reference=reference)


def check_sampled_tokens(generator: Generator, tokens: Any, batch: int) -> None:
    """Raise VapiError naming the generator unless `tokens` is what `sample` promises: an int64
    tensor [batch, num_tokens] with ids in [0, codebook_size). Checked on every sampled batch, so
    a broken plugin is named here rather than deep inside another model's decoder."""
    name = getattr(generator, "name", type(generator).__name__)
    expected = f"int64 [B, T] = [{batch}, {generator.num_tokens}] with ids in [0, {generator.codebook_size})"
    problem = ""
    if not isinstance(tokens, torch.Tensor):
        problem = f"returned {type(tokens).__name__}, not a torch.Tensor"
    elif tokens.dtype != torch.int64:
        problem = f"returned dtype {tokens.dtype}"
    elif tuple(tokens.shape) != (batch, generator.num_tokens):
        problem = f"returned shape {tuple(tokens.shape)}"
    elif tokens.numel() and not (0 <= int(tokens.min()) and int(tokens.max()) < generator.codebook_size):
        problem = f"returned ids in [{int(tokens.min())}, {int(tokens.max())}]"
    if problem:
        raise VapiError(f"Generator '{name}' broke the sample() contract: it {problem}; tokens must be {expected}. "
                        f"(vapi_bench.testing.check_generator checks the whole contract.)")


def iter_batches(items: Sequence[Any], batch_size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most batch_size items."""
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]
