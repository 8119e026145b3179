"""`dpo` on 2 gloo ranks equals 1 rank with the same global batch: the offline pair set is drawn
group g on rank g mod 2 and gathered (the same file as one rank draws), the engine's pair indices and
online samples are seeded by global position, never by rank. Offline pairs under sharding=fsdp (policy
and frozen reference sharded) give the same weights too."""
from __future__ import annotations

from pathlib import Path

import torch

from helpers_gloo import gloo_rank, spawn_ranks
from helpers_toy_generator import RandomImages, tiny_llamagen
from vapi_bench import distributed
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.peers.dpo import DPO_PARAMS, Dpo

SMALL = dict(steps=2, batch_size=4, micro_batch=1, ckpt_every=1, precision="fp32", lr=1e-3, group_size=3,
             pair_groups=6, rewards="shapes-class-prob:1")
RUNS = {"offline": {}, "online": {"pairs": "online", "online_every": 2}, "offline-fsdp": {"sharding": "fsdp"}}


def _run(name: str, out_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    generator = tiny_llamagen(dropout=False, class_dropout_prob=0.1)
    info = distributed.current()
    ctx = StageContext(out_dir=out_dir / "work", device=torch.device("cpu"), seed=0, rank=info.rank,
                       world_size=info.world_size, cache_dir=out_dir / "cache")
    summary = Dpo(**resolve_params(DPO_PARAMS, {**SMALL, **RUNS[name]}, "dpo")).finetune(generator, RandomImages(), ctx)
    return generator.policy.state_dict(), summary


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    with gloo_rank(rank, world, port):
        for name in RUNS:
            state, summary = _run(name, Path(out_dir) / name)
            if rank == 0:
                torch.save({"state": state, "pair_file": summary.get("pair_file")}, Path(out_dir) / f"{name}.pt")


def test_two_gloo_ranks_equal_one_rank(tmp_path):
    single = {name: _run(name, tmp_path / "one" / name) for name in RUNS}
    spawn_ranks(_worker, str(tmp_path / "two"))
    initial = tiny_llamagen(dropout=False, class_dropout_prob=0.1).policy.state_dict()
    for name, (state, summary) in single.items():
        double = torch.load(tmp_path / "two" / f"{name}.pt", weights_only=True)
        assert any(not torch.equal(v, initial[k]) for k, v in state.items()), f"{name} did not train"
        for key, value in state.items():
            torch.testing.assert_close(double["state"][key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
    one = torch.load(single["offline"][1]["pair_file"], weights_only=True)
    two = torch.load(torch.load(tmp_path / "two" / "offline.pt", weights_only=True)["pair_file"], weights_only=True)
    assert torch.equal(one["tokens"], two["tokens"])  # the samples are index-seeded; the scorer's batches differ
    torch.testing.assert_close(two["rewards"], one["rewards"], rtol=1e-4, atol=1e-9)
