"""The conformance kit (vapi_bench.testing) on every built-in generator, the fixture and GRU
plugins (tiny random Janus-Pro: tests/test_janus_pro.py), and on deliberately broken generators; the run-time check of sample() output; optional
capabilities (issue 14 items 4 and 5)."""
import copy

import pytest
import torch

import vapi_bench
from vapi_bench.errors import UsageError, VapiError
from vapi_bench.interfaces import MissingCapability, SampleItem, has_capability
from vapi_bench.sampling import sample_to_dir
from vapi_bench.testing import ConformanceError, check_generator, check_method, check_scorer, check_task
from helpers_toy_generator import tiny_llamagen


@pytest.mark.parametrize("make", [
    pytest.param(lambda: tiny_llamagen(), id="llamagen-tiny-random"),
    pytest.param(lambda: vapi_bench.load_generator("shapes-c2i"), id="shapes-c2i"),
    pytest.param(lambda: vapi_bench.load_generator("fixture-palette"), id="fixture-palette"),
    pytest.param(lambda: vapi_bench.load_generator("tiny-gru", hidden=16), id="tiny-gru"),
])
def test_builtin_and_plugin_generators_pass_the_kit(make):
    check_generator(make())


def _palette():
    return vapi_bench.load_generator("fixture-palette")


class _Int32(type(_palette())):
    def sample(self, conds, *, seeds, recipe=vapi_bench.SamplingRecipe()):
        return super().sample(conds, seeds=seeds, recipe=recipe).int()


class _GlobalRng(type(_palette())):
    """Draws from the global RNG instead of the per-row seeds."""

    def sample(self, conds, *, seeds, recipe=vapi_bench.SamplingRecipe()):
        probs = torch.softmax(self.policy(self.prepare_conditions(conds)), -1)
        return torch.multinomial(probs.flatten(0, 1), 1).view(len(conds), -1)


class _Shifted(type(_palette())):
    """Teacher-forced logits one position off the sampler's."""

    def teacher_forced_logits(self, tokens, cond, context=None):
        return super().teacher_forced_logits(tokens, cond, context).roll(1, dims=1)


class _NoLoadCheck(type(_palette())):
    def load_finetuned(self, directory):
        pass


@pytest.mark.parametrize("broken,promise", [
    (_Int32, "dtype torch.int32"),
    (_GlobalRng, "same tokens in a batch"),
    (_Shifted, "not aligned with sample"),
    (_NoLoadCheck, "load_finetuned() must restore"),
])
def test_the_kit_names_the_plugin_and_the_broken_promise(broken, promise):
    generator = _palette()
    generator.__class__ = broken
    with pytest.raises(ConformanceError) as info:
        check_generator(generator, plugin="fixture")
    assert "generator 'fixture-palette' (plugin 'fixture')" in str(info.value) and promise in str(info.value)


def test_sampling_rejects_tokens_outside_the_contract_naming_the_generator(tmp_path):
    generator = _palette()
    generator.__class__ = _Int32
    task = vapi_bench.load_task("fixture-colour", per_class=1)
    items = [SampleItem(i, i) for i in range(2)]
    with pytest.raises(VapiError, match=r"Generator 'fixture-palette' broke the sample\(\) contract: it returned dtype torch.int32"):
        sample_to_dir(generator, task, items, vapi_bench.SamplingRecipe(), 0, tmp_path)


def test_method_task_and_scorer_kits():
    data = vapi_bench.load_dataset("fixture-palette-data", n=16)
    summary = check_method(vapi_bench.load_method("fixture-sft", steps=2), _palette, data, plugin="fixture")
    assert summary["steps"] == 2
    check_method(vapi_bench.load_method("none"), _palette, data, plugin="baselines")
    result = check_task(vapi_bench.load_task("fixture-colour", per_class=1), _palette(), plugin="fixture")
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    check_scorer(vapi_bench.load_scorer("shapes-perceptual"), plugin="shapes")

    class Frozen(type(vapi_bench.load_method("fixture-sft", steps=1))):
        def finetune(self, generator, dataset, ctx):
            return {}

    with pytest.raises(ConformanceError, match="method .*changed no weight"):
        check_method(Frozen(steps=1, lr=1.0), _palette, data, plugin="fixture")


def test_a_scorer_that_prefers_other_images_fails():
    class Backwards(vapi_bench.Scorer):
        def forward(self, pred, target):
            return -(pred - target).pow(2).flatten(1).mean(1)

    with pytest.raises(ConformanceError, match="no farther from itself"):
        check_scorer(Backwards(), plugin="mine", name="backwards")


def test_optional_capabilities_are_asked_for_by_the_methods_that_need_them(tmp_path):
    gru = vapi_bench.load_generator("tiny-gru", hidden=8)
    assert not any(has_capability(gru, c) for c in ("decode_embeddings", "codebook", "tokenizer_decoder"))
    assert has_capability(tiny_llamagen(), "decode_embeddings")
    with pytest.raises(MissingCapability, match=r"Generator 'tiny-gru' does not provide `codebook`, which method 'ste'"):
        vapi_bench.load_method("ste").finetune(gru, None, None)
    with pytest.raises(UsageError, match="`tokenizer_decoder`, which method 'post-train-tokenizer'"):
        vapi_bench.load_method("post-train-tokenizer").finetune(gru, None, None)
    with pytest.raises(UsageError, match="does not provide `decode_embeddings`"):
        gru.decode_embeddings(torch.zeros(1, 64, 8))
