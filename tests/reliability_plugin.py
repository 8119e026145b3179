"""A test-only plugin for the reliability tests: the fixture palette world on the shared training engine.

`rel-palette` is the fixture's palette generator with a two-layer policy (so exploded weights give
NaN logits, as a deep network's do), token sampling through torch.multinomial (which refuses NaN
probabilities, as the real samplers' does) and `--checkpoint` loading. `rel-engine` fine-tunes it
with `vapi_bench.training.train` (checkpoints, resume, divergence checks). Setting the environment
variable REL_INTERRUPT_AT_STEP=k makes step k raise KeyboardInterrupt once (a Ctrl-C);
REL_OVERFLOW_AT_STEP=k makes the optimiser's k-th update overflow to inf (as an update past the
float range does).
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterator

import torch
from safetensors.torch import load_file
from torch import nn
from vapi_bench_fixture_plugin import GRID, PALETTE, PaletteGenerator

from vapi_bench import Entry, Param, SamplingRecipe, hookimpl
from vapi_bench.seeding import torch_generator
from vapi_bench.training import Batch, MetricMeter, TrainConfig, build_adamw, train

INTERRUPT_ENV = "REL_INTERRUPT_AT_STEP"
OVERFLOW_ENV = "REL_OVERFLOW_AT_STEP"


class TwoLayerPolicy(nn.Module):
    def __init__(self, num_classes: int, vocab: int, tokens: int, hidden: int = 8) -> None:
        super().__init__()
        self.cls = nn.Embedding(num_classes, hidden)
        self.out = nn.Linear(hidden, tokens * vocab)
        self.vocab, self.tokens = vocab, tokens

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.out(self.cls(labels)).view(-1, self.tokens, self.vocab)


class RelPalette(PaletteGenerator):
    def __init__(self, checkpoint: str | None, device: torch.device) -> None:
        super().__init__(num_classes=8, pixels_per_token=2, device=device)
        self.name = "rel-palette"
        self._policy = TwoLayerPolicy(8, len(PALETTE), GRID * GRID).to(device)
        if checkpoint:
            self._policy.load_state_dict(load_file(checkpoint))

    def sample(self, conds, *, seeds, recipe=SamplingRecipe()):
        probs = torch.softmax(self._policy(self.prepare_conditions(conds)).float() / recipe.temperature, dim=-1)
        rows = [torch.multinomial(p, 1, generator=torch_generator(s)).squeeze(-1) for p, s in zip(probs, seeds)]
        return torch.stack(rows)


class EngineMethod:
    """Cross-entropy fine-tuning on the shared engine, drawing tokens from the logits as VA-π does."""

    is_identity = False

    def __init__(self, **cfg: Any) -> None:
        self.cfg = cfg

    def finetune(self, generator, dataset, ctx):
        policy = generator.policy
        optimizer = build_adamw(policy.named_parameters(), lr=self.cfg["lr"], weight_decay=0.0)
        interrupt_at = int(os.environ.get(INTERRUPT_ENV, "-1"))
        overflow_at = int(os.environ.get(OVERFLOW_ENV, "-1"))
        real_step, updates = optimizer.step, [0]

        def step(*args, **kw):
            out = real_step(*args, **kw)
            if updates[0] == overflow_at:
                with torch.no_grad():
                    policy.out.weight[0, 0] = math.inf
            updates[0] += 1
            return out

        optimizer.step = step

        def step_fn(batch: Batch, meter: MetricMeter) -> Iterator[torch.Tensor]:
            if batch.step == interrupt_at:
                os.environ.pop(INTERRUPT_ENV, None)
                raise KeyboardInterrupt
            tokens = generator.encode(batch.images)
            logits = generator.teacher_forced_logits(tokens, generator.prepare_conditions(batch.conditions))
            torch.multinomial(torch.softmax(logits.flatten(0, 1), -1), 1)  # NaN logits fail here, as in VA-π
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
            meter.add("ce", loss)
            yield loss

        config = TrainConfig(steps=self.cfg["steps"], batch_size=self.cfg["batch_size"], seed=ctx.seed,
                             ckpt_every=self.cfg["ckpt_every"], max_grad_norm=self.cfg["max_grad_norm"],
                             fingerprint={"lr": self.cfg["lr"]})
        return train(modules={"policy": policy}, optimizer=optimizer, dataset=dataset, step_fn=step_fn,
                     config=config, ctx=ctx)


@hookimpl
def register_generators(register):
    register(Entry("rel-palette", factory=lambda checkpoint, device: RelPalette(checkpoint, device),
                   summary="reliability tests: palette world, two-layer policy", params=()))


@hookimpl
def register_methods(register):
    register(Entry("rel-engine", factory=lambda **cfg: EngineMethod(**cfg),
                   summary="reliability tests: CE on the training engine",
                   params=(Param("steps", int, 4, "optimizer steps"), Param("lr", float, 0.05, "learning rate"),
                           Param("ckpt_every", int, 2, "checkpoint period"),
                           Param("max_grad_norm", float, 1.0, "clip (0 = off)"),
                           Param("batch_size", int, 8, "images per step"))))
