"""VAR's multi-scale VQ-VAE (`FoundationVision/VAR@78b9539: models/vqvae.py, quant.py, basic_vae.py`),
reimplemented with the official state-dict keys so `vae_ch160v4096z32.pth` loads strictly.

An image is encoded once to a latent f [B, Cvae, h, w]; the quantizer then explains f coarse to
fine: at scale k it area-downsamples the residual to pn_k x pn_k, picks the nearest code per cell,
bicubic-upsamples the code map back to h x w, refines it with a 3x3 convolution φ
(`h(1-r) + conv(h) r`, quant.py:199-206) and subtracts it from the residual (quant.py:135-166).
The codes of all scales, concatenated coarse to fine in raster order, are the token sequence the
transformer models (see `TokenLayout`). Decoding sums the refined, upsampled code maps into f̂ and
runs the decoder (quant.py:107-121 with all_to_max_scale=True).

Differences from the official module, none visible in the state dict: only the partially shared φ
(`share_quant_resi >= 2`, every released VAE uses 4) is built; the training forward (the VQ
losses) lives in vae_training.py, the usage statistics are left out and the `ema_vocab_hit_SV`
buffer is kept only so released files load; the encoder/decoder take `ch_mult` / `num_res_blocks` (the official VQVAE fixes them
to (1, 1, 2, 2, 4) / 2, vqvae.py:32-37) so the shapes world can build a tiny one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VQVAEConfig:
    """`VQVAE.__init__` arguments (vqvae.py:17-27) that change the network; defaults are the release's."""

    vocab_size: int = 4096
    z_channels: int = 32  # Cvae: the code dimension
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    dropout: float = 0.0
    using_znorm: bool = False  # cosine instead of l2 nearest neighbours (False in every release)
    quant_conv_ks: int = 3
    quant_resi: float = 0.5  # r in φ(h) = (1 - r) h + r conv(h)
    share_quant_resi: int = 4  # number of φ convolutions shared over the scales
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

    def __post_init__(self) -> None:
        problems = []
        if self.ch % 32:
            problems.append(f"ch {self.ch} is not a multiple of 32 (GroupNorm with 32 groups)")
        if self.share_quant_resi < 2:
            problems.append(f"share_quant_resi must be >= 2 (partially shared φ), got {self.share_quant_resi}")
        if not 0 < self.quant_resi <= 1:
            problems.append(f"quant_resi must lie in (0, 1], got {self.quant_resi}")
        if list(self.patch_nums) != sorted(set(self.patch_nums)) or self.patch_nums[0] < 1:
            problems.append(f"patch_nums must be increasing positive sizes, got {self.patch_nums}")
        if problems:
            raise ValueError("VQVAEConfig: " + "; ".join(problems) + ".")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TokenLayout:
    """Where each scale's codes sit in the token sequence: scale k holds tokens [begin_k, end_k),
    its pn_k x pn_k code map in raster order, coarsest scale first (var.py:39-46)."""

    patch_nums: tuple[int, ...]

    @property
    def bounds(self) -> list[tuple[int, int]]:
        ends = np.cumsum([pn * pn for pn in self.patch_nums]).tolist()
        return list(zip([0] + ends[:-1], ends))

    @property
    def num_tokens(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    def split(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """[B, T, ...] -> one [B, pn_k^2, ...] tensor per scale."""
        return list(tokens.split([pn * pn for pn in self.patch_nums], dim=1))

    def scale_of_token(self) -> torch.Tensor:
        """LongTensor [T]: the scale index of each token (the official `lvl_1L`, var.py:107-110)."""
        return torch.cat([torch.full((pn * pn,), k) for k, pn in enumerate(self.patch_nums)])


# ---- encoder / decoder (basic_vae.py, after latent-diffusion's model.py) --------------------------
def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice plus a 1x1 shortcut when the width changes (basic_vae.py:40-60)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels of a feature map, fused 1x1 qkv (basic_vae.py:63-92)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the official bmm order (not SDPA), so that encodings, hence nearest codes, match it bit for bit
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)  # [B, C, HW] each
        weights = F.softmax(torch.bmm(q.transpose(1, 2), k) * c ** -0.5, dim=2)  # [B, HW_q, HW_k]
        out = torch.bmm(v, weights.transpose(1, 2).contiguous())  # [B, C, HW_q]
        return x + self.proj_out(out.reshape(b, c, h, w))


class Downsample2x(nn.Module):
    """Asymmetric (right/bottom) zero pad, then a stride-2 3x3 conv (basic_vae.py:31-37)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample2x(nn.Module):
    """Nearest x2, then a 3x3 conv (basic_vae.py:22-28)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _level(blocks: list[nn.Module], attns: list[nn.Module], resample: nn.Module | None, name: str) -> nn.Module:
    """One resolution level as the official plain `nn.Module` with .block / .attn / .{down,up}sample."""
    level = nn.Module()
    level.block, level.attn = nn.ModuleList(blocks), nn.ModuleList(attns)
    if resample is not None:
        setattr(level, name, resample)
    return level


def _middle(channels: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout)
    mid.attn_1 = AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels, dropout)
    return mid


