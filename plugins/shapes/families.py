"""The shapes world's model families: the post-training budget every method gets on its bases.

The same objective sizes as the paper's recipe, scaled so that a run takes about a minute on one
CPU thread (~1 s per step of 16 images). The learning rate follows the paper's rule
(vapi_bench.training.post_training_lr): its ratio to where the zoo GPT's pre-training ENDED
(zoo config: cosine 6e-3 -> 3e-4, hence 3e-6), the same for every method.
"""
from __future__ import annotations

from typing import Any

from vapi_bench.interfaces import Family
from vapi_bench.training import post_training_lr


def _budget(optim_field: str) -> dict[str, Any]:
    from .zoo.config import FULL
    from .zoo.train import final_lr

    return {"lr": post_training_lr(final_lr(getattr(FULL, optim_field))), "weight_decay": 1e-4, "batch_size": 16,
            "steps": 60, "perceptual": "shapes-perceptual", "micro_batch": 4, "decode_chunk": 64, "ckpt_every": 20}


def family_defaults() -> dict[str, dict[str, Any]]:
    """Each base's defaults: the c2i / t2i GPTs', the under-capacity c2i's and the VAR's own
    pre-training lr; the label-smoothed variants share their parent's schedule."""
    c2i, t2i, small = _budget("c2i_optim"), _budget("t2i_optim"), _budget("c2i_small_optim")
    return {"shapes-c2i": c2i, "shapes-t2i": t2i, "shapes-c2i-small": small,
            "shapes-c2i-small-ls": dict(small), "shapes-t2i-ls": dict(t2i), "shapes-var": _budget("var_optim")}


def families() -> list[Family]:
    return [Family(name, defaults, summary="the shapes world's budget (plugins/shapes/families.py)")
            for name, defaults in family_defaults().items()]
