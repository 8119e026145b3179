"""The shared training engine: one loop for VA-π and every baseline.

A method supplies a *step function* that turns one batch into micro-batch losses; the engine does
everything else the same way for all of them:

- data order is a pure function of (seed, step): each step draws a fresh random batch of
  `batch_size` dataset indices (the official VA-π loop takes the first batch of a reshuffled
  sampler every iteration), and rank r takes the r-th contiguous slice. So neither resuming nor
  the number of ranks changes which images a step sees;
- randomness inside a step (dropout, sampling) is seeded from (seed, step, rank) in a forked RNG,
  so the step counter *is* the full RNG state, and resuming replays exactly;
- gradient accumulation over the micro-batches, an all-reduce of gradients over ranks, global
  grad-norm clipping, the optimiser step;
- a NaN/inf loss, logits (a method's token sampling refusing them) or gradient norm, or weights
  that an update made non-finite, stop training with TrainingDiverged, keeping the last
  checkpoint; weights that are not finite are never written;
- atomic checkpoints (modules, optimiser, next step, a fingerprint of the hyper-parameters)
  every `ckpt_every` steps and at the end, written by rank 0.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .. import distributed
from ..errors import NON_FINITE_PROBABILITIES, CheckpointError, TrainingDiverged, UsageError
from ..interfaces import Condition, StageContext
from ..progress import add_task, advance, summary
from ..seeding import derive_seed
from ..store import atomic_write

CHECKPOINT_NAME = "train_state.pt"


# ---- optimiser ----------------------------------------------------------------------------------
def adamw_param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict[str, Any]]:
    """Two AdamW groups as the official VA-π code builds them: no weight decay for any parameter
    whose name contains "norm", `weight_decay` for the rest. Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        (no_decay if "norm" in name else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise UsageError("Nothing to train: every parameter of the module has requires_grad=False.")
    return groups


def build_adamw(
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float,
    weight_decay: float,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW with the norm/no-norm groups, constant LR, fused on CUDA (as the official code)."""
    groups = adamw_param_groups(named_params, weight_decay)
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=on_cuda or None)


# ---- precision ----------------------------------------------------------------------------------
def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when precision == "bf16", else a no-op context."""
    if precision not in ("fp32", "bf16"):
        raise UsageError(f"precision must be 'fp32' or 'bf16', got {precision!r}.")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# ---- data ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    """This rank's share of one step's images.

    `positions` are the items' places in the global step batch: use them (with the step) to seed
    per-image randomness so that results do not depend on the number of ranks.
    """

    step: int
    images: torch.Tensor  # [b, 3, H, W] in [-1, 1], on the training device
    conditions: list[Condition]
    indices: list[int]  # dataset indices
    positions: list[int]

    def __len__(self) -> int:
        return len(self.conditions)


def step_indices(seed: int, step: int, dataset_size: int, batch_size: int) -> list[int]:
    """The dataset indices of global step `step`: a fresh permutation's first `batch_size`.

    Without replacement within a step while the dataset is large enough; a dataset smaller than
    the batch is cycled through whole permutations.
    """
    if dataset_size <= 0:
        raise UsageError("The training dataset is empty.")
    gen = torch.Generator().manual_seed(derive_seed(seed, step, "train-data"))
    order: list[int] = []
    while len(order) < batch_size:
        order.extend(torch.randperm(dataset_size, generator=gen).tolist())
    return order[:batch_size]


def rank_slice(batch_size: int, info: distributed.DistInfo) -> slice:
    """The contiguous slice of the global batch that `info.rank` processes."""
    if batch_size % info.world_size:
        raise UsageError(
            f"batch_size {batch_size} (images per step) must be divisible by the number of ranks "
            f"({info.world_size})."
        )
    share = batch_size // info.world_size
    return slice(info.rank * share, (info.rank + 1) * share)


def load_batch(
    dataset: Any, step: int, indices: Sequence[int], positions: Sequence[int], device: torch.device
) -> Batch:
    """Fetch (image, condition) items and stack the images on `device`."""
    images, conds = [], []
    for index in indices:
        image, cond = dataset[index]
        images.append(torch.as_tensor(image))
        conds.append(cond.item() if isinstance(cond, torch.Tensor) else cond)
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) != 1:
        raise UsageError(f"The dataset returned images of different shapes {sorted(shapes)}; "
                         "they must all be resized to the generator's resolution.")
    stacked = torch.stack(images).to(device=device, dtype=torch.float32)
    return Batch(step, stacked, conds, list(indices), list(positions))


# ---- metrics ------------------------------------------------------------------------------------
@dataclass
class MetricMeter:
    """Weighted means of per-step metrics, averaged over ranks at the end of the step."""

    sums: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float | torch.Tensor, weight: float = 1.0) -> None:
        value = float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
        self.sums[name] = self.sums.get(name, 0.0) + value * weight
        self.weights[name] = self.weights.get(name, 0.0) + weight

    def reduced(self) -> dict[str, float]:
        """Means over micro-batches and ranks (every rank must add the same names)."""
        names = sorted(self.sums)
        if not names:
            return {}
        packed = torch.tensor([self.sums[n] for n in names] + [self.weights[n] for n in names],
                              dtype=torch.float64)
        distributed.all_reduce_sum(packed)
        k = len(names)
        return {n: float(packed[i] / packed[k + i]) for i, n in enumerate(names) if packed[k + i] > 0}


# ---- checkpoints --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """What the loop needs besides the step function. `fingerprint` holds the hyper-parameters a
    resumed run must share with the checkpoint (steps and ckpt_every may change)."""

    steps: int
    batch_size: int  # images per optimiser step, over all ranks
    seed: int
    ckpt_every: int
    max_grad_norm: float | None = 1.0
    fingerprint: Mapping[str, Any] = field(default_factory=dict)


class Checkpointer:
    """Atomic save/restore of modules + optimiser + next step under one file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def save(self, next_step: int, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer,
             fingerprint: Mapping[str, Any]) -> None:
        state = {
            "next_step": next_step,
            "modules": {name: _module_state(m) for name, m in modules.items()},
            "optimizer": _optimizer_state(modules, optimizer),
            "fingerprint": dict(fingerprint),
        }
        distributed.on_main(lambda: atomic_write(self.path, lambda tmp: torch.save(state, tmp)))

    def restore(self, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer,
                fingerprint: Mapping[str, Any], device: torch.device) -> int:
        """Load the checkpoint if there is one; return the step to continue from (0 if none)."""
        if not self.path.exists():
            return 0
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"Cannot read training checkpoint {self.path} ({type(exc).__name__}: {exc}). "
                "Delete it to start this fine-tune from scratch."
            ) from None
        saved = state.get("fingerprint", {})
        changed = sorted(k for k in set(saved) | set(fingerprint)
                         if _canonical(saved.get(k)) != _canonical(fingerprint.get(k)))
        if changed:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
            raise CheckpointError(
                f"The training checkpoint {self.path} was written with different settings ({detail}). "
                "Use a fresh output directory or delete the checkpoint."
            )
        missing = sorted(set(modules) - set(state["modules"]))
        if missing:
            raise CheckpointError(f"Training checkpoint {self.path} lacks module(s) {missing}.")
        sharded = _sharded(modules)
        for name, module in modules.items():
            try:
                if sharded:
                    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

                    set_model_state_dict(module, state["modules"][name], options=StateDictOptions(full_state_dict=True))
                else:
                    module.load_state_dict(state["modules"][name], strict=True)
            except (RuntimeError, KeyError) as exc:
                raise CheckpointError(
                    f"Training checkpoint {self.path} does not match module '{name}': "
                    f"{str(exc).splitlines()[0]}"
                ) from None
        if sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            (module,) = modules.values()
            set_optimizer_state_dict(module, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state["optimizer"])
        return int(state["next_step"])


def _sharded(modules: Mapping[str, nn.Module]) -> bool:
    return distributed.is_sharded(p for m in modules.values() for p in m.parameters())


def _module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict; an FSDP module's whole one, gathered to rank 0 (collective)."""
    if distributed.is_sharded(module.parameters()):
        return distributed.full_state_dict(module, to_cpu=True)
    return module.state_dict()


def _optimizer_state(modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's state dict; for FSDP the whole one keyed by parameter name (collective)."""
    if not _sharded(modules):
        return optimizer.state_dict()
    if len(modules) != 1:
        raise UsageError("FSDP training checkpoints hold exactly one trained module.")
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    (module,) = modules.values()
    return get_optimizer_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _canonical(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ---- the loop -----------------------------------------------------------------------------------
StepFn = Callable[[Batch, MetricMeter], Iterable[torch.Tensor]]
"""Yield this rank's micro-batch losses for one batch, each already weighted so that their sum is
the rank's mean loss; the engine back-propagates each as soon as it is yielded. Add metrics to the
meter. Runs inside a forked RNG seeded from (seed, step, rank)."""


@contextlib.contextmanager
def _step_rng(seed: int, step: int, rank: int, device: torch.device) -> Iterator[None]:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, step, f"train-step-rank{rank}"))
        yield


def train(
    *,
    modules: Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    dataset: Any,
    step_fn: StepFn,
    config: TrainConfig,
    ctx: StageContext,
    progress_label: str = "fine-tune",
) -> dict[str, Any]:
    """Run (or resume) the loop to `config.steps` (capped by ctx.limit); return a summary.

    `modules` are what the checkpoint holds; the optimiser's parameters are what gets clipped,
    synchronised and stepped.
    """
    info = distributed.current()
    total = min(config.steps, ctx.limit) if ctx.limit else config.steps
    if config.ckpt_every <= 0:
        raise UsageError(f"ckpt_every must be positive, got {config.ckpt_every}.")
    share = rank_slice(config.batch_size, info)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    checkpointer = Checkpointer(Path(ctx.out_dir) / CHECKPOINT_NAME)
    # the data order and step RNG derive from (seed, batch_size, step): a checkpoint only resumes
    # under the same ones, so `next_step` alone restores the data position and every RNG stream
    fingerprint = {**config.fingerprint, "data_seed": config.seed, "global_batch": config.batch_size}
    start = checkpointer.restore(modules, optimizer, fingerprint, ctx.device)
    sharded = distributed.is_sharded(params)  # FSDP: its hooks synchronise weights and gradients
    if not sharded:
        for module in modules.values():  # every rank starts from rank 0's weights, as DDP does
            distributed.broadcast_module_(module)
    optimizer.zero_grad(set_to_none=True)
    last: dict[str, float] = {}
    began = time.perf_counter()
    progress = _ProgressBar(ctx.progress, progress_label, total, start)
    for step in range(start, total):
        tick = time.perf_counter()
        global_indices = step_indices(config.seed, step, len(dataset), config.batch_size)
        positions = list(range(config.batch_size))[share]
        batch = load_batch(dataset, step, global_indices[share], positions, ctx.device)
        meter = MetricMeter()
        loss_total, finite = _accumulate(step_fn, batch, meter, config.seed, info.rank, ctx.device)
        if distributed.all_reduce_min(torch.tensor([1.0 if finite else 0.0])).item() < 1.0:
            raise _diverged(step, "loss (or the logits)", checkpointer, start)
        if step == start and all(p.grad is None for p in params):
            raise UsageError(f"{progress_label}: no gradient reached the trained module's parameters; the step's "
                             "losses do not depend on them (with sharding=fsdp: the generator computes them through "
                             "a module other than the one it exposes).")
        if not sharded:
            distributed.all_reduce_gradients_(params)
        max_norm = config.max_grad_norm if config.max_grad_norm else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if not math.isfinite(grad_norm):
            raise _diverged(step, "gradient norm", checkpointer, start)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not _all_finite(params):
            raise _diverged(step, "updated weights", checkpointer, start)
        meter.add("loss", loss_total)
        elapsed = time.perf_counter() - tick
        last = {**meter.reduced(), "step": step + 1, "grad_norm": grad_norm,
                "lr": optimizer.param_groups[0]["lr"], "images_per_s": config.batch_size / elapsed,
                "step_seconds": elapsed}
        if info.is_main:
            ctx.log(last)
        progress.advance(last)
        if (step + 1) % config.ckpt_every == 0 or step + 1 == total:
            checkpointer.save(step + 1, modules, optimizer, fingerprint)
    progress.finish(total - start, time.perf_counter() - began, last)
    return {"steps": total, "resumed_from": start, "minutes": (time.perf_counter() - began) / 60,
            "final": last, "checkpoint": str(checkpointer.path)}


def _all_finite(params: Sequence[torch.Tensor]) -> bool:
    """One device sync for all parameters (a sharded one checks its local shard)."""
    local = [p.to_local() if hasattr(p, "to_local") else p for p in params]
    ok = torch.stack([torch.isfinite(p.detach()).all() for p in local]).all().float().cpu()
    return distributed.all_reduce_min(ok.reshape(1)).item() == 1.0


def _accumulate(step_fn: StepFn, batch: Batch, meter: MetricMeter, seed: int, rank: int,
                device: torch.device) -> tuple[float, bool]:
    """Back-propagate every micro-batch loss; return (sum of losses, all finite).

    Logits that are NaN/inf make a method's token sampling fail (torch.multinomial); that counts as
    a non-finite loss, so every rank stops with the same "diverged" message instead of a traceback.
    """
    total, finite = 0.0, True
    with _step_rng(seed, batch.step, rank, device):
        try:
            for loss in step_fn(batch, meter):
                value = float(loss.detach())
                if not math.isfinite(value):
                    finite = False
                    continue
                total += value
                loss.backward()
        except RuntimeError as exc:
            if NON_FINITE_PROBABILITIES not in str(exc):
                raise
            finite = False
    return total, finite


def _diverged(step: int, what: str, checkpointer: Checkpointer, start: int) -> TrainingDiverged:
    kept = (f"The last good checkpoint {checkpointer.path} is kept; resuming restarts from it."
            if checkpointer.path.exists() else "No checkpoint had been written yet.")
    return TrainingDiverged(
        f"Training diverged at step {step + 1}: the {what} is NaN or infinite (run started at step "
        f"{start}). {kept} The same settings replay the same steps: lower the learning rate (or use fp32 "
        "precision) and fine-tune again."
    )


class _ProgressBar:
    """The fine-tune bar on the runner's rich progress display (vapi_bench.progress), if any."""

    def __init__(self, progress: Any, label: str, total: int, start: int) -> None:
        self.progress, self.label = progress, label
        self.task = add_task(progress, label, total)
        advance(progress, self.task, start)

    def advance(self, metrics: Mapping[str, float]) -> None:
        advance(self.progress, self.task, 1, rate=f"{metrics['images_per_s']:.1f} img/s {self._shown(metrics)}")

    def finish(self, steps: int, seconds: float, metrics: Mapping[str, float]) -> None:
        """The one line that stays: steps, time, and the last step's headline metrics."""
        summary(self.progress, f"{self.label}: {steps} steps in {seconds:.1f}s {self._shown(metrics)}".rstrip())

    @staticmethod
    def _shown(metrics: Mapping[str, float]) -> str:
        return " ".join(f"{k}={metrics[k]:.4g}" for k in ("loss", "reward_mean", "ce") if k in metrics)


# ---- datasets -----------------------------------------------------------------------------------
def training_dataset(dataset: Any, name: str | None, image_size: int) -> Any:
    """The dataset a method trains on: the one the runner passed, else the registered `name`
    built at the generator's resolution. Checks the first image's size either way."""
    if dataset is None:
        if not name:
            raise UsageError("No training dataset: the generator names no default; pass dataset=<name>.")
        from ..params import resolve_params
        from ..registry import get_registry

        entry = get_registry().get("datasets", name)
        sized = {p.name: image_size for p in entry.params if p.name in ("image_size", "size")}
        dataset = entry.factory(**resolve_params(entry.params, sized, where=f"dataset '{entry.name}'"))
    if len(dataset) == 0:
        raise UsageError(f"The training dataset {name or type(dataset).__name__} is empty.")
    image, _ = dataset[0]
    if tuple(image.shape[-2:]) != (image_size, image_size):
        raise UsageError(
            f"The training dataset {name or type(dataset).__name__} yields {tuple(image.shape[-2:])} "
            f"images but the generator works at {image_size}x{image_size}."
        )
    return dataset
