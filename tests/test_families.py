"""The recipe lookup by (family, method): model plugins declare their families, method plugins
their own recipes, the runner resolves every method of a run once before any stage, and a key
nothing fills is ONE error naming every missing key of every method (issue 22)."""
import os
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest

from vapi_bench.errors import UsageError
from vapi_bench.params import resolve_params
from vapi_bench.plugins.peers.recipes import AR_GRPO_RECIPES
from vapi_bench.plugins.va_pi.method import VAPI_PARAMS
from vapi_bench.registry import build_registry, get_registry
from vapi_bench.runner import RunRequest, Runner
from vapi_bench.training.recipes import ENGINE_DEFAULTS, recipe_defaults, resolve_run_recipes

CLASS_GEN = dict(conditioning="class", default_dataset="shapes-c2i")


def _gen(family, **kw):
    return SimpleNamespace(name=family, family=family, **{**CLASS_GEN, **kw})


def test_model_plugins_declare_their_families_and_method_plugins_their_recipes():
    reg = build_registry()
    providers = {name: reg.get("families", name).provider for name in reg.names("families")}
    assert providers["llamagen-c2i"] == providers["llamagen-t2i"] == "llamagen"
    assert providers["janus-pro"] == "janus_pro"
    assert {providers[f] for f in ("shapes-c2i", "shapes-t2i", "shapes-c2i-small", "shapes-c2i-small-ls",
                                   "shapes-t2i-ls")} == {"shapes"}
    assert providers["tiny-gru"] == "gru"
    recipes = {r.name: r.provider for r in reg.list("recipes")}
    assert recipes["va-pi@*"] == recipes["va-pi@janus-pro"] == "va_pi"
    assert recipes["ar-grpo@llamagen-c2i"] == recipes["cca@shapes-c2i"] == "peers"
    assert recipes["ste@*"] == "baselines"


def test_the_lookup_order_is_user_then_method_family_then_family_then_method_then_engine():
    values, source = recipe_defaults("va-pi", _gen("llamagen-c2i"))
    assert source == "llamagen-c2i"
    assert (values["lr"], values["steps"], values["batch_size"], values["perceptual"]) == (1e-6, 100, 128, "lpips-vgg")
    assert (values["xi"], values["group_size"], values["beta"], values["adv_clip"]) == (0.0, 8, 0.1, 5.0)
    assert values["micro_batch"] == ENGINE_DEFAULTS["micro_batch"] == 1  # an engine knob LlamaGen leaves alone
    ar_grpo, _ = recipe_defaults("ar-grpo", _gen("llamagen-c2i"))
    assert (ar_grpo["lr"], ar_grpo["beta"], ar_grpo["ckpt_every"]) == (1e-5, 0.1, 100)  # its own table wins
    shapes, _ = recipe_defaults("ar-grpo", _gen("shapes-c2i"))
    assert shapes["lr"] == recipe_defaults("sft", _gen("shapes-c2i"))[0]["lr"] == 3e-6  # the family's lr rule
    gru, source = recipe_defaults("va-pi", _gen("tiny-gru"))
    assert source == "tiny-gru" and gru["group_size"] == 4  # the family's value beats VA-π's method-wide one


def test_a_declared_family_fills_the_values_and_an_explicit_value_wins():
    values = resolve_params(VAPI_PARAMS, {"steps": "3"}, "va-pi")
    (out, source), = resolve_run_recipes({"va-pi": (VAPI_PARAMS, values)}, _gen("tiny-gru"), precision="fp32").values()
    assert source == "tiny-gru" and out["lr"] == 3e-3 and out["steps"] == 3
    assert out["perceptual"] == "shapes-perceptual" and out["precision"] == "fp32" and out["dataset"] == "shapes-c2i"


def test_an_undeclared_family_is_one_error_naming_every_key_of_every_method(tmp_path):
    """fixture-palette's family 'fixture' is declared nowhere: with sft and va-pi in the run, the
    first request (`none`) already fails, once, naming both methods' keys with an example."""
    req = RunRequest(model="fixture-palette", method="none", task="fixture-colour", methods=("none", "sft", "va-pi"),
                     runs_dir=tmp_path / "runs", results_dir=tmp_path / "res", quiet=True)
    with pytest.raises(UsageError) as info:
        Runner(req).run()
    text = str(info.value)
    assert "family 'fixture'" in text
    assert "sft: lr, weight_decay, steps, batch_size;" in text  # engine knobs have defaults: not listed
    assert "va-pi: lr, weight_decay, steps, batch_size, perceptual" in text
    assert "micro_batch" not in text.split("For example")[0] and "beta" not in text.split("For example")[0]
    assert "For example, family 'llamagen-c2i' uses: --set lr=1e-06 --set weight_decay=0.0001" in text
    assert "--set perceptual=lpips-vgg --set xi=0.0." in text
    assert "Known families:" in text and "tiny-gru" in text
    assert not (tmp_path / "runs").exists() and not (tmp_path / "res").exists()


