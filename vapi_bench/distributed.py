"""torchrun helpers: who am I, set up the process group, keep ranks in step, write on rank 0 only.

Training synchronises gradients with an explicit all-reduce after the last micro-batch of a step
instead of wrapping the policy in `DistributedDataParallel`: methods reach the policy only through
the generator contract (`generator.teacher_forced_logits` calls the network itself), so a DDP
wrapper would never see the forward pass. Averaging the accumulated gradients once per step is the
same arithmetic DDP performs with `no_sync()` accumulation, and works with any generator.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun launch (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (defaults: a single process)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as exc:
        raise RuntimeError(f"torchrun environment variables are not integers: {exc}") from None


def current() -> DistInfo:
    """The initialised process group's view, or a single process if there is none."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def device_for(info: DistInfo, prefer_cuda: bool = True) -> torch.device:
    """cuda:LOCAL_RANK when CUDA is available (and wanted), else CPU."""
    if prefer_cuda and torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def init_process_group(device: torch.device | None = None) -> DistInfo:
    """Initialise the default process group when launched with WORLD_SIZE > 1.

    NCCL for CUDA devices, gloo otherwise. A no-op (returning the single-process info) when not
    distributed or already initialised.
    """
    info = dist_info_from_env()
    if not info.is_distributed or dist.is_initialized():
        return current() if dist.is_initialized() else info
    device = device or device_for(info)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().is_distributed:
        dist.barrier()


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every rank (what DDP does at construction)."""
    if not current().is_distributed:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


def all_reduce_gradients_(params: Iterable[nn.Parameter]) -> None:
    """Average .grad over ranks in one flat buffer per dtype/device (missing grads count as 0)."""
    info = current()
    if not info.is_distributed:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for p in params:
        buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in buckets.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= info.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place and return it (identity when not distributed)."""
    return _all_reduce(tensor, dist.ReduceOp.SUM)


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Minimum over ranks in place (used for 'every rank is still finite' flags)."""
    return _all_reduce(tensor, dist.ReduceOp.MIN)


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    """In-place all-reduce; CPU tensors take a round trip through CUDA under NCCL."""
    if not current().is_distributed:
        return tensor
    if dist.get_backend() == "nccl" and not tensor.is_cuda:
        staged = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(staged, op=op)
        tensor.copy_(staged.cpu())
    else:
        dist.all_reduce(tensor, op=op)
    return tensor


def all_gather_list(items: list[T]) -> list[T]:
    """Every rank's list concatenated in rank order (the list itself when not distributed), e.g.
    the conditions of a whole global batch from each rank's contiguous share."""
    if not current().is_distributed:
        return list(items)
    gathered: list[list[T] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in (part or [])]


def on_main(fn: Callable[[], T]) -> T | None:
    """Run fn on rank 0 only, then wait for it on every rank (rank-0-only writes)."""
    result = fn() if current().is_main else None
    barrier()
    return result


# ---- FSDP (parameter sharding) ------------------------------------------------------------------
def fully_shard_copy(module: nn.Module, device: torch.device, frozen: bool = False) -> nn.Module:
    """A copy of `module` sharded over the ranks on `device` with FSDP2 (`fully_shard`): each
    element of every nn.ModuleList (the transformer blocks) is one shard unit, the rest of the
    module the root unit. Every rank holds 1/world of each parameter, gradient and optimiser
    state; forwards all-gather a unit's parameters just in time, backwards reduce-scatter
    (average) its gradients.

    A copy, because sampling and saving after training need plain parameters: the caller keeps
    the original (on the CPU while training, see training.finetune) and loads `full_state_dict(copy)`
    back into it when training ends. `frozen` copies are for no-grad forwards only (a method's
    reference model): no parameter requires a gradient.
    """
    import copy

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (current().world_size,))
    sharded = copy.deepcopy(module)
    if frozen:
        sharded.requires_grad_(False)
    for child in sharded.modules():
        if isinstance(child, nn.ModuleList):
            for unit in child:
                fully_shard(unit, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    return sharded.to(device)


@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """Inside: every FSDP unit of `module` (a `fully_shard_copy`) holds its whole parameters as
    plain tensors and keeps them through forwards, so code that calls the module's other methods
    rather than its forward (a KV-cached sampler's prefill and decode steps) runs, with no
    communication per token; after: sharded again. Costs one whole copy of the weights per device
    while inside, as ZeRO-3 trainers gather for generation. A plain module passes through."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    # the root must initialise the units before any of them runs (FSDP otherwise takes the first
    # unit called for a root); a root forward does this, a sampler's prefill does not
    module._get_fsdp_state()._lazy_init()
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            # fully_shard's own choice: units reshard after forward, the root does not
            unit.set_reshard_after_forward(unit is not module, recurse=False)


def is_sharded(params: Iterable[torch.Tensor]) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in params)


def full_state_dict(module: nn.Module, to_cpu: bool = False) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of an FSDP module, on every rank (a collective call);
    with to_cpu, only rank 0 receives it (the others get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=to_cpu))
