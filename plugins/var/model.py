"""The VAR transformer (`FoundationVision/VAR@78b9539: models/var.py, models/basic_var.py`), reimplemented.

Next-scale prediction: the token sequence is the VQ-VAE's code pyramid, coarsest scale first
(`vqvae.TokenLayout`). Every token of scale k is predicted at once from the class and all tokens
of scales < k, so attention is block-causal over scales (var.py:105-112) and sampling takes one
forward per scale with a KV cache (var.py:159-189). Scale k's input is not its own codes but the
partial reconstruction f̂ of scales < k area-downsampled to pn_k (vqvae.MultiScaleQuantizer
.teacher_forcing_inputs), embedded by `word_embed`; the first scale's input is the class
embedding plus `pos_start`. Each block is adaptive-LN conditioned on the class embedding: a
SiLU-Linear gives (γ1, γ2, scale1, scale2, shift1, shift2) (basic_var.py:128-159), and the head has
its own adaptive LN (basic_var.py:165-174).

Same parameters, buffers and state-dict keys as the official `VAR` with shared_aln=False (every
released model), so `var_d{16,20,24,30}.pth` load strictly. Deliberate differences, none in the
state dict: condition dropout runs only in train mode (the official forward applies it whenever it
is called, var.py:201, because it only serves training); the KV cache is a `KVCache` passed in by
the sampler, not module state; masked pairs of `attn_bias_for_masking` hold the float minimum
instead of -inf (`MASKED`); the fused / flash kernels are not used (F.scaled_dot_product_attention
with the same mask and scale); progressive training (`prog_si`) is left out.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .vqvae import TokenLayout


@dataclass(frozen=True)
class VARConfig:
    """`VAR.__init__` arguments (var.py:22-29). `for_depth` gives the released sizes."""

    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    vocab_size: int = 4096
    z_channels: int = 32  # Cvae, the VQ code dimension
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    norm_eps: float = 1e-6
    attn_l2_norm: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    cond_drop_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"VARConfig: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}.")

    @classmethod
    def for_depth(cls, depth: int, **overrides) -> "VARConfig":
        """The released shape of depth d: width 64 d, d heads, drop-path 0.1 d / 24 (models/__init__.py:19-21)."""
        return cls(**{"depth": depth, "embed_dim": 64 * depth, "num_heads": depth,
                      "drop_path_rate": 0.1 * depth / 24, **overrides})

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(tuple(self.patch_nums))

    def as_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of every block, grown by one scale per sampling step (basic_var.py:107-109)."""

    def __init__(self, depth: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * depth
        self.values: list[torch.Tensor | None] = [None] * depth

    def extend(self, block: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this scale's k, v [B, H, l, c] to block `block`'s cache; return the full ones."""
        if self.keys[block] is not None:
            k, v = torch.cat([self.keys[block], k], dim=2), torch.cat([self.values[block], v], dim=2)
        self.keys[block], self.values[block] = k, v
        return k, v


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample, scaled by 1 / keep (timm; helpers.py:39-46)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class SelfAttention(nn.Module):
    """Multi-head attention with a bias-free fused qkv, separate q / v biases (k has none) and,
    with attn_l2_norm, cosine attention at a learned per-head scale capped at 100 (basic_var.py:58-119)."""

    def __init__(self, cfg: VARConfig) -> None:
        super().__init__()
        dim, self.heads = cfg.embed_dim, cfg.num_heads
        self.head_dim = dim // cfg.num_heads
        self.l2_norm = cfg.attn_l2_norm
        if self.l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, self.heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(cfg.drop_rate)
        self.attn_drop = cfg.attn_drop_rate

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None,
                cache: tuple[KVCache, int] | None = None) -> torch.Tensor:
        b, n, dim = x.shape
        bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])
        q, k, v = F.linear(x, self.mat_qkv.weight, bias).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.l2_norm:
            q = F.normalize(q, dim=-1) * self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v = cache[0].extend(cache[1], k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, dim)))


class FFN(nn.Module):
    """fc1 - GELU(tanh) - fc2 (basic_var.py:33-52)."""

    def __init__(self, cfg: VARConfig) -> None:
        super().__init__()
        hidden = round(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


def _modulate(x: torch.Tensor, norm: nn.LayerNorm, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return norm(x) * (scale + 1) + shift


class AdaLNBlock(nn.Module):
    """`AdaLNSelfAttn` (basic_var.py:128-159): pre-LN attention and FFN whose LayerNorms (no affine)
    are scaled and shifted, and whose outputs are gated, by a linear map of the class embedding."""

    def __init__(self, cfg: VARConfig, drop_path_p: float) -> None:
        super().__init__()
        self.dim, self.drop_path_p = cfg.embed_dim, drop_path_p
        self.attn = SelfAttention(cfg)
        self.ffn = FFN(cfg)
        self.ln_wo_grad = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cfg.embed_dim, 6 * cfg.embed_dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, attn_bias: torch.Tensor | None,
                cache: tuple[KVCache, int] | None = None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond).view(-1, 1, 6, self.dim).unbind(2)
        h = self.attn(_modulate(x, self.ln_wo_grad, scale1, shift1), attn_bias, cache)
        x = x + drop_path(h * gamma1, self.drop_path_p, self.training)
        h = self.ffn(_modulate(x, self.ln_wo_grad, scale2, shift2))
        return x + drop_path(h * gamma2, self.drop_path_p, self.training)


class AdaLNBeforeHead(nn.Module):
    """The head's adaptive LayerNorm (basic_var.py:165-174)."""

    def __init__(self, cfg: VARConfig) -> None:
        super().__init__()
        self.dim = cfg.embed_dim
        self.ln_wo_grad = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cfg.embed_dim, 2 * cfg.embed_dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, self.dim).unbind(2)
        return _modulate(x, self.ln_wo_grad, scale, shift)


#: the additive attention bias of a masked pair. The official buffer holds -inf (var.py:111); a finite
#: minimum masks identically (exp underflows to exactly 0) and keeps the state dict finite, which the
#: suite's checks of trained and loaded weights require (checkpoints.check_finite_weights)
MASKED = torch.finfo(torch.float32).min


def _finite_mask(module: "VAR", incompatible_keys) -> None:
    """After loading (a released file holds -inf there): -inf -> MASKED, in place."""
    with torch.no_grad():
        module.attn_bias_for_masking.clamp_(min=MASKED)


class VAR(nn.Module):
    """Class-conditional next-scale transformer; `forward` is the teacher-forced pass over all scales."""

    def __init__(self, cfg: VARConfig) -> None:
        super().__init__()
        self.config = cfg
        self.layout = cfg.layout
        dim, first = cfg.embed_dim, cfg.patch_nums[0] ** 2
        self.first_l, self.num_tokens = first, self.layout.num_tokens
        init_std = math.sqrt(1 / dim / 3)
        self.word_embed = nn.Linear(cfg.z_channels, dim)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, dim)  # row num_classes = the null class
        self.pos_start = nn.Parameter(torch.empty(1, first, dim))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.num_tokens, dim))
        self.lvl_embed = nn.Embedding(len(cfg.patch_nums), dim)
        for p in (self.class_emb.weight, self.pos_start, self.pos_1LC, self.lvl_embed.weight):
            nn.init.trunc_normal_(p, std=init_std)  # var.py:58-77
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device="cpu").tolist()  # also under a meta device
        self.blocks = nn.ModuleList(AdaLNBlock(cfg, rates[i]) for i in range(cfg.depth))
        # the official buffers (var.py:107-112), saved in the released files
        scale = self.layout.scale_of_token()
        self.register_buffer("lvl_1L", scale[None].clone())
        block_causal = torch.where(scale[:, None] >= scale[None, :], 0.0, MASKED)
        self.register_buffer("attn_bias_for_masking", block_causal.reshape(1, 1, self.num_tokens, self.num_tokens))
        self.register_load_state_dict_post_hook(_finite_mask)
        self.head_nm = AdaLNBeforeHead(cfg)
        self.head = nn.Linear(dim, cfg.vocab_size)

    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02) -> None:
        """The official initialisation with build_vae_var's arguments (var.py:236-286, models/__init__.py:17):
        trunc-normal sqrt(1/3C) linears and embeddings, small head and adaLN gates, residual
        projections divided by sqrt(2 depth)."""
        std = math.sqrt(1 / self.config.embed_dim / 3)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
        self.head.weight.mul_(init_head)
        self.head.bias.zero_()
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        self.head_nm.ada_lin[-1].bias.zero_()
        dim = self.config.embed_dim
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * self.config.depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * self.config.depth))
            block.ada_lin[-1].weight[2 * dim:].mul_(init_adaln)
            block.ada_lin[-1].weight[: 2 * dim].mul_(init_adaln_gamma)
            block.ada_lin[-1].bias.zero_()

    def level_positions(self) -> torch.Tensor:
        """Level plus absolute position embedding of every token, [1, T, C] (var.py:153, 207)."""
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def first_scale_input(self, cond: torch.Tensor) -> torch.Tensor:
        """[B, pn_0^2, C]: the class embedding as start token(s) plus `pos_start` (var.py:154, 203)."""
        return cond[:, None].expand(-1, self.first_l, -1) + self.pos_start

    def logits(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Adaptive LN then the head, in fp32 (var.py:118-124)."""
        return self.head(self.head_nm(x.float(), cond).float()).float()

    def forward(self, labels: torch.Tensor, next_scale_inputs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] (var.py:192-234).

        labels: LongTensor [B] (num_classes = the null class); in train mode a `cond_drop_rate`
        share is replaced by the null class, as official training does. next_scale_inputs:
        [B, T - pn_0^2, Cvae], the f̂ inputs of scales 1.. (MultiScaleQuantizer.teacher_forcing_inputs).
        """
        if self.training and self.config.cond_drop_rate > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.config.cond_drop_rate
            labels = torch.where(drop, self.config.num_classes, labels)
        cond = self.class_emb(labels)
        x = torch.cat([self.first_scale_input(cond), self.word_embed(next_scale_inputs.float())], dim=1)
        x = x + self.level_positions()
        bias = self.attn_bias_for_masking.to(x.dtype)
        for block in self.blocks:
            x = block(x, cond, bias)
        return self.logits(x, cond)

    def step(self, x: torch.Tensor, cond: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One scale of cached inference: x [B, pn^2, C] (already position-embedded) -> logits
        [B, pn^2, V], attending to every earlier scale through `cache` (var.py:165-170)."""
        for i, block in enumerate(self.blocks):
            x = block(x, cond, None, (cache, i))
        return self.logits(x, cond)
