"""`VARGenerator`: a VAR transformer plus its multi-scale VQ-VAE behind the suite's Generator contract.

Token layout (what encode / decode / sample / teacher_forced_logits exchange): tokens [B, T] with
T = Σ pn² (680 for the released 1,2,3,4,5,6,8,10,13,16), scale k's pn_k x pn_k code map in raster
order at [begin_k, end_k), coarsest scale first (`vqvae.TokenLayout`). Teacher-forced position t
of scale k predicts tokens[:, t] from the class and the tokens of scales < k (a subset of
tokens[:, :t]), so the contract's "position t predicts token t from the prefix" holds and every
method that reads [B, T, V] logits (CE, PPO ratios, CCA's sequence likelihoods) works unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from vapi_bench.checkpoints import load_checkpoint_file, load_strict
from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.interfaces import Condition, Generator, SamplingRecipe
from vapi_bench.seeding import torch_generator
from vapi_bench.store import atomic_write, atomic_write_json

from .model import VAR
from .sampling import generate
from .vqvae import VQVAE

VAR_FILE = "var.safetensors"
META_FILE = "var.json"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class VARGenerator(Generator):
    """Class-conditional VAR; the transformer is the policy, the VQ-VAE stays frozen.

    Sampling draws token t of row i from `torch.rand(T, generator=torch_generator(seeds[i]))[t]`
    (see `sampling.generate`), so a sample depends only on its seed and the recipe.
    """

    conditioning = "class"

    def __init__(
        self,
        var: VAR,
        vae: VQVAE,
        *,
        name: str,
        default_recipe: SamplingRecipe = SamplingRecipe(),
        default_dataset: str = "",
        family: str = "var",
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        class_names: Sequence[str] = (),
        class_prompt: str = Generator.class_prompt,
        describe_extra: dict[str, Any] | None = None,
    ):
        cfg, vcfg = var.config, vae.config
        mismatch = [f"{what}: VAR {a} vs VAE {b}" for what, a, b in (
            ("codebook size", cfg.vocab_size, vcfg.vocab_size), ("code dimension", cfg.z_channels, vcfg.z_channels),
            ("patch_nums", tuple(cfg.patch_nums), tuple(vcfg.patch_nums))) if a != b]
        if mismatch:
            raise UsageError(f"{name}: the transformer and the VQ-VAE disagree ({'; '.join(mismatch)}).")
        if precision not in PRECISIONS:
            raise UsageError(f"{name}: precision must be one of {list(PRECISIONS)}, got {precision!r}.")
        if class_names and len(class_names) != cfg.num_classes:
            raise UsageError(f"{name}: {len(class_names)} class names for {cfg.num_classes} classes.")
        self.name, self.family, self.precision = name, family, precision
        self.image_size = vae.image_size
        self.num_tokens = var.num_tokens
        self.codebook_size = cfg.vocab_size
        self.num_classes = cfg.num_classes
        self.class_names, self.class_prompt = tuple(class_names), class_prompt
        self.default_recipe, self.default_dataset = default_recipe, default_dataset
        self.device = torch.device(device)
        self._var = var.to(self.device)
        self._vae = vae.to(self.device).eval().requires_grad_(False)
        self._describe_extra = dict(describe_extra or {})

    # ---- tokenizer -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
            raise UsageError(f"{self.name}: expected images [B, 3, {self.image_size}, {self.image_size}] in [-1, 1], "
                             f"got shape {tuple(images.shape)}.")
        return self._vae.encode_indices(images.to(self.device, torch.float32))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self._check_tokens(tokens)
        return self._vae.decode_indices(tokens.to(self.device))

    def decode_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        return self._vae.decode_codes(codes.to(self.device))

    @property
    def codebook(self) -> torch.Tensor:
        return self._vae.quantize.embedding.weight

    @property
    def vae(self) -> VQVAE:
        """The full tokenizer (encoder included), e.g. for the shapes world's zoo builder."""
        return self._vae

    # ---- conditions --------------------------------------------------------------------------
    def prepare_conditions(self, conds: Sequence[Condition]) -> torch.Tensor:
        bad = [c for c in conds if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self.num_classes]
        if bad:
            raise UsageError(f"{self.name}: conditions must be class indices in [0, {self.num_classes}); got {bad[:5]}.")
        return torch.tensor(list(conds), dtype=torch.long, device=self.device)

    def null_conditions(self, cond: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The null class (row num_classes of `class_emb`), as VAR's sampler and condition dropout use it."""
        null = torch.full_like(cond, self.num_classes)
        return null if rows is None else torch.where(rows.to(cond.device, torch.bool), null, cond)

    # ---- policy ------------------------------------------------------------------------------
    @property
    def policy(self) -> VAR:
        return self._var

    def teacher_forced_logits(self, tokens: torch.Tensor, cond: torch.Tensor,
                              context: torch.Tensor | None = None) -> torch.Tensor:
        """All scales in one block-causal pass (var.py:192-234). Scale k's input is f̂ of the
        prefix's scales < k (`context` when given, e.g. VA-π's corrupted tokens, else `tokens`)."""
        self._check_tokens(tokens)
        prefix = tokens if context is None else context
        if prefix.shape != tokens.shape:
            raise UsageError(f"{self.name}: context shape {tuple(prefix.shape)} differs from tokens {tuple(tokens.shape)}.")
        with torch.no_grad():
            inputs = self._vae.quantize.teacher_forcing_inputs(self._var.layout.split(prefix.to(self.device)))
        return self._var(cond.to(self.device), inputs)

    def sample(self, conds: Sequence[Condition], *, seeds: Sequence[int],
               recipe: SamplingRecipe = SamplingRecipe()) -> torch.Tensor:
        if len(seeds) != len(conds):
            raise UsageError(f"{self.name}: {len(conds)} conditions but {len(seeds)} seeds.")
        labels = self.prepare_conditions(conds)
        uniforms = torch.stack([torch.rand(self.num_tokens, generator=torch_generator(int(s))) for s in seeds])
        return generate(self._var, self._vae.quantize, labels, recipe=recipe, uniforms=uniforms,
                        autocast_dtype=PRECISIONS[self.precision])

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.ndim != 2 or tokens.shape[1] != self.num_tokens:
            raise UsageError(f"{self.name}: expected tokens [B, {self.num_tokens}] (all scales, coarsest first), "
                             f"got shape {tuple(tokens.shape)}.")

    # ---- checkpoints -------------------------------------------------------------------------
    def save_finetuned(self, directory: Path) -> list[Path]:
        """var.safetensors (the transformer; the VQ-VAE never trains here) and var.json."""
        from safetensors.torch import save_file

        directory = Path(directory)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self._var.state_dict().items()}
        return [atomic_write(directory / VAR_FILE, lambda tmp: save_file(tensors, str(tmp))),
                atomic_write_json(directory / META_FILE, self.describe())]

    def load_finetuned(self, directory: Path) -> None:
        path = Path(directory) / VAR_FILE
        if not path.is_file():
            raise CheckpointError(f"{self.name}: no fine-tuned weights at {path}.")
        load_strict(self._var, load_checkpoint_file(path), f"{self.name} VAR ({path})")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "family": self.family, "conditioning": self.conditioning,
                "precision": self.precision, "var_config": self._var.config.as_dict(),
                "vae_config": self._vae.config.as_dict(), **self._describe_extra}
