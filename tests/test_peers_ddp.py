"""`ar-grpo` and `cca` (global-batch negatives) on 2 gloo ranks equal 1 rank with the same global batch:
rollout seeds, null rows and rolled negatives depend on global positions, never on the rank. Under
sharding=fsdp (FSDP2 on gloo, CPU) too: rollouts sample from the gathered shards, the frozen reference
is a second sharded copy of the initial weights, and a resumed run keeps that reference."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers_gloo import gloo_rank, spawn_ranks
from helpers_toy_generator import RandomImages, tiny_llamagen
from vapi_bench import distributed
from vapi_bench.errors import UsageError
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.peers.ar_grpo import AR_GRPO_PARAMS, ArGrpo
from vapi_bench.plugins.peers.cca import CCA_PARAMS, Cca
from vapi_bench.training import CHECKPOINT_NAME, check_null_conditions_shardable

RUNS = {
    "ar-grpo": (ArGrpo, AR_GRPO_PARAMS, dict(steps=2, batch_size=2, micro_batch=1, group_size=2, lr=1e-3,
                                             rewards="shapes-class-prob:1")),
    # accumulation=mean: the official sum grows with the micro-batches per rank, so it equals one rank
    # only at the official world size (tests/test_cca_official.py checks the sum against a 2-GPU loop)
    "cca": (Cca, CCA_PARAMS, dict(steps=2, batch_size=4, micro_batch=2, lr=1e-3, negatives="global",
                                  uncond_ratio=0.3, accumulation="mean")),
}


CAPTIONS = [(torch.zeros(3, 16, 16), caption) for caption in ("a red cat", "dog", "two blue dogs", "a cat")]


def _run(name: str, out_dir: Path, text: bool = False, **extra) -> dict[str, torch.Tensor]:
    """`name` on the tiny c2i model, or with `text` on the tiny t2i one (captions, null captions)."""
    from test_ar_grpo import tiny_t2i

    method, params, values = RUNS[name]
    generator = tiny_t2i() if text else tiny_llamagen(dropout=False, class_dropout_prob=0.1)
    info = distributed.current()
    ctx = StageContext(out_dir=out_dir, device=torch.device("cpu"), seed=0, rank=info.rank, world_size=info.world_size)
    method(**resolve_params(params, {**values, "ckpt_every": 1, "precision": "fp32", **extra}, name)).finetune(
        generator, CAPTIONS if text else RandomImages(), ctx)
    assert not distributed.is_sharded(generator.policy.parameters()), "the generator must get its plain policy back"
    return generator.policy.state_dict()


def _worker(rank: int, world: int, port: int, out_dir: str, sharding: str = "ddp") -> None:
    with gloo_rank(rank, world, port):
        for name in RUNS:
            state = _run(name, Path(out_dir) / name, sharding=sharding)
            if rank == 0:
                torch.save(state, Path(out_dir) / f"{name}.pt")
        if sharding == "fsdp":  # cca with null captions; ar-grpo stopped after step 1, then resumed to step 2
            state = _run("cca", Path(out_dir) / "cca-t2i", text=True, sharding=sharding, uncond_ratio=0.5)
            if rank == 0:
                torch.save(state, Path(out_dir) / "cca-t2i.pt")
            resumed = Path(out_dir) / "ar-grpo-resumed"
            _run("ar-grpo", resumed, sharding=sharding, steps=1)
            state = _run("ar-grpo", resumed, sharding=sharding)
            if rank == 0:
                torch.save(state, Path(out_dir) / "ar-grpo-resumed.pt")


def test_two_gloo_ranks_equal_one_rank(tmp_path):
    single = {name: _run(name, tmp_path / "one" / name) for name in RUNS}
    spawn_ranks(_worker, str(tmp_path / "two"))
    initial = tiny_llamagen(dropout=False, class_dropout_prob=0.1).policy.state_dict()
    for name, state in single.items():
        double = torch.load(tmp_path / "two" / f"{name}.pt", weights_only=True)
        assert any(not torch.equal(v, initial[k]) for k, v in state.items()), f"{name} did not train"
        for key, value in state.items():
            torch.testing.assert_close(double[key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")


def test_fsdp_on_two_gloo_ranks_equals_one_rank_and_resumes(tmp_path):
    """Weights sharded over 2 ranks (policy, gradients, AdamW state, and the frozen reference) give the
    1-rank weights of both methods, and of cca on a t2i model with null captions; the checkpoint holds
    the plain policy's keys; an ar-grpo run stopped after step 1 and resumed ends where the
    uninterrupted one does (its KL reference is still the initial model, not the restored one)."""
    single = {name: _run(name, tmp_path / "one" / name) for name in RUNS}
    single_t2i = _run("cca", tmp_path / "one" / "cca-t2i", text=True, uncond_ratio=0.5)
    spawn_ranks(_worker, str(tmp_path / "fsdp"), "fsdp")
    for name, state in single.items():
        sharded = torch.load(tmp_path / "fsdp" / f"{name}.pt", weights_only=True)
        saved = torch.load(tmp_path / "fsdp" / name / CHECKPOINT_NAME, weights_only=True)["modules"]["policy"]
        assert list(saved) == list(state), f"{name}: checkpoint keys are not the plain policy's"
        for key, value in state.items():
            torch.testing.assert_close(sharded[key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
            torch.testing.assert_close(saved[key], value, rtol=1e-5, atol=1e-6, msg=f"{name} checkpoint: {key}")
    sharded_t2i = torch.load(tmp_path / "fsdp" / "cca-t2i.pt", weights_only=True)
    from test_ar_grpo import tiny_t2i

    initial_t2i = tiny_t2i().policy.state_dict()
    assert any(not torch.equal(v, initial_t2i[k]) for k, v in single_t2i.items()), "cca t2i did not train"
    for key, value in single_t2i.items():
        torch.testing.assert_close(sharded_t2i[key], value, rtol=1e-5, atol=1e-6, msg=f"cca t2i: {key}")
    resumed = torch.load(tmp_path / "fsdp" / "ar-grpo-resumed.pt", weights_only=True)
    for key, value in single["ar-grpo"].items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=f"resumed: {key}")


def test_fsdp_refuses_a_null_condition_built_from_a_parameter():
    """Under FSDP a parameter is whole only inside the forward: a null condition computed from one outside
    it is refused (cca's null rows, ar-grpo's guided log-probs); LlamaGen's null class (a label) and null
    caption (a buffer, which FSDP replicates) pass."""
    from test_ar_grpo import tiny_t2i

    check_null_conditions_shardable(tiny_llamagen(class_dropout_prob=0.1), "cca")
    check_null_conditions_shardable(tiny_t2i(), "cca")
    generator = tiny_llamagen(class_dropout_prob=0.1)

    class ParameterNull(type(generator)):
        def null_conditions(self, cond, rows=None):
            return self.policy.cls_embedding.embedding_table.weight[-1:].expand(len(cond), -1)

    generator.__class__ = ParameterNull
    with pytest.raises(UsageError, match=r"sharding=fsdp: generator 'llamagen-b' computes its null condition"):
        check_null_conditions_shardable(generator, "cca")
