"""Janus-Pro generators (`janus-pro-1b`, `janus-pro-7b`) on transformers' JanusForConditionalGeneration.

The checkpoint may be a Hugging Face id or a local directory, in the transformers layout
(deepseek-community/Janus-Pro-*, the default) or deepseek-ai's original layout (deepseek-ai/Janus-Pro-*),
which our own key table converts. Design notes and the deviations from transformers' own generate:
docs/janus.md.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch

from vapi_bench.errors import VapiError
from vapi_bench.hookspecs import hookimpl
from vapi_bench.interfaces import Entry, Family
from vapi_bench.params import Param

#: teacher-forcing alignments (docs/janus.md explains why "standard" is the default)
TF_ALIGNMENTS = ("standard", "vapi-official")
#: first transformers release we verified: it has the huggingface/transformers#45044 image-generation
#: fix, the `cache=` keyword and `activation_checkpointing_enable`
MIN_TRANSFORMERS = (5, 24)
#: registered name -> (default checkpoint, default weight dtype, summary)
VARIANTS: dict[str, tuple[str, str, str]] = {
    "janus-pro-1b": ("deepseek-community/Janus-Pro-1B", "float32",
                     "Janus-Pro 1B text-to-image (384 px, 576 tokens; GenEval 0.73 reported)"),
    "janus-pro-7b": ("deepseek-community/Janus-Pro-7B", "bfloat16",
                     "Janus-Pro 7B text-to-image (384 px, 576 tokens; GenEval 0.80 reported)"),
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _params(default_dtype: str) -> tuple[Param, ...]:
    return (
        Param("dtype", str, default_dtype, "weight dtype", choices=tuple(_DTYPES)),
        Param("autocast_bf16", bool, False, "run forward passes under bf16 autocast (CPU and CUDA)"),
        Param("tf_alignment", str, "standard",
              "teacher forcing: 'standard' (hidden state before token i predicts i) or VA-π's released "
              "'vapi-official' (hidden state at token i; leaks the target without context noise)",
              choices=TF_ALIGNMENTS),
        Param("gradient_checkpointing", bool, False, "recompute LM activations in backward (VA-π's Janus script)"),
        Param("attn_implementation", str, "sdpa", "transformers attention kernel", choices=("sdpa", "eager")),
    )


def _factory(name: str, default_checkpoint: str) -> Callable[..., Any]:
    # transformers is imported only when a Janus generator is built, not when the CLI lists plugins
    def build(*, checkpoint: str | None, device: torch.device, dtype: str, autocast_bf16: bool,
              tf_alignment: str, gradient_checkpointing: bool, attn_implementation: str) -> Any:
        require_transformers()
        from .generator import JanusProGenerator
        from .loading import load_janus

        loaded = load_janus(checkpoint or default_checkpoint, dtype=_DTYPES[dtype], device=device,
                            attn_implementation=attn_implementation)
        return JanusProGenerator(loaded, name=name, tf_alignment=tf_alignment, autocast_bf16=autocast_bf16,
                                 gradient_checkpointing=gradient_checkpointing)

    return build


def require_transformers() -> None:
    """A plain VapiError, not an ImportError deep inside, when transformers is missing or too old."""
    wanted = ".".join(map(str, MIN_TRANSFORMERS))
    try:
        import transformers
    except ImportError:
        raise VapiError(f"janus-pro needs transformers>={wanted}: pip install 'vapi-bench[janus]'.") from None
    found = tuple(int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    if found < MIN_TRANSFORMERS:
        raise VapiError(
            f"janus-pro needs transformers>={wanted} (image generation fixed by huggingface/transformers#45044); "
            f"found {transformers.__version__}. pip install 'vapi-bench[janus]'."
        )


@hookimpl
def register_generators(register: Callable[[Any], None]) -> None:
    for name, (checkpoint, dtype, summary) in VARIANTS.items():
        aliases = ("janus-pro",) if name == "janus-pro-1b" else ()  # the paper's GenEval model
        register(Entry(name, factory=_factory(name, checkpoint), summary=summary, params=_params(dtype),
                       aliases=aliases))


#: the post-training budget of the VA-π paper for Janus-Pro 1B (docs/reference/vapi.md §2): lr 1e-7,
#: 128 images per step, 100 steps; pip-lpips AlexNet as the perceptual scorer, as its script uses
FAMILY_DEFAULTS = {"lr": 1e-7, "weight_decay": 1e-4, "batch_size": 128, "steps": 100, "perceptual": "lpips-alex"}


@hookimpl
def register_families(register) -> None:
    register(Family("janus-pro", dict(FAMILY_DEFAULTS), summary="VA-π paper budget for Janus-Pro (docs/reference/vapi.md §2)"))
