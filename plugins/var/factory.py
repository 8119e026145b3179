"""Build the registered VAR generators (var-d16/-d20/-d24/-d30) from typed parameters and the
released checkpoints (https://huggingface.co/FoundationVision/var, VAR README "VAR zoo").

Every VARConfig / VQVAEConfig field that a tiny offline model needs is a Param, so
`--set random_init=true depth=2 embed_dim=64 num_heads=4 patch_nums=1,2,3 vae_ch=32` builds one
through the same code as the real models.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from vapi_bench.checkpoints import load_checkpoint_file, load_strict
from vapi_bench.errors import UsageError
from vapi_bench.hashing import file_digest
from vapi_bench.interfaces import Entry, SamplingRecipe
from vapi_bench.params import Param
from vapi_bench.prepare import WeightRequirement

from .generator import PRECISIONS, VARGenerator
from .model import VAR, VARConfig
from .vqvae import VQVAE, VQVAEConfig

REPO = "hf://FoundationVision/var"
VAE_FILE = f"{REPO}/vae_ch160v4096z32.pth"
CACHE_FOLDER = "var"  # sub-folder of the vapi-bench weight cache
#: the official FID setting: autoregressive_infer_cfg(cfg=1.5, top_k=900, top_p=0.96) (VAR README,
#: "Sampling & zero-shot inference"), i.e. cfg_scale = 1 + 1.5 in the suite's convention (sampling.py)
OFFICIAL_RECIPE = SamplingRecipe(cfg_scale=2.5, temperature=1.0, top_k=900, top_p=0.96)
#: parameters of the VAR README's table (256 px, ImageNet), by depth
SIZES = {16: "310M", 20: "600M", 24: "1.0B", 30: "2.0B"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    depth: int
    checkpoint: str
    summary: str


MODELS: dict[str, ModelSpec] = {
    f"var-d{d}": ModelSpec(f"var-d{d}", d, f"{REPO}/var_d{d}.pth",
                           f"VAR-d{d} class-conditional ImageNet 256 px next-scale generator ({size}) with the "
                           f"multi-scale VQ-VAE (vae_ch160v4096z32)")
    for d, size in SIZES.items()
}


def model_params(spec: ModelSpec) -> tuple[Param, ...]:
    """Typed parameters; defaults are the released model's (models/__init__.py build_vae_var)."""
    var, vae = VARConfig.for_depth(spec.depth), VQVAEConfig()
    return (
        Param("random_init", bool, False, "Skip checkpoints and use the official random initialisation (tests, smoke runs)."),
        Param("init_seed", int, 0, "Seed of the random initialisation (random_init only).", minimum=0),
        Param("vae_checkpoint", str, "", "VQ-VAE file: local path, URL or hf://... (default: the released one)."),
        Param("precision", str, "fp32", "Sampling precision (bf16 = autocast on the model's device).", choices=tuple(PRECISIONS)),
        Param("depth", int, var.depth, "Transformer blocks.", minimum=1),
        Param("embed_dim", int, var.embed_dim, "Transformer width (released: 64 x depth).", minimum=1),
        Param("num_heads", int, var.num_heads, "Attention heads (released: depth).", minimum=1),
        Param("mlp_ratio", float, var.mlp_ratio, "FFN hidden size / width.", exclusive_minimum=0.0),
        Param("num_classes", int, var.num_classes, "Number of classes (the null class is one more row).", minimum=1),
        Param("patch_nums", tuple, var.patch_nums, "Side of each scale's code map, coarse to fine (the last one is "
              "the latent's side: image_size = last x 2^(levels of vae_ch_mult - 1)).", minimum=1),
        Param("attn_l2_norm", bool, var.attn_l2_norm, "Cosine attention with a learned per-head scale (every release)."),
        Param("drop_rate", float, var.drop_rate, "Dropout after attention / FFN projections (train mode).", minimum=0.0, exclusive_maximum=1.0),
        Param("attn_drop_rate", float, var.attn_drop_rate, "Attention dropout (train mode).", minimum=0.0, exclusive_maximum=1.0),
        Param("drop_path_rate", float, var.drop_path_rate, "Stochastic depth, rising linearly to this rate (released: "
              "0.1 x depth / 24).", minimum=0.0, exclusive_maximum=1.0),
        Param("cond_drop_rate", float, var.cond_drop_rate, "Class dropout to the null class in train mode (CFG training).",
              minimum=0.0, maximum=1.0),
        Param("vocab_size", int, vae.vocab_size, "VQ codebook size = transformer vocabulary.", minimum=2),
        Param("z_channels", int, vae.z_channels, "VQ code dimension (Cvae).", minimum=1),
        Param("vae_ch", int, vae.ch, "VQ-VAE base width (a multiple of 32).", minimum=32),
        Param("vae_ch_mult", tuple, vae.ch_mult, "VQ-VAE width multipliers per level (levels - 1 = x2 downsamplings).", minimum=1),
        Param("vae_num_res_blocks", int, vae.num_res_blocks, "VQ-VAE encoder res blocks per level (decoder: one more).", minimum=1),
        Param("share_quant_resi", int, vae.share_quant_resi, "Number of φ refiners shared over the scales.", minimum=2),
        Param("quant_resi", float, vae.quant_resi, "φ's residual ratio r: (1 - r) h + r conv(h).", exclusive_minimum=0.0, maximum=1.0),
    )


