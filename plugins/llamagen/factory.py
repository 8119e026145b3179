"""Build registered LlamaGen generators from typed parameters and released checkpoints.

Each registered model (`MODELS`) declares its official size, default resolution, sampling recipe
and released files. Every GPTConfig / VQConfig field is a Param, so `--set dim=64 n_layer=2
vq_ch=32 random_init=true` gives a tiny offline model through the same code as the real one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from vapi_bench.checkpoints import load_checkpoint_file, load_strict
from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.hashing import file_digest
from vapi_bench.interfaces import Entry, SamplingRecipe
from vapi_bench.params import Param
from vapi_bench.prepare import WeightRequirement

from .generator import PRECISIONS, LlamaGenGenerator
from .gpt import GPT, GPT_CONFIGS, GPTConfig
from .text import FLAN_T5_XL, FlanT5Encoder
from .vq import VQ_CONFIGS, VQConfig, VQModel

#: ImageNet-1k class names, line i = class i: the WordNet lemma strings AR-GRPO's C2I reward reads
#: ("tench, Tinca tinca"; ARG reward_utils/imagenet_names.py), as timm ships them
#: (timm/data/_info/imagenet_synset_to_lemma.txt in synset order).
IMAGENET_CLASS_NAMES = Path(__file__).with_name("imagenet_class_names.txt")
IMAGENET_CLASSES = 1000
CACHE_FOLDER = "llamagen"  # sub-folder of the vapi-bench weight cache
C2I_REPO = "hf://FoundationVision/LlamaGen"
T2I_REPO = "hf://peizesun/llamagen_t2i"


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: official size, defaults, and released checkpoints by resolution."""

    name: str
    gpt: str
    model_type: str
    image_size: int
    recipe: SamplingRecipe
    checkpoints: dict[int, str]
    vq_checkpoint: str
    summary: str
    aliases: tuple[str, ...] = field(default=())


def _c2i(name: str, gpt: str, cfg_scale: float, files: dict[int, str], note: str) -> ModelSpec:
    return ModelSpec(
        name=name, gpt=gpt, model_type="c2i", image_size=384,
        recipe=SamplingRecipe(cfg_scale=cfg_scale, temperature=1.0, top_k=0, top_p=1.0),
        checkpoints={size: f"{C2I_REPO}/{f}" for size, f in files.items()},
        vq_checkpoint=f"{C2I_REPO}/vq_ds16_c2i.pt",
        summary=f"LlamaGen {gpt} class-conditional ImageNet generator ({note}) with the VQ-16 tokenizer",
    )


# CFG scales: VA-pi paper Sec. 5.2 for XL (2.0) and XXL (1.75); LlamaGen GETTING_STARTED otherwise.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _c2i("llamagen-b", "GPT-B", 2.0, {256: "c2i_B_256.pt", 384: "c2i_B_384.pt"}, "111M"),
        _c2i("llamagen-l", "GPT-L", 2.0, {256: "c2i_L_256.pt", 384: "c2i_L_384.pt"}, "343M"),
        _c2i("llamagen-xl", "GPT-XL", 2.0, {384: "c2i_XL_384.pt"}, "775M"),
        _c2i("llamagen-xxl", "GPT-XXL", 1.75, {384: "c2i_XXL_384.pt"}, "1.4B"),
        _c2i("llamagen-3b", "GPT-3B", 1.65, {384: "c2i_3B_384.pt"}, "3.1B"),
        ModelSpec(
            name="llamagen-t2i-xl", gpt="GPT-XL", model_type="t2i", image_size=256,
            recipe=SamplingRecipe(cfg_scale=7.5, temperature=1.0, top_k=2000, top_p=1.0),
            checkpoints={256: f"{T2I_REPO}/t2i_XL_stage1_256.pt", 512: f"{T2I_REPO}/t2i_XL_stage2_512.pt"},
            vq_checkpoint=f"{T2I_REPO}/vq_ds16_t2i.pt",
            summary="LlamaGen GPT-XL text-to-image generator (775M, FLAN-T5-XL captions) with the VQ-16 tokenizer",
        ),
    )
}


