"""The plugin conformance kit, in the spirit of scikit-learn's `check_estimator`.

A plugin's own test-suite calls one function per object and gets a failure that names the plugin
and the broken promise, instead of a shape error deep inside another model:

    from vapi_bench.testing import check_generator
    def test_my_model_keeps_the_contract():
        check_generator(vapi_bench.load_generator("my-model", hidden=8))

`check_generator`, `check_method`, `check_task` and `check_scorer` raise `ConformanceError` (an
AssertionError, so pytest shows it as a test failure). Each check runs on tiny inputs: a few
conditions, one fine-tuning run; give them the smallest configuration of your plugin.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .errors import VapiError
from .interfaces import (Condition, Generator, Method, SampleItem, SamplingRecipe, Scorer, StageContext, Task,
                         TaskResult, check_sampled_tokens, has_capability)

#: the seeds the kit samples with (distinct, arbitrary)
SEEDS = (11, 12, 13, 14)
#: prompts for text-conditioned generators when the caller gives none
PROMPTS = ("a red circle", "two blue squares", "a green triangle above a yellow star", "a photo of a cat")
#: the teacher-forced argmax must equal a greedy sample wherever the top two logits differ by more
GREEDY_MARGIN = 1e-3


class ConformanceError(AssertionError):
    """A plugin object breaks the contract of interfaces.py; the message names the plugin."""


def _label(kind: str, obj: Any, plugin: str | None) -> str:
    name = getattr(obj, "name", "") or type(obj).__name__
    provider = plugin or type(obj).__module__.split(".")[0]
    return f"{kind} '{name}' (plugin '{provider}')"


def _require(ok: bool, who: str, message: str) -> None:
    if not ok:
        raise ConformanceError(f"{who}: {message}")


# ---- generators ------------------------------------------------------------------------------
def check_generator(generator: Generator, *, plugin: str | None = None,
                    conditions: Sequence[Condition] | None = None) -> None:
    """Check every promise of the Generator contract on `generator` (tiny inputs, CPU or CUDA).

    Facts, sample() output (int64 [B, T] in [0, V)), per-row seeding (the first and the last row of
    a batch of 4 equal the same rows sampled alone, under another global RNG state; other seeds give
    other tokens), determinism, sample() running in eval mode and restoring the policy's
    mode, decode/encode shapes, teacher-forced logits aligned with greedy cached sampling,
    gradients in train mode, the save/load round trip, and the optional capabilities it provides.
    """
    who = _label("generator", generator, plugin)
    conds = list(conditions) if conditions is not None else _default_conditions(generator, who)
    seeds = list(SEEDS[: len(conds)])
    _check_facts(generator, who)
    policy = generator.policy
    _require(isinstance(policy, nn.Module) and any(True for _ in policy.parameters()), who,
             "`policy` must be an nn.Module with parameters (what methods train).")
    policy.eval()
    tokens = _check_sampling(generator, who, conds, seeds)
    _check_tokenizer(generator, who, tokens)
    _check_teacher_forcing(generator, who, conds, seeds)
    _check_train_mode(generator, who, conds, seeds, tokens)
    _check_round_trip(generator, who, conds, seeds, tokens)
    _check_optional(generator, who, tokens)
    policy.eval()


def _default_conditions(generator: Generator, who: str) -> list[Condition]:
    if generator.conditioning == "text":
        return list(PROMPTS)
    _require(generator.num_classes > 0, who, "a class-conditional generator needs num_classes > 0.")
    return [i % generator.num_classes for i in range(4)]


def _check_facts(generator: Generator, who: str) -> None:
    _require(generator.conditioning in ("class", "text"), who,
             f"conditioning must be 'class' or 'text', got {generator.conditioning!r}.")
    for fact in ("image_size", "num_tokens", "codebook_size"):
        value = getattr(generator, fact, None)
        _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, who,
                 f"`{fact}` must be a positive int, got {value!r}.")
    _require(isinstance(generator.default_recipe, SamplingRecipe), who, "`default_recipe` must be a SamplingRecipe.")
    _require(isinstance(generator.describe(), dict), who, "describe() must return a dict (it feeds the cache key).")


def _sample(generator: Generator, conds: Sequence[Condition], seeds: Sequence[int], recipe: SamplingRecipe,
            who: str) -> torch.Tensor:
    with torch.no_grad():
        tokens = generator.sample(list(conds), seeds=list(seeds), recipe=recipe)
    try:
        check_sampled_tokens(generator, tokens, len(conds))
    except VapiError as exc:
        raise ConformanceError(f"{who}: {exc}") from None
    return tokens.cpu()


def _check_sampling(generator: Generator, who: str, conds: list[Condition], seeds: list[int]) -> torch.Tensor:
    recipe = generator.default_recipe
    torch.manual_seed(1)
    batch = _sample(generator, conds, seeds, recipe, who)
    torch.manual_seed(2)  # the global RNG must not matter: only seeds[i] drives row i
    for row in sorted({0, len(conds) - 1}):  # the first and the last row, each alone
        alone = _sample(generator, [conds[row]], [seeds[row]], recipe, who)
        _require(torch.equal(batch[row : row + 1], alone), who,
                 f"sample() must give row {row} the same tokens in a batch of {len(conds)} and alone (row i's "
                 f"randomness comes only from seeds[i], never from its batch, its position or the global RNG).")
    other = _sample(generator, conds, [s + 1000 for s in seeds], recipe, who)
    _require(not torch.equal(batch, other), who, "sample() ignores its seeds (different seeds gave identical tokens).")
    return batch


def _check_tokenizer(generator: Generator, who: str, tokens: torch.Tensor) -> None:
    with torch.no_grad():
        images = generator.decode(tokens.to(generator.device))
    shape = (len(tokens), 3, generator.image_size, generator.image_size)
    _require(isinstance(images, torch.Tensor) and images.is_floating_point() and tuple(images.shape) == shape, who,
             f"decode() must return float images {list(shape)}, got "
             f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}.")
    _require(bool(torch.isfinite(images).all()), who, "decode() returned non-finite pixels.")
    with torch.no_grad():
        encoded = generator.encode(images.clamp(-1, 1))
    try:
        check_sampled_tokens(generator, encoded, len(tokens))
    except VapiError as exc:
        raise ConformanceError(f"{who}: encode() must return what sample() does: {exc}") from None


def _check_teacher_forcing(generator: Generator, who: str, conds: list[Condition], seeds: list[int]) -> None:
    """Greedy sampling (top_k=1, no CFG) picks each token's argmax from the cached logits, so the
    teacher-forced logits on those very tokens must have the same argmax at every position."""
    greedy = _sample(generator, conds, seeds, SamplingRecipe(cfg_scale=1.0, temperature=1e-4, top_k=1), who)
    greedy = greedy.to(generator.device)
    with torch.no_grad():
        logits = generator.teacher_forced_logits(greedy, generator.prepare_conditions(conds)).float()
    shape = (len(conds), generator.num_tokens, generator.codebook_size)
    _require(tuple(logits.shape) == shape, who,
             f"teacher_forced_logits() must return [B, T, V] = {list(shape)}, got {tuple(logits.shape)}.")
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > GREEDY_MARGIN
    agree = logits.argmax(-1) == greedy
    wrong = (~agree & clear).nonzero()
    _require(len(wrong) == 0, who,
             f"teacher_forced_logits() is not aligned with sample(): at (row, position) {wrong[0].tolist() if len(wrong) else ''} "
             f"the greedy sample's token is not the teacher-forced argmax ({len(wrong)} positions). Position t must "
             f"predict tokens[:, t] from the condition and tokens[:, :t].")
    again = generator.teacher_forced_logits(greedy, generator.prepare_conditions(conds))
    _require(torch.equal(logits, again.float()), who, "teacher_forced_logits() is not deterministic in eval mode.")


def _check_train_mode(generator: Generator, who: str, conds: list[Condition], seeds: list[int],
                      tokens: torch.Tensor) -> None:
    policy = generator.policy
    policy.train()
    in_train = _sample(generator, conds, seeds, generator.default_recipe, who)
    _require(policy.training, who, "sample() must restore the policy's train/eval mode.")
    _require(torch.equal(in_train, tokens), who,
             "sample() must sample in eval mode (no dropout, no label dropout) whatever the policy's mode.")
    policy.zero_grad(set_to_none=True)
    logits = generator.teacher_forced_logits(tokens.to(generator.device), generator.prepare_conditions(conds))
    loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.to(logits.device).flatten())
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    _require(bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads), who,
             "teacher_forced_logits() in train mode must give the policy's parameters finite gradients.")
    policy.zero_grad(set_to_none=True)
    policy.eval()


def _check_round_trip(generator: Generator, who: str, conds: list[Condition], seeds: list[int],
                      tokens: torch.Tensor) -> None:
    policy = generator.policy
    saved = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        written = generator.save_finetuned(Path(tmp) / "weights")
        _require(isinstance(written, list) and all(Path(p).is_file() for p in written), who,
                 "save_finetuned() must return the list of files it wrote.")
        with torch.no_grad():
            for value in policy.parameters():
                value.add_(1.0)  # any change that load_finetuned must undo
        generator.load_finetuned(Path(tmp) / "weights")
        restored = policy.state_dict()
        _require(all(torch.equal(saved[k], restored[k]) for k in saved), who,
                 "load_finetuned() must restore exactly what save_finetuned() wrote.")
        _require(torch.equal(_sample(generator, conds, seeds, generator.default_recipe, who), tokens), who,
                 "after a save/load round trip sample() gives different tokens.")
        empty = Path(tmp) / "empty"
        empty.mkdir()
        try:
            generator.load_finetuned(empty)
        except VapiError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point is to report what was raised instead
            raise ConformanceError(f"{who}: load_finetuned() on a folder without weights must raise a "
                                   f"vapi_bench.errors.CheckpointError, not {type(exc).__name__}: {exc}") from None
        else:
            raise ConformanceError(f"{who}: load_finetuned() on a folder without weights must raise CheckpointError.")


def _check_optional(generator: Generator, who: str, tokens: torch.Tensor) -> None:
    if has_capability(generator, "codebook"):
        codebook = generator.codebook
        _require(codebook.ndim == 2 and codebook.shape[0] == generator.codebook_size, who,
                 f"`codebook` must be [V, D] with V = {generator.codebook_size}, got {tuple(codebook.shape)}.")
        if has_capability(generator, "decode_embeddings"):
            with torch.no_grad():
                direct = generator.decode(tokens.to(generator.device))
                via_codes = generator.decode_embeddings(codebook[tokens.to(codebook.device)])
            _require(torch.allclose(direct, via_codes, atol=1e-4), who,
                     "decode_embeddings(codebook[tokens]) must equal decode(tokens).")
    if has_capability(generator, "tokenizer_decoder"):
        _require(isinstance(generator.tokenizer_decoder, nn.Module), who, "`tokenizer_decoder` must be an nn.Module.")


# ---- methods ---------------------------------------------------------------------------------
def check_method(method: Method, make_generator: Callable[[], Generator], dataset: Any, *,
                 plugin: str | None = None, name: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Fine-tune two fresh generators from `make_generator()` on `dataset` with `method` (give it
    tiny settings) and check: a dict summary, finite trained weights that changed (unchanged for an
    identity method), the same result twice (determinism), and a generator that still samples
    within the contract. Returns the first run's summary."""
    who = _label("method", method, plugin) if name is None else f"method '{name}' (plugin '{plugin or '?'}')"
    states, summary = [], {}
    for attempt in range(2):
        torch.manual_seed(seed)  # as the runner does: random-init weights follow the run's seed
        generator = make_generator()
        before = _trainable_state(generator)
        with tempfile.TemporaryDirectory() as tmp:
            ctx = StageContext(out_dir=Path(tmp), device=generator.device, seed=seed)
            result = method.finetune(generator, dataset, ctx)
        _require(isinstance(result, dict), who, f"finetune() must return a dict summary, got {type(result).__name__}.")
        after = _trainable_state(generator)
        changed = any(not torch.equal(before[k], after[k]) for k in before)
        _require(all(bool(torch.isfinite(v).all()) for v in after.values() if v.is_floating_point()), who,
                 "finetune() left non-finite weights.")
        if method.is_identity:
            _require(not changed, who, "an identity method (is_identity = True) must not change the generator.")
        else:
            _require(changed, who, "finetune() changed no weight of the generator's policy or tokenizer decoder.")
        states.append(after)
        summary = summary or result
        generator.policy.eval()
        _sample(generator, _default_conditions(generator, who)[:2], SEEDS[:2], generator.default_recipe, who)
    _require(all(torch.equal(states[0][k], states[1][k]) for k in states[0]), who,
             "finetune() is not deterministic: the same seed, data and generator gave different weights.")
    return summary


