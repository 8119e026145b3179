"""Per-family training recipes and the parameters VA-π shares with the baselines.

A parameter whose value is None means "the recipe of the generator's family": the paper's Table 7
and the shipped launch scripts for the real models (reference/vapi.md §2), and a CPU-sized recipe
for the embedded shapes world. The baselines use the same table so that they get the same data
and the same budget (images per step × steps) as VA-π.

The table is declared to the core as `vapi_bench.Family` entries (hook `register_families`,
see `families()`), exactly as a third-party plugin declares its own model's family; a method
that needs more keys adds them to these dicts.
"""
from __future__ import annotations

from typing import Any, Mapping

from vapi_bench.errors import UsageError
from vapi_bench.families import apply_family_defaults
from vapi_bench.interfaces import Family, Generator, StageContext
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
FAMILY_RECIPES["shapes-c2i-small-ls"] = dict(FAMILY_RECIPES["shapes-c2i-small"])  # same pre-training schedule
FAMILY_RECIPES["shapes-t2i-ls"] = dict(FAMILY_RECIPES["shapes-t2i"])  # the t2i GPT's schedule, smoothed targets


def families() -> list[Family]:
    """The table above as registry entries (registered by the `va_pi` plugin)."""
    return [Family(name, dict(recipe), summary="method defaults (vapi_bench.plugins.va_pi.recipes)")
            for name, recipe in FAMILY_RECIPES.items()]


def _family_note(key: str) -> str:
    values = ", ".join(f"{fam} {rec[key]!r}" for fam, rec in FAMILY_RECIPES.items())
    return f"None = family default ({values})"


def family_param(name: str, kind: type, help: str) -> Param:
    """A parameter whose default (None) comes from the generator family's recipe."""
    return Param(name, kind, None, f"{help}; {_family_note(name)}", from_family=True)


#: every key of the table (each one is a family_param of some method)
FAMILY_KEYS = frozenset(k for recipe in FAMILY_RECIPES.values() for k in recipe)

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


def resolve(
    values: Mapping[str, Any], generator: Generator, ctx: StageContext, where: str
) -> dict[str, Any]:
    """Fill every family-default None with the family's value (or the run's setting) and check the
    result makes sense.

    The returned dict is what the run records: every value concrete, plus `recipe` (the family
    whose defaults were used, or "set explicitly"). A family nobody declared, with a needed key
    left unset, raises UsageError (vapi_bench.families).
    """
    needed = [k for k in values if k in FAMILY_KEYS]
    out, family = apply_family_defaults(values, needed, generator, where)
    return _finish(out, family, generator, ctx, where)


def _finish(out: dict[str, Any], recipe: str | None, generator: Generator, ctx: StageContext,
            where: str) -> dict[str, Any]:
    """Fill the run-level settings (precision, dataset), record which recipe was used, check ranges."""
    if "precision" in out and out["precision"] is None:
        out["precision"] = ctx.precision
    if "dataset" in out and out["dataset"] is None:
        out["dataset"] = generator.default_dataset or None
    out["recipe"] = recipe or "set explicitly"
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


# ---- the peer methods' own recipes (`ar-grpo`, `cca`; plugins/peers) ------------------------------
# Their values differ from VA-π's for the same family (AR-GRPO trains at lr 1e-5, VA-π at 1e-6), so
# they are per-method tables rather than keys of the shared family defaults above; a parameter
# declared with `method_family_param` takes its None from the method's table by the generator's
# family, and a family the table lacks is a clear error naming the keys to --set.

# AR-GRPO (reference/peers.md §1.2: run_c2i_train.sh / run_t2i_train.sh). batch_size counts prompts
# per optimiser step (each gets G rollouts); micro_batch counts prompts per forward. The official
# rewards (CLIP B/32 and HPS v2.1 cosines x5 and their quantised copies, MANIQA, three Qwen-VL
# judges) are approximated by the preference scorers available here.
_AR_GRPO_C2I = {
    "lr": 1e-5, "weight_decay": 0.0, "group_size": 8, "rollout_cfg": 2.0, "beta": 0.1,
    # 4 classes x 8 completions per step on 4 GPUs (8 completions = 1 prompt per device)
    "batch_size": 4, "micro_batch": 1, "steps": 400, "ckpt_every": 100, "decode_chunk": 8,
    "rewards": "clip-score[arch=ViT-B-32]:5,hpsv2.1:5",  # ARG's CLIP is B/32 (peers.md §1.4)
}
AR_GRPO_RECIPES: dict[str, dict[str, Any]] = {
    "llamagen-c2i": dict(_AR_GRPO_C2I),
    # 8 captions x 8 completions per step (16 completions = 2 prompts per device), β 1, 600 steps
    "llamagen-t2i": {**_AR_GRPO_C2I, "rollout_cfg": 4.0, "beta": 1.0, "batch_size": 8, "micro_batch": 2,
                     "steps": 600},
    # AR-GRPO has no Janus recipe: the T2I one, rollouts at Janus's own inference CFG 5 (unverified)
    "janus-pro": {**_AR_GRPO_C2I, "rollout_cfg": 5.0, "beta": 1.0, "batch_size": 8, "micro_batch": 2,
                  "steps": 600},
    # shapes: the other shapes methods' budget (60 steps x 16 prompts, G = 8) and learning rate
    # (post_training_lr, the rule every shapes method follows; see CCA below for why not the official
    # 10x ratio to pre-training); verifiable rewards
    "shapes-c2i": {**_AR_GRPO_C2I, "lr": _shapes_lr("c2i_optim"), "batch_size": 16, "micro_batch": 4, "steps": 60,
                   "ckpt_every": 20, "decode_chunk": 64, "rewards": "shapes-class-prob:1"},
    "shapes-t2i": {**_AR_GRPO_C2I, "lr": _shapes_lr("t2i_optim"), "rollout_cfg": 4.0, "beta": 1.0, "batch_size": 16,
                   "micro_batch": 4, "steps": 60, "ckpt_every": 20, "decode_chunk": 64,
                   "rewards": "shapes-geneval:1"},
}

