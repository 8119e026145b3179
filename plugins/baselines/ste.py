"""`ste` (paper App. C.1; official `train_c2i_ste.py`): make teacher-forced logits differentiable
to the pixels with a straight-through hard Gumbel-softmax, y = onehot(argmax) - sg(y_soft) + y_soft,
codes = y @ codebook, image = decoder(codes); loss w_mse·MSE + w_p·perceptual + β·CE.

Unlike the released code (which multiplies by the raw embedding table), the codes use
`generator.codebook`, the rows exactly as `decode` uses them (l2-normalised for LlamaGen's VQ), so
the forward image equals decode(argmax tokens). Gumbel noise is drawn per image from (seed, step,
position) so the result does not depend on the number of ranks."""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F

from vapi_bench.interfaces import Generator, Method, StageContext, has_capability, require_capability
from vapi_bench.params import Param
from vapi_bench.seeding import derive_seed, torch_generator
from vapi_bench.training import (PIXEL_PARAMS, TRAINING_PARAMS, Batch, MetricMeter, PixelObjective, autocast,
                                 build_pixel_objective, finetune_module, teacher_forced_ce)

STE_PARAMS: tuple[Param, ...] = TRAINING_PARAMS + PIXEL_PARAMS + (
    Param("beta", float, None, "β: weight of the teacher-forced cross-entropy term; None = the recipe's (0.1, "
          "VA-π's)", from_recipe=True, minimum=0.0),
    Param("temperature", float, 1.0, "logits are divided by this before the Gumbel-softmax", exclusive_minimum=0.0),
    Param("ste_tau", float, 1.0, "Gumbel-softmax temperature τ of the soft (backward) path", exclusive_minimum=0.0),
)


def hard_gumbel_softmax(logits: torch.Tensor, tau: float, gumbel: torch.Tensor) -> torch.Tensor:
    """F.gumbel_softmax(logits, tau, hard=True) with explicit Gumbel noise (same formula)."""
    soft = F.softmax((logits + gumbel) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


class StraightThrough(Method):
    def __init__(self, **params: Any) -> None:
        self.params = params

    def finetune(self, generator: Generator, dataset: Any, ctx: StageContext) -> dict[str, Any]:
        for capability in ("codebook", "decode_embeddings"):
            require_capability(generator, capability, "method 'ste'")
        if has_capability(generator, "tokenizer_decoder"):  # only the policy trains
            generator.tokenizer_decoder.requires_grad_(False)

        def make_step(cfg: dict[str, Any]) -> SteStep:
            return SteStep(generator, cfg, build_pixel_objective(cfg, ctx.device), ctx.seed)

        return finetune_module("ste", self.params, generator, dataset, ctx, module_name="policy",
                               module=generator.policy, make_step=make_step)


class SteStep:
    def __init__(self, generator: Generator, cfg: dict[str, Any], objective: PixelObjective, seed: int) -> None:
        self.gen, self.cfg, self.objective, self.seed = generator, cfg, objective, seed

    def gumbel_noise(self, like: torch.Tensor, positions: list[int], step: int) -> torch.Tensor:
        rows = []
        for pos in positions:
            rng = torch_generator(derive_seed(self.seed, pos, f"ste-step{step}"), like.device)
            exponential = torch.empty(like.shape[1:], device=like.device).exponential_(generator=rng)
            rows.append(-exponential.log())  # Gumbel(0, 1), drawn as F.gumbel_softmax does
        return torch.stack(rows)

    def __call__(self, batch: Batch, meter: MetricMeter) -> Iterator[torch.Tensor]:
        cfg, gen = self.cfg, self.gen
        gt = gen.encode(batch.images).long()
        codebook = gen.codebook.detach()
        gen.policy.train()
        size, m = len(batch), cfg["micro_batch"]
        for start in range(0, size, m):
            rows = slice(start, min(start + m, size))
            with autocast(gt.device, cfg["precision"]):
                logits = gen.teacher_forced_logits(gt[rows], gen.prepare_conditions(batch.conditions[rows]))
            scaled = logits.float() / cfg["temperature"]
            onehot = hard_gumbel_softmax(scaled, cfg["ste_tau"], self.gumbel_noise(scaled, batch.positions[rows], batch.step))
            with autocast(gt.device, cfg["precision"]):
                decoded = gen.decode_embeddings(onehot @ codebook)
            distance, parts = self.objective(decoded, batch.images[rows])
            ce = teacher_forced_ce(logits, gt[rows])
            loss = distance.mean() + cfg["beta"] * ce
            meter.add("pixel_loss", distance.mean())
            meter.add("ce", ce)
            for name, value in parts.items():
                meter.add(name, value.mean())
            yield loss * ((rows.stop - rows.start) / size)
