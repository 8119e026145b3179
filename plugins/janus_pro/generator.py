"""`JanusProGenerator`: Janus-Pro (transformers' JanusForConditionalGeneration) behind our Generator contract.

What comes from where:
- the language model, generation embeddings/aligner/head: transformers' modules, untouched;
- sampling: our KV-cached loop (`sampler.py`), index-seeded, CFG-1 capable;
- the VQ tokenizer: the LlamaGen plugin's `VQModel` (the same network), viewing the very same
  weight storage as transformers' `model.vqmodel`. Its encode does the l2-normalised codebook
  lookup of the official code, which transformers' `JanusVQVAE.encode` skips (it then agrees with
  the official tokens on only ~9% of positions);
- teacher forcing: the standard alignment (image token i predicted from the hidden state just
  before it, at <begin_of_image> for token 0). VA-π's released Janus script reads the hidden state
  *at* token i instead; that is available as `tf_alignment="vapi-official"` (see docs/janus.md).
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.interfaces import Condition, Generator, SamplingRecipe
from vapi_bench.plugins.llamagen.vq import VQConfig, VQModel, from_janus_keys
from vapi_bench.store import atomic_write

from . import TF_ALIGNMENTS
from .loading import LoadedJanus
from .prompts import JanusPrompts, tokenize_prompts
from .sampler import default_draw, sample_image_tokens

POLICY_FILE = "policy.safetensors"
DECODER_FILE = "tokenizer_decoder.safetensors"
_VQ_PREFIX = "model.vqmodel."


class JanusPolicy(nn.Module):
    """Everything VA-π's Janus script trains: the whole model except the VQ (`gen_vision_model`).

    Its forward is the teacher-forced pass, so a DDP/FSDP wrapper around the policy sees it.
    The understanding-side SigLIP tower, aligner and text `lm_head` are included as in the official
    script; they receive no gradient from image-token losses.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        inner = model.model
        self.language_model = inner.language_model
        self.generation_embeddings = inner.generation_embeddings
        self.generation_aligner = inner.generation_aligner
        self.generation_head = inner.generation_head
        self.vision_model = inner.vision_model
        self.aligner = inner.aligner
        self.lm_head = model.lm_head

    def forward(self, prompts: JanusPrompts, image_inputs: torch.Tensor) -> torch.Tensor:
        """Image-token logits [B, n+1, V] after <begin_of_image> and after each of the n input tokens.

        Column j is the generation head at sequence position L-1+j (L = prompt length), i.e. the
        prediction made having read the prompt and image_inputs[:, :j].
        """
        prompt_embeds = self.language_model.get_input_embeddings()(prompts.input_ids)
        image_embeds = self.generation_aligner(self.generation_embeddings(image_inputs))
        embeds = torch.cat([prompt_embeds, image_embeds.to(prompt_embeds.dtype)], dim=1)
        mask = torch.cat([prompts.attention_mask, prompts.attention_mask.new_ones(image_inputs.shape)], dim=1)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        return self.generation_head(hidden[:, prompts.length - 1:])


def vq_config_of(janus_config: Any) -> VQConfig:
    """The LlamaGen VQConfig of a transformers JanusVQVAEConfig (same network, other names)."""
    vq = janus_config.vq_config
    if vq.double_latent:
        raise CheckpointError("Janus VQ with double_latent=True has no LlamaGen equivalent.")
    return VQConfig(
        codebook_size=vq.num_embeddings, codebook_embed_dim=vq.embed_dim, codebook_l2_norm=True,
        ch=vq.base_channels, ch_mult=tuple(vq.channel_multiplier), z_channels=vq.latent_channels,
        num_res_blocks=vq.num_res_blocks, dropout_p=float(vq.dropout),
    )


