"""`clip-score`: cosine similarity of open_clip CLIP image and text embeddings.

Two published uses, one formula (`tasks/geneval/clip_models.clip_cosines`):
- AR-GRPO's reward uses OpenAI ViT-B/32 (`openai/clip-vit-base-patch32`; its README says L/14 but
  the code loads B/32, docs/reference/peers.md §1.4) and rewards 5 x cos;
- DrawBench's CLIP-score column uses OpenAI ViT-L/14 and reports max(100 x cos, 0).
The scorer returns the raw cosine; callers apply their convention. Both architectures are built
with QuickGELU (`*-quickgelu`), the activation the OpenAI weights were trained with (open-clip 3.x
builds GELU for the plain names and would silently accept the weights; docs/reference/evaluation.md §4).
Preprocessing is open_clip's validation transform (PIL bicubic resize of the shorter side to 224,
centre crop, OpenAI mean/std), as the HF CLIP processor AR-GRPO uses does.
"""
from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from .text_image import DEFAULT_CLASS_PROMPT, TextImageScorer

#: Short names accepted for `arch`, mapped to the open_clip architecture the OpenAI weights need.
ARCH_SHORTCUTS = {"ViT-B-32": "ViT-B-32-quickgelu", "ViT-L-14": "ViT-L-14-quickgelu"}
DEFAULT_ARCH = "ViT-L-14"


def open_clip_arch(arch: str) -> str:
    """`arch` with the short names (ViT-B-32, ViT-L-14) mapped to their QuickGELU builds."""
    return ARCH_SHORTCUTS.get(arch, arch)


class ClipScoreScorer(TextImageScorer):
    """cos(CLIP image embedding, CLIP text embedding) per (image, text) pair."""

    def __init__(self, arch: str = DEFAULT_ARCH, weights: str = "", class_names: str = "",
                 class_prompt: str = DEFAULT_CLASS_PROMPT) -> None:
        from vapi_bench.tasks.geneval.clip_models import load_clip

        super().__init__(class_names, class_prompt)
        self.clip = load_clip(open_clip_arch(arch), weights, "cpu")
        self.model = self.clip.model  # registered as a submodule, so .to(device) moves it
        self.model.requires_grad_(False)
        self.description = {"scorer": "clip-score", **self.clip.description}

    @torch.no_grad()
    def score_pixels(self, pixels: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        from vapi_bench.tasks.geneval.clip_models import clip_cosines

        self.clip.device = next(self.model.parameters()).device
        images = [Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in pixels]
        return clip_cosines(self.clip, images, texts)
