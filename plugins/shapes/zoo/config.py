"""What `vapi-bench zoo build` trains, at which size, for how long: the full and quick presets.

The full preset is sized to finish in about twenty minutes on two CPU threads (20.4 min measured
before shapes-var, whose stage takes about 3.5 CPU-minutes more on one thread); the
quick preset runs the same stages with toy sizes and step counts (for tests, under a minute).
Every field ends up in the manifest, so a shipped model always says how it was made.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .train import OptimConfig


@dataclass(frozen=True)
class ZooConfig:
    """Sizes, data amounts, schedules and evaluation budgets of one zoo build."""

    image_size: int = 32
    max_words: int = 16  # caption slots of the word encoder = the t2i GPT's cls_token_num
    # the VQ tokenizer (VQConfig fields): 32x32 -> 8x8 tokens, 128 l2-normalised 8-d codes (a smaller
    # codebook than 256/1024 makes the textured background cheaper to model: held-out GPT CE 2.1 vs 3.9)
    vq: dict[str, Any] = field(default_factory=lambda: dict(
        codebook_size=128, codebook_embed_dim=8, codebook_l2_norm=True, ch=32, ch_mult=(1, 1, 2),
        z_channels=64, num_res_blocks=1, dropout_p=0.0,
    ))
    # the GPTs (GPTConfig fields shared by c2i and t2i); dropouts off: the data never repeats
    gpt: dict[str, Any] = field(default_factory=lambda: dict(
        dim=128, n_layer=4, n_head=4, multiple_of=64, token_dropout_p=0.0, resid_dropout_p=0.0,
        ffn_dropout_p=0.0, class_dropout_prob=0.1,
    ))
    # training images rendered per set (train split); the VQ trains on both sets together
    n_class_images: int = 16_000
    n_caption_images: int = 16_000
    vq_optim: OptimConfig = OptimConfig(steps=1400, batch_size=16, lr=3e-3)
    vq_restart_every: int = 20
    vq_edge_boost: float = 8.0  # L2 weight of pixels next to object edges (see train.edge_weights)
    c2i_optim: OptimConfig = OptimConfig(steps=4000, batch_size=32, lr=6e-3, warmup=30)
    t2i_optim: OptimConfig = OptimConfig(steps=4000, batch_size=32, lr=6e-3, warmup=30)
    t2i_from_c2i: bool = True  # warm-start the t2i GPT's trunk from the trained c2i GPT
    t2i_class_captions: bool = True  # the t2i GPT also trains on the class images, captioned (zoo.class_captions)
    featnet_steps: int = 1000
    # the reward network: the perceptual reward's own feature network (narrower stages, its own
    # initialisation and its own draw of training images), so no method is trained on the
    # features shapes-fid scores it with (the evaluation network, featnet, stays evaluation-only)
    rewardnet_widths: tuple[int, int, int, int] = (16, 24, 48, 96)  # GroupNorm(8): multiples of 8
    rewardnet_steps: int = 1000
    rewardnet_data_seed_offset: int = 1  # its training images: the train split drawn with seed + 1
    # `shapes-c2i-small`: an under-capacity c2i GPT (an eighth of the zoo GPT's width x depth
    # compute) trained on the same tokens to convergence. Measured: it is NOT over-dispersed
    # (no-CFG FID 1.07 at T=1, worse at every T below 1; README). `shapes-c2i-small-ls`: the same
    # GPT, initialisation and batches trained with label smoothing (MaskGIT's 0.1), which makes a
    # model over-dispersed by construction: the base with temperature headroom.
    c2i_small_gpt: dict[str, Any] = field(default_factory=lambda: dict(
        dim=64, n_layer=2, n_head=4, multiple_of=32, token_dropout_p=0.0, resid_dropout_p=0.0,
        ffn_dropout_p=0.0, class_dropout_prob=0.1,
    ))
    c2i_small_optim: OptimConfig = OptimConfig(steps=2000, batch_size=32, lr=6e-3, warmup=30)
    c2i_small_ls_label_smoothing: float = 0.1
    # `shapes-t2i-ls`: the t2i GPT's recipe (same initialisation, warm start and batches) with label
    # smoothing, because `shapes-t2i` gains nothing from temperatures below 1 (README)
    t2i_ls_label_smoothing: float = 0.1
    # `shapes-var`: VAR (next-scale prediction, the second AR paradigm) on its own multi-scale VQ-VAE,
    # both trained on the first n_var_images class images (it is class-conditional). 32 px -> a 4x4
    # latent (three 2x downsamplings) explained by scales 1, 2, 3, 4 (30 tokens): the release's
    # pyramid (1 ... 16 over a 16x16 latent) cut to this latent's side, short enough that the
    # transformer trains in about a minute on one CPU thread. Width 32 at every level (GroupNorm's
    # 32 groups are the floor) and fp16 storage keep the pair under 1.5 MB. φ: the release's
    # quant_resi 0.5 shared 4 ways (VQVAEConfig defaults); the transformer: VAR's block at depth 4.
    var_vae: dict[str, Any] = field(default_factory=lambda: dict(
        vocab_size=128, z_channels=16, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, patch_nums=(1, 2, 3, 4),
    ))
    var: dict[str, Any] = field(default_factory=lambda: dict(
        depth=4, embed_dim=64, num_heads=4, mlp_ratio=4.0, drop_path_rate=0.0, cond_drop_rate=0.1,
    ))
    n_var_images: int = 6000
    var_vae_optim: OptimConfig = OptimConfig(steps=1200, batch_size=16, lr=3e-3)
    var_restart_every: int = 20
    var_optim: OptimConfig = OptimConfig(steps=900, batch_size=32, lr=3e-3, warmup=30, grad_clip=2.0)
    # quality figures: held-out reconstructions, c2i samples per class, t2i samples per prompt
    n_recon_eval: int = 300
    c2i_samples_per_class: int = 10
    t2i_samples_per_prompt: int = 4
    n_t2i_prompts_per_tag: int = 12
    bf16: bool = True  # autocast the GPT matmuls during training where the CPU has native bf16 (losses stay fp32)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["vq"]["ch_mult"] = list(out["vq"]["ch_mult"])
        out["rewardnet_widths"] = list(out["rewardnet_widths"])
        out["var_vae"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["var_vae"].items()}
        return out


FULL = ZooConfig()

QUICK = replace(
    FULL,
    vq={**FULL.vq, "codebook_size": 32},
    gpt={**FULL.gpt, "dim": 32, "n_layer": 1, "n_head": 2},
    n_class_images=96,
    n_caption_images=96,
    vq_optim=OptimConfig(steps=4, batch_size=8, lr=3e-3, warmup=2),
    vq_restart_every=2,
    c2i_optim=OptimConfig(steps=4, batch_size=8, lr=2e-3, warmup=2),
    t2i_optim=OptimConfig(steps=4, batch_size=8, lr=2e-3, warmup=2),
    featnet_steps=3,
    rewardnet_widths=(8, 8, 16, 16),
    rewardnet_steps=3,
    c2i_small_gpt={**FULL.c2i_small_gpt, "dim": 16, "n_layer": 1, "n_head": 2},
    c2i_small_optim=OptimConfig(steps=4, batch_size=8, lr=2e-3, warmup=2),
    var_vae={**FULL.var_vae, "vocab_size": 32},
    var={**FULL.var, "depth": 1, "embed_dim": 32, "num_heads": 2},
    n_var_images=96,
    var_vae_optim=OptimConfig(steps=4, batch_size=8, lr=3e-3, warmup=2),
    var_restart_every=2,
    var_optim=OptimConfig(steps=4, batch_size=8, lr=2e-3, warmup=2, grad_clip=2.0),
    n_recon_eval=12,
    c2i_samples_per_class=1,
    t2i_samples_per_prompt=1,
    n_t2i_prompts_per_tag=1,
)


def preset(quick: bool) -> ZooConfig:
    return QUICK if quick else FULL
