"""`dpo` on tiny random generators: TRL's loss and gradients (its dpo_loss transcribed below), the
pairing rule, the cached offline pair stage shared across lr and seed, online pairs, a user's pair
file, resume, and the recipes."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from helpers_toy_generator import RandomImages, assert_resume_matches_uninterrupted, tiny_llamagen
from vapi_bench.errors import DataError, UsageError
from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.peers import dpo_pair_stage
from vapi_bench.plugins.peers.dpo import DPO_PARAMS, Dpo, DpoStep
from vapi_bench.plugins.peers.dpo_objective import dpo_loss, sequence_logps
from vapi_bench.plugins.peers.dpo_pair_file import read_pair_file
from vapi_bench.plugins.peers.dpo_pairs import PairSet, select_pairs
from vapi_bench.plugins.peers.recipes import DPO_RECIPES
from vapi_bench.training import FrozenReference, MetricMeter, resolve_method_params

CPU = torch.device("cpu")
SMALL = dict(steps=3, batch_size=4, micro_batch=2, ckpt_every=1, precision="fp32", lr=1e-3, group_size=4,
             pair_groups=8, rewards="shapes-class-prob:1")


# ---- TRL, transcribed ------------------------------------------------------------------------------
def trl_dpo_loss(self, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, loss_type="sigmoid"):
    """huggingface/trl v0.28.0 (49ef33428c47235991acb4e185ea599b70c6dab4), trl/trainer/dpo_trainer.py,
    `DPOTrainer.dpo_loss` L1112-1283, the lines that run with f_divergence_type="reverse_kl",
    reference_free=False and loss_type in {sigmoid, hinge, ipo}, copied as written (`self` carries
    beta and label_smoothing; `.to(device)` calls dropped: one device)."""
    chosen_logratios = chosen_logps - (not self.reference_free) * ref_chosen_logps  # noqa: F841 (L1115)
    rejected_logratios = rejected_logps - (not self.reference_free) * ref_rejected_logps  # noqa: F841
    logratios = chosen_logps - rejected_logps
    if self.reference_free:
        ref_logratios = torch.tensor([0], dtype=logratios.dtype, device=logratios.device)
    else:
        ref_logratios = ref_chosen_logps - ref_rejected_logps
    logits = logratios - ref_logratios
    if loss_type == "sigmoid":
        losses = (
            -F.logsigmoid(self.beta * logits) * (1 - self.label_smoothing)
            - F.logsigmoid(-self.beta * logits) * self.label_smoothing
        )
    elif loss_type == "hinge":
        losses = torch.relu(1 - self.beta * logits)
    elif loss_type == "ipo":
        # eqn (17) of the paper where beta is the regularization parameter for the IPO loss, denoted by tau in the paper.
        losses = (logits - 1 / (2 * self.beta)) ** 2
    chosen_rewards = self.beta * (chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = self.beta * (rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


def trl_sequence_logps(logits, labels, loss_type):
    """TRL v0.28.0 `concatenated_forward` for a completion with no prompt and no padding: per-token
    log-probs of the labels (L1676-1678: selective_log_softmax), summed (L1691), divided by the completion
    length for ipo (L1716-1717)."""
    per_token_logps = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    loss_mask = torch.ones_like(labels, dtype=torch.bool)
    all_logps = per_token_logps.sum(-1)
    if "ipo" in loss_type:
        all_logps = all_logps / loss_mask.sum(-1)
    return all_logps


CASES = [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.1), ("sigmoid", 0.05, 0.3), ("ipo", 0.1, 0.0),
         ("ipo", 2.0, 0.0), ("hinge", 0.1, 0.0), ("hinge", 1.5, 0.0)]


@pytest.mark.parametrize("loss_type,beta,smoothing", CASES)
def test_loss_and_gradients_equal_trl_on_the_same_log_probs(loss_type, beta, smoothing):
    gen = torch.Generator().manual_seed(3)
    values = [(torch.randn(16, generator=gen) * 20).double().requires_grad_(True) for _ in range(4)]
    trl = SimpleNamespace(beta=beta, label_smoothing=smoothing, reference_free=False)
    want = trl_dpo_loss(trl, *values, loss_type=loss_type)
    got = dpo_loss(*values, beta=beta, loss_type=loss_type, label_smoothing=smoothing)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    grads_got = torch.autograd.grad(got[0].mean(), values[:2])
    grads_want = torch.autograd.grad(want[0].mean(), values[:2])
    for a, b in zip(grads_got, grads_want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(g.abs().sum() > 0 for g in grads_got)


def _gen(**kw):
    return tiny_llamagen(dropout=False, class_dropout_prob=0.1, **kw)


def _cfg(gen, **overrides):
    return resolve_method_params("dpo", resolve_params(DPO_PARAMS, {**SMALL, **overrides}, "dpo"), gen)


def _perturb(module, scale=0.05):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


@pytest.mark.parametrize("loss_type,beta,smoothing", [("sigmoid", 0.1, 0.2), ("ipo", 0.5, 0.0), ("hinge", 0.1, 0.0)])
def test_step_loss_and_policy_gradients_equal_trl_on_image_tokens(loss_type, beta, smoothing):
    """The step's loss on a micro-batch is TRL's `losses.mean()` on teacher-forced image-token
    log-probs (summed; per-token mean for ipo), and so are the gradients of every policy weight."""
    gen = _gen()
    cfg = _cfg(gen, loss_type=loss_type, beta=beta, label_smoothing=smoothing)
    step = DpoStep(gen, cfg, FrozenReference(gen, False, CPU, "dpo"), None, None)
    reference = _gen().policy.eval()  # the unperturbed initial weights
    _perturb(gen.policy)
    gen.policy.eval()
    draw = torch.Generator().manual_seed(5)
    chosen, rejected = (torch.randint(0, gen.codebook_size, (3, gen.num_tokens), generator=draw) for _ in range(2))
    pairs = PairSet([0, 2, 3], chosen, rejected, torch.ones(3), torch.full((3,), float("nan")))
    params = list(gen.policy.parameters())
    loss = step.micro_loss(pairs, MetricMeter())
    got = torch.autograd.grad(loss, params)

    labels = torch.tensor([0, 2, 3])

    def logps(model, tokens):
        return trl_sequence_logps(model(labels, tokens).float(), tokens, loss_type)

    with torch.no_grad():
        ref_w, ref_l = logps(reference, chosen), logps(reference, rejected)
    trl = SimpleNamespace(beta=beta, label_smoothing=smoothing, reference_free=False)
    losses, _, _ = trl_dpo_loss(trl, logps(gen.policy, chosen), logps(gen.policy, rejected), ref_w, ref_l, loss_type)
    want = torch.autograd.grad(losses.mean(), params)
    torch.testing.assert_close(loss, losses.mean(), rtol=1e-5, atol=1e-6)
    for name, a, b in zip((n for n, _ in gen.policy.named_parameters()), got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7, msg=name)


def test_sequence_logps_sums_or_averages_the_image_tokens():
    logits = torch.randn(2, 5, 7)
    tokens = torch.randint(0, 7, (2, 5))
    per_token = F.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(sequence_logps(logits, tokens), per_token.sum(-1))
    torch.testing.assert_close(sequence_logps(logits, tokens, mean=True), per_token.mean(-1))


def test_pairs_are_best_vs_worst_or_all_vs_worst_and_ties_give_none():
    rewards = torch.tensor([[0.1, 0.9, 0.5, 0.1], [0.3, 0.3, 0.3, 0.3], [2.0, 1.0, 2.0, 0.5]])
    assert select_pairs(rewards, "best-vs-worst") == [(0, 1, 0), (2, 0, 3)]
    assert select_pairs(rewards, "all-vs-worst") == [(0, 1, 0), (0, 2, 0), (2, 0, 3), (2, 1, 3), (2, 2, 3)]


def _ctx(tmp_path, seed=0, records=None, **kw):
    return StageContext(out_dir=tmp_path, device=CPU, seed=seed,
                        log=(records.append if records is not None else (lambda r: None)), **kw)


def test_offline_pairs_are_made_once_and_shared_across_lr_and_seed(tmp_path, monkeypatch):
    """The pair set's key holds the base model, rewards, K, conditions, sampling recipe and pair seed,
    not the fine-tune's lr or seed: a second fine-tune with another lr and seed reads the cached file
    (drawing is forbidden) and trains on the very same pairs."""
    cache = tmp_path / "cache"
    records = []
    first = Dpo(**resolve_params(DPO_PARAMS, SMALL, "dpo")).finetune(
        _gen(), RandomImages(), _ctx(tmp_path / "a", records=records, cache_dir=cache))
    assert first["pairs_reused"] is False and first["pairs"] > 0
    assert {"rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy", "logratio_chosen",
            "logratio_rejected", "pair_gap"} <= set(records[0])
    stored = torch.load(first["pair_file"], weights_only=True)

    def no_drawing(*args, **kwargs):
        raise AssertionError("the pair set was drawn again")

    monkeypatch.setattr(dpo_pair_stage, "draw_groups", no_drawing)
    second = Dpo(**resolve_params(DPO_PARAMS, {**SMALL, "lr": 3e-4}, "dpo")).finetune(
        _gen(), RandomImages(), _ctx(tmp_path / "b", seed=7, cache_dir=cache))
    assert second["pairs_reused"] is True and second["pair_file"] == first["pair_file"]
    assert torch.equal(torch.load(second["pair_file"], weights_only=True)["tokens"], stored["tokens"])
    assert len(list((cache / "dpo-pairs").iterdir())) == 1
    # all-vs-worst reads the same groups; another K is another pair set (drawing is still forbidden)
    more = Dpo(**resolve_params(DPO_PARAMS, {**SMALL, "pairs": "all-vs-worst"}, "dpo")).finetune(
        _gen(), RandomImages(), _ctx(tmp_path / "c", cache_dir=cache))
    assert more["pair_file"] == first["pair_file"] and more["pairs"] >= first["pairs"]
    with pytest.raises(AssertionError, match="drawn again"):
        Dpo(**resolve_params(DPO_PARAMS, {**SMALL, "group_size": 3}, "dpo")).finetune(
            _gen(), RandomImages(), _ctx(tmp_path / "d", cache_dir=cache))


def test_offline_pairs_are_the_best_and_worst_of_base_samples(tmp_path):
    gen = _gen()
    summary = Dpo(**resolve_params(DPO_PARAMS, {**SMALL, "steps": 1}, "dpo")).finetune(
        gen, RandomImages(), _ctx(tmp_path, cache_dir=tmp_path / "cache"))
    stored = torch.load(summary["pair_file"], weights_only=True)
    k = SMALL["group_size"]
    assert stored["conditions"] == [g % gen.num_classes for g in range(SMALL["pair_groups"])]
    assert stored["tokens"].shape == (SMALL["pair_groups"] * k, gen.num_tokens)
    base = _gen()
    base.policy.eval()
    from vapi_bench.interfaces import SamplingRecipe
    from vapi_bench.seeding import derive_seed

    seeds = [derive_seed(0, 1 * k + j, "dpo-pairs") for j in range(k)]  # group 1, pair_seed 0
    again = base.sample([1] * k, seeds=seeds, recipe=SamplingRecipe(cfg_scale=DPO_RECIPES["llamagen-c2i"]["pair_cfg"]))
    assert torch.equal(again, stored["tokens"][k:2 * k])


def test_online_pairs_resume_and_reset_the_reference(tmp_path):
    """Online pairs are drawn from the reference, which is reset to the policy every online_every
    steps: with online_every=1 every step starts at the reference (loss log 2), and a run stopped
    mid-cycle resumes with the stored reference."""
    records = []
    Dpo(**resolve_params(DPO_PARAMS, {**SMALL, "pairs": "online", "online_every": 1}, "dpo")).finetune(
        _gen(), RandomImages(), _ctx(tmp_path / "every", records=records))
    assert all(r["dpo_loss"] == pytest.approx(0.693147, abs=1e-5) for r in records)
    online = {**SMALL, "steps": 4, "pairs": "online", "online_every": 3}
    make = lambda: Dpo(**resolve_params(DPO_PARAMS, online, "dpo"))  # noqa: E731
    assert_resume_matches_uninterrupted(make, _gen, lambda d, **kw: _ctx(d, **kw), tmp_path / "resume")


def test_offline_resume_equals_uninterrupted(tmp_path):
    make = lambda: Dpo(**resolve_params(DPO_PARAMS, {**SMALL, "steps": 4, "loss_type": "ipo"}, "dpo"))  # noqa: E731
    cache = tmp_path / "cache"
    summary = assert_resume_matches_uninterrupted(make, _gen, lambda d, **kw: _ctx(d, cache_dir=cache, **kw), tmp_path)
    assert summary["pairs_reused"] is True


def test_a_users_pair_file_of_tokens_and_images(tmp_path):
    from vapi_bench.imageio import save_png, to_uint8

    gen = _gen()
    image = to_uint8(RandomImages(n=1)[0][0][None])[0]
    save_png(tmp_path / "img.png", image)
    rows = [{"condition": 1, "chosen": list(range(gen.num_tokens)), "rejected": "img.png", "gap": 0.5},
            {"condition": 2, "chosen": "img.png", "rejected": [0] * gen.num_tokens}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = read_pair_file(path, gen)
    encoded = gen.encode((torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)[None]).long()
    assert pairs.conditions == [1, 2] and torch.equal(pairs.rejected[0], encoded[0])
    assert torch.equal(pairs.chosen[1], encoded[0]) and pairs.chosen[0].tolist() == list(range(gen.num_tokens))
    summary = Dpo(**resolve_params(DPO_PARAMS, {**SMALL, "steps": 1, "batch_size": 2, "pairs": "file",
                                                "pairs_file": str(path)}, "dpo")).finetune(gen, RandomImages(),
                                                                                          _ctx(tmp_path / "run"))
    assert summary["pairs"] == 2
    path.write_text(json.dumps({"condition": 9, "chosen": [0], "rejected": [0]}) + "\n")
    with pytest.raises(DataError, match="line 1: condition 9 is not a class index"):
        read_pair_file(path, gen)


def test_settings_that_do_not_go_together_are_refused(tmp_path):
    for bad, match in (({"loss_type": "ipo", "label_smoothing": 0.1}, "label_smoothing applies to loss_type=sigmoid"),
                       ({"pairs": "file"}, "pairs=file and pairs_file=PATH go together")):
        with pytest.raises(UsageError, match=match):
            Dpo(**resolve_params(DPO_PARAMS, {**SMALL, **bad}, "dpo")).finetune(_gen(), RandomImages(), _ctx(tmp_path))
    with pytest.raises(UsageError, match="label_smoothing"):
        resolve_params(DPO_PARAMS, {"label_smoothing": 0.5}, "dpo")


def test_recipes_cover_every_family_and_shapes_follow_the_family_lr():
    gen = _gen()
    cfg = _cfg(gen, lr=None)
    assert cfg["beta"] == 0.1 and cfg["lr"] == 1e-6  # TRL's β; LlamaGen's family budget
    for family in ("llamagen-c2i", "llamagen-t2i", "janus-pro", "shapes-c2i", "shapes-t2i", "shapes-c2i-small"):
        assert "lr" not in DPO_RECIPES[family] and DPO_RECIPES[family]["beta"] == 0.1


def test_janus_and_llamagen_recipes_resolve_without_missing_keys():
    """The real families get every dpo key from the lookup (their runs then stop only on missing weights)."""
    for family, conditioning, cfg_scale in (("janus-pro", "text", 5.0), ("llamagen", "class", 2.0),
                                            ("llamagen", "text", 4.0)):
        probe = type("Probe", (), {"family": family, "conditioning": conditioning, "name": family})()
        values = resolve_method_params("dpo", {}, probe)
        assert values["pair_cfg"] == cfg_scale and values["beta"] == 0.1 and values["group_size"] == 8


def test_runs_with_another_lr_and_seed_reuse_the_runs_cached_pairs(cli, tmp_path):
    """Through the runner: the pair set lives in runs/cache and a fine-tune with another lr and seed
    reads it (its file is not rewritten)."""
    common = ("finetune", "-m", "shapes-c2i", "-a", "dpo", "--set", "method.steps=1", "--set", "method.batch_size=4",
              "--set", "method.pair_groups=24", "--set", "method.group_size=2")
    assert cli(*common)[0] == 0
    (pair_file,) = (tmp_path / "runs" / "cache" / "dpo-pairs").iterdir()
    written = pair_file.stat().st_mtime_ns
    assert cli(*common, "--set", "method.lr=1e-5", "--seed", "3")[0] == 0
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "finetune").glob("*/finetune.json")]
    assert sorted(s["pairs_reused"] for s in summaries) == [False, True]
    assert {s["pair_file"] for s in summaries} == {str(pair_file)} and pair_file.stat().st_mtime_ns == written
