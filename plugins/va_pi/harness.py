"""Plumbing every fine-tuning method shares: recipe → dataset → AdamW → engine → summary.

VA-π and the baselines differ only in which module they train and in their step function, so
they get identical data order, optimiser, checkpointing and logging from here.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

from torch import nn

from vapi_bench import distributed
from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Generator, StageContext
from vapi_bench.training import StepFn, TrainConfig, build_adamw, train, training_dataset

from .recipes import resolve, resolve_with_table

RESUMABLE_CHANGES = ("steps", "ckpt_every")  # may differ between a checkpoint and its resumption


def finetune_module(
    method: str,
    params: Mapping[str, Any],
    generator: Generator,
    dataset: Any,
    ctx: StageContext,
    *,
    module_name: str,
    module: nn.Module,
    make_step: Callable[[dict[str, Any]], StepFn],
    recipes: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train `module` (all its parameters) with the step function `make_step(resolved_params)`,
    None parameters filled from the generator's family defaults, or from the method's own table
    `recipes` when given (the peer methods').

    Returns the engine's summary plus the resolved parameters (what the run records).
    """
    where = f"method '{method}'"
    cfg = resolve(params, generator, ctx, where) if recipes is None else \
        resolve_with_table(params, generator, ctx, where, recipes)
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