def model_params(spec: ModelSpec) -> tuple[Param, ...]:
    """Typed parameters of one model; defaults are that model's official values."""
    gpt = GPTConfig(**GPT_CONFIGS[spec.gpt], model_type=spec.model_type,
                    cls_token_num=1 if spec.model_type == "c2i" else 120)
    vq = VQ_CONFIGS["VQ-16"]
    params = [
        Param("image_size", int, spec.image_size, f"Pixels per side; released weights exist for {sorted(spec.checkpoints)}."),
        Param("random_init", bool, False, "Skip checkpoints and use the official random initialisation (tests, smoke runs)."),
        Param("init_seed", int, 0, "Seed of the random initialisation (random_init only)."),
        Param("vq_checkpoint", str, "", "VQ tokenizer file: local path, URL or hf://... (default: the released one)."),
        Param("prefer_ema", bool, False, "Load the 'ema' weights of a training checkpoint instead of 'model'."),
        Param("precision", str, "fp32", "Sampling precision (bf16 = autocast on the model's device).", choices=tuple(PRECISIONS)),
        Param("dim", int, gpt.dim, "Transformer width."),
        Param("n_layer", int, gpt.n_layer, "Transformer blocks."),
        Param("n_head", int, gpt.n_head, "Attention heads."),
        Param("n_kv_head", int, 0, "Key/value heads for GQA (0 = n_head, as in every released model)."),
        Param("multiple_of", int, gpt.multiple_of, "SwiGLU hidden size is rounded up to a multiple of this."),
        Param("ffn_dim_multiplier", float, 0.0, "Extra SwiGLU width factor (0 = none)."),
        Param("rope_base", float, gpt.rope_base, "RoPE frequency base."),
        Param("norm_eps", float, gpt.norm_eps, "RMSNorm epsilon."),
        Param("initializer_range", float, gpt.initializer_range, "Std of the N(0, s) weight initialisation."),
        Param("token_dropout_p", float, gpt.token_dropout_p, "Dropout on input embeddings (train mode)."),
        Param("attn_dropout_p", float, gpt.attn_dropout_p, "Attention-probability dropout (train mode)."),
        Param("resid_dropout_p", float, gpt.resid_dropout_p, "Dropout after the attention projection (train mode)."),
        Param("ffn_dropout_p", float, gpt.ffn_dropout_p, "Dropout after the SwiGLU (train mode)."),
        Param("drop_path_rate", float, gpt.drop_path_rate, "Stochastic depth, linearly increasing to this rate."),
        Param("class_dropout_prob", float, gpt.class_dropout_prob, "Condition dropout for CFG training (train mode); 0 removes the null row."),
        Param("codebook_size", int, gpt.vocab_size, "VQ codebook size = GPT vocabulary."),
        Param("vq_codebook_embed_dim", int, vq.codebook_embed_dim, "VQ code dimension."),
        Param("vq_codebook_l2_norm", bool, vq.codebook_l2_norm, "l2-normalise codes and codebook."),
        Param("vq_ch", int, vq.ch, "VQ base channel count (multiple of 32)."),
        Param("vq_ch_mult", tuple, vq.ch_mult, "VQ channel multipliers per level (levels - 1 = number of x2 downsamplings)."),
        Param("vq_z_channels", int, vq.z_channels, "VQ latent channels."),
        Param("vq_num_res_blocks", int, vq.num_res_blocks, "VQ encoder res blocks per level (decoder: one more)."),
        Param("vq_dropout_p", float, vq.dropout_p, "VQ res-block dropout (train mode)."),
        Param("vq_commit_loss_beta", float, vq.commit_loss_beta, "VQ commitment loss weight (tokenizer training)."),
        Param("vq_entropy_loss_ratio", float, vq.entropy_loss_ratio, "VQ entropy loss weight (tokenizer training)."),
    ]
    if spec.model_type == "c2i":
        params.append(Param("num_classes", int, gpt.num_classes, "Number of classes (the null class is one more row)."))
    else:
        params += [
            Param("caption_dim", int, gpt.caption_dim, "Text feature dimension (FLAN-T5-XL: 2048)."),
            Param("cls_token_num", int, gpt.cls_token_num, "Caption tokens (T5 max length)."),
            Param("t5_path", str, FLAN_T5_XL, "FLAN-T5 model: local directory or Hugging Face id."),
            Param("t5_dtype", str, "bf16", "T5 precision.", choices=("bf16", "fp16", "fp32")),
            Param("t5_feature_cache", str, "", "Directory caching T5 features per prompt (default: in the weight cache)."),
        ]
    return tuple(params)


def build_configs(spec: ModelSpec, p: dict[str, Any]) -> tuple[GPTConfig, VQConfig]:
    try:
        vq = VQConfig(
            codebook_size=p["codebook_size"], codebook_embed_dim=p["vq_codebook_embed_dim"],
            codebook_l2_norm=p["vq_codebook_l2_norm"], ch=p["vq_ch"], ch_mult=tuple(p["vq_ch_mult"]),
            z_channels=p["vq_z_channels"], num_res_blocks=p["vq_num_res_blocks"], dropout_p=p["vq_dropout_p"],
            commit_loss_beta=p["vq_commit_loss_beta"], entropy_loss_ratio=p["vq_entropy_loss_ratio"],
        )
        if p["image_size"] % vq.downsample_factor:
            raise ValueError(f"image_size {p['image_size']} is not a multiple of the VQ downsampling {vq.downsample_factor}")
        side = p["image_size"] // vq.downsample_factor
        extra = (
            dict(num_classes=p["num_classes"])
            if spec.model_type == "c2i"
            else dict(caption_dim=p["caption_dim"], cls_token_num=p["cls_token_num"])
        )
        gpt = GPTConfig(
            dim=p["dim"], n_layer=p["n_layer"], n_head=p["n_head"], n_kv_head=p["n_kv_head"] or None,
            multiple_of=p["multiple_of"], ffn_dim_multiplier=p["ffn_dim_multiplier"] or None,
            rope_base=p["rope_base"], norm_eps=p["norm_eps"], initializer_range=p["initializer_range"],
            token_dropout_p=p["token_dropout_p"], attn_dropout_p=p["attn_dropout_p"],
            resid_dropout_p=p["resid_dropout_p"], ffn_dropout_p=p["ffn_dropout_p"],
            drop_path_rate=p["drop_path_rate"], class_dropout_prob=p["class_dropout_prob"],
            model_type=spec.model_type, vocab_size=p["codebook_size"], block_size=side * side, **extra,
        )
    except ValueError as exc:
        raise UsageError(f"model '{spec.name}': {exc}") from None
    return gpt, vq


