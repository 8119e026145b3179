"""The LlamaGen VQ tokenizer (VQ-16 / VQ-8), checkpoint-compatible with the official code.

A taming-style convolutional autoencoder with an l2-normalised codebook
(`FoundationVision/LlamaGen: tokenizer/tokenizer_image/vq_model.py`). Module and parameter names
reproduce the official state dict exactly, so `vq_ds16_c2i.pt` loads strictly. Unlike the
official code, the base width `ch` and `num_res_blocks` are configurable so that tests and the
shapes world can use tiny tokenizers; the defaults equal the official VQ-16.

The same network is Janus-Pro's `gen_vision_model` and transformers' `JanusVQVAE`; only the key
names differ (`to_janus_keys` / `from_janus_keys`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

#: size of the rolling window of recently used code indices kept in the state dict
CODEBOOK_USAGE_WINDOW = 65536


@dataclass
class VQConfig:
    """VQ hyper-parameters. Defaults: the official VQ-16 (71.88M parameters).

    The encoder has `num_res_blocks` residual blocks per level and the decoder one more, as in the
    official code. GroupNorm uses 32 groups, so `ch * m` must be a multiple of 32 for every m.
    """

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    z_channels: int = 256
    num_res_blocks: int = 2
    dropout_p: float = 0.0
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        widths = [self.ch * m for m in self.ch_mult] + [self.z_channels]
        bad = [w for w in widths if w % 32]
        if bad:
            raise ValueError(
                f"VQConfig: channel counts {bad} are not multiples of 32 (GroupNorm(32) needs them); "
                f"choose ch / ch_mult / z_channels accordingly (e.g. ch=32)."
            )
        if not self.ch_mult:
            raise ValueError("VQConfig: ch_mult must have at least one level.")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


#: official tokenizer configurations (tokenizer/tokenizer_image/vq_model.py, VQ_models)
VQ_CONFIGS: dict[str, VQConfig] = {
    "VQ-16": VQConfig(ch_mult=(1, 1, 2, 2, 4)),
    "VQ-8": VQConfig(ch_mult=(1, 2, 2, 4)),
}


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice, with a 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, hh * ww).permute(0, 2, 1)  # b, hw, c
        k = self.k(h).reshape(b, c, hh * ww)  # b, c, hw
        v = self.v(h).reshape(b, c, hh * ww)
        weights = F.softmax(torch.bmm(q, k) * (int(c) ** -0.5), dim=2)  # b, hw(q), hw(k)
        out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after an asymmetric (0, 1, 0, 1) zero pad, as in taming."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid_blocks(channels: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(
        [ResnetBlock(channels, channels, dropout), AttnBlock(channels), ResnetBlock(channels, channels, dropout)]
    )


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig, in_channels: int = 3):
        super().__init__()
        levels = len(cfg.ch_mult)
        self.num_res_blocks = cfg.num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, cfg.ch, 3, padding=1)
        in_mult = (1,) + cfg.ch_mult
        self.conv_blocks = nn.ModuleList()
        block_in = cfg.ch
        for level in range(levels):
            block = nn.Module()
            block_in = cfg.ch * in_mult[level]
            block_out = cfg.ch * cfg.ch_mult[level]
            block.res = nn.ModuleList()
            block.attn = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                block.res.append(ResnetBlock(block_in, block_out, cfg.dropout_p))
                block_in = block_out
                if level == levels - 1:
                    block.attn.append(AttnBlock(block_in))
            if level != levels - 1:
                block.downsample = Downsample(block_in)
            self.conv_blocks.append(block)
        self.mid = _mid_blocks(block_in, cfg.dropout_p)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.conv_blocks:
            for i in range(self.num_res_blocks):
                h = block.res[i](h)
                if len(block.attn) > 0:
                    h = block.attn[i](h)
            if hasattr(block, "downsample"):
                h = block.downsample(h)
        for layer in self.mid:
            h = layer(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig, out_channels: int = 3):
        super().__init__()
        levels = len(cfg.ch_mult)
        self.num_res_blocks = cfg.num_res_blocks + 1
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _mid_blocks(block_in, cfg.dropout_p)
        self.conv_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            block = nn.Module()
            block_out = cfg.ch * cfg.ch_mult[level]
            block.res = nn.ModuleList()
            block.attn = nn.ModuleList()
            for _ in range(self.num_res_blocks):
                block.res.append(ResnetBlock(block_in, block_out, cfg.dropout_p))
                block_in = block_out
                if level == levels - 1:
                    block.attn.append(AttnBlock(block_in))
            if level != 0:
                block.upsample = Upsample(block_in)
            self.conv_blocks.append(block)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for layer in self.mid:
            h = layer(h)
        for block in self.conv_blocks:
            for i in range(self.num_res_blocks):
                h = block.res[i](h)
                if len(block.attn) > 0:
                    h = block.attn[i](h)
            if hasattr(block, "upsample"):
                h = block.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


def codebook_entropy_loss(affinity: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """The official entropy regulariser: per-sample entropy minus entropy of the mean assignment."""
    flat = affinity.reshape(-1, affinity.shape[-1]) / temperature
    probs = F.softmax(flat, dim=-1)
    log_probs = F.log_softmax(flat + 1e-5, dim=-1)
    avg_probs = probs.mean(dim=0)
    avg_entropy = -torch.sum(avg_probs * torch.log(avg_probs + 1e-5))
    sample_entropy = -torch.mean(torch.sum(probs * log_probs, dim=-1))
    return sample_entropy - avg_entropy


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantiser; with l2_norm both z and the codebook are normalised first."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size)
        if cfg.codebook_l2_norm:
            self.embedding.weight.data = F.normalize(self.embedding.weight.data, p=2, dim=-1)
        self.register_buffer("codebook_used", torch.zeros(CODEBOOK_USAGE_WINDOW))

    def codebook(self) -> torch.Tensor:
        weight = self.embedding.weight
        return F.normalize(weight, p=2, dim=-1) if self.cfg.codebook_l2_norm else weight

    def distances(self, z_flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(squared distances [N, V], the (normalised) vectors used) with the official formula."""
        embedding = self.codebook()
        if self.cfg.codebook_l2_norm:
            z_flat = F.normalize(z_flat, p=2, dim=-1)
        d = (
            torch.sum(z_flat**2, dim=1, keepdim=True)
            + torch.sum(embedding**2, dim=1)
            - 2 * torch.einsum("bd,dn->bn", z_flat, embedding.t())
        )
        return d, z_flat

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Quantise z [B, D, h, w]; return (straight-through z_q, losses, indices [B*h*w])."""
        z = z.permute(0, 2, 3, 1).contiguous()
        d, z_flat = self.distances(z.view(-1, self.cfg.codebook_embed_dim))
        z = z_flat.view(z.shape)
        indices = torch.argmin(d, dim=1)
        z_q = self.codebook()[indices].view(z.shape)
        losses = {
            "vq_loss": torch.mean((z_q - z.detach()) ** 2),
            "commit_loss": self.cfg.commit_loss_beta * torch.mean((z_q.detach() - z) ** 2),
            "entropy_loss": (
                self.cfg.entropy_loss_ratio * codebook_entropy_loss(-d)
                if self.cfg.entropy_loss_ratio
                else d.new_zeros(())
            ),
        }
        if self.training:
            self._record_usage(indices)
            losses["codebook_usage"] = d.new_tensor(
                len(torch.unique(self.codebook_used)) / self.cfg.codebook_size
            )
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2).contiguous(), losses, indices

    @torch.no_grad()
    def _record_usage(self, indices: torch.Tensor) -> None:
        n = min(indices.shape[0], self.codebook_used.shape[0])
        self.codebook_used[:-n] = self.codebook_used[n:].clone()
        self.codebook_used[-n:] = indices[-n:].to(self.codebook_used.dtype)


class TokenizerDecoder(nn.Module):
    """The decoder half of a VQModel (post_quant_conv + decoder), sharing its parameters.

    This is what the post-train-tokenizer baseline fine-tunes; its state-dict keys are the VQ keys
    without the `vq.` owner prefix (`post_quant_conv.*`, `decoder.*`).
    """

    def __init__(self, post_quant_conv: nn.Conv2d, decoder: Decoder):
        super().__init__()
        self.post_quant_conv = post_quant_conv
        self.decoder = decoder

    def forward(self, code_map: torch.Tensor) -> torch.Tensor:
        """code_map [B, D, h, w] (codebook rows, channel first) -> images [B, 3, H, W]."""
        return self.decoder(self.post_quant_conv(code_map.contiguous()))


class VQModel(nn.Module):
    """Encoder + quantiser + decoder with the official state-dict layout (344 keys for VQ-16)."""

    def __init__(self, config: VQConfig | None = None):
        super().__init__()
        self.config = config or VQConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quantize = VectorQuantizer(self.config)
        self.quant_conv = nn.Conv2d(self.config.z_channels, self.config.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(self.config.codebook_embed_dim, self.config.z_channels, 1)

    # ---- geometry ----------------------------------------------------------------------------
    def grid_size(self, image_size: int) -> int:
        """Tokens per side for square images of `image_size` pixels."""
        factor = self.config.downsample_factor
        if image_size <= 0 or image_size % factor:
            raise ValueError(f"image size {image_size} is not a positive multiple of the VQ downsampling {factor}.")
        return image_size // factor

    def _check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"expected square images [B, 3, H, H], got shape {tuple(images.shape)}.")
        self.grid_size(images.shape[-1])

    def _code_map(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, h*w, D] raster-order code vectors -> [B, D, h, w]."""
        b, n, dim = codes.shape
        side = int(round(n**0.5))
        if side * side != n or dim != self.config.codebook_embed_dim:
            raise ValueError(
                f"expected codes [B, h*w, {self.config.codebook_embed_dim}] with a square token grid, "
                f"got shape {tuple(codes.shape)}."
            )
        # contiguous like the official get_codebook_entry: conv kernels pick their algorithm by memory
        # layout, and a channels-last view changes the fp32 summation order
        return codes.reshape(b, side, side, dim).permute(0, 3, 1, 2).contiguous()

    # ---- tokenizer API -----------------------------------------------------------------------
    def codebook(self) -> torch.Tensor:
        """Codebook rows [V, D] exactly as decoding uses them (l2-normalised when configured)."""
        return self.quantize.codebook()

    def encode_indices(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [-1, 1] -> token ids [B, h*w] (int64, raster order)."""
        self._check_images(images)
        z = self.quant_conv(self.encoder(images))
        b, dim, h, w = z.shape
        d, _ = self.quantize.distances(z.permute(0, 2, 3, 1).reshape(-1, dim))
        return torch.argmin(d, dim=1).view(b, h * w)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors [B, h*w, D] (already normalised) -> images; differentiable."""
        return self.decoder(self.post_quant_conv(self._code_map(codes)))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Token ids [B, h*w] -> images [B, 3, H, W], unclamped."""
        if indices.ndim != 2:
            raise ValueError(f"expected token ids [B, h*w], got shape {tuple(indices.shape)}.")
        bad = (indices < 0) | (indices >= self.config.codebook_size)
        if bool(bad.any()):
            raise ValueError(f"token ids must lie in [0, {self.config.codebook_size}); got {indices[bad][:4].tolist()}.")
        return self.decode_codes(self.codebook()[indices.long()])

    def decoder_half(self) -> TokenizerDecoder:
        """A module view of (post_quant_conv, decoder) sharing this model's parameters."""
        return TokenizerDecoder(self.post_quant_conv, self.decoder)

    # ---- training ----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruct images through straight-through quantisation (official training forward).

        Returns (reconstruction, losses) with losses 'vq_loss', 'commit_loss', 'entropy_loss' (and
        'codebook_usage' in train mode, the fraction of codes in the recent-usage window).
        """
        z = self.quant_conv(self.encoder(images))
        z_q, losses, _ = self.quantize(z)
        return self.decoder(self.post_quant_conv(z_q)), losses


# ---- key names shared with Janus-Pro / transformers' JanusVQVAE --------------------------------
_TO_JANUS = [
    (re.compile(r"^encoder\.conv_blocks\."), "encoder.down."),
    (re.compile(r"^decoder\.conv_blocks\."), "decoder.up."),
    (re.compile(r"\.res\."), ".block."),
    (re.compile(r"\.mid\.0\."), ".mid.block_1."),
    (re.compile(r"\.mid\.1\."), ".mid.attn_1."),
    (re.compile(r"\.mid\.2\."), ".mid.block_2."),
]
_FROM_JANUS = [
    (re.compile(r"^encoder\.down\."), "encoder.conv_blocks."),
    (re.compile(r"^decoder\.up\."), "decoder.conv_blocks."),
    (re.compile(r"\.block\.(\d+)\."), r".res.\1."),
    (re.compile(r"\.mid\.block_1\."), ".mid.0."),
    (re.compile(r"\.mid\.attn_1\."), ".mid.1."),
    (re.compile(r"\.mid\.block_2\."), ".mid.2."),
]


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, replacement in rules:
        key = pattern.sub(replacement, key)
    return key


def to_janus_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LlamaGen VQ keys -> transformers `JanusVQVAE` keys (drops `quantize.codebook_used`)."""
    return {
        _rename(k, _TO_JANUS): v for k, v in state_dict.items() if k != "quantize.codebook_used"
    }


def from_janus_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers `JanusVQVAE` keys -> LlamaGen VQ keys (adds an empty `codebook_used` window)."""
    out = {_rename(k, _FROM_JANUS): v for k, v in state_dict.items()}
    out.setdefault("quantize.codebook_used", torch.zeros(CODEBOOK_USAGE_WINDOW))
    return out
