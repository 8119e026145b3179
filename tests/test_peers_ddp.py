"""`ar-grpo` and `cca` (global-batch negatives) on 2 gloo ranks equal 1 rank with the same global batch:
rollout seeds, null rows and rolled negatives depend on global positions, never on the rank."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.multiprocessing as mp

from helpers_toy_generator import RandomImages, tiny_llamagen
from test_vapi_ddp import _free_port
from vapi_bench import distributed
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.peers.ar_grpo import AR_GRPO_PARAMS, ArGrpo
from vapi_bench.plugins.peers.cca import CCA_PARAMS, Cca

RUNS = {
    "ar-grpo": (ArGrpo, AR_GRPO_PARAMS, dict(steps=2, batch_size=2, micro_batch=1, group_size=2, lr=1e-3,
                                             rewards="shapes-class-prob:1")),
    "cca": (Cca, CCA_PARAMS, dict(steps=2, batch_size=4, micro_batch=2, lr=1e-3, negatives="global",
                                  uncond_ratio=0.3)),
}


def _run(name: str, out_dir: Path) -> dict[str, torch.Tensor]:
    method, params, values = RUNS[name]
    generator = tiny_llamagen(dropout=False, class_dropout_prob=0.1)
    info = distributed.current()
    ctx = StageContext(out_dir=out_dir, device=torch.device("cpu"), seed=0, rank=info.rank, world_size=info.world_size)
    method(**resolve_params(params, {**values, "ckpt_every": 1, "precision": "fp32"}, name)).finetune(
        generator, RandomImages(), ctx)
    return generator.policy.state_dict()


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    distributed.init_process_group(torch.device("cpu"))
    try:
        for name in RUNS:
            state = _run(name, Path(out_dir) / name)
            if rank == 0:
                torch.save(state, Path(out_dir) / f"{name}.pt")
    finally:
        distributed.destroy_process_group()


def test_two_gloo_ranks_equal_one_rank(tmp_path):
    single = {name: _run(name, tmp_path / "one" / name) for name in RUNS}
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    initial = tiny_llamagen(dropout=False, class_dropout_prob=0.1).policy.state_dict()
    for name, state in single.items():
        double = torch.load(tmp_path / "two" / f"{name}.pt", weights_only=True)
        assert any(not torch.equal(v, initial[k]) for k, v in state.items()), f"{name} did not train"
        for key, value in state.items():
            torch.testing.assert_close(double[key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
