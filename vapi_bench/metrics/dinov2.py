"""DINOv2 features for the Fréchet distance FD_DINOv2 (Stein et al. 2023, dgm-eval; EDM2 reports it).

torch-fidelity 0.4's `dinov2-vit-l-14` extractor is the reference definition, but it can only load
the network through `torch.hub.load("facebookresearch/dinov2", ...)` (GitHub; a local weights path
raises NotImplementedError), so we run the same network from the Hugging Face port
(`facebook/dinov2-large`, transformers `Dinov2Model`) and reproduce torch-fidelity's forward:
1. uint8 [B, 3, H, W] -> float32, TF1-style bilinear resize to 224 x 224
   (`interpolate_bilinear_2d_like_tensorflow1x`, as torch-fidelity);
2. normalise with the ImageNet mean/std scaled by 255;
3. the DINOv2 ViT; the feature is the CLS token after the final LayerNorm (the hub model's
   `x_norm_clstoken`, transformers' `pooler_output`), 1024-d for ViT-L/14.
The position embeddings (trained at 518 px, 37 x 37 patches) are resized to the 16 x 16 grid of a
224 px input. The hub code does this with `scale_factor = (16 + 0.1) / 37` (its historical offset)
while transformers passes `size=(16, 16)`; the two sample the grid at slightly different points, so
we use the hub formula (`hub_position_embeddings`) to match torch-fidelity and dgm-eval.
"""
from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, DataError, UsageError
from ..prepare import WeightRequirement

DINOV2_REPO = "facebook/dinov2-large"
DINOV2_FILES = ("config.json", "model.safetensors")
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HUB_INTERPOLATE_OFFSET = 0.1


def dinov2_requirements(weights: str = "") -> list[WeightRequirement]:
    """The two files of a Hugging Face DINOv2 model: from `weights` (a local folder holding them) or
    from `facebook/dinov2-large`, cached together under `<cache>/dinov2-vitl14/`."""
    if weights:
        return [WeightRequirement("dinov2-vitl14", spec=str(Path(weights).expanduser() / name),
                                  description=f"DINOv2 {name} (local model folder)") for name in DINOV2_FILES]
    return [WeightRequirement("dinov2-vitl14", url=f"hf://{DINOV2_REPO}/{name}",
                              description=f"DINOv2 ViT-L/14 {name} (FD_DINOv2 features)") for name in DINOV2_FILES]


def hub_position_embeddings(position_embeddings: torch.Tensor, grid: int) -> torch.Tensor:
    """[1, 1 + M*M, D] trained position embeddings -> [1, 1 + grid*grid, D] as the DINOv2 hub code
    resizes them: bicubic, no antialias, scale factor (grid + 0.1) / M, in float32."""
    cls, patches = position_embeddings[:, :1], position_embeddings[:, 1:].float()
    side, dim = math.isqrt(patches.shape[1]), patches.shape[-1]
    if side * side != patches.shape[1]:
        raise ValueError(f"position embeddings of {patches.shape[1]} patches are not a square grid.")
    if side == grid:
        return position_embeddings
    scale = (grid + HUB_INTERPOLATE_OFFSET) / side
    resized = nn.functional.interpolate(patches.reshape(1, side, side, dim).permute(0, 3, 1, 2),
                                        scale_factor=(scale, scale), mode="bicubic")
    if resized.shape[-2:] != (grid, grid):
        raise ValueError(f"hub interpolation gave a {tuple(resized.shape[-2:])} grid, expected {grid}.")
    patches = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([cls, patches.to(position_embeddings.dtype)], dim=1)


def _hub_interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Drop-in for transformers' Dinov2Embeddings.interpolate_pos_encoding (square inputs)."""
    patch = self.patch_embeddings.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    if height != width:
        raise DataError(f"DINOv2 features expect square inputs, got {height}x{width}.")
    return hub_position_embeddings(self.position_embeddings, height // patch)


def load_dinov2_model(folder: Path | str) -> nn.Module:
    """transformers Dinov2Model from a local folder (config.json + weights), hub position resizing,
    eval mode, frozen; missing, unexpected or mis-shaped weights raise CheckpointError."""
    try:
        from transformers import Dinov2Model
    except ImportError:
        raise UsageError("FD_DINOv2 needs transformers: pip install 'vapi-bench[metrics]', or switch it off "
                         "with --set fd_dinov2=false.") from None
    try:
        model, info = Dinov2Model.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"DINOv2 model folder {folder} cannot be loaded "
                              f"({str(exc).strip().splitlines()[0]}).") from None
    problems = {kind: info.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {kind: sorted(map(str, keys))[:4] for kind, keys in problems.items() if keys}
    if problems:
        raise CheckpointError(f"DINOv2 weights in {folder} do not fit its config: {problems}.")
    model.embeddings.interpolate_pos_encoding = types.MethodType(_hub_interpolate_pos_encoding, model.embeddings)
    return model.float().eval().requires_grad_(False)


class DinoV2Extractor(nn.Module):
    """torch-fidelity's `dinov2-vit-l-14` forward on the transformers port (module docstring)."""

    def __init__(self, folder: Path | str, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.model = load_dinov2_model(folder)
        self.register_buffer("mean", 255 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.device = torch.device(device)
        self.to(self.device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, 3, H, W] -> CLS features [B, D] float32."""
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise DataError(f"DINOv2 expects uint8 images [B, 3, H, W], got {images.dtype} {tuple(images.shape)}.")
        with torch.autocast(self.device.type, enabled=False):
            x = interpolate_bilinear_2d_like_tensorflow1x(
                images.to(self.device).float(), size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
            x = (x - self.mean) / self.std
            return self.model(pixel_values=x).pooler_output.float()

    def extract(self, batches: Iterable[np.ndarray], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Features [N, D] float64 of uint8 NHWC batches, in order."""
        parts = []
        for batch in batches:
            array = np.asarray(batch)
            if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
                raise DataError(f"DINOv2 batches must be uint8 [B, H, W, 3], got {array.dtype} {array.shape}.")
            features = self(torch.from_numpy(np.require(array, requirements=["C", "W"])).permute(0, 3, 1, 2))
            parts.append(features.cpu().numpy().astype(np.float64))
            if progress is not None:
                progress(len(array))
        if not parts:
            raise DataError("DINOv2 feature extraction received no images.")
        return np.concatenate(parts)


def load_dinov2(weights: str = "", device: torch.device | str = "cpu") -> DinoV2Extractor:
    """The extractor from a local model folder, or from facebook/dinov2-large through the cache."""
    config_path, _ = [requirement.resolve() for requirement in dinov2_requirements(weights)]
    return DinoV2Extractor(config_path.parent, device=device)
