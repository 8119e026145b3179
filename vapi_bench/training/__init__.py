"""The post-training kit every method uses (as trl's trainers share `trainer/utils.py`).

- `engine`: the training loop (data order, accumulation, clipping, checkpoint/resume, DDP, NaN stop);
- `finetune`: `finetune_module`, the plumbing from resolved parameters to the engine's summary,
  and `TRAINING_PARAMS`, the parameters it reads;
- `recipes`: the (family, method) recipe lookup the runner resolves before any stage;
- `frozen_reference`: a frozen copy of the initial policy (KL and likelihood-ratio references);
- `losses`: group sampling, group advantages, PPO-clip, k3 KL, cross-entropy;
- `pixel_objective`: MSE + perceptual distance of decoded tokens to the original image.

A method plugin imports from here (never from another method's plugin): docs/plugins.md shows a
third-party method trained through `finetune_module`.
"""
from __future__ import annotations

from .engine import (CHECKPOINT_NAME, Batch, MetricMeter, StepFn, TrainConfig, adamw_param_groups, autocast,
                     build_adamw, load_batch, step_indices, train, training_dataset)
from .finetune import TRAINING_PARAMS, finetune_module, uses_fsdp, with_betas
from .frozen_reference import FrozenReference, check_null_conditions_shardable, swapped_parameters
from .losses import draw_group, filter_logits, group_advantages, k3_kl, ppo_clip_loss, teacher_forced_ce
from .pixel_objective import PIXEL_PARAMS, PixelObjective, build_pixel_objective, decoded_distances
from .recipes import ANY_FAMILY, ENGINE_DEFAULTS, post_training_lr, resolve_method_params, resolve_run_recipes

__all__ = [
    "ANY_FAMILY", "Batch", "CHECKPOINT_NAME", "ENGINE_DEFAULTS", "FrozenReference", "MetricMeter", "PIXEL_PARAMS",
    "PixelObjective", "StepFn", "TRAINING_PARAMS", "TrainConfig", "adamw_param_groups", "autocast", "build_adamw",
    "build_pixel_objective", "check_null_conditions_shardable", "decoded_distances", "draw_group", "filter_logits",
    "finetune_module", "group_advantages", "k3_kl", "load_batch", "post_training_lr", "ppo_clip_loss",
    "resolve_method_params", "resolve_run_recipes", "step_indices", "swapped_parameters", "teacher_forced_ce",
    "train", "training_dataset", "uses_fsdp", "with_betas",
]
