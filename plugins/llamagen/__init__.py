"""LlamaGen generator plugin: llamagen-b/-l/-xl/-xxl/-3b (c2i) and llamagen-t2i-xl.

Public modules: `gpt` (GPT, GPTConfig, GPT_CONFIGS), `vq` (VQModel, VQConfig, Janus key maps),
`sampling` (generate), `generator` (LlamaGenGenerator), `text` (TextEncoder, FlanT5Encoder),
`factory` (registered models and their parameters).
"""
from __future__ import annotations

from vapi_bench.hookspecs import hookimpl

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
