"""Data parallelism: VA-π on 2 gloo ranks (CPU) equals 1 rank with the same global batch.

Per-image randomness (context noise, group sampling) is seeded from (seed, step, position in the
global batch), each rank takes a contiguous slice of the batch and gradients are averaged once per
step, so the two runs differ only by floating-point summation order.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from helpers_gloo import gloo_rank, spawn_ranks
from helpers_toy_generator import RandomImages, tiny_llamagen
from vapi_bench import distributed
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.va_pi.method import VAPI_PARAMS, VaPi

DDP_PARAMS = dict(lr=1e-3, steps=2, batch_size=4, micro_batch=1, group_size=4, w_perceptual=0.0, xi=0.25,
                  ckpt_every=1, precision="fp32")


def _vapi_run(out_dir: Path, **extra) -> nn.Module:
    generator = tiny_llamagen(dropout=False)
    info = distributed.current()
    ctx = StageContext(out_dir=out_dir, device=torch.device("cpu"), seed=0, rank=info.rank, world_size=info.world_size)
    summary = VaPi(**resolve_params(VAPI_PARAMS, {**DDP_PARAMS, **extra}, "va-pi")).finetune(generator, RandomImages(), ctx)
    (out_dir / f"resumed_from-rank{info.rank}").write_text(str(summary["resumed_from"]))
    return generator.policy


def _ddp_worker(rank: int, world: int, port: int, out_dir: str, sharding: str = "ddp", steps: int = 0) -> None:
    """One torchrun-like rank: the environment torchrun would set, then our helpers."""
    with gloo_rank(rank, world, port) as info:
        assert (info.rank, info.world_size, dist.get_backend()) == (rank, world, "gloo")
        policy = _vapi_run(Path(out_dir), sharding=sharding, **({"steps": steps} if steps else {}))
        assert not distributed.is_sharded(policy.parameters()), "the generator must get its plain policy back"
        if rank == 0:
            torch.save(policy.state_dict(), Path(out_dir) / "final.pt")


def test_two_gloo_ranks_equal_one_rank(tmp_path):
    single = _vapi_run(tmp_path / "one").state_dict()
    spawn_ranks(_ddp_worker, str(tmp_path / "two"))
    double = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    moved = [n for n, v in single.items() if not torch.equal(v, tiny_llamagen(dropout=False).policy.state_dict()[n])]
    assert moved, "training did not change the weights"
    for name, value in single.items():
        torch.testing.assert_close(double[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_fsdp_on_two_gloo_ranks_equals_one_rank_and_resumes(tmp_path):
    """sharding=fsdp (FSDP2): parameters, gradients and AdamW state sharded over 2 ranks give the
    1-rank weights; a run stopped after step 1 and resumed from its (gathered) checkpoint ends
    where the uninterrupted one does."""
    single = _vapi_run(tmp_path / "one").state_dict()
    spawn_ranks(_ddp_worker, str(tmp_path / "fsdp"), "fsdp")
    sharded = torch.load(tmp_path / "fsdp" / "final.pt", weights_only=True)
    resumed_dir = str(tmp_path / "fsdp-resumed")
    spawn_ranks(_ddp_worker, resumed_dir, "fsdp", 1)
    spawn_ranks(_ddp_worker, resumed_dir, "fsdp")
    resumed = torch.load(Path(resumed_dir) / "final.pt", weights_only=True)
    assert [(Path(resumed_dir) / f"resumed_from-rank{r}").read_text() for r in (0, 1)] == ["1", "1"]
    for name, value in single.items():
        torch.testing.assert_close(sharded[name], value, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(resumed[name], sharded[name], rtol=1e-5, atol=1e-6, msg=name)