def requirements(spec: ModelSpec, *, checkpoint: str | None = None, **p: Any) -> list[WeightRequirement]:
    """The GPT and VQ files a build will read (for `vapi-bench prepare`), without building anything.

    The T5 text encoder of t2i models is not listed: transformers fetches it into its own hub cache
    (or give t5_path a local directory).
    """
    if p["random_init"]:
        return []
    default = spec.checkpoints.get(p["image_size"])
    if not checkpoint and default is None:
        raise CheckpointError(
            f"model '{spec.name}': no released checkpoint at image_size {p['image_size']} "
            f"(released: {sorted(spec.checkpoints)}). Pass a checkpoint or choose another image_size."
        )
    return [
        WeightRequirement(CACHE_FOLDER, url=default, spec=checkpoint or None,
                          description=f"{spec.name} GPT weights ({p['image_size']} px)"),
        WeightRequirement(CACHE_FOLDER, url=spec.vq_checkpoint, spec=p["vq_checkpoint"] or None,
                          description=f"{spec.name} VQ-16 tokenizer"),
    ]


def _load_weights(module: torch.nn.Module, path: Path, what: str, prefer_ema: bool) -> None:
    load_strict(module, load_checkpoint_file(path, prefer_ema=prefer_ema), what, assign=True)
    module.float()


def build_generator(spec: ModelSpec, *, checkpoint: str | None, device: torch.device, **p: Any) -> LlamaGenGenerator:
    """Entry factory: configs from params, then random init or the (released) checkpoints."""
    gpt_cfg, vq_cfg = build_configs(spec, p)
    extra: dict[str, Any] = {"registered_as": spec.name}
    if p["random_init"]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p["init_seed"])
            gpt, vq = GPT(gpt_cfg), VQModel(vq_cfg)
        extra.update(weights="random", init_seed=p["init_seed"])
    else:
        gpt_file, vq_file = requirements(spec, checkpoint=checkpoint, **p)
        gpt_path, vq_path = gpt_file.resolve(), vq_file.resolve()
        with torch.device("meta"):
            gpt, vq = GPT(gpt_cfg), VQModel(vq_cfg)
        _load_weights(gpt, gpt_path, f"{spec.name} GPT ({gpt_path})", p["prefer_ema"])
        _load_weights(vq, vq_path, f"{spec.name} VQ ({vq_path})", False)
        extra.update(
            checkpoint=str(gpt_path), checkpoint_sha256=file_digest(gpt_path),
            vq_checkpoint=str(vq_path), vq_checkpoint_sha256=file_digest(vq_path),
        )
    text_encoder = None
    if spec.model_type == "t2i":
        text_encoder = FlanT5Encoder(
            p["t5_path"], max_length=gpt_cfg.cls_token_num, device=device, dtype=p["t5_dtype"],
            feature_cache=p["t5_feature_cache"] or "default",
        )
        extra.update(t5_path=p["t5_path"], t5_dtype=p["t5_dtype"])
    return LlamaGenGenerator(
        gpt, vq, name=spec.name, image_size=p["image_size"], text_encoder=text_encoder,
        default_recipe=spec.recipe, default_dataset="imagenet" if spec.model_type == "c2i" else "captions-jsonl",
        family=f"llamagen-{spec.model_type}", device=device, describe_extra=extra, precision=p["precision"],
        class_names=imagenet_class_names() if spec.model_type == "c2i" and gpt_cfg.num_classes == IMAGENET_CLASSES
        else (),
    )


def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class names (see IMAGENET_CLASS_NAMES)."""
    from vapi_bench.plugins.scorers.text_image import read_class_names

    return tuple(read_class_names(IMAGENET_CLASS_NAMES))


def entries() -> list[Entry]:
    """One registry Entry per model in MODELS."""

    def factory_for(spec: ModelSpec):
        def factory(*, checkpoint: str | None = None, device: torch.device | str = "cpu", **params: Any):
            return build_generator(spec, checkpoint=checkpoint, device=torch.device(device), **params)

        return factory

    return [
        Entry(spec.name, factory=factory_for(spec), summary=spec.summary, params=model_params(spec),
              aliases=spec.aliases, requirements=partial(requirements, spec))
        for spec in MODELS.values()
    ]
