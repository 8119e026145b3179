"""A complete third-party plugin: a tiny palette generator and a colour-matching task.

It lives outside vapi-bench, registers through the `vapi_bench` entry-point group exactly as any
user package would, and implements the whole generator contract with a real (tiny) model:
a 4x4 grid of tokens, each one of 8 palette colours; the policy is a class embedding plus a
position embedding producing per-token logits; and a method, `fixture-sft`, that trains through
the suite's post-training kit (vapi_bench.training: data order, AdamW, checkpoint/resume, DDP)
with its own recipe. docs/plugins.md walks through it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vapi_bench import Entry, Generator, Method, Param, Recipe, SampleItem, SamplingRecipe, Task, TaskResult, hookimpl
from vapi_bench.errors import CheckpointError
from vapi_bench.imageio import load_png
from vapi_bench.seeding import torch_generator
from vapi_bench.training import ANY_FAMILY, TRAINING_PARAMS, Batch, MetricMeter, finetune_module, teacher_forced_ce

PALETTE = torch.tensor(
    [[-1, -1, -1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]],
    dtype=torch.float32,
)
GRID = 4


class PalettePolicy(nn.Module):
    """Per-position logits from a class embedding (no autoregressive dependence: a toy)."""

    def __init__(self, num_classes: int, vocab: int, tokens: int) -> None:
        super().__init__()
        self.cls = nn.Embedding(num_classes, tokens * vocab)
        nn.init.normal_(self.cls.weight, std=0.5)
        self.vocab, self.tokens = vocab, tokens

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.cls(labels).view(-1, self.tokens, self.vocab)


class PaletteGenerator(Generator):
    conditioning = "class"
    family = "fixture"
    default_dataset = "fixture-palette-data"

    def __init__(self, num_classes: int, pixels_per_token: int, device: torch.device) -> None:
        self.name = "fixture-palette"
        self.num_classes = num_classes
        self.num_tokens = GRID * GRID
        self.codebook_size = len(PALETTE)
        self.image_size = GRID * pixels_per_token
        self.scale = pixels_per_token
        self.device = device
        self._policy = PalettePolicy(num_classes, self.codebook_size, self.num_tokens).to(device)
        self._decoder = nn.Identity()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        small = nn.functional.avg_pool2d(images, self.scale)  # [B,3,4,4]
        flat = small.flatten(2).transpose(1, 2)  # [B,16,3]
        return torch.cdist(flat, PALETTE.to(images.device)).argmin(-1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode_embeddings(PALETTE.to(tokens.device)[tokens])

    def decode_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        b = codes.shape[0]
        grid = codes.transpose(1, 2).reshape(b, 3, GRID, GRID)
        return nn.functional.interpolate(grid, scale_factor=self.scale, mode="nearest")

    @property
    def codebook(self) -> torch.Tensor:
        return PALETTE

    def prepare_conditions(self, conds: Sequence[Any]) -> torch.Tensor:
        return torch.as_tensor([int(c) for c in conds], device=self.device)

    @property
    def policy(self) -> nn.Module:
        return self._policy

    @property
    def tokenizer_decoder(self) -> nn.Module:
        return self._decoder

    def teacher_forced_logits(self, tokens, cond, context=None):
        return self._policy(cond)

    def sample(self, conds, *, seeds, recipe=SamplingRecipe()):
        labels = self.prepare_conditions(conds)
        probs = torch.softmax(self._policy(labels).float() / max(recipe.temperature, 1e-5), dim=-1)
        uniforms = torch.stack([torch.rand(self.num_tokens, generator=torch_generator(s)) for s in seeds])
        cdf = probs.cumsum(-1)
        return torch.searchsorted(cdf, uniforms.to(cdf.device).unsqueeze(-1)).squeeze(-1).clamp_max(self.codebook_size - 1)

    def save_finetuned(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "policy.safetensors"
        save_file(self._policy.state_dict(), str(path))
        return [path]

    def load_finetuned(self, directory: Path) -> None:
        path = directory / "policy.safetensors"
        if not path.exists():
            raise CheckpointError(f"missing {path}")
        self._policy.load_state_dict(load_file(str(path)))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_classes": self.num_classes}


class ColourMatchTask(Task):
    """Fraction of images whose dominant palette colour equals the class's colour (class c -> colour c % 8)."""

    conditioning = "class"

    def __init__(self, per_class: int) -> None:
        self.per_class = per_class

    def items(self, generator: Generator, limit: int | None = None) -> list[SampleItem]:
        items = [SampleItem(i, i % generator.num_classes) for i in range(self.per_class * generator.num_classes)]
        return items[:limit] if limit else items

    def score(self, sample_dir: Path, items, ctx) -> TaskResult:
        per_sample = []
        for it in items:
            img = load_png(self.image_path(sample_dir, it)).astype(np.float32) / 127.5 - 1.0
            dist = ((img.reshape(-1, 1, 3) - PALETTE.numpy()[None]) ** 2).sum(-1)
            dominant = np.bincount(dist.argmin(-1), minlength=len(PALETTE)).argmax()
            per_sample.append({"index": it.index, "correct": bool(dominant == int(it.condition) % len(PALETTE))})
        accuracy = float(np.mean([r["correct"] for r in per_sample]))
        return TaskResult({"accuracy": accuracy}, per_sample, evaluator="fixture-colour-match", evaluator_version="1")


