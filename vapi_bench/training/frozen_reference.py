"""A frozen copy of the policy's initial weights, run through the generator's own code: the KL
reference of ar-grpo and va-pi (use_kl) and the likelihood-ratio reference of cca, under DDP and
under FSDP.

- One device or DDP: a detached clone of the parameters, swapped into the policy (zero-copy) for
  the reference forwards (`swapped_parameters`).
- FSDP (`sharding=fsdp` on several ranks): the policy the generator runs is a sharded copy
  (`finetune._trained_copy`) and the original module waits on the CPU, untouched, with the weights
  training started from (a resumed run restores into the sharded copy only). The reference is a
  second sharded copy of that original, frozen and outside the optimiser, so each device holds
  1/world of it; it is built at its first use, inside training, hence from the CPU (no whole
  extra copy on the device), and swapped into the generator's policy slot for the reference
  forwards.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .. import distributed
from ..errors import UsageError
from ..interfaces import Generator
from .finetune import module_slot


class FrozenReference:
    """The policy as it was when the reference was made; `with reference.active():` runs it."""

    def __init__(self, generator: Generator, sharded: bool, device: torch.device, method: str) -> None:
        self.generator, self.device, self.method = generator, device, method
        self.initial = generator.policy if sharded else None  # FSDP: the plain module, kept at the initial weights
        self.tensors = None if sharded else [p.detach().clone() for p in generator.policy.parameters()]
        self._shards: nn.Module | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Inside: the generator's forwards run the reference weights (use under no_grad)."""
        if self.tensors is not None:
            with swapped_parameters(self.generator.policy, self.tensors):
                yield
            return
        if self._shards is None:
            self._shards = distributed.fully_shard_copy(self.initial, self.device, frozen=True)
        slot = module_slot(self.generator, self.generator.policy, self.method)
        trained = getattr(self.generator, slot)
        self._shards.train(trained.training)  # as swapped parameters would run: in the policy's mode
        setattr(self.generator, slot, self._shards)
        try:
            yield
        finally:
            setattr(self.generator, slot, trained)


def check_null_conditions_shardable(generator: Generator, method: str) -> None:
    """Under FSDP a parameter is whole only inside the policy's forward. A generator that builds its
    null condition from a trainable parameter outside the forward would read a shard there and
    train it wrongly, so refuse: one probe with the plain policy (its parameters require grad, so
    such a null condition does too). Labels (LlamaGen c2i's null class) and buffers (LlamaGen t2i's
    `uncond_embedding`, which FSDP replicates rather than shards) pass."""
    probe = 0 if generator.conditioning == "class" else "a"
    null = generator.null_conditions(generator.prepare_conditions([probe]))
    if any(t.requires_grad for t in _tensors(null)):
        raise UsageError(f"method '{method}' with sharding=fsdp: generator '{generator.name}' computes its null "
                         "condition from a trainable parameter outside the model's forward, which FSDP shards; "
                         "use sharding=ddp (or no null rows / conditional log-probs).")


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in a prepared condition (a tensor, a tuple / list / dict of them, or an object holding them)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif hasattr(value, "__dict__"):
        for item in vars(value).values():
            if isinstance(item, (torch.Tensor, tuple, list, dict)):
                yield from _tensors(item)


@contextlib.contextmanager
def swapped_parameters(module: nn.Module, tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    """Temporarily point the module's parameters at other tensors (zero-copy), e.g. the frozen
    initial weights of a reference, so the generator runs them through its own code."""
    params = list(module.parameters())
    if len(params) != len(tensors):
        raise ValueError("reference weights do not match the policy's parameters")
    saved = [p.data for p in params]
    try:
        for p, t in zip(params, tensors):
            p.data = t
        yield
    finally:
        for p, t in zip(params, saved):
            p.data = t
