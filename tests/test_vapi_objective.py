"""The VA-π objective, term by term, against the formulas of docs/reference/vapi.md §1.2 / §8."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vapi_bench.errors import NON_FINITE_PROBABILITIES
from vapi_bench.plugins.va_pi.objective import corrupt_context
from vapi_bench.training.losses import (draw_group, filter_logits, group_advantages, k3_kl, ppo_clip_loss,
                                        teacher_forced_ce)


def _gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_paper_kernel_never_keeps_the_true_token_when_it_replaces():
    tokens = torch.randint(0, 5, (4, 500), generator=torch.Generator().manual_seed(0))
    noisy = corrupt_context(tokens, 1.0, 5, "paper", _gens(4))
    assert torch.all(noisy != tokens)
    assert noisy.min() >= 0 and noisy.max() < 5
    # the replacement is uniform over the other V-1 codes
    counts = torch.bincount((noisy - tokens).remainder(5).flatten(), minlength=5)[1:].float()
    assert counts.min() / counts.max() > 0.8


def test_official_kernel_may_redraw_the_true_token():
    tokens = torch.zeros(2, 4000, dtype=torch.long)
    noisy = corrupt_context(tokens, 1.0, 4, "official", _gens(2))
    kept = (noisy == 0).float().mean().item()
    assert kept == pytest.approx(1 / 4, abs=0.03)  # uniform over all V codes


def test_noise_rate_is_xi_and_is_seeded_per_image():
    tokens = torch.randint(0, 100, (3, 3000), generator=torch.Generator().manual_seed(1))
    noisy = corrupt_context(tokens, 0.3, 100, "paper", _gens(3))
    assert (noisy != tokens).float().mean().item() == pytest.approx(0.3, abs=0.02)
    again = corrupt_context(tokens[1:2], 0.3, 100, "paper", _gens(1, seed=1))
    assert torch.equal(again[0], noisy[1])  # row b depends only on its own generator


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True, True]]
    # nucleus 0.6: 0.5 alone is < 0.6, so the second token is needed too; the rest are dropped
    assert torch.isinf(filter_logits(logits, top_p=0.6)).tolist() == [[False, False, True, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.3)).tolist() == [[False, True, True, True, True]]
    assert torch.equal(filter_logits(logits), logits)


def test_draw_group_is_positionwise_categorical_with_matching_old_logp():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]])  # T=2, V=3
    tokens, old = draw_group(logits, 20000, torch.Generator().manual_seed(0), temperature=2.0)
    assert tokens.shape == (20000, 2) and old.shape == (20000, 2)
    probs = F.softmax(logits / 2.0, dim=-1)
    for t in range(2):
        freq = torch.bincount(tokens[:, t], minlength=3).float() / 20000
        torch.testing.assert_close(freq, probs[t], atol=0.015, rtol=0)
    torch.testing.assert_close(old, torch.log(probs)[torch.arange(2), tokens])


def test_draw_group_top_k_samples_only_kept_tokens():
    logits = torch.tensor([[1.0, 0.9, 0.8, 0.7]])
    tokens, old = draw_group(logits, 500, torch.Generator().manual_seed(0), top_k=2)
    assert set(tokens.flatten().tolist()) <= {0, 1}
    renorm = F.softmax(torch.tensor([1.0, 0.9]), dim=-1).log()
    torch.testing.assert_close(old, renorm[tokens])


def test_draw_group_refuses_non_finite_logits_with_the_message_training_recognises():
    """torch.multinomial with replacement names no NaN on the CPU and device-asserts on CUDA; the
    check before it gives the one message the training engine turns into 'diverged'."""
    logits = torch.tensor([[0.0, math.nan, 1.0], [0.0, 1.0, 2.0]])
    with pytest.raises(RuntimeError) as info:
        draw_group(logits, 4, torch.Generator().manual_seed(0))
    assert str(info.value) == NON_FINITE_PROBABILITIES


def test_group_advantages_unbiased_std_eps_and_clip():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 100.0]])
    adv = group_advantages(rewards, adv_clip=1.4)
    r = rewards[0]
    mean, std = r.mean(), math.sqrt(sum((x - r.mean()) ** 2 for x in r) / 3)
    torch.testing.assert_close(adv[0], ((r - mean) / (std + 1e-8)).clamp(-1.4, 1.4))
    assert torch.all(adv[1] == 0)  # identical rewards: 0 / (0 + eps)
    assert adv[2, 3] == pytest.approx(1.4)  # clamped (unclamped 1.5)


def test_ppo_clip_loss_matches_the_token_level_formula():
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 5, generator=gen) * 3
    new = old + (torch.rand(3, 5, generator=gen) - 0.5)  # ratios in [e^-0.5, e^0.5]
    adv = torch.tensor([1.5, -0.7, 0.0])
    loss, clip_frac = ppo_clip_loss(new, old, adv, clip_eps=0.2)
    expected, clipped = 0.0, 0
    for i in range(3):
        row = 0.0
        for t in range(5):
            ratio = math.exp(new[i, t] - old[i, t])
            a = adv[i].item()
            row += max(-a * ratio, -a * min(max(ratio, 0.8), 1.2))
            clipped += (ratio > 1.2 and a > 0) or (ratio < 0.8 and a < 0)
        expected += row / 5
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)
    assert clip_frac.item() == pytest.approx(clipped / 15)


def test_ppo_gradient_at_ratio_one_is_the_reinforce_gradient():
    """θ_old = θ (one update per sampling phase): ∂loss/∂logp = -A / (T · rows)."""
    old = torch.randn(2, 4)
    new = old.clone().requires_grad_(True)
    adv = torch.tensor([2.0, -1.0])
    loss, _ = ppo_clip_loss(new, old, adv, 0.2)
    loss.backward()
    torch.testing.assert_close(new.grad, (-adv[:, None] / 8).expand(2, 4))


def test_k3_kl_and_ce():
    logp = torch.log(torch.rand(2, 6) * 0.9 + 0.05)
    assert k3_kl(logp, logp).item() == 0.0
    ref = logp + 0.3
    expected = (torch.exp(ref - logp) - (ref - logp) - 1).mean()
    torch.testing.assert_close(k3_kl(ref, logp), expected)
    assert k3_kl(ref, logp) > 0
    logits = torch.randn(2, 3, 7, dtype=torch.bfloat16)
    targets = torch.randint(0, 7, (2, 3))
    ce = teacher_forced_ce(logits, targets)
    assert ce.dtype == torch.float32
    torch.testing.assert_close(ce, F.cross_entropy(logits.float().reshape(6, 7), targets.reshape(6)))
