"""`sft`: plain next-token NLL fine-tuning (teacher forcing on clean ground-truth tokens), with
the same data, images per step, steps and optimiser as VA-π: the control for "is it just more
likelihood training on this data?"."""
from __future__ import annotations

from typing import Any, Iterator

import torch

from vapi_bench.interfaces import Generator, Method, StageContext
from vapi_bench.training import TRAINING_PARAMS, Batch, MetricMeter, autocast, finetune_module, teacher_forced_ce

SFT_PARAMS = TRAINING_PARAMS


class SupervisedFineTune(Method):
    def __init__(self, **params: Any) -> None:
        self.params = params

    def finetune(self, generator: Generator, dataset: Any, ctx: StageContext) -> dict[str, Any]:
        return finetune_module("sft", self.params, generator, dataset, ctx, module_name="policy",
                               module=generator.policy, make_step=lambda cfg: NllStep(generator, cfg))


class NllStep:
    def __init__(self, generator: Generator, cfg: dict[str, Any]) -> None:
        self.gen, self.cfg = generator, cfg

    def __call__(self, batch: Batch, meter: MetricMeter) -> Iterator[torch.Tensor]:
        gt = self.gen.encode(batch.images).long()
        self.gen.policy.train()
        size, m = len(batch), self.cfg["micro_batch"]
        for start in range(0, size, m):
            rows = slice(start, min(start + m, size))
            with autocast(gt.device, self.cfg["precision"]):
                logits = self.gen.teacher_forced_logits(gt[rows], self.gen.prepare_conditions(batch.conditions[rows]))
            ce = teacher_forced_ce(logits, gt[rows])
            meter.add("ce", ce)
            yield ce * ((rows.stop - rows.start) / size)
