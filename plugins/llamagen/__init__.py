"""LlamaGen generator plugin: llamagen-b/-l/-xl/-xxl/-3b (c2i) and llamagen-t2i-xl.

Public modules: `gpt` (GPT, GPTConfig, GPT_CONFIGS), `vq` (VQModel, VQConfig, Janus key maps),
`sampling` (generate), `generator` (LlamaGenGenerator), `text` (TextEncoder, FlanT5Encoder),
`factory` (registered models and their parameters).
"""
from __future__ import annotations

from vapi_bench.hookspecs import hookimpl
from vapi_bench.interfaces import Family

from .generator import LlamaGenGenerator
from .gpt import GPT, GPT_CONFIGS, GPTConfig
from .sampling import generate
from .text import TextEncoder
from .vq import VQ_CONFIGS, VQConfig, VQModel, from_janus_keys, to_janus_keys

__all__ = [
    "GPT", "GPTConfig", "GPT_CONFIGS", "LlamaGenGenerator", "TextEncoder", "VQConfig", "VQModel", "VQ_CONFIGS",
    "from_janus_keys", "generate", "to_janus_keys",
]


@hookimpl
def register_generators(register) -> None:
    from .factory import entries

    for entry in entries():
        register(entry)


#: the post-training budget of the VA-π paper (Table 7 and its launch scripts; docs/reference/vapi.md §2):
#: every method of a comparison gets it (AdamW at a constant lr, 128 images per step)
_C2I = {"lr": 1e-6, "weight_decay": 1e-4, "batch_size": 128, "steps": 100, "perceptual": "lpips-vgg"}
FAMILIES = {
    "llamagen-c2i": dict(_C2I),  # LlamaGen-XXL C2I: train_c2i_grpo_8gpu.sh
    "llamagen-t2i": {**_C2I, "steps": 200},  # LlamaGen-XL T2I: 200 steps
}


@hookimpl
def register_families(register) -> None:
    for name, defaults in FAMILIES.items():
        register(Family(name, defaults, summary="VA-π paper Table 7 budget (docs/reference/vapi.md §2)"))
