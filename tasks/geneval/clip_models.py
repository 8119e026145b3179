"""Load the open_clip model GenEval and DrawBench score with, from a local file, a hub id or random.

GenEval used open-clip 2.20 `ViT-L-14` with `pretrained="openai"`, which built QuickGELU. open-clip
3.x builds nn.GELU for `ViT-L-14` and silently accepts OpenAI weights into it (docs/reference/evaluation.md §4), so
our default architecture is `ViT-L-14-quickgelu`, the network the OpenAI weights were trained as.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.prepare import WeightRequirement
from vapi_bench.weights import sha256_file

DEFAULT_CLIP_ARCH = "ViT-L-14-quickgelu"
#: Where open_clip's `'openai'` tag fetches ViT-L/14 (open_clip state-dict format).
OPENAI_VIT_L14_URL = "hf://timm/vit_large_patch14_clip_224.openai/open_clip_pytorch_model.bin"
#: The same for ViT-B/32 (AR-GRPO's reward CLIP, `openai/clip-vit-base-patch32`).
OPENAI_VIT_B32_URL = "hf://timm/vit_base_patch32_clip_224.openai/open_clip_pytorch_model.bin"
#: OpenAI weights by architecture-name prefix (the QuickGELU and plain names share them): the
#: cache sub-folder (both files are named open_clip_pytorch_model.bin) and the location.
OPENAI_WEIGHTS = {"ViT-L-14": ("clip", OPENAI_VIT_L14_URL), "ViT-B-32": ("clip-b32", OPENAI_VIT_B32_URL)}
RANDOM_WEIGHTS = "random"


@dataclass
class ClipBundle:
    """A CLIP model in eval mode with its validation transform and tokenizer."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]  # PIL image -> [3, S, S] normalised tensor
    tokenizer: Callable[[list[str]], torch.Tensor]
    device: torch.device
    description: dict[str, Any]


def clip_requirement(arch: str, weights: str) -> WeightRequirement | None:
    """The CLIP checkpoint file for (arch, weights); None for "random".

    weights: "" (the OpenAI weights of ViT-L/14 or ViT-B/32, fetched into the cache), a local file,
    an `hf://owner/repo/file` or URL spec, or "random" (tests and smoke runs only).
    """
    if weights == RANDOM_WEIGHTS:
        return None
    what, default = next((v for prefix, v in OPENAI_WEIGHTS.items() if arch.startswith(prefix)), ("clip", None))
    if not weights and default is None:
        raise UsageError(f"CLIP architecture {arch!r} has no default weights; pass clip_weights=<file> or 'random'.")
    return WeightRequirement(
        what, url=default, spec=weights or None, description=f"CLIP weights for open_clip {arch}"
    )


def load_clip(arch: str, weights: str, device: torch.device | str) -> ClipBundle:
    """Build open_clip `arch` in eval mode with `weights` (see `clip_requirement`)."""
    import open_clip

    device = torch.device(device)
    requirement = clip_requirement(arch, weights)
    checkpoint = requirement.resolve() if requirement else None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=str(checkpoint) if checkpoint else None, device=device
        )
    except RuntimeError as exc:
        raise CheckpointError(f"CLIP weights {checkpoint} do not fit architecture {arch!r}: {exc}") from None
    model.eval()
    description = {
        "arch": arch,
        "weights": RANDOM_WEIGHTS if checkpoint is None else str(checkpoint),
        "weights_sha256": sha256_file(checkpoint) if checkpoint else None,
    }
    return ClipBundle(model, preprocess, open_clip.get_tokenizer(arch), device, description)


@torch.no_grad()
def clip_cosines(clip: ClipBundle, images: Sequence[Any], texts: Sequence[str]) -> torch.Tensor:
    """cos(image embedding, text embedding) for each (PIL image, text) pair: [len(images)], float32.

    The one CLIP-score formula of the suite: the `clip-score` scorer returns it, DrawBench reports
    max(100 x it, 0) (torchmetrics' CLIPScore convention) and AR-GRPO's reward is 5 x it.
    """
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} texts.")
    pixels = torch.stack([clip.preprocess(image) for image in images]).to(clip.device)
    tokens = clip.tokenizer(list(texts)).to(clip.device)
    image_features = clip.model.encode_image(pixels, normalize=True).float()
    text_features = clip.model.encode_text(tokens, normalize=True).float()
    return (image_features * text_features).sum(dim=-1)
