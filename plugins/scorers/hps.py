"""HPS v2 / v2.1 (Human Preference Score; Wu et al. 2023) without the `hpsv2` package.

The `hpsv2` wheel misses its tokenizer file and imports a GUI toolkit (docs/reference/peers.md §3.6), so we build
the same network from `open_clip` and reproduce the package's scoring (docs/reference/peers.md §3):
- model: open_clip `ViT-H-14` built with `pretrained=None` (the official evaluation path; no LAION
  download), then `load_state_dict(torch.load(ckpt)["state_dict"])`, strict. Checkpoints live in
  the Hugging Face model repo `xswu/HPSv2`: `HPS_v2_compressed.pt` (v2.0) and
  `HPS_v2.1_compressed.pt` (v2.1); the two versions' scores are not comparable;
- image: RGB -> [0, 1] -> resize so the LONGER side is 224 (bicubic, on the tensor, antialiased as
  torchvision >= 0.17 does) -> zero-pad to 224 x 224, centred -> OpenAI CLIP mean/std. A square
  image is thus resized to 224 x 224 with no crop;
- text: the OpenAI CLIP BPE, 77 tokens (open_clip's tokenizer, vocabulary bundled with open_clip);
- score: cos(image features, text features) of the L2-normalised features, with no logit scale
  and no x100 (`hpsv2.score`). Benchmark tables print 100 x this; tasks apply that factor.
- precision: the package scores under CUDA fp16 autocast with fp32 weights; we do the same on CUDA
  (`precision="auto"`) and run fp32 on the CPU (and everywhere with `precision="fp32"`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.prepare import WeightRequirement
from vapi_bench.weights import sha256_file

from .text_image import DEFAULT_CLASS_PROMPT, TextImageScorer

HPS_ARCH = "ViT-H-14"
HPS_REPO = "xswu/HPSv2"
HPS_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
#: The scorer's registered name per version, also the cache sub-folder of its checkpoint.
HPS_NAMES = {"v2.0": "hpsv2", "v2.1": "hpsv2.1"}
IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS = ("auto", "fp32")


def hps_requirement(version: str, weights: str = "") -> WeightRequirement:
    """The checkpoint of HPS `version`: `weights` (local file, URL or hf://) or the official file."""
    if version not in HPS_FILES:
        raise UsageError(f"HPS version must be one of {sorted(HPS_FILES)}, got {version!r}.")
    return WeightRequirement(
        HPS_NAMES[version], url=f"hf://{HPS_REPO}/{HPS_FILES[version]}", spec=weights or None,
        description=f"HPS {version} checkpoint (open_clip ViT-H-14, key 'state_dict')",
    )


def hps_preprocess(pixels: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> normalised float [B, 3, size, size] (HPS's `preprocess_val`, batched)."""
    x = pixels.float() / 255.0
    height, width = x.shape[-2:]
    scale = size / max(height, width)
    new_h, new_w = round(height * scale), round(width * scale)
    x = TF.resize(x, [new_h, new_w], interpolation=InterpolationMode.BICUBIC, antialias=True)
    pad_h, pad_w = size - new_h, size - new_w
    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def load_hps_state(model: torch.nn.Module, path) -> None:
    """Load an HPS checkpoint ({'state_dict': open_clip CLIP state dict}) strictly into `model`."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"HPS checkpoint {path} cannot be read ({type(exc).__name__}: {exc}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"HPS checkpoint {path} has no 'state_dict' entry (found {found}); "
                              "expected HPS_v2_compressed.pt / HPS_v2.1_compressed.pt from xswu/HPSv2.")
    state = checkpoint["state_dict"]
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state
           and state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(
            f"HPS checkpoint {path} does not fit the open_clip model: missing {missing[:4]} ({len(missing)}), "
            f"unexpected {unexpected[:4]} ({len(unexpected)}), wrong shapes {bad[:4]}.")
    model.load_state_dict(state, strict=True)


class HpsScorer(TextImageScorer):
    """HPS v2 / v2.1 raw cosine per (image, text) pair (module docstring)."""

    def __init__(self, version: str = "v2.1", weights: str = "", arch: str = HPS_ARCH, precision: str = "auto",
                 class_names: str = "", class_prompt: str = DEFAULT_CLASS_PROMPT) -> None:
        import open_clip

        super().__init__(class_names, class_prompt)
        if precision not in PRECISIONS:
            raise UsageError(f"hps precision must be one of {list(PRECISIONS)}, got {precision!r}.")
        path = hps_requirement(version, weights).resolve()
        try:
            self.model = open_clip.create_model(arch, pretrained=None)
        except RuntimeError as exc:
            raise UsageError(f"open_clip cannot build architecture {arch!r}: {exc}") from None
        load_hps_state(self.model, path)
        self.model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.image_size = int(self.model.visual.image_size[0])
        self.version, self.precision, self.arch = version, precision, arch
        self.description = {"scorer": HPS_NAMES[version], "arch": arch, "weights": str(path),
                            "weights_sha256": sha256_file(path)}

    @torch.no_grad()
    def score_pixels(self, pixels: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        images = hps_preprocess(pixels.to(device), self.image_size)
        tokens = self.tokenizer(list(texts)).to(device)
        use_amp = device.type == "cuda" and self.precision == "auto"
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            image_features = self.model.encode_image(images, normalize=True)
            text_features = self.model.encode_text(tokens, normalize=True)
        return (image_features.float() * text_features.float()).sum(dim=-1)