def shared_vq(model: nn.Module) -> VQModel:
    """A LlamaGen VQModel whose parameters share storage with transformers' `model.vqmodel`.

    One copy of the weights serves both: a fine-tuned decoder half changes transformers' decode
    as well. The generator never moves the model after this (`.to()` would split the two).
    """
    hf_vq = model.model.vqmodel
    with torch.device("meta"):
        vq = VQModel(vq_config_of(model.config))
    weight = hf_vq.quantize.embedding.weight
    state = from_janus_keys(hf_vq.state_dict())
    state["quantize.codebook_used"] = state["quantize.codebook_used"].to(weight.device)
    vq.load_state_dict(state, strict=True, assign=True)
    hf_vq.requires_grad_(False)  # frozen, as in VA-π; decoder post-training re-enables its half
    return vq.requires_grad_(False).eval()


class JanusProGenerator(Generator):
    """Janus-Pro text-to-image generation on transformers (see the module docstring)."""

    conditioning = "text"
    family = "janus-pro"
    default_dataset = "captions-jsonl"
    default_recipe = SamplingRecipe(cfg_scale=5.0, temperature=1.0)

    def __init__(
        self,
        loaded: LoadedJanus,
        *,
        name: str,
        tf_alignment: str = "standard",
        autocast_bf16: bool = False,
        gradient_checkpointing: bool = False,
    ):
        if tf_alignment not in TF_ALIGNMENTS:
            raise UsageError(f"{name}: tf_alignment must be one of {list(TF_ALIGNMENTS)}, got {tf_alignment!r}.")
        self.name = name
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.special = loaded.special
        self.tf_alignment = tf_alignment
        self.autocast_bf16 = autocast_bf16
        self.device = next(self.model.parameters()).device
        config = self.model.config
        grid = config.vq_config.num_patches
        self.num_tokens = int(config.vision_config.num_image_tokens)
        if self.num_tokens != grid * grid:
            raise CheckpointError(
                f"{name}: the config generates {self.num_tokens} image tokens but the VQ decodes a {grid}x{grid} grid."
            )
        self.vq = shared_vq(self.model)
        self.image_size = grid * self.vq.config.downsample_factor
        self.codebook_size = self.vq.config.codebook_size
        self._policy = JanusPolicy(self.model)
        self._decoder = self.vq.decoder_half()
        self._decoder_digest = _digest(self._decoder)
        if gradient_checkpointing:
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    # ---- tokenizer -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise UsageError(f"{self.name} encodes images [B, 3, {size}, {size}]; got shape {tuple(images.shape)}.")
        return self.vq.encode_indices(images.to(self.device, self._vq_dtype))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self._check_tokens(tokens, "decode")
        return self.vq.decode_indices(tokens.to(self.device)).float()

    def decode_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vq.decode_codes(codes.to(self.device, self._vq_dtype)).float()

    @property
    def codebook(self) -> torch.Tensor:
        return self.vq.codebook()

    @property
    def _vq_dtype(self) -> torch.dtype:
        return self.vq.quantize.embedding.weight.dtype

    # ---- conditions and policy --------------------------------------------------------------
    def prepare_conditions(self, conds: Sequence[Condition]) -> JanusPrompts:
        return tokenize_prompts(self.tokenizer, conds, self.special).to(self.device)

    def null_conditions(self, cond: JanusPrompts, rows: torch.Tensor | None = None) -> JanusPrompts:
        """Janus's CFG null prompt (BOS and <begin_of_image> kept, the text padded, the mask
        unchanged: the pads are attended, as in Janus inference) in the selected rows."""
        null_ids = cond.unconditional_ids()
        if rows is not None:
            null_ids = torch.where(rows.to(null_ids.device, torch.bool)[:, None], null_ids, cond.input_ids)
        return JanusPrompts(null_ids, cond.attention_mask, cond.special)

    @property
    def policy(self) -> nn.Module:
        return self._policy

    @property
    def tokenizer_decoder(self) -> nn.Module:
        return self._decoder

    def teacher_forced_logits(
        self, tokens: torch.Tensor, cond: Any, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        self._check_tokens(tokens, "teacher_forced_logits")
        if not isinstance(cond, JanusPrompts) or len(cond) != tokens.shape[0]:
            raise UsageError(
                f"{self.name}: cond must be prepare_conditions() of {tokens.shape[0]} prompts, got {type(cond).__name__}."
            )
        context = tokens if context is None else context
        if context.shape != tokens.shape:
            raise UsageError(f"{self.name}: context shape {tuple(context.shape)} != tokens shape {tuple(tokens.shape)}.")
        context = context.to(self.device)
        with self._autocast():
            if self.tf_alignment == "standard":
                logits = self._policy(cond, context[:, :-1])
            else:  # VA-π's released script: the hidden state at token i predicts token i
                logits = self._policy(cond, context)[:, 1:]
        return logits.float()

    def sample(
        self, conds: Sequence[Condition], *, seeds: Sequence[int], recipe: SamplingRecipe = SamplingRecipe()
    ) -> torch.Tensor:
        if len(seeds) != len(conds):
            raise UsageError(f"{self.name}: {len(conds)} prompts but {len(seeds)} seeds.")
        prompts = self.prepare_conditions(conds)
        return sample_image_tokens(
            self.model, prompts, num_tokens=self.num_tokens, recipe=recipe,
            draw=default_draw(recipe, seeds, self.num_tokens, self.device),
            autocast_dtype=torch.bfloat16 if self.autocast_bf16 else None,
        )

    # ---- checkpoints -----------------------------------------------------------------------
    def policy_state(self) -> dict[str, torch.Tensor]:
        """The policy's tensors under transformers' key names (loadable into a stock Janus model)."""
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith(_VQ_PREFIX)}

    def save_finetuned(self, directory: Path) -> list[Path]:
        """policy.safetensors always; tokenizer_decoder.safetensors only if the decoder was changed."""
        from safetensors.torch import save_file

        directory = Path(directory)
        meta = {"generator": self.name, "layout": "transformers-janus", "base": str(self.loaded.source)}
        written = []
        for filename, tensors in self._finetuned_parts().items():
            tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
            written.append(atomic_write(directory / filename, lambda tmp, t=tensors: save_file(t, str(tmp), meta)))
        return written

    def load_finetuned(self, directory: Path) -> None:
        from safetensors.torch import load_file

        directory = Path(directory)
        path = directory / POLICY_FILE
        if not path.exists():
            raise CheckpointError(f"{self.name}: no {POLICY_FILE} in {directory}.")
        expected = self.policy_state()
        self.model.load_state_dict(_checked(load_file(str(path)), expected, path), strict=False)
        decoder_path = directory / DECODER_FILE
        if decoder_path.exists():
            state = _checked(load_file(str(decoder_path)), self._decoder.state_dict(), decoder_path)
            self._decoder.load_state_dict(state)

    def _finetuned_parts(self) -> dict[str, dict[str, torch.Tensor]]:
        parts = {POLICY_FILE: self.policy_state()}
        if _digest(self._decoder) != self._decoder_digest:
            parts[DECODER_FILE] = self._decoder.state_dict()
        return parts

    def describe(self) -> dict[str, Any]:
        import transformers

        return {
            **super().describe(),
            "family": self.family,
            "checkpoint": str(self.loaded.source),
            "checkpoint_layout": self.loaded.layout,
            "transformers_version": transformers.__version__,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "autocast_bf16": self.autocast_bf16,
            "tf_alignment": self.tf_alignment,
            "policy_parameters": sum(p.numel() for p in self._policy.parameters()),
            "special_tokens": vars(self.special),
        }

    # ---- helpers ---------------------------------------------------------------------------
    def _check_tokens(self, tokens: torch.Tensor, where: str) -> None:
        if tokens.ndim != 2 or tokens.shape[1] != self.num_tokens:
            raise UsageError(
                f"{self.name}.{where}: expected tokens [B, {self.num_tokens}], got shape {tuple(tokens.shape)}."
            )

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast_bf16 else nullcontext()


def _digest(module: nn.Module) -> str:
    """sha256 of a module's tensors: tells whether the VQ decoder was fine-tuned since loading."""
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _checked(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """`state` if its keys and shapes equal `expected`'s, else a CheckpointError naming the differences."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shaped = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shaped:
        raise CheckpointError(
            f"{path} does not match the model: missing {missing[:4]} ({len(missing)}), unexpected "
            f"{unexpected[:4]} ({len(unexpected)}), mis-shaped {shaped[:4]} ({len(shaped)})."
        )
    return state
