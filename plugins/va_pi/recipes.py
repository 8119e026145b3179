"""Per-family training recipes and the parameters VA-π shares with the baselines.

A parameter whose value is None means "the recipe of the generator's family": the paper's Table 7
and the shipped launch scripts for the real models (reference/vapi.md §2), and a CPU-sized recipe
for the embedded shapes world. The baselines use the same table so that they get the same data
and the same budget (images per step × steps) as VA-π.
"""
from __future__ import annotations

from typing import Any, Mapping

from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Generator, StageContext
from vapi_bench.params import Param

#: The paper's post-training learning rate as a fraction of the learning rate pre-training ended at:
#: LlamaGen pre-trains at a constant 1e-4 and VA-π post-trains it at 1e-6 (Table 7).
LLAMAGEN_PRETRAIN_LR = 1e-4
PAPER_LR_RATIO = 1e-6 / LLAMAGEN_PRETRAIN_LR


def post_training_lr(pretraining_final_lr: float) -> float:
    """The rule every method's shapes recipe follows: the paper's ratio applied to the learning rate
    where pre-training ENDED (the zoo's cosine schedule ends at lr x min_lr_ratio, not at its peak)."""
    return float(f"{pretraining_final_lr * PAPER_LR_RATIO:.6g}")  # 3e-06, not 2.9999999999999997e-06


def _shapes_lr(optim_field: str) -> float:
    from vapi_bench.plugins.shapes.zoo_config import FULL
    from vapi_bench.plugins.shapes.zoo_train import final_lr

    return post_training_lr(final_lr(getattr(FULL, optim_field)))


_C2I = {
    "lr": 1e-6, "weight_decay": 1e-4, "beta": 0.1, "group_size": 8, "adv_clip": 5.0,
    "batch_size": 128, "steps": 100, "xi": 0.0, "perceptual": "lpips-vgg",
    # 1 image x G=8 rows per micro-batch = the official --train-batch-size 8
    "micro_batch": 1, "decode_chunk": 8, "ckpt_every": 25,
}

FAMILY_RECIPES: dict[str, dict[str, Any]] = {
    # LlamaGen-XXL C2I, Table 7 / train_c2i_grpo_8gpu.sh
    "llamagen-c2i": dict(_C2I),
    # LlamaGen-XL T2I: context noise 0.5, 200 steps
    "llamagen-t2i": {**_C2I, "xi": 0.5, "steps": 200},
    # Janus-Pro 1B: lr 1e-7, xi 0.95 (paper; the script uses 1.0), pip-lpips AlexNet, 128 images (paper)
    "janus-pro": {**_C2I, "lr": 1e-7, "xi": 0.95, "perceptual": "lpips-alex"},
    # The embedded shapes world: the same objective and ratios (G, β, clip, ξ), sized so that a run
    # takes about a minute on one CPU thread (~1 s per step of 16 images). The learning rate is
    # post_training_lr of the zoo GPT's final pre-training lr (zoo_config.FULL: cosine 6e-3 -> 3e-4,
    # hence 3e-6), the same for every method that reads this table.
    "shapes-c2i": {**_C2I, "lr": _shapes_lr("c2i_optim"), "batch_size": 16, "steps": 60,
                   "perceptual": "shapes-perceptual", "micro_batch": 4, "decode_chunk": 64, "ckpt_every": 20},
    "shapes-t2i": {**_C2I, "lr": _shapes_lr("t2i_optim"), "batch_size": 16, "steps": 60, "xi": 0.5,
                   "perceptual": "shapes-perceptual", "micro_batch": 4, "decode_chunk": 64, "ckpt_every": 20},
}
# the under-capacity c2i base: the same recipe, its lr from its own pre-training schedule
FAMILY_RECIPES["shapes-c2i-small"] = {**FAMILY_RECIPES["shapes-c2i"], "lr": _shapes_lr("c2i_small_optim")}
FALLBACK_FAMILY = "llamagen-c2i"


def _family_note(key: str) -> str:
    values = ", ".join(f"{fam} {rec[key]!r}" for fam, rec in FAMILY_RECIPES.items())
    return f"None = family default ({values})"


