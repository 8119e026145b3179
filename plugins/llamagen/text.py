"""Text encoders for LlamaGen t2i: the `TextEncoder` protocol and the FLAN-T5-XL implementation.

A t2i GPT consumes `cls_token_num` (120) caption feature rows, **left-padded**: the valid token
features sit at the end, pad rows are zero and masked. That is what the official training data
(`dataset/t2i.py`) and sampler (`sample_t2i.py`) build. Any encoder obeying the protocol can be
swapped in (the shapes world uses a small deterministic word encoder).

`FlanT5Encoder` runs `T5EncoderModel` from transformers (a local directory or the Hugging Face id
`google/flan-t5-xl`), loads it lazily, and caches each prompt's features on disk keyed by a hash
of (model, dtype, length, cleaning, prompt), so repeated evaluations never re-run T5.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from vapi_bench.errors import OfflineError
from vapi_bench.store import atomic_write
from vapi_bench.weights import cache_dir as default_cache_dir
from vapi_bench.weights import is_offline

from .captions import clean_caption

FLAN_T5_XL = "google/flan-t5-xl"
T5_MAX_LENGTH = 120
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@runtime_checkable
class TextEncoder(Protocol):
    """Prompts -> (features [B, L, D] float, mask [B, L] bool), left-padded, pad rows zero."""

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


def left_pad(rows: list[torch.Tensor], length: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length feature rows [n_i, D] right-aligned into [B, length, D] + mask."""
    features = torch.zeros(len(rows), length, dim)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        n = min(row.shape[0], length)
        if n:
            features[i, length - n :] = row[:n].float()
            mask[i, length - n :] = True
    return features, mask


class FlanT5Encoder:
    """FLAN-T5 encoder features as LlamaGen t2i expects them (max length 120, left-padded).

    path: a local model directory or a Hugging Face id (default google/flan-t5-xl; in offline
    mode only the local Hugging Face cache is consulted). dtype: "bf16" (the official sampling
    precision), "fp16" or "fp32". feature_cache: directory for cached features (default
    <vapi-bench cache>/t5-features), or None to disable caching.
    """

    def __init__(
        self,
        path: str = FLAN_T5_XL,
        *,
        max_length: int = T5_MAX_LENGTH,
        device: torch.device | str = "cpu",
        dtype: str = "bf16",
        clean_captions: bool = True,
        feature_cache: Path | str | None = "default",
    ):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}.")
        self.path = str(path)
        self.max_length = max_length
        self.device = torch.device(device)
        self.dtype = dtype
        self.clean_captions = clean_captions
        if feature_cache == "default":
            feature_cache = default_cache_dir() / "t5-features"
        self.feature_cache = Path(feature_cache) if feature_cache is not None else None
        self._tokenizer = None
        self._model = None

    # ---- model -------------------------------------------------------------------------------
    def _load(self) -> None:
        from transformers import AutoTokenizer, T5EncoderModel

        local_only = is_offline() and not Path(self.path).is_dir()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=local_only)
            self._model = (
                T5EncoderModel.from_pretrained(self.path, dtype=_DTYPES[self.dtype], local_files_only=local_only)
                .to(self.device)
                .eval()
            )
        except OSError as exc:
            raise OfflineError(
                f"T5 text encoder {self.path!r} could not be loaded ({str(exc).splitlines()[0]}). Pass a local "
                f"directory with t5_path=..., or fetch {FLAN_T5_XL} on a connected machine."
            ) from None

    def _prepare(self, prompt: str) -> str:
        return clean_caption(prompt) if self.clean_captions else prompt.lower().strip()

    @torch.no_grad()
    def _run_t5(self, prompts: list[str]) -> list[torch.Tensor]:
        """Valid-token features [n_i, D] (fp32, CPU) of each prompt."""
        if self._model is None:
            self._load()
        batch = self._tokenizer(
            [self._prepare(p) for p in prompts],
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        hidden = self._model(
            input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device)
        ).last_hidden_state
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        return [hidden[i, :n].float().cpu() for i, n in enumerate(lengths)]

    # ---- cache -------------------------------------------------------------------------------
    def _cache_path(self, prompt: str) -> Path | None:
        if self.feature_cache is None:
            return None
        identity = json.dumps(
            [self.path, self.dtype, self.max_length, self.clean_captions, prompt], ensure_ascii=False
        )
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()
        return self.feature_cache / digest[:2] / f"{digest}.safetensors"

    def _read_cached(self, path: Path | None) -> torch.Tensor | None:
        if path is None or not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            return load_file(str(path))["features"]
        except Exception:  # a damaged cache entry is recomputed, never trusted
            return None

    @staticmethod
    def _write_cached(path: Path | None, features: torch.Tensor) -> None:
        if path is None:
            return
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file({"features": features.contiguous()}, str(tmp)))

    # ---- protocol ----------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        paths = [self._cache_path(p) for p in prompts]
        rows: list[torch.Tensor | None] = [self._read_cached(p) for p in paths]
        todo = [i for i, row in enumerate(rows) if row is None]
        if todo:
            for i, features in zip(todo, self._run_t5([prompts[i] for i in todo])):
                rows[i] = features
                self._write_cached(paths[i], features)
        dim = rows[0].shape[-1] if rows else 0
        return left_pad([r for r in rows if r is not None], self.max_length, dim)
