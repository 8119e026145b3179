"""AR-GRPO's, CCA's and DPO's own recipes per model family (hook `register_recipes`).

Their values differ from the family's shared budget (AR-GRPO trains LlamaGen at lr 1e-5, VA-π at
1e-6), so each is a whole table of its own, which overrides the family's defaults. A family neither
table knows leaves their method keys (rewards, rollout_cfg, ...) unset: the run stops before any
stage naming them. On the shapes world both follow the family's lr (the paper's post-training ratio
to where pre-training ended, the rule every shapes method follows), so the lr is left to the family.
"""
from __future__ import annotations

from typing import Any

from vapi_bench.interfaces import Recipe

# AR-GRPO (docs/reference/peers.md §1.2: run_c2i_train.sh / run_t2i_train.sh). batch_size counts
# prompts per optimiser step (each gets G rollouts); micro_batch counts prompts per forward. The
# official rewards (CLIP B/32 and HPS v2.1 cosines x5 and their quantised copies, MANIQA, three
# Qwen-VL judges) are approximated by the preference scorers available here.
_AR_GRPO_C2I = {
    "lr": 1e-5, "weight_decay": 0.0, "group_size": 8, "rollout_cfg": 2.0, "beta": 0.1,
    # 4 classes x 8 completions per step on 4 GPUs (8 completions = 1 prompt per device)
    "batch_size": 4, "micro_batch": 1, "steps": 400, "ckpt_every": 100, "decode_chunk": 8,
    "rewards": "clip-score[arch=ViT-B-32]:5,hpsv2.1:5",  # ARG's CLIP is B/32 (docs/reference/peers.md §1.4)
}
_AR_GRPO_T2I = {**_AR_GRPO_C2I, "rollout_cfg": 4.0, "beta": 1.0, "batch_size": 8, "micro_batch": 2, "steps": 600}
# shapes: the other shapes methods' budget (60 steps x 16 prompts, G = 8); verifiable rewards
_AR_GRPO_SHAPES = {k: v for k, v in _AR_GRPO_C2I.items() if k != "lr"} | {
    "batch_size": 16, "micro_batch": 4, "steps": 60, "ckpt_every": 20, "decode_chunk": 64}
AR_GRPO_RECIPES: dict[str, dict[str, Any]] = {
    "llamagen-c2i": dict(_AR_GRPO_C2I),
    # 8 captions x 8 completions per step (16 completions = 2 prompts per device), β 1, 600 steps
    "llamagen-t2i": dict(_AR_GRPO_T2I),
    # AR-GRPO has no Janus recipe: the T2I one, rollouts at Janus's own inference CFG 5 (unverified)
    "janus-pro": {**_AR_GRPO_T2I, "rollout_cfg": 5.0},
    "shapes-c2i": {**_AR_GRPO_SHAPES, "rewards": "shapes-class-prob:1"},
    "shapes-t2i": {**_AR_GRPO_SHAPES, "rollout_cfg": 4.0, "beta": 1.0, "rewards": "shapes-geneval:1"},
}

# CCA (docs/reference/peers.md §2.2: LlamaGen_finetune.py, README). 256 pairs per step as
# micro-batches of 2 (8 GPUs x grad-accum 16): the rolled negative is the other pair of the
# micro-batch. Text models are an extrapolation (mismatched captions, the model's own null prompt;
# unverified). On the shapes world, the official ratio to pre-training (1e-5 / 1e-4) would give
# 6e-4 for the zoo's 6e-3: there CCA collapsed in a seed-0 smoke (Δ⁺ ≈ -250 nats per image, no-CFG
# class accuracy 0.89 -> 0.20), so it follows the family's lr as every shapes method does.
_CCA_C2I = {"lr": 1e-5, "weight_decay": 0.05, "batch_size": 256, "micro_batch": 2, "steps": 5000, "ckpt_every": 1000}
_CCA_SHAPES = {k: v for k, v in _CCA_C2I.items() if k != "lr"} | {"batch_size": 16, "steps": 60, "ckpt_every": 20}
# CCA on VAR (thu-ml/CCA @ 7d5a073 README "VAR Command", VAR_finetune.py; VAR utils/arg_util.py:41-57,
# 257-264): 1 epoch at a global batch of 256 (≈ 5000 steps), 8 GPUs x grad-accum 4 for d16 = micro-batches
# of 8 (d20 / d24: 4, d30: 2; `--set micro_batch=`), peak lr tblr 2e-5 (VAR's linear warm-up and decay, here
# constant), wd 0.05. Not recipe keys, so `--set` them to match further (docs/var.md): VAR's clip 2.0
# (max_grad_norm) and its optimiser's mean over micro-batches (accumulation=mean).
_CCA_VAR = {"lr": 2e-5, "weight_decay": 0.05, "batch_size": 256, "micro_batch": 8, "steps": 5000, "ckpt_every": 1000}
CCA_RECIPES: dict[str, dict[str, Any]] = {
    "llamagen-c2i": dict(_CCA_C2I), "llamagen-t2i": dict(_CCA_C2I), "janus-pro": dict(_CCA_C2I),
    "var": dict(_CCA_VAR), "shapes-c2i": dict(_CCA_SHAPES), "shapes-t2i": dict(_CCA_SHAPES),
}