def family_param(name: str, kind: type, help: str) -> Param:
    """A parameter whose default (None) comes from the generator family's recipe."""
    return Param(name, kind, None, f"{help}; {_family_note(name)}")


TRAINING_PARAMS: tuple[Param, ...] = (
    family_param("lr", float, "AdamW learning rate (constant, no warm-up)"),
    family_param("weight_decay", float, "AdamW weight decay (never applied to parameters named *norm*)"),
    Param("betas", tuple, (0.9, 0.999), "AdamW betas"),
    Param("max_grad_norm", float, 1.0, "clip the global gradient norm to this (0 = no clipping)"),
    family_param("steps", int, "optimiser steps"),
    family_param("batch_size", int, "images per optimiser step, over all ranks"),
    family_param("micro_batch", int, "images per forward/backward pass; accumulation = batch_size / (ranks x micro_batch)"),
    Param("precision", str, None, "fp32 or bf16 autocast; None = the run's --precision", choices=(None, "fp32", "bf16")),
    family_param("ckpt_every", int, "save a resumable checkpoint every N steps"),
    Param("dataset", str, None, "training data (registered dataset name); None = the generator's default dataset"),
    Param("sharding", str, "ddp", "with several ranks: 'ddp' replicates the trained module and averages gradients; "
          "'fsdp' shards its parameters, gradients and optimiser state over the ranks (FSDP2), for models that "
          "do not fit one device", choices=("ddp", "fsdp")),
)

REWARD_PARAMS: tuple[Param, ...] = (
    Param("w_mse", float, 1.0, "weight of the pixel MSE term (images in [-1, 1])"),
    Param("w_perceptual", float, 1.0, "weight of the perceptual term (0 = no perceptual scorer is built)"),
    family_param("perceptual", str, "perceptual scorer (registered scorer name)"),
    Param("perceptual_weights", str, None, "the perceptual scorer's network weights (its `weights` parameter: "
          "local path, or URL / hf:// for LPIPS); None = the scorer's default"),
    family_param("decode_chunk", int, "images decoded (and scored) per batch"),
)


def family_key(generator: Generator) -> str | None:
    """The recipe key of a generator: its family, or family + '-c2i'/'-t2i' (e.g. 'shapes');
    None when neither is known."""
    family = getattr(generator, "family", "") or ""
    suffixed = f"{family}-{'c2i' if generator.conditioning == 'class' else 't2i'}"
    for key in (family, suffixed):
        if key in FAMILY_RECIPES:
            return key
    return None


def resolve(
    values: Mapping[str, Any], generator: Generator, ctx: StageContext, where: str
) -> dict[str, Any]:
    """Fill every None with the family recipe (or run setting) and check the result makes sense.

    The returned dict is what the run records: every value concrete, plus `recipe` (the family
    whose defaults were used; an unknown family falls back to the paper's C2I recipe, said so).
    """
    key = family_key(generator)
    recipe = FAMILY_RECIPES[key or FALLBACK_FAMILY]
    out = dict(values)
    for name, value in values.items():
        if value is None and name in recipe:
            out[name] = recipe[name]
    if "precision" in out and out["precision"] is None:
        out["precision"] = ctx.precision
    if "dataset" in out and out["dataset"] is None:
        out["dataset"] = generator.default_dataset or None
    out["recipe"] = key or f"{FALLBACK_FAMILY} (fallback: unknown family {generator.family!r})"
    _check(out, where)
    return out


def _check(values: Mapping[str, Any], where: str) -> None:
    positive = ("lr", "steps", "batch_size", "micro_batch", "ckpt_every", "decode_chunk", "group_size",
                "temperature")
    for name in positive:
        if name in values and not values[name] > 0:
            raise UsageError(f"{where}: {name} must be positive, got {values[name]!r}.")
    if "group_size" in values and values["group_size"] < 2:
        raise UsageError(f"{where}: group_size must be at least 2 (advantages are normalised within a group).")
    if "xi" in values and not 0.0 <= values["xi"] <= 1.0:
        raise UsageError(f"{where}: xi (context noise probability) must be in [0, 1], got {values['xi']}.")
    if "top_p" in values and not 0.0 < values["top_p"] <= 1.0:
        raise UsageError(f"{where}: top_p must be in (0, 1], got {values['top_p']}.")