@hookimpl
def register_generators(register):
    register(Entry(
        "fixture-palette",
        factory=lambda checkpoint, device, num_classes, pixels_per_token: PaletteGenerator(num_classes, pixels_per_token, device),
        summary="Third-party test plugin: 4x4 palette tokens",
        params=(Param("num_classes", int, 8, "number of classes"), Param("pixels_per_token", int, 2, "upscale factor")),
    ))


@hookimpl
def register_tasks(register):
    register(Entry(
        "fixture-colour",
        factory=lambda per_class: ColourMatchTask(per_class),
        summary="Third-party test plugin: dominant-colour accuracy",
        params=(Param("per_class", int, 2, "images per class"),),
    ))


class PaletteImages(torch.utils.data.Dataset):
    """Images whose every cell has the class colour (class c -> palette colour c % 8)."""

    def __init__(self, n: int, num_classes: int, image_size: int) -> None:
        self.n, self.num_classes, self.size = n, num_classes, image_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        label = i % self.num_classes
        colour = PALETTE[label % len(PALETTE)].view(3, 1, 1)
        return colour.expand(3, self.size, self.size).clone(), label


class NudgeMethod(Method):
    """Next-token cross-entropy fine-tuning (a minimal method plugin): the step function is the
    method; the kit does the rest, with the same data order and resume as every built-in method."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def finetune(self, generator, dataset, ctx):
        return finetune_module("fixture-sft", self.params, generator, dataset, ctx, module_name="policy",
                               module=generator.policy, make_step=lambda cfg: NudgeStep(generator))


class NudgeStep:
    """One optimiser step's losses, one per micro-batch the step function chooses to make (here the
    whole batch at once: a toy this small needs no accumulation)."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def __call__(self, batch: Batch, meter: MetricMeter):
        gen = self.generator
        tokens = gen.encode(batch.images)
        loss = teacher_forced_ce(gen.teacher_forced_logits(tokens, gen.prepare_conditions(batch.conditions)), tokens)
        meter.add("ce", loss)
        yield loss


@hookimpl
def register_methods(register):
    register(Entry("fixture-sft", factory=NudgeMethod, params=TRAINING_PARAMS,
                   summary="Third-party test plugin: token cross-entropy through vapi_bench.training",
                   variants={"decay": {"weight_decay": "0.01"}}))  # `lab tune --methods fixture-sft:decay`


@hookimpl
def register_recipes(register):
    # the method's own values on every family (a model's family may still set its own lr, steps...)
    register(Recipe("fixture-sft", ANY_FAMILY, {"lr": 0.1, "weight_decay": 0.0, "steps": 4, "batch_size": 8}))


@hookimpl
def register_datasets(register):
    register(Entry(
        "fixture-palette-data",
        factory=lambda n, num_classes, image_size: PaletteImages(n, num_classes, image_size),
        summary="Third-party test plugin: solid class-colour images",
        params=(Param("n", int, 64, "dataset size"), Param("num_classes", int, 8, "classes"),
                Param("image_size", int, 8, "pixels")),
    ))