# CCA (reference/peers.md §2.2: LlamaGen_finetune.py, README). 256 pairs per step as micro-batches
# of 2 (8 GPUs x grad-accum 16): the rolled negative is the other pair of the micro-batch. λ per
# LlamaGen size is in CCA_LAMBDA; text models are an extrapolation (mismatched captions, the
# model's own null prompt; unverified).
_CCA_C2I = {"lr": 1e-5, "weight_decay": 0.05, "batch_size": 256, "micro_batch": 2, "steps": 5000, "ckpt_every": 1000}
CCA_RECIPES: dict[str, dict[str, Any]] = {
    "llamagen-c2i": dict(_CCA_C2I),
    "llamagen-t2i": dict(_CCA_C2I),
    "janus-pro": dict(_CCA_C2I),
    # shapes: 60 steps x 16 pairs and post_training_lr, as every other shapes method. The official
    # ratio to pre-training (1e-5 / 1e-4) would give 6e-4 for the zoo's 6e-3: there CCA collapsed in
    # a seed-0 smoke (Δ⁺ ≈ -250 nats per image, no-CFG class accuracy 0.89 -> 0.20)
    "shapes-c2i": {**_CCA_C2I, "lr": _shapes_lr("c2i_optim"), "batch_size": 16, "steps": 60, "ckpt_every": 20},
    "shapes-t2i": {**_CCA_C2I, "lr": _shapes_lr("t2i_optim"), "batch_size": 16, "steps": 60, "ckpt_every": 20},
}
# the under-capacity c2i base gets the same peer recipes, with its own pre-training's lr
for _table in (AR_GRPO_RECIPES, CCA_RECIPES):
    _table["shapes-c2i-small"] = {**_table["shapes-c2i"], "lr": _shapes_lr("c2i_small_optim")}
    _table["shapes-c2i-small-ls"] = dict(_table["shapes-c2i-small"])
    _table["shapes-t2i-ls"] = dict(_table["shapes-t2i"])
#: CCA's λ per LlamaGen size (README: B / L / XL / XXL / 3B)
CCA_LAMBDA: dict[str, float] = {"llamagen-b": 1000.0, "llamagen-l": 300.0, "llamagen-xl": 1000.0,
                                "llamagen-xxl": 1000.0, "llamagen-3b": 500.0}


def method_family_param(name: str, kind: type, help: str, table: Mapping[str, Mapping[str, Any]]) -> Param:
    """A parameter whose default (None) comes from a method's own table by the generator's family."""
    values = ", ".join(f"{fam} {rec[name]!r}" for fam, rec in table.items())
    return Param(name, kind, None, f"{help}; None = the method's recipe for the family ({values})")


def training_params(table: Mapping[str, Mapping[str, Any]], betas: tuple[float, float] = (0.9, 0.999)) -> tuple[Param, ...]:
    """TRAINING_PARAMS with their defaults taken from a method's own table (see above)."""
    return tuple(
        method_family_param(p.name, p.type, p.help.split("; None = family default")[0], table) if p.from_family
        else (Param("betas", tuple, betas, p.help) if p.name == "betas" else p)
        for p in TRAINING_PARAMS
    )


def resolve_with_table(
    values: Mapping[str, Any], generator: Generator, ctx: StageContext, where: str,
    table: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """`resolve` for a method with its own table: every None of a key the table holds is filled
    from the generator's family (or family + '-c2i'/'-t2i'); a family the table lacks raises
    UsageError naming the keys to set."""
    family = getattr(generator, "family", "") or ""
    key = table_key(generator, table)
    keys = {k for recipe in table.values() for k in recipe}
    out = dict(values)
    missing = [k for k, v in values.items() if v is None and k in keys and (key is None or k not in table[key])]
    if missing:
        sets = " ".join(f"--set method.{k}=..." for k in missing)
        raise UsageError(f"{where}: no recipe for model '{generator.name}' of family '{family or '(none)'}'; set "
                         f"{sets} (recipes exist for {', '.join(table)}).")
    for name, value in values.items():
        if value is None and key is not None and name in table[key]:
            out[name] = table[key][name]
    return _finish(out, key, generator, ctx, where)


def table_key(generator: Generator, table: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The key of `table` for the generator's family (or family + '-c2i' / '-t2i'), None if absent."""
    family = getattr(generator, "family", "") or ""
    suffixed = f"{family}-{'c2i' if generator.conditioning == 'class' else 't2i'}"
    return next((k for k in (family, suffixed) if k in table), None)


def method_recipe_lr(method: Any, generator: Generator) -> float:
    """The learning rate a method's recipe gives this generator: its own table (`method.recipes`,
    ar-grpo / cca) or the family defaults every other method reads. Raises UsageError when neither
    has one (then `lab tune --lr-center` says where the grid goes)."""
    from vapi_bench.families import find_family

    table = getattr(method, "recipes", None)
    if table is not None:
        key = table_key(generator, table)
        recipe = table[key] if key is not None else {}
    else:
        family = find_family(generator)
        recipe = family.defaults if family is not None else {}
    if "lr" not in recipe:
        raise UsageError(f"no recipe lr for model '{generator.name}' (family '{getattr(generator, 'family', '')}') "
                         f"in method '{getattr(method, 'name', type(method).__name__)}'; give --lr-center.")
    return float(recipe["lr"])
