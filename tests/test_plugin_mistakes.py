"""Plugin mistakes get errors that say what to fix, and the rest of the plugin still loads
(issue 14 item 6); the core hashes --checkpoint itself (item 5)."""
import hashlib

import torch

import vapi_bench
from vapi_bench import Entry, Param, hookimpl
from vapi_bench.registry import build_registry
from vapi_bench.runner import RunRequest, Runner


class _Typo:
    @hookimpl
    def register_task(self, register):  # should be register_tasks
        raise AssertionError("a hook that does not exist is never called")

    @hookimpl
    def register_generators(self, register):
        register(Entry("typo-model", factory=lambda checkpoint, device: None, summary="still loads"))


class _BadFactory:
    @hookimpl
    def register_generators(self, register):
        register(Entry("no-device", factory=lambda checkpoint, width: None, summary="forgot device",
                       params=(Param("width", int, 8, "w"),)))
        register(Entry("good-sibling", factory=lambda checkpoint, device, width: None, summary="fine",
                       params=(Param("width", int, 8, "w"),)))

    @hookimpl
    def register_methods(self, register):
        register(Entry("extra-arg", factory=lambda lr, momentum: None, summary="needs an undeclared param",
                       params=(Param("lr", float, 0.1, "lr"),)))


def test_a_misspelt_hook_gets_did_you_mean_and_the_rest_loads():
    reg = build_registry(extra_plugins=[("typo", _Typo())])
    assert reg.get("generators", "typo-model").provider == "typo"
    (failure,) = [f for f in reg.failures if f.plugin == "typo"]
    assert "'register_task' is not a vapi-bench hook" in failure.error
    assert "did you mean register_tasks?" in failure.error
    assert failure.describe().startswith("plugin 'typo': ")


def test_a_factory_with_the_wrong_signature_is_named_with_the_expected_one():
    reg = build_registry(extra_plugins=[("bad", _BadFactory())])
    assert reg.get("generators", "good-sibling").provider == "bad"
    errors = [f.error for f in reg.failures if f.plugin == "bad"]
    assert any("plugin 'bad': the model 'no-device' factory(checkpoint, width)" in e
               and "factory(checkpoint=..., device=..., width=...)" in e for e in errors)
    assert any("method 'extra-arg'" in e and "momentum" in e for e in errors)
    assert "no-device" not in reg.names("generators")


def test_the_core_hashes_the_checkpoint_for_the_cache_key(tmp_path):
    """The GRU plugin records no digest of its own: a changed file at the same path still changes
    the model fingerprint, because the runner hashes --checkpoint."""
    gru = tmp_path / "gru.safetensors"
    generator = vapi_bench.load_generator("tiny-gru", hidden=8)
    generator.save_finetuned(tmp_path)

    def spec():
        req = RunRequest(model="tiny-gru", method="none", task="shapes-fid", checkpoint=str(gru),
                         overrides={"hidden": "8"}, runs_dir=tmp_path / "runs", quiet=True)
        return Runner(req)._resolve()[3]

    first = spec()
    assert first.extra["checkpoint_sha256"] == hashlib.sha256(gru.read_bytes()).hexdigest()
    with torch.no_grad():
        for p in generator.policy.parameters():
            p.add_(0.5)
    generator.save_finetuned(tmp_path)  # same path, new weights
    second = spec()
    assert second.extra["checkpoint_sha256"] != first.extra["checkpoint_sha256"]
    assert second.finetune_key() != first.finetune_key()
