"""Test helpers shared by the GenEval / DrawBench / scorer tests: tiny random CLIP and HPS models
registered with open_clip."""
import json
import tempfile
from pathlib import Path

TINY_CLIP_ARCH = "vapi-tiny-clip-quickgelu"
_TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_HPS_ARCH = "vapi-tiny-hps"  # GELU (not QuickGELU), as HPS's ViT-H-14
_TINY_HPS_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
_registered: set[str] = set()


def _register(arch: str, config: dict) -> str:
    """Make `arch` a known open_clip architecture (once per process); return its name."""
    if arch not in _registered:
        import open_clip

        folder = Path(tempfile.mkdtemp(prefix=f"{arch}-"))
        (folder / f"{arch}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder)  # kept: open_clip re-reads every config folder on each rescan
        _registered.add(arch)
    return arch


def register_tiny_clip() -> str:
    return _register(TINY_CLIP_ARCH, _TINY_CLIP_CONFIG)


def register_tiny_hps() -> str:
    return _register(TINY_HPS_ARCH, _TINY_HPS_CONFIG)


def write_tiny_hps_checkpoint(path, seed: int = 0):
    """A seeded random tiny HPS model saved in the released files' layout ({'state_dict': ...} plus
    bookkeeping entries); returns the model (eval mode)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(register_tiny_hps(), pretrained=None).eval()
    torch.save({"epoch": 3, "name": "tiny", "state_dict": model.state_dict()}, path)
    return model


def tiny_clip(seed: int = 0):
    """A ClipBundle of the tiny architecture with seeded random weights, on the CPU."""
    import torch

    from vapi_bench.tasks.geneval.clip_models import load_clip

    arch = register_tiny_clip()
    torch.manual_seed(seed)
    return load_clip(arch, "random", "cpu")


def tiny_mask2former(num_labels: int = 80):
    """A seeded random Mask2Former with a 4-stage Swin of width 16 and 8 queries (fast on a CPU)."""
    import torch
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(0)
    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=swin, num_labels=num_labels, num_queries=8, feature_size=32,
                               mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64, encoder_layers=1,
                               decoder_layers=2, num_attention_heads=2, dim_feedforward=64)
    return Mask2FormerForUniversalSegmentation(config).eval()
