"""A tiny random DINOv2 in Hugging Face format (config.json + model.safetensors) for tests: one
layer, width 64, trained-resolution grid 5 x 5 (so 224 px inputs exercise the position resize)."""
from pathlib import Path


def tiny_dinov2_folder(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Dinov2Config, Dinov2Model
    from transformers.utils import logging

    if not (folder / "model.safetensors").is_file():
        torch.manual_seed(seed)
        config = Dinov2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, mlp_ratio=4,
                              image_size=70, patch_size=14)
        logging.disable_progress_bar()
        Dinov2Model(config).save_pretrained(folder)
    return folder
