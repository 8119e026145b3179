"""Training logs for the dashboards researchers already watch: TensorBoard, Weights & Biases (offline).

train.jsonl stays the source of truth (the report and the lab read it); a logger chosen with
`--set logger=tensorboard` (or `wandb`) mirrors every per-step record as scalars, the run's
config (TensorBoard: as text when it opens and as hparams with the final scalars when it closes)
and a grid of samples drawn from fixed conditions and seeds at step 0 (the weights the fine-tune
starts from), every `log_images_every` steps and at the last step, so the same cells change only
because the weights did and even a 3-step run shows a before and an after. Logging is not part of a run's identity: it changes no
stage key and, since the preview samples inside a forked RNG, not a single trained weight.
Each backend is imported only when chosen, so neither is needed otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import store
from .errors import UsageError
from .imageio import image_grid, to_uint8
from .params import Param
from .seeding import derive_seed

LOGGER_PARAMS: tuple[Param, ...] = (
    Param("logger", str, "jsonl", "training log mirror besides train.jsonl", choices=("jsonl", "tensorboard", "wandb")),
    Param("log_images_every", int, 50, "with a logger: a sample grid every N fine-tune steps (0 = none)"),
)
PREVIEW_IMAGES = 8

Preview = Callable[[], np.ndarray]


class TensorBoardLogger:
    """Event files under `log_dir` through torch.utils.tensorboard."""

    def __init__(self, log_dir: Path, config: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("logger=tensorboard needs the tensorboard package: pip install 'vapi-bench[tensorboard]'.") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.config = hparams(config)
        self.writer.add_text("config", "\n".join(f"    {k} = {v}" for k, v in sorted(self.config.items())), 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def log_image(self, step: int, grid: np.ndarray) -> None:
        self.writer.add_image("samples", grid, step, dataformats="HWC")

    def close(self, final: dict[str, float]) -> None:
        """The config as hparams against the final scalars (TensorBoard's HParams tab), in this run's folder."""
        self.writer.add_hparams(self.config, {f"final/{k}": v for k, v in final.items()}, run_name=".")
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run in offline mode under `directory`/wandb (`wandb sync` uploads it later)."""

    def __init__(self, directory: Path, name: str, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise UsageError("logger=wandb needs the wandb package: pip install 'vapi-bench[wandb]'.") from None
        directory.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(mode="offline", dir=str(directory), project="vapi-bench", name=name, config=config)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log({f"train/{k}": v for k, v in scalars.items()}, step=step)

    def log_image(self, step: int, grid: np.ndarray) -> None:
        self.run.log({"samples": self.wandb.Image(grid)}, step=step)

    def close(self, final: dict[str, float]) -> None:  # wandb keeps the config and the run's summary itself
        self.run.finish()


def hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config flattened to the scalar values hparams accept ('method_params.lr': 3e-05);
    lists and None become text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class TrainingLogger:
    """Mirrors the training log's records to a backend; logs a preview grid at step 0 (`begin`),
    every N steps and at the last step (`close`)."""

    def __init__(self, backend: Any, preview: Preview | None, every: int) -> None:
        self.backend, self.preview, self.every = backend, preview, every
        self.last: dict[str, float] = {}
        self.step: int | None = None  # the last step seen
        self.drawn: int | None = None  # the last step a preview was drawn at

    def _draw(self, step: int) -> None:
        if self.preview is not None and self.every > 0 and self.drawn != step:
            self.backend.log_image(step, self.preview())
            self.drawn = step

    def begin(self) -> None:
        """The preview of the weights the fine-tune starts from, as step 0 (before any step runs)."""
        self._draw(0)

    def __call__(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        scalars = {k: float(v) for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.backend.log(step, scalars)
        self.last, self.step = scalars, step
        if self.every > 0 and step % self.every == 0:
            self._draw(step)

    def close(self) -> None:
        """The last step's preview (unless it was just drawn), then the backend's own closing."""
        if self.step is not None:
            self._draw(self.step)
        self.backend.close(self.last)


def open_logger(options: dict[str, Any], directory: Path, name: str, config: dict[str, Any],
                preview: Preview | None) -> TrainingLogger | None:
    """The logger the options ask for, writing under `directory` (None for plain JSONL)."""
    kind = options.get("logger", "jsonl")
    if kind == "jsonl":
        return None
    backend = (TensorBoardLogger(directory / "tensorboard", config) if kind == "tensorboard"
               else WandbLogger(directory, name, config))
    return TrainingLogger(backend, preview, int(options.get("log_images_every", 0)))


def sample_preview(generator: Any, conditions: Sequence[Any], seed: int) -> Preview:
    """A callable drawing one grid from fixed conditions and seeds with the generator's current weights.

    It runs in eval mode, without gradients and inside a forked RNG, then restores the training
    mode: the training that continues afterwards is the same as without the preview.
    """
    seeds = [derive_seed(seed, i, "log-preview") for i in range(len(conditions))]

    def draw() -> np.ndarray:
        policy = generator.policy
        was_training = policy.training
        device = getattr(generator, "device", torch.device("cpu"))
        policy.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
                tokens = generator.sample(list(conditions), seeds=seeds, recipe=generator.default_recipe)
                pixels = to_uint8(generator.decode(tokens))
        finally:
            policy.train(was_training)
        return image_grid(list(pixels), columns=min(len(conditions), PREVIEW_IMAGES))

    return draw


def preview_conditions(dataset: Any, count: int = PREVIEW_IMAGES) -> list[Any]:
    """`count` conditions spread over the training set (fixed, so every preview shows the same ones)."""
    size = len(dataset)
    picks = sorted({round(i * (size - 1) / max(count - 1, 1)) for i in range(min(count, size))})
    conditions = []
    for index in picks:
        cond = dataset[index][1]
        conditions.append(cond.item() if isinstance(cond, torch.Tensor) else cond)
    return conditions


class TrainLog:
    """train.jsonl, where a resumed run's replayed steps replace the records they repeat.

    A fine-tune resumed from its checkpoint at step s logs steps s+1, s+2, ... again; the first
    record this process writes drops every record with that step or later, so the log (and the
    curves drawn from it) holds each step once.
    """

    def __init__(self, path: Path, mirror: Any = None) -> None:
        self.path = Path(path)
        self.mirror = mirror  # the TensorBoard / wandb logger, if any: sees each record after it is on disk
        self.started = False

    def write(self, record: dict[str, Any]) -> None:
        if not self.started:
            self.started = True
            step = record.get("step")
            kept = [r for r in store.read_jsonl(self.path)
                    if isinstance(step, (int, float)) and isinstance(r.get("step"), (int, float)) and r["step"] < step]
            store.write_jsonl(self.path, kept)
        store.append_jsonl(self.path, record)
        if self.mirror is not None:
            self.mirror(record)
