"""The LlamaGen GPT (`FoundationVision/LlamaGen: autoregressive/models/gpt.py`), reimplemented.

Same architecture, numerics and state-dict keys as the official model, so released checkpoints
load strictly and give the same logits: pre-norm Llama blocks with RMSNorm computed in fp32, fused
`wqkv`, SwiGLU with the official hidden-size rounding, 2D RoPE (see `rope.py`), a class table
with a null row (c2i) or a T5-feature projection with a persistent `uncond_embedding` (t2i), and a
zero-initialised untied output head.

Deliberate differences from the official module, all invisible in the state dict:
- `forward(cond, context)` is the teacher-forced pass in train *and* eval mode (the official
  eval-mode forward needs `input_pos` and does not slice the logits);
- the KV cache is a plain attribute (never in `state_dict()`), sized with `n_kv_head`, and is
  ignored by the teacher-forced pass, so sampling never breaks a later training forward;
- the t2i `uncond_embedding` has `cls_token_num` rows (official: always 120, which equals
  `cls_token_num` in every released t2i model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope, rope_table_2d

#: c2i: LongTensor [B] labels; t2i: (features [B, L, caption_dim], mask [B, L] bool or None)
Condition = Union[torch.Tensor, tuple[torch.Tensor, Union[torch.Tensor, None]]]


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


@dataclass
class GPTConfig:
    """The official `ModelArgs` (minus the unused max_batch_size / max_seq_len)."""

    dim: int = 4096
    n_layer: int = 32
    n_head: int = 32
    n_kv_head: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    token_dropout_p: float = 0.1
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.1
    ffn_dropout_p: float = 0.1
    drop_path_rate: float = 0.0
    num_classes: int = 1000
    caption_dim: int = 2048
    class_dropout_prob: float = 0.1
    model_type: str = "c2i"
    vocab_size: int = 16384
    cls_token_num: int = 1
    block_size: int = 256

    def __post_init__(self) -> None:
        problems = []
        if self.model_type not in ("c2i", "t2i"):
            problems.append(f"model_type must be 'c2i' or 't2i', got {self.model_type!r}")
        if self.dim % self.n_head:
            problems.append(f"dim {self.dim} is not divisible by n_head {self.n_head}")
        elif (self.dim // self.n_head) % 4:
            problems.append(f"head dimension {self.dim // self.n_head} is not divisible by 4 (2D RoPE)")
        if self.n_head % self.kv_heads:
            problems.append(f"n_head {self.n_head} is not a multiple of n_kv_head {self.kv_heads}")
        if math.isqrt(self.block_size) ** 2 != self.block_size:
            problems.append(f"block_size {self.block_size} is not a perfect square")
        if self.model_type == "c2i" and self.cls_token_num != 1:
            problems.append(f"c2i models use one class token, got cls_token_num={self.cls_token_num}")
        if problems:
            raise ValueError("GPTConfig: " + "; ".join(problems) + ".")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.block_size)

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return find_multiple(hidden, self.multiple_of)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: official named sizes (gpt.py `GPT_models`); combine with GPTConfig(**GPT_CONFIGS[name], ...)
GPT_CONFIGS: dict[str, dict[str, int]] = {
    "GPT-B": dict(n_layer=12, n_head=12, dim=768),
    "GPT-L": dict(n_layer=24, n_head=16, dim=1024),
    "GPT-XL": dict(n_layer=36, n_head=20, dim=1280),
    "GPT-XXL": dict(n_layer=48, n_head=24, dim=1536),
    "GPT-XXXL": dict(n_layer=48, n_head=40, dim=2560),
    "GPT-1B": dict(n_layer=22, n_head=32, dim=2048),
    "GPT-3B": dict(n_layer=24, n_head=32, dim=3200),
    "GPT-7B": dict(n_layer=32, n_head=32, dim=4096),
}


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back before the (fp32) weight, as in the official code."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(torch.mean(xf * xf, dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        hidden = cfg.ffn_hidden
        self.w1 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w3 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.dim, bias=False)
        self.ffn_dropout = nn.Dropout(cfg.ffn_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class KVCache:
    """Keys and values [B, n_kv_head, max_len, head_dim] of one layer.

    A plain object, not a module: it must never reach `state_dict()` or be moved by `.to()`.
    """

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        shape = (batch, kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [b, H, S, D] at positions start..start+S-1; return keys/values 0..start+S-1."""
        b, _, s, _ = k.shape
        end = start + s
        self.k[:b, :, start:end] = k
        self.v[:b, :, start:end] = v
        return self.k[:b, :, :end], self.v[:b, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.n_kv_head = cfg.kv_heads
        self.head_dim = cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.attn_dropout_p = cfg.attn_dropout_p
        self.resid_dropout = nn.Dropout(cfg.resid_dropout_p)
        self.kv_cache: KVCache | None = None

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None, cache_start: int | None
    ) -> torch.Tensor:
        bsz, seqlen, dim = x.shape
        kv_size = self.n_kv_head * self.head_dim
        q, k, v = self.wqkv(x).split([dim, kv_size, kv_size], dim=-1)
        q = apply_rope(q.view(bsz, seqlen, self.n_head, self.head_dim), rope).transpose(1, 2)
        k = apply_rope(k.view(bsz, seqlen, self.n_kv_head, self.head_dim), rope).transpose(1, 2)
        v = v.view(bsz, seqlen, self.n_kv_head, self.head_dim).transpose(1, 2)
        if cache_start is not None:
            if self.kv_cache is None:
                raise RuntimeError("cached decoding needs GPT.setup_cache() first.")
            k, v = self.kv_cache.update(cache_start, k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)
        if self.n_kv_head != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        out = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=mask,
            is_causal=mask is None and seqlen > 1,  # multi-token passes always start at position 0
            dropout_p=self.attn_dropout_p if self.training else 0.0,
        )
        return self.resid_dropout(self.wo(out.transpose(1, 2).reshape(bsz, seqlen, dim)))


