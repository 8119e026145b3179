"""Two CPU ranks as torchrun would start them, for the "2 gloo ranks = 1 rank" tests of every method."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.multiprocessing as mp

from vapi_bench import distributed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gloo_rank(rank: int, world: int, port: int) -> Iterator[distributed.DistInfo]:
    """One rank: the environment torchrun would set, our process group, and a barrier before the
    teardown: a rank that left early once aborted its peer ("terminate called without an active
    exception") in a loaded CI run."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    info = distributed.init_process_group(torch.device("cpu"))
    try:
        yield info
        distributed.barrier()
    finally:
        distributed.destroy_process_group()


def spawn_ranks(worker: Callable[..., None], *args: Any, world: int = 2) -> None:
    """worker(rank, world, port, *args) on `world` processes, one thread each."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(world, free_port(), *args), nprocs=world, join=True)
