"""The training engine: optimiser groups, data order, resume, divergence, 2-rank DDP parity."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers_toy_generator import tiny_llamagen
from vapi_bench.distributed import DistInfo
from vapi_bench.errors import CheckpointError, TrainingDiverged, UsageError
from vapi_bench.interfaces import StageContext
from vapi_bench.training.engine import (CHECKPOINT_NAME, MetricMeter, TrainConfig, adamw_param_groups, build_adamw,
                                        rank_slice, step_indices, train)


class _Net(nn.Module):
    """Small regression net with dropout (so the step RNG matters) and a norm layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1, self.norm, self.drop, self.lin2 = nn.Linear(4, 16), nn.LayerNorm(16), nn.Dropout(0.3), nn.Linear(16, 1)

    def forward(self, x):
        return self.lin2(self.drop(self.norm(self.lin1(x))))


class _Points(torch.utils.data.Dataset):
    def __init__(self, n=20):
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=gen)
        self.y = torch.randint(0, 3, (n,), generator=gen).tolist()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _run(out_dir: Path, steps=5, crash_at=None, nan_at=None, lr=1e-2, log=None, seed=3):
    torch.manual_seed(0)
    net = _Net()
    opt = build_adamw(net.named_parameters(), lr=lr, weight_decay=0.1)

    def step_fn(batch, meter):
        if batch.step == crash_at:
            raise KeyboardInterrupt
        net.train()
        for rows in (slice(0, 2), slice(2, 4)):
            pred = net(batch.images[rows]).squeeze(-1)
            loss = F.mse_loss(pred, torch.tensor(batch.conditions[rows], dtype=torch.float32))
            if batch.step == nan_at:
                loss = loss * float("nan")
            meter.add("mse", loss)
            yield loss * 0.5

    ctx = StageContext(out_dir=out_dir, device=torch.device("cpu"), seed=seed, log=log or (lambda r: None))
    summary = train(modules={"net": net}, optimizer=opt, dataset=_Points(), step_fn=step_fn, ctx=ctx,
                    config=TrainConfig(steps=steps, batch_size=4, seed=seed, ckpt_every=2, fingerprint={"lr": lr}))
    return net, summary


def test_adamw_groups_exclude_norm_parameters_from_decay():
    policy = tiny_llamagen().policy
    groups = adamw_param_groups(policy.named_parameters(), weight_decay=1e-4)
    names = {id(p): n for n, p in policy.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    undecayed = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert undecayed == {n for n, _ in policy.named_parameters() if "norm" in n}
    assert "norm.weight" in undecayed and "layers.0.attention_norm.weight" in undecayed
    assert decayed == {n for n, _ in policy.named_parameters() if "norm" not in n}
    with pytest.raises(UsageError, match="Nothing to train"):
        adamw_param_groups(nn.Linear(2, 2).requires_grad_(False).named_parameters(), 0.1)


def test_data_order_is_a_function_of_seed_and_step():
    assert step_indices(0, 5, 100, 8) == step_indices(0, 5, 100, 8)
    assert step_indices(0, 5, 100, 8) != step_indices(0, 6, 100, 8)
    assert step_indices(0, 5, 100, 8) != step_indices(1, 5, 100, 8)
    assert len(set(step_indices(0, 0, 100, 100))) == 100  # no repeats within a step
    assert len(step_indices(0, 0, 3, 8)) == 8  # a tiny dataset is cycled
    shares = [rank_slice(8, DistInfo(r, 4)) for r in range(4)]
    assert [list(range(8))[s] for s in shares] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(UsageError, match="divisible"):
        rank_slice(6, DistInfo(0, 4))


def test_metric_meter_weighted_mean():
    meter = MetricMeter()
    meter.add("a", 1.0, weight=1)
    meter.add("a", torch.tensor([4.0, 4.0]), weight=3)
    assert meter.reduced() == {"a": pytest.approx(13 / 4)}


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    full, _ = _run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "crashed", crash_at=3)  # checkpoint written after step 2
    assert torch.load(tmp_path / "crashed" / CHECKPOINT_NAME, weights_only=True)["next_step"] == 2
    records = []
    resumed, summary = _run(tmp_path / "crashed", log=records.append)
    assert summary["resumed_from"] == 2 and [r["step"] for r in records] == [3, 4, 5]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    again, summary = _run(tmp_path / "crashed")  # a finished run resumes to a no-op
    assert summary["resumed_from"] == 5


def test_resume_with_different_settings_is_refused(tmp_path):
    _run(tmp_path, steps=2)
    with pytest.raises(CheckpointError, match="lr"):
        _run(tmp_path, steps=4, lr=5e-3)
    with pytest.raises(CheckpointError, match="data_seed"):  # the data order would differ
        _run(tmp_path, steps=4, seed=4)


def test_nan_loss_stops_with_the_last_good_checkpoint_kept(tmp_path):
    reference, _ = _run(tmp_path / "ok", steps=2)
    with pytest.raises(TrainingDiverged, match=r"step 3.*NaN.*last good checkpoint") as info:
        _run(tmp_path / "bad", nan_at=2)
    assert str(tmp_path / "bad" / CHECKPOINT_NAME) in str(info.value)
    state = torch.load(tmp_path / "bad" / CHECKPOINT_NAME, weights_only=True)
    assert state["next_step"] == 2
    for name, value in reference.state_dict().items():
        assert torch.equal(state["modules"]["net"][name], value), name


def test_a_step_whose_loss_misses_the_trained_module_is_a_clear_error(tmp_path):
    """E.g. FSDP trained a copy the generator never calls: stop at once instead of 'training' nothing."""
    net, other = _Net(), _Net()
    opt = build_adamw(net.named_parameters(), lr=1e-2, weight_decay=0.0)

    def step_fn(batch, meter):
        yield other(batch.images).pow(2).mean()

    ctx = StageContext(out_dir=tmp_path, device=torch.device("cpu"), seed=0)
    with pytest.raises(UsageError, match="no gradient reached"):
        train(modules={"net": net}, optimizer=opt, dataset=_Points(), step_fn=step_fn, ctx=ctx,
              config=TrainConfig(steps=2, batch_size=4, seed=0, ckpt_every=1))
