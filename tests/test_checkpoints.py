"""vapi_bench.checkpoints: every released layout round-trips; bad files give clear errors."""
import argparse

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vapi_bench.checkpoints import load_checkpoint_file, load_strict
from vapi_bench.errors import CheckpointError


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("table", torch.arange(4.0))


@pytest.fixture()
def state():
    torch.manual_seed(0)
    return Tiny().state_dict()


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


LAYOUTS = {
    "ddp_with_args": lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
                                 "steps": 7, "args": argparse.Namespace(gpt_model="GPT-B", lr=1e-4)},
    "deepspeed_module": lambda sd: {"module": sd},
    "state_dict_entry": lambda sd: {"state_dict": sd, "epoch": 3},
    "raw_fsdp_consolidated": lambda sd: dict(sd),
    "ema_only": lambda sd: {"ema": sd, "steps": 1},
    "ddp_prefixed_keys": lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    "compiled_prefixed_keys": lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_torch_layout_round_trips(tmp_path, state, layout):
    path = tmp_path / "ckpt.pt"
    torch.save(LAYOUTS[layout](state), path)
    loaded = load_checkpoint_file(path)
    assert same(loaded, state)
    load_strict(Tiny(), loaded, "tiny")


def test_safetensors_and_legacy_formats(tmp_path, state):
    save_file(state, str(tmp_path / "w.safetensors"))
    assert same(load_checkpoint_file(tmp_path / "w.safetensors"), state)
    torch.save({"model": state}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert same(load_checkpoint_file(tmp_path / "legacy.pt"), state)


def test_model_is_preferred_over_ema_unless_asked(tmp_path, state):
    ema = {k: v + 1 for k, v in state.items()}
    torch.save({"model": state, "ema": ema, "args": argparse.Namespace(ema=True)}, tmp_path / "c.pt")
    assert same(load_checkpoint_file(tmp_path / "c.pt"), state)
    assert same(load_checkpoint_file(tmp_path / "c.pt", prefer_ema=True), ema)
    torch.save({"model": state}, tmp_path / "no_ema.pt")
    with pytest.raises(CheckpointError, match="no 'ema' entry"):
        load_checkpoint_file(tmp_path / "no_ema.pt", prefer_ema=True)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file_names_the_path(tmp_path, state, suffix):
    full = tmp_path / f"full{suffix}"
    if suffix == ".pt":
        torch.save({"model": state}, full)
    else:
        save_file(state, str(full))
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_checkpoint_file(cut)
    assert str(cut) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_file(tmp_path / "nope.pt")


class _Payload:
    """Unpickling this would create a marker file: it must never run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_arbitrary_objects_are_never_unpickled(tmp_path, state):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": state, "x": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not unpickled"):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_file_without_weights_lists_its_entries(tmp_path):
    torch.save({"optimizer": {"state": {}}, "steps": 3}, tmp_path / "opt.pt")
    with pytest.raises(CheckpointError, match=r"no model weights.*'optimizer', 'steps'"):
        load_checkpoint_file(tmp_path / "opt.pt")


def test_load_strict_lists_missing_unexpected_and_misshaped(state):
    bad = dict(state)
    del bad["table"]
    bad["lin.weight"] = torch.zeros(5, 3)
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_strict(Tiny(), bad, "tiny model (x.pt)")
    text = str(info.value)
    assert "tiny model (x.pt)" in text
    assert "missing:\n    table: (4,)" in text
    assert "unexpected:\n    extra.weight: (1,)" in text
    assert "lin.weight: checkpoint (5, 3) vs model (2, 3)" in text
    assert "1 missing, 1 unexpected, 1 mis-shaped" in text


def test_load_strict_tolerates_rope_and_kv_cache_extras(state):
    extra = dict(state)
    extra["freqs_cis"] = torch.zeros(3, 2, 2)
    extra["layers.0.attention.kv_cache.k_cache"] = torch.zeros(1)
    extra["layers.0.attention.kv_cache.v_cache"] = torch.zeros(1)
    model = Tiny()
    ignored = load_strict(model, extra, "tiny")
    assert ignored == ["freqs_cis", "layers.0.attention.kv_cache.k_cache", "layers.0.attention.kv_cache.v_cache"]
    assert same(model.state_dict(), state)


def test_load_strict_assign_materialises_meta_module(state):
    with torch.device("meta"):
        model = Tiny()
    load_strict(model, state, "tiny", assign=True)
    assert model.lin.weight.device.type == "cpu" and torch.equal(model.lin.weight, state["lin.weight"])
    assert model.lin.weight.requires_grad
