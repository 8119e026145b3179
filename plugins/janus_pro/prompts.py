"""Janus-Pro's text-to-image prompt, exactly as its own generation code builds it.

deepseek's `generation_inference.py` (and VA-π's Janus script) wrap the caption in the "deepseek"
SFT conversation template with an empty system prompt, append `<begin_of_image>` and let the
tokenizer add BOS:  BOS "<|User|>: {caption}\n\n<|Assistant|>:" <begin_of_image>.
For classifier-free guidance the unconditional row keeps only BOS and <begin_of_image> and pads
everything in between (the pads are attended: Janus was trained that way).

Batches of prompts of different lengths are left-padded with an attention mask, so that every
row ends with <begin_of_image> at the same column and image tokens follow it directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from vapi_bench.errors import CheckpointError, UsageError

SFT_TEMPLATE = "<|User|>: {caption}\n\n<|Assistant|>:"
BOI_TOKEN = "<begin_of_image>"
PAD_TOKEN = "<｜▁pad▁｜>"
IMAGE_TOKEN = "<image_placeholder>"


def sft_prompt(caption: str) -> str:
    """The SFT-formatted text of one caption, without BOS and <begin_of_image>."""
    return SFT_TEMPLATE.format(caption=caption.strip())


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the prompt needs; resolved from the checkpoint's tokenizer and generation config."""

    bos: int
    pad: int
    boi: int


def resolve_special_tokens(tokenizer: Any, generation_config: Any = None) -> SpecialTokens:
    """BOS / pad / <begin_of_image> ids: generation config first, then the tokenizer's vocabulary.

    transformers-layout checkpoints record pad and boi in generation_config.json; deepseek's
    original layout only has them as tokenizer tokens.
    """
    extra = dict(getattr(generation_config, "generation_kwargs", None) or {})
    boi = extra.get("boi_token_id", getattr(generation_config, "boi_token_id", None))
    pad = getattr(generation_config, "pad_token_id", None)
    bos = getattr(generation_config, "bos_token_id", None)
    boi = boi if boi is not None else _vocab_id(tokenizer, BOI_TOKEN)
    pad = pad if pad is not None else _vocab_id(tokenizer, PAD_TOKEN)
    pad = pad if pad is not None else tokenizer.pad_token_id
    bos = bos if bos is not None else tokenizer.bos_token_id
    missing = [name for name, value in (("BOS", bos), ("pad", pad), (BOI_TOKEN, boi)) if value is None]
    if missing:
        raise CheckpointError(
            f"cannot find the Janus special tokens {missing} in the checkpoint's tokenizer or generation config."
        )
    return SpecialTokens(bos=int(bos), pad=int(pad), boi=int(boi))


def _vocab_id(tokenizer: Any, token: str) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return None if token_id is None or token_id == tokenizer.unk_token_id else int(token_id)


@dataclass
class JanusPrompts:
    """A left-padded batch of tokenised prompts, each ending with <begin_of_image>.

    This is the opaque `cond` that `JanusProGenerator.prepare_conditions` returns.
    """

    input_ids: torch.Tensor  # [B, L] int64
    attention_mask: torch.Tensor  # [B, L] int64, 0 on left padding
    special: SpecialTokens

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]

    def to(self, device: torch.device | str) -> "JanusPrompts":
        return JanusPrompts(self.input_ids.to(device), self.attention_mask.to(device), self.special)

    def unconditional_ids(self) -> torch.Tensor:
        """The CFG null rows: BOS and <begin_of_image> kept, every other real position padded."""
        uncond = self.input_ids.clone()
        keep_bos = self.attention_mask.cumsum(dim=1) == 1  # first real position of each row
        keep_boi = torch.zeros_like(keep_bos)
        keep_boi[:, -1] = True
        uncond[~(keep_bos | keep_boi)] = self.special.pad
        return uncond

    def position_ids(self) -> torch.Tensor:
        """0, 1, ... counted over real tokens only, so a row's positions ignore its batch-mates."""
        return (self.attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def tokenize_prompts(tokenizer: Any, captions: Sequence[Any], special: SpecialTokens) -> JanusPrompts:
    """BOS + tokens of the SFT text + <begin_of_image> per caption, left-padded into one batch."""
    rows: list[list[int]] = []
    for i, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise UsageError(
                f"janus-pro is text-conditional: condition {i} is {caption!r} ({type(caption).__name__}), not a prompt."
            )
        text_ids = tokenizer.encode(sft_prompt(caption), add_special_tokens=False)
        rows.append([special.bos, *text_ids, special.boi])
    if not rows:
        raise UsageError("janus-pro: no prompts given.")
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), special.pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, length - len(row):] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, length - len(row):] = 1
    return JanusPrompts(input_ids, attention_mask, special)