def test_setting_every_needed_key_is_enough_without_a_family(tmp_path):
    keys = dict(lr="0.1", weight_decay="0", steps="1", batch_size="4")
    req = RunRequest(model="fixture-palette", method="sft", task="fixture-colour", quiet=True,
                     overrides={f"sft.{k}": v for k, v in keys.items()}, runs_dir=tmp_path / "runs")
    runner = Runner(req)
    method, spec = runner._resolve()[1:4:2]
    assert spec.method_params["lr"] == 0.1 and spec.method_params["micro_batch"] is None  # the key keeps None
    assert method.params["micro_batch"] == 1 and method.params["ckpt_every"] == 25  # engine defaults
    assert runner.recipe_source == "set explicitly"


def test_a_peer_without_a_recipe_for_the_family_fails_before_any_stage(tmp_path):
    """`-a sft -a ar-grpo` on the GRU family (declared, but no AR-GRPO recipe): the first request,
    sft's, stops before training, naming AR-GRPO's keys."""
    assert "tiny-gru" not in AR_GRPO_RECIPES
    req = RunRequest(model="tiny-gru", method="sft", task="shapes-fid", methods=("sft", "ar-grpo"), quiet=True,
                     overrides={"model.hidden": "16"}, runs_dir=tmp_path / "runs", results_dir=tmp_path / "res")
    with pytest.raises(UsageError, match=r"ar-grpo: rollout_cfg, rewards"):
        Runner(req).run()
    assert not (tmp_path / "runs").exists()


def test_the_gru_plugin_without_its_family_gets_one_error_naming_every_key(tmp_path, monkeypatch):
    registry = build_registry()
    del registry.entries["families"]["tiny-gru"]
    req = RunRequest(model="tiny-gru", method="none", task="shapes-fid", methods=("none", "sft", "va-pi"), quiet=True,
                     overrides={"model.hidden": "16"}, runs_dir=tmp_path / "runs", results_dir=tmp_path / "res")
    with pytest.raises(UsageError) as info:
        Runner(req, registry=registry).run()
    text = str(info.value)
    assert text.count("family 'tiny-gru'") == 1
    assert "sft: lr, weight_decay, steps, batch_size; va-pi: lr, weight_decay, steps, batch_size, perceptual, xi" in text


def test_a_range_error_names_the_method_before_any_stage(tmp_path):
    """Declared ranges (Param minimum=...) apply to --set values and to a recipe's own values."""
    req = RunRequest(model="shapes-c2i", method="sft", task="shapes-fid", methods=("sft", "va-pi"), quiet=True,
                     overrides={"va-pi.group_size": "1"}, runs_dir=tmp_path / "runs")
    with pytest.raises(UsageError, match="method 'va-pi': group_size='1' is out of range: group_size must be >= 2"):
        Runner(req)._resolve()
    registry = build_registry()
    registry.entries["families"]["tiny-gru"] = replace(registry.get("families", "tiny-gru"),
                                                       defaults={"lr": -1.0, "steps": 1})
    with pytest.raises(UsageError, match=r"method 'sft' \(recipe of 'tiny-gru'\): lr=-1.0 is out of range: lr must be > 0"):
        resolve_run_recipes({"sft": (registry.get("methods", "sft").params, {k: None for k in ("lr", "steps")})},
                            _gen("tiny-gru"), precision="fp32", registry=registry)


def test_finetune_cache_keys_are_those_of_the_committed_runs():
    """The move of the training kit into the core must not change what identifies a fine-tune:
    the method's declared parameters (None where the recipe decides) are hashed, not the recipe.
    The keys below were computed by the code before the move (commit 8f06ff2) for a stand-in model
    fingerprint; a change here invalidates every cached stage and must say so. CCA's changed on
    purpose with its official accumulation (issue 23: the keyed `accumulation` parameter; it was
    374394ca059354f4), so no CCA run computed the old way is reused."""
    from vapi_bench.params import keyed_params
    from vapi_bench.spec import RunSpec

    got = {}
    for method in PINNED_KEYS:
        entry = get_registry().get("methods", method)
        values = keyed_params(entry.params, resolve_params(entry.params, {}, method))
        spec = RunSpec(model="shapes-c2i", model_params={}, checkpoint=None, model_fingerprint="pinned",
                       method=method, method_params=values, dataset="shapes-c2i", dataset_params={}, task="shapes-fid",
                       task_params={}, sampling_overrides={}, seed=0, limit=None, precision="fp32",
                       method_identity=False, extra={})
        got[method] = spec.finetune_key()
    assert got == PINNED_KEYS


PINNED_KEYS = {"va-pi": "cd728d98ff51f0d4", "sft": "018ddd160e68f646", "ste": "b4f8f51f0b7fb864",
               "post-train-tokenizer": "0226caa84f6d1a04", "ar-grpo": "4b29e22b987ee8c1", "cca": "aff7f6698e7693f8"}


def test_sft_runs_without_the_va_pi_plugin(tmp_path):
    """VAPI_BENCH_PLUGINS without va_pi: the shapes families come from the shapes plugin, so SFT
    trains (issue 22: it used to stop with 'no installed plugin declares method defaults')."""
    env = {**os.environ, "VAPI_BENCH_PLUGINS": "llamagen,shapes,baselines,scorers,datasets,shapes_tasks",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "vapi_bench.cli", "finetune", "-m", "shapes-c2i", "-a", "sft", "--set", "steps=1",
         "--set", "batch_size=4", "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--precision", "fp32"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list((tmp_path / "runs" / "finetune").glob("*/finetune.json"))
