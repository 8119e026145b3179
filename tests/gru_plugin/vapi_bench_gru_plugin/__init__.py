"""A third-party plugin with a non-transformer model: `tiny-gru`, a one-layer GRU that writes the
shapes world's VQ tokens, class-conditionally, reusing the shapes plugin's tokenizer.

It is the worked example of docs/plugins.md ("your first plugin in 15 minutes"): the generator
contract (no optional capabilities), its family's method defaults, and its own tests through
`vapi_bench.testing`. The test-suite installs it and runs `none`, `sft` and `va-pi` on
`shapes-fid` with it.
"""
from __future__ import annotations

from vapi_bench import Entry, Family, Param, hookimpl

from .generator import GRU_FAMILY, build_gru

PARAMS = (
    Param("hidden", int, 64, "GRU width (embeddings, state)"),
    Param("class_dropout_prob", float, 0.1, "probability of replacing the class by the null class in train mode (CFG)"),
    Param("zoo_dir", str, "", "shapes zoo whose VQ tokenizer is reused (default: the shipped zoo)"),
)


@hookimpl
def register_generators(register):
    register(Entry("tiny-gru", factory=build_gru, params=PARAMS,
                   summary="Third-party example: 1-layer GRU over the shapes VQ tokens (random init)"))


@hookimpl
def register_families(register):
    # What VA-π and the baselines use for every parameter the user does not --set: a GRU this small
    # takes a far larger step than LlamaGen's 1e-6, and its rewards use the shapes perceptual net
    # (offline), not LPIPS-VGG.
    register(Family(GRU_FAMILY, defaults={
        "lr": 3e-3, "weight_decay": 0.0, "steps": 20, "batch_size": 8, "micro_batch": 8, "ckpt_every": 10,
        "perceptual": "shapes-perceptual", "decode_chunk": 64,
        "group_size": 4, "beta": 0.1, "adv_clip": 5.0, "xi": 0.0,
    }, summary="tiny GRUs over the shapes tokens"))
