"""Plumbing every fine-tuning method shares: recipe → dataset → AdamW → engine → summary.

VA-π and the baselines differ only in which module they train and in their step function, so
they get identical data order, optimiser, checkpointing and logging from here.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import nn

from vapi_bench.interfaces import Generator, StageContext
from vapi_bench.training import StepFn, TrainConfig, build_adamw, train, training_dataset

from .recipes import resolve

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
) -> dict[str, Any]:
    """Train `module` (all its parameters) with the step function `make_step(resolved_params)`.

    Returns the engine's summary plus the resolved parameters (what the run records).
    """
    cfg = resolve(params, generator, ctx, where=f"method '{method}'")
    data = training_dataset(dataset, cfg["dataset"], generator.image_size)
    module.requires_grad_(True)
    optimizer = build_adamw(module.named_parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                            betas=cfg["betas"])
    step_fn = make_step(cfg)
    summary = train(
        modules={module_name: module}, optimizer=optimizer, dataset=data, step_fn=step_fn, ctx=ctx,
        config=TrainConfig(
            steps=cfg["steps"], batch_size=cfg["batch_size"], seed=ctx.seed, ckpt_every=cfg["ckpt_every"],
            max_grad_norm=cfg["max_grad_norm"],
            fingerprint={"method": method, **{k: v for k, v in cfg.items() if k not in RESUMABLE_CHANGES}},
        ),
        progress_label=method,
    )
    module.eval()
    return {**summary, "params": cfg}