# DPO (plugins/peers/dpo.py). No AR image model publishes a DPO recipe we could check, so only β is
# sourced: TRL's DPOConfig default 0.1 (huggingface/trl v0.28.0, trl/trainer/dpo_config.py L440-446).
# lr, steps and images per step are the family's shared budget (the comparison every method gets;
# on LlamaGen it equals TRL's default lr 1e-6, dpo_config.py L329-331). The pair samples reuse
# AR-GRPO's reward scorers, K = G = 8 and rollout CFG, so DPO and GRPO rank images alike
# (unverified as a DPO recipe); pair_groups: every ImageNet class once, 1000 captions for text models
# (unverified). batch_size counts pairs per step.
_DPO_C2I = {"beta": 0.1, "group_size": 8, "pair_cfg": 2.0, "pair_groups": 1000, "decode_chunk": 8,
            "rewards": _AR_GRPO_C2I["rewards"]}
_DPO_T2I = {**_DPO_C2I, "pair_cfg": 4.0}
# shapes: K = 8 and the rollout CFG and verifiable rewards of AR-GRPO's shapes rows; 96 groups
# (4 per c2i class) make 96 best-vs-worst pairs, about 770 samples drawn once
_DPO_SHAPES = {**_DPO_C2I, "pair_groups": 96, "decode_chunk": 64, "rewards": "shapes-class-prob:1"}
DPO_RECIPES: dict[str, dict[str, Any]] = {
    "llamagen-c2i": dict(_DPO_C2I), "llamagen-t2i": dict(_DPO_T2I),
    "janus-pro": {**_DPO_T2I, "pair_cfg": 5.0},  # Janus's own inference CFG, as AR-GRPO's row (unverified)
    "shapes-c2i": dict(_DPO_SHAPES),
    "shapes-t2i": {**_DPO_SHAPES, "pair_cfg": 4.0, "rewards": "shapes-geneval:1"},
}

# the shapes world's other bases get the recipes of the base they derive from (shapes-var: of the
# class-conditional base it sits beside; the lr stays its family's, as for every shapes base)
for _table in (AR_GRPO_RECIPES, CCA_RECIPES, DPO_RECIPES):
    for _derived, _parent in (("shapes-c2i-small", "shapes-c2i"), ("shapes-c2i-small-ls", "shapes-c2i"),
                              ("shapes-t2i-ls", "shapes-t2i"), ("shapes-var", "shapes-c2i")):
        _table[_derived] = dict(_table[_parent])

#: CCA's λ per model (CCA README: LlamaGen B / L / XL / XXL / 3B, VAR d16 / d20 / d24 / d30, all with
#: β = 0.02 and uncond_ratio 0.1); other models DEFAULT_LAMBDA
CCA_LAMBDA: dict[str, float] = {"llamagen-b": 1000.0, "llamagen-l": 300.0, "llamagen-xl": 1000.0,
                                "llamagen-xxl": 1000.0, "llamagen-3b": 500.0,
                                "var-d16": 50.0, "var-d20": 50.0, "var-d24": 100.0, "var-d30": 1000.0}
DEFAULT_LAMBDA = 1000.0

SOURCES = {"ar-grpo": "AR-GRPO run_c2i_train.sh / run_t2i_train.sh (docs/reference/peers.md §1.2)",
           "cca": "CCA LlamaGen_finetune.py / VAR_finetune.py and README (docs/reference/peers.md §2.2, docs/var.md)",
           "dpo": "β: TRL DPOConfig default (v0.28.0); pairs: AR-GRPO's rewards, G and CFG (unverified for DPO)"}


def recipes() -> list[Recipe]:
    """Every table as registry entries."""
    return [Recipe(method, family, dict(values), source=SOURCES[method])
            for method, table in (("ar-grpo", AR_GRPO_RECIPES), ("cca", CCA_RECIPES), ("dpo", DPO_RECIPES))
            for family, values in table.items()]
