"""Tiny real generators and data for training tests.

`tiny_llamagen` is the registered LlamaGen generator at toy scale (16 px images, 4x4 = 16 tokens,
64 codes, a 2-layer 32-wide GPT), built through `vapi_bench.load_generator` with random weights,
so the methods are tested through exactly the code paths a real model uses.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

import vapi_bench

TINY = dict(
    random_init=True, image_size=16, dim=32, n_layer=2, n_head=2, multiple_of=32, codebook_size=64, num_classes=4,
    vq_ch=32, vq_ch_mult=(1, 1, 2), vq_z_channels=32, vq_num_res_blocks=1, vq_codebook_embed_dim=8,
)
NO_DROPOUT = dict(token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0, attn_dropout_p=0.0,
                  class_dropout_prob=0.0)


def tiny_llamagen(dropout: bool = True, seed: int = 0, **overrides: Any):
    """A random-init tiny LlamaGen C2I generator (family 'llamagen-c2i').

    LlamaGen initialises its output head to zero, which would hide every gradient but the head's;
    the head is re-drawn N(0, 0.02) so the tests see gradients in every layer.
    """
    params = {**TINY, "init_seed": seed, **({} if dropout else NO_DROPOUT), **overrides}
    generator = vapi_bench.load_generator("llamagen-b", **params)
    with torch.no_grad():
        head = generator.policy.output.weight
        head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(seed)) * 0.02)
    return generator


class RandomImages(torch.utils.data.Dataset):
    """Deterministic smooth random images in [-1, 1] with class labels."""

    def __init__(self, n: int = 32, size: int = 16, num_classes: int = 4, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        low = torch.rand(n, 3, size // 4, size // 4, generator=gen) * 2 - 1
        self.images = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
        self.labels = torch.randint(0, num_classes, (n,), generator=gen).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def assert_resume_matches_uninterrupted(make_method, make_generator, make_ctx, root) -> dict:
    """Fine-tune fully, then stop after 2 steps and resume in a new process-like object: the resumed
    weights must equal the uninterrupted ones bit for bit (the training engine's promise). Returns
    the resumed run's summary."""
    full = make_generator()
    make_method().finetune(full, RandomImages(), make_ctx(root / "a"))
    make_method().finetune(make_generator(), RandomImages(), make_ctx(root / "b", limit=2))
    resumed = make_generator()
    summary = make_method().finetune(resumed, RandomImages(), make_ctx(root / "b"))
    assert summary["resumed_from"] == 2
    for (name, a), b in zip(full.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), name
    return summary