def _run_level(level: nn.Module, h: torch.Tensor, name: str) -> torch.Tensor:
    """A `_level`: its res blocks, each followed by its attention where the level has one, then the
    resampling `name` if the level has it (the official encoder's and decoder's shared loop)."""
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return getattr(level, name)(h) if hasattr(level, name) else h


def _run_middle(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class Encoder(nn.Module):
    """Image [B, 3, H, W] -> latent [B, Cvae, H/d, W/d]; attention at the lowest resolution only
    (using_sa / using_mid_sa, basic_vae.py:99-160)."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        mults, last = cfg.ch_mult, len(cfg.ch_mult) - 1
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = cfg.ch
        for i, mult in enumerate(mults):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(width, cfg.ch * mult, cfg.dropout))
                width = cfg.ch * mult
                if i == last:
                    attns.append(AttnBlock(width))
            self.down.append(_level(blocks, attns, Downsample2x(width) if i != last else None, "downsample"))
        self.mid = _middle(width, cfg.dropout)
        self.norm_out = _group_norm(width)
        self.conv_out = nn.Conv2d(width, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h, "downsample")
        h = _run_middle(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent -> image, the mirror of `Encoder` with one more res block per level (basic_vae.py:163-226).
    `up[i]` is level i counted from the full resolution, built coarse to fine as the official does."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        mults, last = cfg.ch_mult, len(cfg.ch_mult) - 1
        width = cfg.ch * mults[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, width, 3, padding=1)
        self.mid = _middle(width, cfg.dropout)
        levels = []
        for i in reversed(range(len(mults))):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(width, cfg.ch * mults[i], cfg.dropout))
                width = cfg.ch * mults[i]
                if i == last:
                    attns.append(AttnBlock(width))
            levels.insert(0, _level(blocks, attns, Upsample2x(width) if i != 0 else None, "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = _group_norm(width)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_middle(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            h = _run_level(level, h, "upsample")
        return self.conv_out(F.silu(self.norm_out(h)))


# ---- the multi-scale quantizer (quant.py) ---------------------------------------------------------
class Phi(nn.Conv2d):
    """φ(h) = (1 - r) h + r conv3x3(h): the refiner applied to each upsampled code map (quant.py:199-206)."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__(channels, channels, 3, padding=1)
        self.ratio = ratio

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1 - self.ratio) + super().forward(h) * self.ratio


class PhiPartiallyShared(nn.Module):
    """K φ's shared over the scales: scale k of S uses the φ whose tick is nearest to k / (S - 1);
    ticks are linspace(1/3K, 1 - 1/3K) for K = 4, else linspace(1/2K, 1 - 1/2K) (quant.py:218-229)."""

    def __init__(self, channels: int, ratio: float, count: int) -> None:
        super().__init__()
        self.qresi_ls = nn.ModuleList(Phi(channels, ratio) for _ in range(count))
        margin = 1 / 3 / count if count == 4 else 1 / 2 / count
        self.ticks = np.linspace(margin, 1 - margin, count)

    def for_scale(self, scale: int, num_scales: int) -> Phi:
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - scale / (num_scales - 1))))]


class MultiScaleQuantizer(nn.Module):
    """`VectorQuantizer2` (quant.py:15-196): residual quantisation over the scale pyramid."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_nums = tuple(cfg.patch_nums)
        self.quant_resi = PhiPartiallyShared(cfg.z_channels, cfg.quant_resi, cfg.share_quant_resi)
        # training statistics of the release; kept only so released state dicts load strictly
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), cfg.vocab_size))
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.z_channels)

    def phi(self, scale: int) -> Phi:
        return self.quant_resi.for_scale(scale, len(self.patch_nums))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Code index of each row of z [N, C]: l2 nearest (argmin of |z|^2 + |e|^2 - 2 z.e, computed
        as quant.py:155-157 does), or cosine nearest with using_znorm (quant.py:151-153)."""
        codebook = self.embedding.weight
        if self.cfg.using_znorm:
            return torch.argmax(F.normalize(z, dim=-1) @ F.normalize(codebook.T, dim=0), dim=1)
        distance = z.square().sum(1, keepdim=True) + codebook.square().sum(1)
        return torch.argmin(distance.addmm_(z, codebook.T, alpha=-2, beta=1), dim=1)

    def upsampled(self, code_map: torch.Tensor, scale: int) -> torch.Tensor:
        """φ_k(bicubic upsample of a [B, C, pn, pn] code map to the latent size); the last scale is
        already full size (quant.py:160-161)."""
        side = self.patch_nums[-1]
        if scale != len(self.patch_nums) - 1:
            code_map = F.interpolate(code_map, size=(side, side), mode="bicubic")
        return self.phi(scale)(code_map)

    def code_map(self, indices: torch.Tensor, pn: int) -> torch.Tensor:
        """Indices [B, pn*pn] -> code vectors [B, C, pn, pn]."""
        return self.embedding(indices).transpose(1, 2).reshape(len(indices), -1, pn, pn)

    @torch.no_grad()
    def latent_to_indices(self, f: torch.Tensor) -> list[torch.Tensor]:
        """Latent [B, C, h, w] -> per-scale indices [B, pn^2] (quant.py:135-166, to_fhat=False)."""
        b, c, h, w = f.shape
        if (h, w) != (self.patch_nums[-1],) * 2:
            raise ValueError(f"latent is {h}x{w} but the last scale is {self.patch_nums[-1]}x{self.patch_nums[-1]}")
        rest, out = f.detach().clone(), []
        for k, pn in enumerate(self.patch_nums):
            z = F.interpolate(rest, size=(pn, pn), mode="area") if k != len(self.patch_nums) - 1 else rest
            idx = self.nearest(z.permute(0, 2, 3, 1).reshape(-1, c)).view(b, pn * pn)
            rest.sub_(self.upsampled(self.code_map(idx, pn), k))
            out.append(idx)
        return out

    def embeddings_to_fhat(self, code_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Σ_k φ_k(up(code map k)): the latent the decoder reads (quant.py:107-121, all_to_max_scale)."""
        f_hat = self.empty_fhat(code_maps[0])
        for k, code_map in enumerate(code_maps):
            f_hat = f_hat + self.upsampled(code_map.float(), k)
        return f_hat

    def empty_fhat(self, like: torch.Tensor) -> torch.Tensor:
        """Zeros [B, C, side, side], contiguous: the official f̂ starts so (quant.py:113, 176; var.py:157),
        and the memory layout of f̂ decides which convolution kernel the decoder runs, hence its rounding."""
        side = self.patch_nums[-1]
        return torch.zeros(len(like), self.cfg.z_channels, side, side, device=like.device, dtype=torch.float32)

    def teacher_forcing_inputs(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """The transformer's input for scales 1..S-1 from the codes of scales 0..S-2: the running f̂
        area-downsampled to the next scale's size, [B, T - pn_0^2, C] (quant.py:169-184)."""
        f_hat, inputs = self.empty_fhat(indices[0]), []
        for k in range(len(self.patch_nums) - 1):
            f_hat = f_hat + self.upsampled(self.code_map(indices[k], self.patch_nums[k]), k)
            inputs.append(self.next_input(f_hat, k))
        return torch.cat(inputs, dim=1)

    def next_input(self, f_hat: torch.Tensor, scale: int) -> torch.Tensor:
        """f̂ area-downsampled to scale+1's size, as tokens [B, pn^2, C] (quant.py:183, 192)."""
        pn = self.patch_nums[scale + 1]
        return F.interpolate(f_hat, size=(pn, pn), mode="area").flatten(2).transpose(1, 2)


class VQVAE(nn.Module):
    """Encoder, quant_conv, the multi-scale quantizer, post_quant_conv and decoder (vqvae.py:16-95)."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.layout = TokenLayout(tuple(cfg.patch_nums))
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = MultiScaleQuantizer(cfg)
        pad = cfg.quant_conv_ks // 2
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, cfg.quant_conv_ks, padding=pad)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, cfg.quant_conv_ks, padding=pad)

    @property
    def image_size(self) -> int:
        """The pixel size whose latent is the last scale's map."""
        return self.config.patch_nums[-1] * self.config.downsample

    @torch.no_grad()
    def encode_indices(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> tokens [B, T] (vqvae.py:65-67, scales concatenated)."""
        return torch.cat(self.quantize.latent_to_indices(self.quant_conv(self.encoder(images))), dim=1)

    def decode_code_maps(self, code_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-scale code vectors [B, C, pn, pn] -> images, unclamped (vqvae.py:78-80 without its clamp)."""
        return self.decoder(self.post_quant_conv(self.quantize.embeddings_to_fhat(code_maps)))

    def decode_indices(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [B, T] -> images [B, 3, H, W] (vqvae.py:69-76 with same_shape=True, last_one=True)."""
        maps = [self.quantize.code_map(idx, pn) for idx, pn in zip(self.layout.split(tokens), self.layout.patch_nums)]
        return self.decode_code_maps(maps)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors [B, T, C] laid out as tokens -> images (differentiable)."""
        maps = [part.transpose(1, 2).reshape(len(codes), -1, pn, pn)
                for part, pn in zip(self.layout.split(codes), self.layout.patch_nums)]
        return self.decode_code_maps(maps)
