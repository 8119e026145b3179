"""Plumbing every fine-tuning method shares: resolved recipe → dataset → AdamW → engine → summary.

Methods differ only in which module they train and in their step function, so VA-π, the
baselines, the peers and a third-party method (docs/plugins.md) get identical data order,
optimiser, checkpointing, resume, DDP/FSDP and logging from here. `TRAINING_PARAMS` are the
parameters this plumbing reads; a method declares them (plus its own) and receives them resolved
by the runner (vapi_bench.training.recipes).
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping

from torch import nn

from .. import distributed
from ..errors import UsageError
from ..interfaces import Generator, StageContext
from ..params import Param
from .engine import StepFn, TrainConfig, build_adamw, train, training_dataset
from .recipes import recipe_keys, resolve_outside_a_run

RESUMABLE_CHANGES = ("steps", "ckpt_every")  # may differ between a checkpoint and its resumption


TRAINING_PARAMS: tuple[Param, ...] = (
    Param("lr", float, None, "AdamW learning rate (constant, no warm-up)", from_recipe=True, exclusive_minimum=0.0),
    Param("weight_decay", float, None, "AdamW weight decay (never applied to parameters named *norm*)",
          from_recipe=True, minimum=0.0),
    Param("betas", tuple, (0.9, 0.999), "AdamW betas", minimum=0.0, exclusive_maximum=1.0, length=2),
    Param("max_grad_norm", float, 1.0, "clip the global gradient norm to this (0 = no clipping)", minimum=0.0),
    Param("steps", int, None, "optimiser steps", from_recipe=True, minimum=1),
    Param("batch_size", int, None, "images per optimiser step, over all ranks", from_recipe=True, minimum=1),
    Param("micro_batch", int, None, "images per forward/backward pass; accumulation = batch_size / (ranks x "
          "micro_batch) (engine default 1)", from_recipe=True, minimum=1),
    Param("precision", str, None, "fp32 or bf16 autocast; None = the run's --precision", choices=(None, "fp32", "bf16")),
    Param("ckpt_every", int, None, "save a resumable checkpoint every N steps (engine default 25)", from_recipe=True,
          minimum=1),
    Param("dataset", str, None, "training data (registered dataset name); None = the generator's default dataset"),
    Param("sharding", str, "ddp", "with several ranks: 'ddp' replicates the trained module and averages gradients; "
          "'fsdp' shards its parameters, gradients and optimiser state over the ranks (FSDP2), for models that "
          "do not fit one device", choices=("ddp", "fsdp")),
)


def with_betas(params: tuple[Param, ...], betas: tuple[float, float]) -> tuple[Param, ...]:
    """TRAINING_PARAMS with another default for AdamW's betas (CCA's official (0.9, 0.95))."""
    return tuple(replace(p, default=betas) if p.name == "betas" else p for p in params)


def finetune_module(
    method: str,
    cfg: Mapping[str, Any],
    generator: Generator,
    dataset: Any,
    ctx: StageContext,
    *,
    module_name: str,
    module: nn.Module,
    make_step: Callable[[dict[str, Any]], StepFn],
) -> dict[str, Any]:
    """Train `module` (all its parameters) with the step function `make_step(cfg)`.

    `cfg` holds the method's parameters as the runner resolved them before any stage (every recipe
    key filled: vapi_bench.training.recipes); a method built outside a run gets the same lookup
    here. Returns the engine's summary plus the parameters and the recipe they came from (what the
    run records).
    """
    source = ctx.recipe
    if any(cfg.get(k) is None for k in recipe_keys(TRAINING_PARAMS)):
        # a method built outside a run (vapi_bench.load_method, a notebook): the runner's own lookup
        cfg, source = resolve_outside_a_run(method, cfg, generator, ctx.precision)
    cfg = {**cfg, "recipe": source or "set explicitly"}
    data = training_dataset(dataset, cfg["dataset"], generator.image_size)
    module.requires_grad_(True)
    step_fn = make_step(cfg)
    sharded = uses_fsdp(cfg)
    with _trained_copy(generator, module, method) if sharded else contextlib.nullcontext(module) as trained:
        optimizer = build_adamw(trained.named_parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                betas=cfg["betas"])
        summary = train(
            modules={module_name: trained}, optimizer=optimizer, dataset=data, step_fn=step_fn, ctx=ctx,
            config=TrainConfig(
                steps=cfg["steps"], batch_size=cfg["batch_size"], seed=ctx.seed, ckpt_every=cfg["ckpt_every"],
                max_grad_norm=cfg["max_grad_norm"],
                fingerprint={"method": method, **{k: v for k, v in cfg.items() if k not in RESUMABLE_CHANGES}},
            ),
            progress_label=method,
        )
    module.eval()
    return {**summary, "params": cfg}


def uses_fsdp(cfg: Mapping[str, Any]) -> bool:
    """Whether `finetune_module` trains a sharded copy (sharding=fsdp on more than one rank)."""
    return cfg["sharding"] == "fsdp" and distributed.current().is_distributed


def module_slot(generator: Generator, module: nn.Module, method: str) -> str:
    """The name of the generator attribute holding `module` (where FSDP puts a sharded copy)."""
    slots = [name for name, value in vars(generator).items() if value is module]
    if len(slots) != 1:
        raise UsageError(f"method '{method}' cannot shard this generator's module with FSDP: "
                         f"{type(generator).__name__} does not hold it in one attribute; use sharding=ddp.")
    return slots[0]


@contextlib.contextmanager
def _trained_copy(generator: Generator, module: nn.Module, method: str) -> Iterator[nn.Module]:
    """FSDP: train a sharded copy of `module` in its place inside the generator (so the method's
    forwards, made through the generator contract, run the sharded copy), then load the trained
    weights back into `module`, whose parameters stay plain tensors for sampling and saving. The
    original waits on the CPU, so the device holds one shard of the weights, gradients and
    optimiser state per rank."""
    slot = module_slot(generator, module, method)
    device = next(module.parameters()).device
    module.to("cpu")  # the device holds only the shards while training
    try:
        sharded = distributed.fully_shard_copy(module, device)
        setattr(generator, slot, sharded)
        yield sharded
        module.load_state_dict(distributed.full_state_dict(sharded))
    finally:
        setattr(generator, slot, module)
        module.to(device)
