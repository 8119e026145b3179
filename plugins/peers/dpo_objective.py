"""DPO's losses as pure functions, transcribed from TRL's `DPOTrainer.dpo_loss`
(huggingface/trl v0.28.0 = 49ef33428c47235991acb4e185ea599b70c6dab4, trl/trainer/dpo_trainer.py
L1062-1283; the last release before TRL's DPO refactor, #3906, removed the function).

On image tokens: a "completion" is the T image tokens of a sample, its log-probability the sum of
the teacher-forced per-token log-probs under the condition (TRL sums over completion tokens,
`concatenated_forward`). With `loss_type="ipo"` TRL divides every sequence log-prob, policy and
reference, by the number of completion tokens (`concatenated_forward`, L1717:
`if "ipo" in self.loss_type: all_logps = all_logps / loss_mask.sum(-1)`); `sequence_logps` does the
same with `mean=True`. TRL ignores `label_smoothing` for hinge and ipo (it warns, L480-488); so does
this module (the method refuses the combination instead of silently ignoring it).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossType = Literal["sigmoid", "ipo", "hinge"]
LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "hinge")


def sequence_logps(logits: torch.Tensor, tokens: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """Σ_t log softmax(logits[:, t])[tokens[:, t]] per row [R] in fp32 (the mean over t with `mean`,
    TRL's IPO normalisation). Every image token is a completion token: there is no prompt to mask."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    return logp.mean(dim=-1) if mean else logp.sum(dim=-1)


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the implicit rewards (losses, chosen_rewards, rejected_rewards), as TRL's
    `dpo_loss` with `f_divergence_type="reverse_kl"` and `reference_free=False`:

        logits = (log π(y_w) − log π(y_l)) − (log π_ref(y_w) − log π_ref(y_l))      (L1130-1138)
        sigmoid: −logσ(β·logits)(1 − ε) − logσ(−β·logits)·ε   (DPO; ε > 0: cDPO)  (L1152-1156)
        hinge:   relu(1 − β·logits)                             (SLiC)              (L1174-1175)
        ipo:     (logits − 1/(2β))²                             (IPO eq. 17)        (L1177-1179)
        rewards: β·(log π − log π_ref), detached                                    (L1280-1281)

    TRL's trainer then takes `losses.mean()`; the method weights the rows itself.
    """
    logratios = chosen_logps - rejected_logps
    ref_logratios = ref_chosen_logps - ref_rejected_logps
    logits = logratios - ref_logratios
    if loss_type == "sigmoid":
        losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
                  - F.logsigmoid(-beta * logits) * label_smoothing)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards
