"""`post-train-tokenizer` (paper App. C.2, Eq. 38): freeze the generator and the quantiser,
draw teacher-forced samples x_i ~ π(· | x*_{<i}), decode them, and fine-tune only the tokenizer's
decoder to map them back to the real image with MSE + perceptual. The fine-tuned decoder is what
the sampler then uses (the generator saves it with its fine-tuned state)."""
from __future__ import annotations

from typing import Any, Iterator

import torch

from vapi_bench.interfaces import Generator, Method, StageContext, require_capability
from vapi_bench.params import Param
from vapi_bench.seeding import derive_seed, torch_generator
from vapi_bench.training import (PIXEL_PARAMS, TRAINING_PARAMS, Batch, MetricMeter, PixelObjective, autocast,
                                 build_pixel_objective, draw_group, finetune_module)

PT_PARAMS: tuple[Param, ...] = TRAINING_PARAMS + PIXEL_PARAMS + (
    Param("samples_per_image", int, 1, "teacher-forced samples decoded per image and step", minimum=1),
    Param("temperature", float, 1.0, "sampling temperature of the teacher-forced samples", exclusive_minimum=0.0),
    Param("top_k", int, 0, "top-k filter for the samples (0 = off)", minimum=0),
    Param("top_p", float, 1.0, "nucleus filter for the samples (1 = off)", exclusive_minimum=0.0, maximum=1.0),
)


class PostTrainTokenizer(Method):
    def __init__(self, **params: Any) -> None:
        self.params = params

    def finetune(self, generator: Generator, dataset: Any, ctx: StageContext) -> dict[str, Any]:
        for capability in ("tokenizer_decoder", "codebook", "decode_embeddings"):
            require_capability(generator, capability, "method 'post-train-tokenizer'")
        generator.policy.requires_grad_(False)

        def make_step(cfg: dict[str, Any]) -> DecoderStep:
            return DecoderStep(generator, cfg, build_pixel_objective(cfg, ctx.device), ctx.seed)

        return finetune_module("post-train-tokenizer", self.params, generator, dataset, ctx,
                               module_name="tokenizer_decoder", module=generator.tokenizer_decoder,
                               make_step=make_step)


class DecoderStep:
    def __init__(self, generator: Generator, cfg: dict[str, Any], objective: PixelObjective, seed: int) -> None:
        self.gen, self.cfg, self.objective, self.seed = generator, cfg, objective, seed

    @torch.no_grad()
    def teacher_forced_samples(self, batch: Batch) -> torch.Tensor:
        """[B, S, T] tokens drawn position-wise from the frozen generator's teacher-forced logits."""
        cfg, gen = self.cfg, self.gen
        gen.policy.eval()
        gt = gen.encode(batch.images).long()
        with autocast(gt.device, cfg["precision"]):
            logits = gen.teacher_forced_logits(gt, gen.prepare_conditions(batch.conditions))
        rows = []
        for pos, row_logits in zip(batch.positions, logits):
            rng = torch_generator(derive_seed(self.seed, pos, f"pt-step{batch.step}"), gt.device)
            tokens, _ = draw_group(row_logits, cfg["samples_per_image"], rng, cfg["temperature"], cfg["top_k"],
                                   cfg["top_p"])
            rows.append(tokens)
        return torch.stack(rows)

    def __call__(self, batch: Batch, meter: MetricMeter) -> Iterator[torch.Tensor]:
        samples = self.teacher_forced_samples(batch)
        codebook = self.gen.codebook.detach()
        decoder = self.gen.tokenizer_decoder
        decoder.train()
        per_image = self.cfg["samples_per_image"]
        size, m = len(batch), self.cfg["micro_batch"]
        for start in range(0, size, m):
            rows = slice(start, min(start + m, size))
            tokens = samples[rows].flatten(0, 1)  # [m·S, T]
            target = batch.images[rows].repeat_interleave(per_image, dim=0)
            with autocast(tokens.device, self.cfg["precision"]):
                decoded = self.gen.decode_embeddings(codebook[tokens])
            distance, parts = self.objective(decoded, target)
            loss = distance.mean()
            meter.add("pixel_loss", loss)
            for name, value in parts.items():
                meter.add(name, value.mean())
            yield loss * ((rows.stop - rows.start) / size)
