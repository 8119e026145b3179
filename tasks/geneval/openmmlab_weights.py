"""GenEval's own detector checkpoint, fetched once, converted once, run on transformers.

The `hf-mask2former-openmmlab` backend reads the OpenMMLab Mask2Former Swin-S COCO checkpoint
GenEval uses, converts it to transformers' layout (`mmdet_convert`) and caches the result as
safetensors under `<cache>/mmdet-hf/`, so later and offline runs load plain tensors. The
conversion is the requirement's `derive` step: `vapi-bench prepare` downloads the `.pth`
(sha256-checked against the prefix in its file name) and converts it in one go.

`detector_weights` accepts: empty (the mmdet 2.x release GenEval's README points to), a `.pth`
path or URL (2.x or 3.x key layout, e.g. the mmdet 3.x copy of the same run), an already converted
`.safetensors` path (copied from a connected machine), or `random`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vapi_bench.checkpoints import load_checkpoint_file, load_strict
from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.prepare import WeightRequirement
from vapi_bench.weights import cache_dir, sha256_file

from .mask2former import RANDOM_WEIGHTS, swin_small_config
from .mmdet_convert import SAFETENSORS_FORMAT, convert_checkpoint_to_safetensors

#: the mmdet 2.x release of GenEval's detector (GenEval's README since djghosh13/geneval#9)
MMDET2_CHECKPOINT_URL = (
    "https://download.openmmlab.com/mmdetection/v2.0/mask2former/"
    "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/"
    "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth"
)
#: OpenMMLab names release files with the first 8 hex digits of their sha256
MMDET2_CHECKPOINT_SHA256 = "743b7d99"
CONVERTED_FOLDER = "mmdet-hf"


def converted_path(checkpoint: Path) -> Path:
    """Where the safetensors conversion of an OpenMMLab `.pth` lives in the cache."""
    return cache_dir() / CONVERTED_FOLDER / f"{checkpoint.stem}.safetensors"


def ensure_converted(checkpoint: Path) -> Path:
    """The HF-layout safetensors file for `checkpoint`, converting it unless a conversion of the
    same file (same sha256) is cached; a `.safetensors` input is returned as it is."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".safetensors":
        return checkpoint
    target = converted_path(checkpoint)
    digest = sha256_file(checkpoint)
    if target.is_file() and _source_digest(target) == digest:
        return target
    convert_checkpoint_to_safetensors(checkpoint, target, swin_small_config(), extra_metadata={"source_sha256": digest})
    return target


def _source_digest(converted: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(converted), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception:  # a damaged cache file is simply converted again
        return None
    return metadata.get("source_sha256") if metadata.get("format") == SAFETENSORS_FORMAT else None


def openmmlab_requirement(weights: str) -> WeightRequirement:
    """The checkpoint `vapi-bench prepare` fetches and converts (default: GenEval's mmdet 2.x release)."""
    if weights and Path(weights).expanduser().is_dir():
        raise UsageError(
            f"detector_weights {weights} is a folder; hf-mask2former-openmmlab takes an OpenMMLab .pth (path or "
            "URL) or its converted .safetensors. For a transformers checkpoint folder use detector=hf-mask2former."
        )
    return WeightRequirement(
        "mmdet",
        url=MMDET2_CHECKPOINT_URL,
        spec=weights or None,
        sha256=None if weights else MMDET2_CHECKPOINT_SHA256,
        description="GenEval's Mask2Former Swin-S (OpenMMLab), converted to transformers' layout",
        derive=ensure_converted,
    )


def requirements(weights: str) -> list[WeightRequirement]:
    """Files the backend needs: none for random weights."""
    return [] if weights == RANDOM_WEIGHTS else [openmmlab_requirement(weights)]


def load_openmmlab_mask2former(weights: str, device: torch.device | str) -> torch.nn.Module:
    """transformers' Mask2Former Swin-S holding GenEval's OpenMMLab weights (or random ones)."""
    from transformers import Mask2FormerForUniversalSegmentation

    model = Mask2FormerForUniversalSegmentation(swin_small_config())
    if weights != RANDOM_WEIGHTS:
        requirement = openmmlab_requirement(weights)
        converted = ensure_converted(requirement.resolve())
        try:
            load_strict(model, load_checkpoint_file(converted), f"Mask2Former from {converted}")
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}\n(delete {converted} to convert the OpenMMLab file again)") from None
    return model.to(device).eval()