class DropPath(nn.Module):
    """Stochastic depth per sample (timm semantics, rescaled by 1/keep)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class TransformerBlock(nn.Module):
    def __init__(self, cfg: GPTConfig, drop_path: float):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None, cache_start: int | None
    ) -> torch.Tensor:
        h = x + self.drop_path(self.attention(self.attention_norm(x), rope, mask, cache_start))
        return h + self.drop_path(self.feed_forward(self.ffn_norm(h)))


class LabelEmbedder(nn.Module):
    """Class table with a null row (index num_classes) when class dropout is enabled.

    In train mode each label is replaced by the null class with probability dropout_prob (CFG
    training). A model built with dropout_prob = 0 has no null row, exactly like the official code.
    """

    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels).unsqueeze(1)


class CaptionMLP(nn.Module):
    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, dim, bias=False)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CaptionEmbedder(nn.Module):
    """Projects T5 features; in train mode a whole caption becomes `uncond_embedding` w.p. p."""

    def __init__(self, caption_dim: int, dim: int, dropout_prob: float, token_num: int):
        super().__init__()
        self.cap_proj = CaptionMLP(caption_dim, dim)
        self.register_buffer("uncond_embedding", torch.randn(token_num, caption_dim) / caption_dim**0.5)
        self.dropout_prob = dropout_prob

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(features.shape[0], device=features.device) < self.dropout_prob
            features = torch.where(drop[:, None, None], self.uncond_embedding.to(features.dtype), features)
        return self.cap_proj(features)


class GPT(nn.Module):
    """LlamaGen transformer. `forward(cond, context)` returns teacher-forced logits [B, T, V]."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        cfg = self.config = config
        if cfg.model_type == "c2i":
            self.cls_embedding: nn.Module = LabelEmbedder(cfg.num_classes, cfg.dim, cfg.class_dropout_prob)
        else:
            self.cls_embedding = CaptionEmbedder(cfg.caption_dim, cfg.dim, cfg.class_dropout_prob, cfg.cls_token_num)
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.tok_dropout = nn.Dropout(cfg.token_dropout_p)
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.n_layer, device="cpu").tolist()
        self.layers = nn.ModuleList(TransformerBlock(cfg, rate) for rate in rates)
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # fp32 (cos, sin) table; a plain attribute so that .to(dtype) never rounds it
        self._rope_cpu = rope_table_2d(cfg.grid_size, cfg.head_dim, cfg.rope_base, cfg.cls_token_num)
        self._rope_on: dict[torch.device, torch.Tensor] = {}
        self._cache_key_valid: torch.Tensor | None = None
        if self.output.weight.device.type != "meta":  # meta tensors (param counting, assign-loading) hold no values
            self.initialize_weights()

    # ---- construction ------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        """N(0, initializer_range) for every Linear and Embedding, then a zero output head."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        nn.init.zeros_(self.output.weight)

    def rope(self, device: torch.device) -> torch.Tensor:
        table = self._rope_on.get(device)
        if table is None:
            table = self._rope_on[device] = self._rope_cpu.to(device)
        return table

    # ---- conditions --------------------------------------------------------------------------
    def embed_condition(self, cond: Condition) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(condition embeddings [B, cls_token_num, dim], key mask [B, cls_token_num] or None)."""
        cfg = self.config
        if cfg.model_type == "c2i":
            if not isinstance(cond, torch.Tensor) or cond.ndim != 1 or cond.dtype.is_floating_point:
                raise ValueError("a c2i GPT expects class labels as an integer tensor [B].")
            rows = self.cls_embedding.embedding_table.num_embeddings
            if bool(((cond < 0) | (cond >= rows)).any()):
                raise ValueError(f"class labels must lie in [0, {rows}); got {cond.tolist()[:8]}.")
            return self.cls_embedding(cond.long()), None
        if not isinstance(cond, (tuple, list)) or len(cond) != 2:
            raise ValueError("a t2i GPT expects (features [B, L, caption_dim], mask [B, L] or None).")
        features, mask = cond
        expected = (cfg.cls_token_num, cfg.caption_dim)
        if features.ndim != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(f"caption features must be [B, {expected[0]}, {expected[1]}], got {tuple(features.shape)}.")
        if mask is not None:
            if tuple(mask.shape) != tuple(features.shape[:2]):
                raise ValueError(f"caption mask must be [B, {expected[0]}], got {tuple(mask.shape)}.")
            mask = mask.bool()
            if bool(mask.all()):
                mask = None
        return self.cls_embedding(features), mask

    def null_condition(self, cond: Condition) -> Condition:
        """The CFG null condition matching `cond`: the null class, or `uncond_embedding` (same mask)."""
        if self.config.model_type == "c2i":
            if self.cls_embedding.embedding_table.num_embeddings <= self.config.num_classes:
                raise ValueError("this c2i model has no null class row (class_dropout_prob = 0): CFG is impossible.")
            return torch.full_like(cond, self.config.num_classes)
        features, mask = cond
        null = self.cls_embedding.uncond_embedding.to(features.dtype).expand_as(features)
        return null, mask

    # ---- teacher-forced pass -----------------------------------------------------------------
    def forward(self, cond: Condition, context: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, T, V]: position t predicts context[:, t] from cond + context[:, :t].

        Works in train mode (dropout and class dropout active) and eval mode, with grad, for any
        batch size; never touches the KV cache.
        """
        cfg = self.config
        if context.ndim != 2 or not 1 <= context.shape[1] <= cfg.block_size:
            raise ValueError(f"context must be token ids [B, T] with 1 <= T <= {cfg.block_size}, got {tuple(context.shape)}.")
        cond_emb, key_mask = self.embed_condition(cond)
        if cond_emb.shape[0] != context.shape[0]:
            raise ValueError(f"batch mismatch: {cond_emb.shape[0]} conditions for {context.shape[0]} token rows.")
        h = self.tok_dropout(torch.cat([cond_emb, self.tok_embeddings(context[:, :-1])], dim=1))
        seqlen = h.shape[1]
        mask = None
        if key_mask is not None:
            key_valid = F.pad(key_mask, (0, seqlen - key_mask.shape[1]), value=True)
            mask = self._attention_mask(key_valid, 0, seqlen)
        logits = self._run(h, self.rope(h.device)[:seqlen], mask, None)
        return logits[:, cfg.cls_token_num - 1 :]

    def teacher_forced_logits(self, cond: Condition, context: torch.Tensor) -> torch.Tensor:
        """Alias of calling the module (kept so DDP/FSDP wrappers see the same forward)."""
        return self(cond, context)

    def _run(self, h: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None, cache_start: int | None) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h, rope, mask, cache_start)
        return self.output(self.norm(h)).float()

    @staticmethod
    def _attention_mask(key_valid: torch.Tensor, start: int, seqlen: int) -> torch.Tensor:
        """Bool [B, 1, S, start+S]: causal, padded keys hidden, each position always sees itself."""
        keys = start + seqlen
        q_pos = torch.arange(start, keys, device=key_valid.device)[:, None]
        k_pos = torch.arange(keys, device=key_valid.device)[None, :]
        allowed = (k_pos <= q_pos) & key_valid[:, None, :keys]
        return (allowed | (k_pos == q_pos)).unsqueeze(1)

    # ---- KV-cached decoding ------------------------------------------------------------------
    def setup_cache(self, max_batch: int, max_len: int, dtype: torch.dtype | None = None) -> None:
        """Allocate per-layer KV caches, reusing them when batch, length, dtype and device match."""
        param = self.tok_embeddings.weight
        dtype = dtype or param.dtype
        current = self.layers[0].attention.kv_cache
        if (
            current is not None
            and current.k.shape[0] == max_batch
            and current.k.shape[2] == max_len
            and current.k.dtype == dtype
            and current.k.device == param.device
        ):
            return
        cfg = self.config
        for layer in self.layers:
            layer.attention.kv_cache = KVCache(max_batch, cfg.kv_heads, max_len, cfg.head_dim, dtype, param.device)

    def release_cache(self) -> None:
        for layer in self.layers:
            layer.attention.kv_cache = None
        self._cache_key_valid = None

    def prefill(self, cond: Condition) -> torch.Tensor:
        """Run the condition tokens through the cache; logits [B, V] predicting image token 0."""
        cache = self.layers[0].attention.kv_cache
        if cache is None:
            raise RuntimeError("call setup_cache() before prefill().")
        cond_emb, key_mask = self.embed_condition(cond)
        batch, seqlen = cond_emb.shape[:2]
        if batch > cache.k.shape[0] or seqlen > cache.k.shape[2]:
            raise ValueError(f"the KV cache {tuple(cache.k.shape)} is too small for {batch} x {seqlen} condition tokens.")
        mask = None
        self._cache_key_valid = None
        if key_mask is not None:
            self._cache_key_valid = F.pad(key_mask, (0, cache.k.shape[2] - seqlen), value=True)
            mask = self._attention_mask(self._cache_key_valid, 0, seqlen)
        h = self.tok_dropout(cond_emb)
        return self._run(h, self.rope(h.device)[:seqlen], mask, 0)[:, -1]

    def decode_step(self, tokens: torch.Tensor, position: int) -> torch.Tensor:
        """Feed tokens [B] sitting at sequence `position`; logits [B, V] for the next token."""
        cache = self.layers[0].attention.kv_cache
        if cache is None or position >= cache.k.shape[2]:
            raise RuntimeError(f"position {position} is outside the KV cache; call setup_cache() with a longer length.")
        h = self.tok_dropout(self.tok_embeddings(tokens.view(-1, 1)))
        mask = None
        if self._cache_key_valid is not None:
            mask = self._cache_key_valid[: h.shape[0], None, None, : position + 1]
        rope = self.rope(h.device)[position : position + 1]
        return self._run(h, rope, mask, position)[:, -1]
