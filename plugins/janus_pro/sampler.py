"""Our own KV-cached image-token sampler over transformers' Janus language model and generation head.

Why not `JanusForConditionalGeneration.generate`: it cannot run without CFG (a guidance scale
<= 1 still doubles the batch and then crashes), and it draws every row from the global torch RNG,
so a sample depends on its batch-mates. This loop runs the same computation with

- CFG as [cond; uncond] halves, u + s (c - u), and no doubled batch at scale 1;
- the logits pipeline of transformers (and LlamaGen): CFG -> temperature -> top-k -> top-p,
  using transformers' own warpers;
- a pluggable `TokenDraw`: `IndexSeededDraw` (row i's randomness only from seeds[i], by inverse-CDF
  of per-row uniforms), `GreedyDraw`, and `TransformersDraw`, which makes exactly the
  `torch.multinomial` calls of transformers' generate so both give the same tokens for the same
  global seed (the parity test of this plugin).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Protocol, Sequence

import torch
from transformers.cache_utils import StaticCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from vapi_bench.errors import UsageError
from vapi_bench.interfaces import SamplingRecipe
from vapi_bench.plugins.llamagen.sampling import inverse_cdf_draw
from vapi_bench.seeding import torch_generator

from .prompts import JanusPrompts


class TokenDraw(Protocol):
    """Chooses the next token of every row from its processed logits [B, V] (float32)."""

    def __call__(self, step: int, logits: torch.Tensor) -> torch.Tensor: ...


class IndexSeededDraw:
    """Inverse-CDF sampling from per-row uniforms u[i] = torch.rand(T, generator=seed i), as LlamaGen.

    The uniforms are drawn on the CPU and the draw is the LlamaGen plugin's `inverse_cdf_draw`, so
    a row gets the same tokens on any device, batch size or batch position (up to the numerics
    of the forward pass), and both plugins seed rows the same way.
    """

    def __init__(self, seeds: Sequence[int], num_steps: int, device: torch.device):
        self.uniforms = torch.stack(
            [torch.rand(num_steps, generator=torch_generator(int(s))) for s in seeds]
        ).to(device)

    def __call__(self, step: int, logits: torch.Tensor) -> torch.Tensor:
        return inverse_cdf_draw(torch.softmax(logits.float(), dim=-1), self.uniforms[:, step])


class GreedyDraw:
    """argmax (temperature 0)."""

    def __call__(self, step: int, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1)


class TransformersDraw:
    """`torch.multinomial(softmax(logits), 1)` on the global RNG, as transformers' generate does."""

    def __call__(self, step: int, logits: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1).squeeze(-1)


def logits_warpers(recipe: SamplingRecipe) -> LogitsProcessorList:
    """temperature -> top-k -> top-p, transformers' own warpers, in transformers' order."""
    warpers = LogitsProcessorList()
    if recipe.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(recipe.temperature)))
    if recipe.top_k > 0:
        warpers.append(TopKLogitsWarper(int(recipe.top_k)))
    if recipe.top_p < 1.0:
        warpers.append(TopPLogitsWarper(float(recipe.top_p)))
    return warpers


def check_recipe(recipe: SamplingRecipe) -> None:
    """Reject recipes this sampler cannot honour, with the reason."""
    if recipe.cfg_interval != -1:
        raise UsageError("janus-pro: cfg_interval is not supported (Janus-Pro applies CFG at every step); use -1.")
    if recipe.temperature < 0 or recipe.cfg_scale < 0 or recipe.top_k < 0 or not 0 < recipe.top_p <= 1:
        raise UsageError(f"janus-pro: invalid sampling recipe {recipe.as_dict()}.")


def default_draw(recipe: SamplingRecipe, seeds: Sequence[int], num_steps: int, device: torch.device) -> TokenDraw:
    """Greedy at temperature 0, else index-seeded sampling."""
    return GreedyDraw() if recipe.temperature == 0 else IndexSeededDraw(seeds, num_steps, device)


@torch.no_grad()
def sample_image_tokens(
    model: Any,
    prompts: JanusPrompts,
    *,
    num_tokens: int,
    recipe: SamplingRecipe,
    draw: TokenDraw,
    autocast_dtype: torch.dtype | None = None,
    on_logits: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """KV-cached generation of `num_tokens` image tokens per prompt; returns int64 [B, num_tokens].

    `model` is a `JanusForConditionalGeneration`. `on_logits(step, raw_cond_logits)` sees the
    generation head's conditional logits before CFG (used to test teacher forcing).
    """
    check_recipe(recipe)
    guided = recipe.cfg_scale != 1.0
    warpers = logits_warpers(recipe) if recipe.temperature > 0 else LogitsProcessorList()
    device = prompts.input_ids.device
    batch = len(prompts)

    ids, mask = prompts.input_ids, prompts.attention_mask
    if guided:
        ids = torch.cat([ids, prompts.unconditional_ids()])
        mask = torch.cat([mask, mask])
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    language_model = model.model.language_model
    cache = StaticCache(config=model.config.text_config, max_cache_len=prompts.length + num_tokens)
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    )
    tokens = torch.empty((batch, num_tokens), dtype=torch.long, device=device)
    with autocast:
        embeds = model.get_input_embeddings()(ids)
        embed_dtype = embeds.dtype
        for step in range(num_tokens):
            hidden = language_model(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
            ).last_hidden_state[:, -1]
            logits = model.model.generation_head(hidden).float()
            if on_logits is not None:
                on_logits(step, logits[:batch])
            if guided:
                cond, uncond = logits.chunk(2)
                logits = uncond + recipe.cfg_scale * (cond - uncond)
            next_tokens = draw(step, warpers(None, logits))
            tokens[:, step] = next_tokens
            step_ids = torch.cat([next_tokens, next_tokens]) if guided else next_tokens
            # under autocast the aligner returns bf16; keep the cache in one dtype (the prompt's)
            embeds = model.prepare_embeddings_for_image_generation(step_ids.unsqueeze(-1)).to(embed_dtype)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            positions = positions[:, -1:] + 1
    return tokens