def build_configs(spec: ModelSpec, p: dict[str, Any]) -> tuple[VARConfig, VQVAEConfig]:
    patch_nums = tuple(int(n) for n in p["patch_nums"])
    try:
        vae = VQVAEConfig(vocab_size=p["vocab_size"], z_channels=p["z_channels"], ch=p["vae_ch"],
                          ch_mult=tuple(int(m) for m in p["vae_ch_mult"]), num_res_blocks=p["vae_num_res_blocks"],
                          quant_resi=p["quant_resi"], share_quant_resi=p["share_quant_resi"], patch_nums=patch_nums)
        var = VARConfig(depth=p["depth"], embed_dim=p["embed_dim"], num_heads=p["num_heads"], mlp_ratio=p["mlp_ratio"],
                        num_classes=p["num_classes"], vocab_size=p["vocab_size"], z_channels=p["z_channels"],
                        patch_nums=patch_nums, attn_l2_norm=p["attn_l2_norm"], drop_rate=p["drop_rate"],
                        attn_drop_rate=p["attn_drop_rate"], drop_path_rate=p["drop_path_rate"],
                        cond_drop_rate=p["cond_drop_rate"])
    except ValueError as exc:
        raise UsageError(f"model '{spec.name}': {exc}") from None
    return var, vae


def requirements(spec: ModelSpec, *, checkpoint: str | None = None, **p: Any) -> list[WeightRequirement]:
    """The transformer and VQ-VAE files a build reads (for `vapi-bench prepare`), without building."""
    if p["random_init"]:
        return []
    return [
        WeightRequirement(CACHE_FOLDER, url=spec.checkpoint, spec=checkpoint or None,
                          description=f"{spec.name} transformer weights"),
        WeightRequirement(CACHE_FOLDER, url=VAE_FILE, spec=p["vae_checkpoint"] or None,
                          description=f"{spec.name} multi-scale VQ-VAE (vae_ch160v4096z32)"),
    ]


def _load(module: torch.nn.Module, path: Path, what: str) -> None:
    load_strict(module, load_checkpoint_file(path), what, assign=True)
    module.float()


def build_generator(spec: ModelSpec, *, checkpoint: str | None, device: torch.device, **p: Any) -> VARGenerator:
    """Entry factory: configs from params, then the official random init or the released files."""
    var_cfg, vae_cfg = build_configs(spec, p)
    extra: dict[str, Any] = {"registered_as": spec.name}
    if p["random_init"]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p["init_seed"])
            var, vae = VAR(var_cfg), VQVAE(vae_cfg)
            var.init_weights()
        extra.update(weights="random", init_seed=p["init_seed"])
    else:
        var_file, vae_file = requirements(spec, checkpoint=checkpoint, **p)
        var_path, vae_path = var_file.resolve(), vae_file.resolve()
        with torch.device("meta"):
            var, vae = VAR(var_cfg), VQVAE(vae_cfg)
        _load(var, var_path, f"{spec.name} VAR ({var_path})")
        _load(vae, vae_path, f"{spec.name} VQ-VAE ({vae_path})")
        extra.update(checkpoint=str(var_path), checkpoint_sha256=file_digest(var_path),
                     vae_checkpoint=str(vae_path), vae_checkpoint_sha256=file_digest(vae_path))
    from vapi_bench.plugins.llamagen.factory import IMAGENET_CLASSES, imagenet_class_names

    return VARGenerator(
        var, vae, name=spec.name, default_recipe=OFFICIAL_RECIPE, default_dataset="imagenet", family="var",
        device=device, precision=p["precision"], describe_extra=extra,
        class_names=imagenet_class_names() if var_cfg.num_classes == IMAGENET_CLASSES else (),
    )


def entries() -> list[Entry]:
    """One registry Entry per model in MODELS."""

    def factory_for(spec: ModelSpec):
        def factory(*, checkpoint: str | None = None, device: torch.device | str = "cpu", **params: Any):
            return build_generator(spec, checkpoint=checkpoint, device=torch.device(device), **params)

        return factory

    return [Entry(spec.name, factory=factory_for(spec), summary=spec.summary, params=model_params(spec),
                  requirements=partial(requirements, spec)) for spec in MODELS.values()]
