"""The shared sampling engine: index-seeded, sharded over ranks, resumable.

Sample i is drawn with seed derive_seed(global_seed, i), so the images are the same on 1 or 64
ranks, in any batch size or order, and a resumed run (which skips images already on disk) gives
the same images as an uninterrupted one. "On disk" means readable: a truncated or corrupt PNG
(a full disk, a copy cut short) counts as missing and is drawn again.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from PIL import Image

from .errors import NON_FINITE_PROBABILITIES, CheckpointError
from .imageio import image_grid, load_png, save_png, to_uint8
from .interfaces import Generator, SampleItem, SamplingRecipe, Task, check_sampled_tokens, iter_batches
from .seeding import derive_seed


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) from torch.distributed if initialised, else torchrun's env, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard(items: Sequence[SampleItem], rank: int, world: int) -> list[SampleItem]:
    """Round-robin shard: rank r gets items r, r+world, ... (independent of batch size)."""
    return list(items[rank::world])


def image_intact(path: Path) -> bool:
    """True when `path` is a complete image file: every PNG chunk present and its CRC right."""
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except (OSError, ValueError, SyntaxError):  # PIL raises SyntaxError for some broken headers
        return False


def broken_images(task: Task, items: Sequence[SampleItem], sample_dir: Path) -> list[Path]:
    """The image paths of `items` that are missing or unreadable."""
    paths = [task.image_path(sample_dir, it) for it in items]
    return [p for p in paths if not image_intact(p)]


def sample_to_dir(
    generator: Generator,
    task: Task,
    items: Sequence[SampleItem],
    recipe: SamplingRecipe,
    seed: int,
    sample_dir: Path,
    *,
    batch_size: int = 16,
    rank: int = 0,
    world: int = 1,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Generate this rank's share of `items` into sample_dir; returns how many were generated.

    Intact images already on disk are skipped (resume); broken ones are drawn again. Each image is
    written atomically.
    """
    size = task.output_size(generator)
    todo = [it for it in shard(items, rank, world) if not image_intact(task.image_path(sample_dir, it))]
    skipped = len(shard(items, rank, world)) - len(todo)
    if on_batch is not None and skipped:
        on_batch(skipped)
    made = 0
    policy = generator.policy
    was_training = policy.training
    policy.eval()
    try:
        for batch in iter_batches(todo, batch_size):
            seeds = [derive_seed(seed, it.index) for it in batch]
            with torch.no_grad():
                try:
                    tokens = generator.sample([it.condition for it in batch], seeds=seeds, recipe=recipe)
                except RuntimeError as exc:
                    if NON_FINITE_PROBABILITIES not in str(exc):
                        raise
                    raise CheckpointError(
                        "Bad checkpoint: the model's logits are NaN or infinite, so no token can be drawn (its "
                        "weights are diverged or corrupt). Use an earlier or another checkpoint.") from None
                check_sampled_tokens(generator, tokens, len(batch))
                pixels = to_uint8(generator.decode(tokens), size)
            for it, img in zip(batch, pixels):
                save_png(task.image_path(sample_dir, it), img)
            made += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        policy.train(was_training)
    return made


def sample_records(items: Sequence[SampleItem], seed: int, task: Task, sample_dir: Path) -> list[dict[str, Any]]:
    """Per-sample records (index, seed, condition, image path, task metadata) for samples.jsonl."""
    return [
        {
            "index": it.index,
            "seed": derive_seed(seed, it.index),
            "condition": it.condition,
            "image": str(task.image_path(sample_dir, it).relative_to(sample_dir)),
            **{f"meta.{k}": v for k, v in it.meta.items()},
        }
        for it in items
    ]


def write_grid(task: Task, items: Sequence[SampleItem], sample_dir: Path, count: int = 64) -> Path | None:
    """A PNG grid of the first `count` samples next to the images (what a person looks at first)."""
    paths = [task.image_path(sample_dir, it) for it in items[:count]]
    pixels = [load_png(p) for p in paths if p.exists()]
    if not pixels:
        return None
    return save_png(sample_dir / "grid.png", image_grid(pixels, columns=8))
