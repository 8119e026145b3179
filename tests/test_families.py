"""Family defaults declared by plugins (hook register_families), and the up-front error for a
family nobody declared (issue 14 item 1)."""
from types import SimpleNamespace

import pytest

from vapi_bench.errors import UsageError
from vapi_bench.params import resolve_params
from vapi_bench.plugins.va_pi.method import VAPI_PARAMS
from vapi_bench.plugins.va_pi.recipes import FAMILY_RECIPES, resolve
from vapi_bench.registry import build_registry
from vapi_bench.runner import RunRequest, Runner


def test_builtin_and_third_party_families_register_through_the_same_hook():
    reg = build_registry()
    for name, recipe in FAMILY_RECIPES.items():
        family = reg.get("families", name)
        assert family.provider == "va_pi" and dict(family.defaults) == recipe
    gru = reg.get("families", "tiny-gru")
    assert gru.provider == "gru" and gru.defaults["perceptual"] == "shapes-perceptual"


def test_a_declared_family_fills_the_method_defaults():
    values = resolve_params(VAPI_PARAMS, {"steps": "3"}, "va-pi")
    gen = SimpleNamespace(name="tiny-gru", family="tiny-gru", conditioning="class", default_dataset="shapes-c2i")
    out = resolve(values, gen, SimpleNamespace(precision="fp32"), "method 'va-pi'")
    assert out["recipe"] == "tiny-gru" and out["lr"] == 3e-3 and out["steps"] == 3  # explicit wins
    assert out["perceptual"] == "shapes-perceptual" and out["group_size"] == 4


def test_an_undeclared_family_stops_the_run_before_any_stage(tmp_path):
    """fixture-palette's family 'fixture' has no declared defaults: with sft in the run, the first
    request (`none`) already fails, naming the keys to set and the known families."""
    req = RunRequest(model="fixture-palette", method="none", task="fixture-colour", methods=("none", "sft"),
                     runs_dir=tmp_path / "runs", results_dir=tmp_path / "res", quiet=True)
    with pytest.raises(UsageError) as info:
        Runner(req).run()
    text = str(info.value)
    assert "family 'fixture'" in text and "method 'sft'" in text
    assert "--set sft.lr=..." in text and "--set sft.batch_size=..." in text
    assert "Known families:" in text and "shapes-c2i" in text and "tiny-gru" in text
    assert not (tmp_path / "runs").exists() and not (tmp_path / "res").exists()


def test_setting_every_needed_key_is_enough_without_a_family(tmp_path):
    keys = dict(lr="0.1", weight_decay="0", steps="1", batch_size="4", micro_batch="4", ckpt_every="1")
    req = RunRequest(model="fixture-palette", method="sft", task="fixture-colour", quiet=True,
                     overrides={f"sft.{k}": v for k, v in keys.items()}, runs_dir=tmp_path / "runs")
    spec = Runner(req)._resolve()[3]
    assert spec.method_params["lr"] == 0.1
