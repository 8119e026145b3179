"""Peer methods the paper and its strongest competitors compare against (entry point `peers`):
`ar-grpo` (online GRPO with free-running rollouts, Yuan et al. 2025), `cca` (Condition
Contrastive Alignment, Chen et al. 2025) and `dpo` (Direct Preference Optimization on image tokens,
Rafailov et al. 2023, with TRL's losses; docs/methods-dpo.md). Facts and file:line sources: docs/reference/peers.md.
Each owns its recipe table (recipes.py) and trains through vapi_bench.training."""
from __future__ import annotations

from vapi_bench import Entry, hookimpl


@hookimpl
def register_methods(register) -> None:
    from .ar_grpo import AR_GRPO_PARAMS, ArGrpo
    from .cca import CCA_PARAMS, Cca
    from .dpo import DPO_PARAMS, Dpo

    register(Entry("ar-grpo", factory=ArGrpo, params=AR_GRPO_PARAMS,
                   summary="AR-GRPO: G guided free-running rollouts per prompt, reward scorers, group advantages, "
                           "token-mean PPO-clip + β·k3 KL to the initial model (Yuan et al. 2025)"))
    register(Entry("cca", factory=Cca, params=CCA_PARAMS,
                   summary="CCA: contrast matched vs mismatched conditions against the initial model, for "
                           "guidance-free sampling (Chen et al. 2025)"))
    register(Entry("dpo", factory=Dpo, params=DPO_PARAMS,
                   summary="DPO: chosen vs rejected token sequences against the initial model (TRL's sigmoid / IPO "
                           "/ hinge losses); pairs from scored base samples (cached), online, or a file"))


@hookimpl
def register_recipes(register) -> None:
    from .recipes import recipes

    for recipe in recipes():
        register(recipe)