def _trainable_state(generator: Generator) -> dict[str, torch.Tensor]:
    modules = {"policy": generator.policy}
    if has_capability(generator, "tokenizer_decoder"):
        modules["tokenizer_decoder"] = generator.tokenizer_decoder
    return {f"{m}.{k}": v.detach().cpu().clone() for m, module in modules.items()
            for k, v in module.state_dict().items()}


# ---- tasks -----------------------------------------------------------------------------------
def check_task(task: Task, generator: Generator, *, plugin: str | None = None, name: str | None = None,
               limit: int = 8, seed: int = 0) -> TaskResult:
    """Check a task against a (tiny) generator: items (SampleItems, unique indices, conditions the
    generator accepts, `limit` honoured, deterministic), variants, and scoring a real sample set
    made by the core's sampler into finite float metrics. Returns the TaskResult."""
    from .sampling import sample_to_dir

    who = _label("task", task, plugin) if name is None else f"task '{name}' (plugin '{plugin or '?'}')"
    _require(task.conditioning == generator.conditioning, who,
             f"needs a {task.conditioning}-conditional generator; the one given is {generator.conditioning}.")
    items = task.items(generator, limit)
    _require(isinstance(items, list) and 0 < len(items) <= limit and all(isinstance(i, SampleItem) for i in items),
             who, f"items(generator, limit={limit}) must return a non-empty list of at most {limit} SampleItems.")
    _require(len({i.index for i in items}) == len(items), who, "SampleItem indices must be unique (they seed samples).")
    _require(items == task.items(generator, limit), who, "items() must be deterministic.")
    try:
        generator.prepare_conditions([i.condition for i in items])
    except VapiError as exc:
        raise ConformanceError(f"{who}: its conditions are not accepted by the generator: {exc}") from None
    variants = task.variants(generator)
    _require(bool(variants) and all(isinstance(v, SamplingRecipe) for v in variants), who,
             "variants() must return a non-empty list of SamplingRecipes.")
    with tempfile.TemporaryDirectory() as tmp:
        sample_dir = Path(tmp) / "samples"
        task.write_layout(sample_dir, items)
        generator.policy.eval()
        sample_to_dir(generator, task, items, variants[0], seed, sample_dir, batch_size=4)
        missing = [i.index for i in items if not task.image_path(sample_dir, i).is_file()]
        _require(not missing, who, f"image_path() points where no image was written (items {missing[:5]}).")
        result = task.score(sample_dir, items, StageContext(out_dir=Path(tmp) / "score", device=generator.device,
                                                            seed=seed))
    _require(isinstance(result, TaskResult) and bool(result.metrics), who,
             "score() must return a TaskResult with at least one metric.")
    bad = {k: v for k, v in result.metrics.items() if not isinstance(v, (int, float)) or v != v}
    _require(not bad, who, f"metrics must be finite numbers; got {bad}.")
    if result.per_sample is not None:
        indices = {r.get("index") for r in result.per_sample}
        _require(indices <= {i.index for i in items}, who, "per_sample records must carry the index of their item.")
    return result


# ---- scorers ---------------------------------------------------------------------------------
def check_scorer(scorer: Scorer, *, plugin: str | None = None, name: str | None = None, image_size: int = 32,
                 batch: int = 3) -> None:
    """Check a scorer: forward(pred, target) -> finite per-image distances [B], no larger for
    identical images than for different ones, and gradients to `pred` when `differentiable`."""
    who = _label("scorer", scorer, plugin) if name is None else f"scorer '{name}' (plugin '{plugin or '?'}')"
    device = next((p.device for p in scorer.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(batch, 3, image_size, image_size, generator=gen) * 2 - 1).to(device)
    pred = (torch.rand(batch, 3, image_size, image_size, generator=gen) * 2 - 1).to(device)
    pred.requires_grad_(scorer.differentiable)
    distance = scorer(pred, target)
    _require(isinstance(distance, torch.Tensor) and tuple(distance.shape) == (batch,), who,
             f"forward(pred, target) must return one distance per image, shape [{batch}], got "
             f"{tuple(getattr(distance, 'shape', ()))}.")
    _require(bool(torch.isfinite(distance).all()), who, "returned non-finite distances.")
    with torch.no_grad():
        same = scorer(target, target)
    _require(bool((same <= distance.detach() + 1e-6).all()), who,
             "an image must be no farther from itself than from a different image (lower is better).")
    if scorer.differentiable:
        distance.sum().backward()
        _require(pred.grad is not None and bool(torch.isfinite(pred.grad).all()) and bool(pred.grad.abs().sum() > 0),
                 who, "differentiable = True but no finite, non-zero gradient reaches `pred`.")
