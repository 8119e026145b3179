"""Load Janus-Pro from a Hugging Face id or a local directory, in either checkpoint layout.

- transformers layout (`config.json` with model_type "janus", e.g. deepseek-community/Janus-Pro-1B):
  `JanusForConditionalGeneration.from_pretrained`, with word embeddings forced untied;
- deepseek-ai's original layout (model_type "multi_modality", e.g. deepseek-ai/Janus-Pro-1B): the
  config is translated and the weights renamed by our own key table (`keymap.py`), then loaded
  through the same `from_pretrained` machinery (meta-device init, dtype, loading report).

Either way a missing, unexpected or mis-shaped key is a CheckpointError that names them. Hugging
Face ids go through `huggingface_hub.snapshot_download`; with VAPI_BENCH_OFFLINE=1 (or
HF_HUB_OFFLINE=1) only the local HF cache is used and a missing model is an OfflineError.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from vapi_bench.errors import CheckpointError, OfflineError
from vapi_bench.weights import is_offline

from .keymap import convert_official_state_dict, janus_config_from_official
from .prompts import IMAGE_TOKEN, PAD_TOKEN, SpecialTokens, resolve_special_tokens

Layout = Literal["transformers", "deepseek"]
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedJanus:
    """A transformers Janus model with its tokenizer and where it came from."""

    model: Any  # JanusForConditionalGeneration, eval mode, on the target device
    tokenizer: Any
    special: SpecialTokens
    source: str
    directory: Path
    layout: Layout


def resolve_checkpoint_dir(checkpoint: str) -> Path:
    """A local directory as is; an `owner/name` (or `hf://owner/name`) Hugging Face id through the hub cache."""
    checkpoint = checkpoint.removeprefix("hf://")
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(
            f"Janus-Pro checkpoint {checkpoint} is a file; pass the directory holding config.json, "
            f"the weights and the tokenizer."
        )
    if not _HF_ID.match(checkpoint):
        raise CheckpointError(f"Janus-Pro checkpoint directory {checkpoint} does not exist.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = is_offline()
    try:
        return Path(snapshot_download(checkpoint, local_files_only=offline))
    except LocalEntryNotFoundError:
        if offline:
            raise OfflineError(
                f"{checkpoint} is not in the local Hugging Face cache and offline mode forbids downloading it. "
                f"Run `huggingface-cli download {checkpoint}` on a connected machine, or pass a local directory."
            ) from None
        raise CheckpointError(f"could not download {checkpoint} from the Hugging Face hub.") from None
    except Exception as exc:  # hub errors (unknown repo, gated, network) become one plain sentence
        raise CheckpointError(f"could not fetch {checkpoint} from the Hugging Face hub: {exc}") from None


def detect_layout(directory: Path) -> tuple[Layout, dict[str, Any]]:
    """('transformers' | 'deepseek', config dict) from the directory's config.json."""
    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{config_path} is missing; not a Janus-Pro checkpoint directory.") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from None
    model_type = config.get("model_type")
    if model_type == "janus":
        return "transformers", config
    if model_type == "multi_modality":
        return "deepseek", config
    raise CheckpointError(
        f"{config_path}: model_type {model_type!r} is neither 'janus' (transformers) nor 'multi_modality' (deepseek)."
    )


def load_janus(
    checkpoint: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    attn_implementation: str = "sdpa",
    config: Any = None,
) -> LoadedJanus:
    """Load model + tokenizer from `checkpoint` (HF id or directory, either layout).

    `config` replaces the JanusConfig derived from a deepseek-layout config.json; it exists for
    checkpoints whose architecture differs from the released ones (the tiny test models).
    """
    from transformers import AutoTokenizer

    directory = resolve_checkpoint_dir(checkpoint)
    layout, raw_config = detect_layout(directory)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the tokenizer from {directory}: {exc}") from None
    if layout == "transformers":
        model, info = _load_transformers_layout(directory, dtype, attn_implementation)
    else:
        model, info = _load_deepseek_layout(directory, raw_config, tokenizer, dtype, attn_implementation, config)
    _raise_on_bad_keys(info, directory)
    special = resolve_special_tokens(tokenizer, model.generation_config)
    _complete_generation_config(model.generation_config, special)
    model.to(device).eval()
    return LoadedJanus(model, tokenizer, special, checkpoint, directory, layout)


def _load_transformers_layout(directory: Path, dtype: torch.dtype, attn: str) -> tuple[Any, dict[str, Any]]:
    from transformers import JanusConfig, JanusForConditionalGeneration

    config = JanusConfig.from_pretrained(str(directory))
    config.tie_word_embeddings = False  # Janus-Pro's lm_head and embed_tokens are different tensors
    return JanusForConditionalGeneration.from_pretrained(
        str(directory), config=config, dtype=dtype, attn_implementation=attn, output_loading_info=True
    )


def _load_deepseek_layout(
    directory: Path, raw_config: dict[str, Any], tokenizer: Any, dtype: torch.dtype, attn: str, config: Any
) -> tuple[Any, dict[str, Any]]:
    from transformers import JanusForConditionalGeneration

    if config is None:
        config = janus_config_from_official(
            raw_config,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        )
    state_dict = convert_official_state_dict(read_official_state_dict(directory))
    return JanusForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=state_dict, dtype=dtype, attn_implementation=attn, output_loading_info=True
    )


def read_official_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a deepseek checkpoint: pytorch_model.bin(.index.json) or model.safetensors(.index.json)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = directory / index_name
        if index_path.exists():
            try:
                shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError) as exc:
                raise CheckpointError(f"{index_path} is not a valid weight index: {exc}") from None
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_weight_file(directory / shard))
            return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).exists():
            return _read_weight_file(directory / name)
    raise CheckpointError(f"no weights (pytorch_model.bin or model.safetensors, or their index) in {directory}.")


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise CheckpointError(f"weight file {path} is missing.") from None
    except Exception as exc:  # truncated / corrupt files
        raise CheckpointError(f"cannot read weight file {path}: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return state


def _raise_on_bad_keys(info: dict[str, Any], directory: Path) -> None:
    problems = {
        "missing": sorted(info.get("missing_keys") or []),
        "unexpected": sorted(info.get("unexpected_keys") or []),
        "mis-shaped": sorted(str(k) for k in (info.get("mismatched_keys") or [])),
    }
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        detail = "; ".join(f"{len(keys)} {kind} (e.g. {keys[:4]})" for kind, keys in problems.items())
        raise CheckpointError(f"Janus-Pro weights in {directory} do not match the model: {detail}.")


def _complete_generation_config(generation_config: Any, special: SpecialTokens) -> None:
    """Record the ids transformers' own image generate needs (it reads boi from generation_kwargs)."""
    generation_config.bos_token_id = special.bos
    generation_config.pad_token_id = special.pad
    extra = getattr(generation_config, "generation_kwargs", None) or {}
    generation_config.generation_kwargs = {**extra, "boi_token_id": special.boi}
