"""`LlamaGenGenerator`: a LlamaGen GPT plus its VQ tokenizer behind the suite's Generator contract."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from vapi_bench.checkpoints import load_checkpoint_file, load_strict
from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.interfaces import Condition, Generator, SamplingRecipe
from vapi_bench.seeding import torch_generator
from vapi_bench.store import atomic_write, atomic_write_json

from .gpt import GPT
from .sampling import generate
from .text import TextEncoder
from .vq import VQModel

GPT_FILE = "gpt.safetensors"
VQ_FILE = "vq.safetensors"
META_FILE = "llamagen.json"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def _save_safetensors(path: Path, module: nn.Module) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


@torch.no_grad()
def _fingerprint(module: nn.Module) -> list[tuple[float, float]]:
    """Cheap per-tensor (sum, sum of squares) in fp64, to notice whether a module was trained."""
    return [(float(t.double().sum()), float(t.double().square().sum())) for t in module.state_dict().values()]


class LlamaGenGenerator(Generator):
    """LlamaGen c2i or t2i generator; the GPT is the policy, the VQ stays frozen unless a method
    trains `tokenizer_decoder`.

    Sampling draws token t of row i from `torch.rand(T, generator=torch_generator(seeds[i]))[t]`,
    so a sample depends only on its seed and the recipe (see `sampling.generate`).
    """

    def __init__(
        self,
        gpt: GPT,
        vq: VQModel,
        *,
        name: str,
        image_size: int,
        text_encoder: TextEncoder | None = None,
        default_recipe: SamplingRecipe = SamplingRecipe(),
        default_dataset: str = "",
        family: str = "llamagen-c2i",
        device: torch.device | str = "cpu",
        describe_extra: dict[str, Any] | None = None,
        precision: str = "fp32",
        class_names: Sequence[str] = (),
        class_prompt: str = Generator.class_prompt,
    ):
        cfg = gpt.config
        if vq.config.codebook_size != cfg.vocab_size:
            raise UsageError(f"{name}: the VQ codebook has {vq.config.codebook_size} codes but the GPT vocabulary is {cfg.vocab_size}.")
        side = vq.grid_size(image_size)
        if side * side != cfg.block_size:
            raise UsageError(
                f"{name}: image_size {image_size} gives a {side}x{side} token grid but the GPT block_size is "
                f"{cfg.block_size} (= {cfg.grid_size}x{cfg.grid_size}); change image_size or block_size."
            )
        if cfg.model_type == "t2i" and text_encoder is None:
            raise UsageError(f"{name}: a text-to-image model needs a text encoder.")
        if precision not in PRECISIONS:
            raise UsageError(f"{name}: precision must be one of {list(PRECISIONS)}, got {precision!r}.")
        self.name = name
        self.conditioning = "class" if cfg.model_type == "c2i" else "text"
        self.image_size = image_size
        self.num_tokens = cfg.block_size
        self.codebook_size = cfg.vocab_size
        self.num_classes = cfg.num_classes if cfg.model_type == "c2i" else 0
        if class_names and len(class_names) != self.num_classes:
            raise UsageError(f"{name}: {len(class_names)} class names for {self.num_classes} classes.")
        self.class_names, self.class_prompt = tuple(class_names), class_prompt
        self.default_recipe = default_recipe
        self.default_dataset = default_dataset
        self.family = family
        self.device = torch.device(device)
        self.precision = precision
        self.text_encoder = text_encoder
        self._gpt = gpt.to(self.device)
        self._vq = vq.to(self.device).eval().requires_grad_(False)
        self._decoder_half = self._vq.decoder_half()
        self._vq_fingerprint = _fingerprint(self._vq)
        self._describe_extra = dict(describe_extra or {})

    # ---- tokenizer ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
            raise UsageError(
                f"{self.name}: expected images [B, 3, {self.image_size}, {self.image_size}] in [-1, 1], "
                f"got shape {tuple(images.shape)}."
            )
        return self._vq.encode_indices(images.to(self.device, torch.float32))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self._check_tokens(tokens)
        return self._vq.decode_indices(tokens.to(self.device))

    def decode_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        return self._vq.decode_codes(codes.to(self.device))

    @property
    def codebook(self) -> torch.Tensor:
        return self._vq.codebook()

    # ---- conditions --------------------------------------------------------------------------
    def prepare_conditions(self, conds: Sequence[Condition]) -> Any:
        """Class indices -> LongTensor [B]; prompts -> (T5 features [B, L, D], mask [B, L])."""
        if self.conditioning == "class":
            bad = [c for c in conds if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self.num_classes]
            if bad:
                raise UsageError(f"{self.name}: conditions must be class indices in [0, {self.num_classes}); got {bad[:5]}.")
            return torch.tensor(list(conds), dtype=torch.long, device=self.device)
        bad = [c for c in conds if not isinstance(c, str)]
        if bad:
            raise UsageError(f"{self.name}: conditions must be prompt strings; got {bad[:5]}.")
        assert self.text_encoder is not None
        features, mask = self.text_encoder.encode(list(conds))
        dtype = self._gpt.tok_embeddings.weight.dtype
        return features.to(self.device, dtype), mask.to(self.device, torch.bool)

    def null_conditions(self, cond: Any, rows: torch.Tensor | None = None) -> Any:
        """The null class (c2i) or `uncond_embedding` with the row's own mask (t2i), as LlamaGen's
        sampler and its condition dropout build them, in the selected rows."""
        try:
            null = self._gpt.null_condition(cond)
        except ValueError as exc:
            raise UsageError(f"{self.name}: {exc}") from None
        if rows is None:
            return null
        rows = rows.to(self.device, torch.bool)
        if self.conditioning == "class":
            return torch.where(rows, null, cond)
        (features, mask), (null_features, _) = cond, null
        return torch.where(rows[:, None, None], null_features, features), mask

    # ---- policy ------------------------------------------------------------------------------
    @property
    def policy(self) -> GPT:
        return self._gpt

    @property
    def tokenizer_decoder(self) -> nn.Module:
        return self._decoder_half

    @property
    def vq(self) -> VQModel:
        """The full tokenizer (encoder included), e.g. for the shapes world's zoo builder."""
        return self._vq

    def teacher_forced_logits(self, tokens: torch.Tensor, cond: Any, context: torch.Tensor | None = None) -> torch.Tensor:
        self._check_tokens(tokens)
        prefix = tokens if context is None else context
        if prefix.shape != tokens.shape:
            raise UsageError(f"{self.name}: context shape {tuple(prefix.shape)} differs from tokens {tuple(tokens.shape)}.")
        return self._gpt(cond, prefix.to(self.device))

    def sample(self, conds: Sequence[Condition], *, seeds: Sequence[int], recipe: SamplingRecipe = SamplingRecipe()) -> torch.Tensor:
        if len(seeds) != len(conds):
            raise UsageError(f"{self.name}: {len(conds)} conditions but {len(seeds)} seeds.")
        cond = self.prepare_conditions(conds)
        uniforms = torch.stack([torch.rand(self.num_tokens, generator=torch_generator(int(s))) for s in seeds])
        return generate(
            self._gpt, cond, num_tokens=self.num_tokens, recipe=recipe, uniforms=uniforms,
            autocast_dtype=PRECISIONS[self.precision],
        )

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.ndim != 2 or tokens.shape[1] != self.num_tokens:
            raise UsageError(f"{self.name}: expected tokens [B, {self.num_tokens}], got shape {tuple(tokens.shape)}.")

    # ---- checkpoints -------------------------------------------------------------------------
    def save_finetuned(self, directory: Path) -> list[Path]:
        """gpt.safetensors always; vq.safetensors only if the tokenizer differs from the base one."""
        directory = Path(directory)
        written = [_save_safetensors(directory / GPT_FILE, self._gpt)]
        if _fingerprint(self._vq) != self._vq_fingerprint:
            written.append(_save_safetensors(directory / VQ_FILE, self._vq))
        written.append(atomic_write_json(directory / META_FILE, self.describe()))
        return written

    def load_finetuned(self, directory: Path) -> None:
        directory = Path(directory)
        if not (directory / GPT_FILE).is_file():
            raise CheckpointError(f"{self.name}: no fine-tuned weights at {directory / GPT_FILE}.")
        load_strict(self._gpt, load_checkpoint_file(directory / GPT_FILE), f"{self.name} GPT ({directory / GPT_FILE})")
        if (directory / VQ_FILE).is_file():
            load_strict(self._vq, load_checkpoint_file(directory / VQ_FILE), f"{self.name} VQ ({directory / VQ_FILE})")

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "family": self.family,
            "conditioning": self.conditioning,
            "precision": self.precision,
            "gpt_config": self._gpt.config.as_dict(),
            "vq_config": dict(self._vq.config.__dict__),
            **self._describe_extra,
        }
