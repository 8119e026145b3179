"""Safe, format-tolerant checkpoint loading with strict, explanatory key/shape checks.

Released checkpoints come in several layouts: safetensors files; DDP training dicts
`{"model", "optimizer", "steps", "args": argparse.Namespace, ["ema"]}`; DeepSpeed `{"module"}`;
Lightning-style `{"state_dict"}`; raw consolidated FSDP state dicts. `load_checkpoint_file`
returns the model's tensors from any of them without ever unpickling arbitrary objects:
`torch.load(weights_only=True)` with only `argparse.Namespace` allow-listed.

Which entry wins in a training dict: "model", then "module", then "state_dict", then "ema", as
the official sampling scripts do (they load `checkpoint["model"]`, EMA is off by default); a file
holding only "ema" gives its EMA weights. `prefer_ema=True` takes "ema" first and fails clearly
when a training dict has none.
"""
from __future__ import annotations

import argparse
import fnmatch
import pickle
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from .errors import CheckpointError
from .interfaces import Generator, has_capability

#: entries of a training checkpoint that hold model weights, in order of preference
WEIGHT_ENTRIES = ("model", "module", "state_dict", "ema")
#: wrapper prefixes stripped when every key carries them (DDP `module.`, torch.compile `_orig_mod.`)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: extra keys tolerated by `load_strict`: buffers some released files carry that models rebuild
TOLERATED_EXTRA_KEYS = ("freqs_cis", "*.freqs_cis", "*.kv_cache.*", "kv_cache.*")

_SHOWN = 12  # keys listed per category in an error message


def load_checkpoint_file(path: str | Path, *, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its model state dict (name -> tensor), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist or is not a file.")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Checkpoint {path} contains Python objects other than tensors and argparse.Namespace, "
            f"so it was not unpickled (unsafe). Convert it to safetensors on a trusted machine. "
            f"Detail: {_first_line(exc)}"
        ) from None
    except Exception as exc:  # zip/stream errors of truncated or corrupt files
        raise CheckpointError(
            f"Checkpoint {path} could not be read ({type(exc).__name__}: {_first_line(exc)}). "
            f"The file is probably truncated or corrupt; download it again."
        ) from None
    return _extract_state_dict(obj, path, prefer_ema)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"Checkpoint {path} is not a readable safetensors file ({_first_line(exc)}); "
            f"it is probably truncated or corrupt."
        ) from None


def _extract_state_dict(obj: object, path: Path, prefer_ema: bool) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"Checkpoint {path} holds a {type(obj).__name__}, not a state dict.")
    order = ("ema",) + tuple(e for e in WEIGHT_ENTRIES if e != "ema") if prefer_ema else WEIGHT_ENTRIES
    if prefer_ema and "ema" not in obj and not _is_state_dict(obj):
        raise CheckpointError(f"Checkpoint {path} has no 'ema' entry (entries: {sorted(map(str, obj))}).")
    for entry in order:
        if entry in obj and _is_state_dict(obj[entry]):
            return _strip_wrapper_prefix(dict(obj[entry]))
    if _is_state_dict(obj):
        return _strip_wrapper_prefix(dict(obj))
    raise CheckpointError(
        f"Checkpoint {path} has no model weights: expected a state dict or one of the entries "
        f"{list(WEIGHT_ENTRIES)}, found entries {sorted(map(str, obj))[:_SHOWN]}."
    )


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _tolerated(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    what: str,
    *,
    tolerate: Iterable[str] = TOLERATED_EXTRA_KEYS,
    assign: bool = False,
) -> list[str]:
    """Load `state_dict` into `module`, requiring every key and shape to match.

    Extra keys matching `tolerate` (glob patterns; by default the `freqs_cis` and `*.kv_cache.*`
    buffers some files carry) are ignored and returned. Any missing, unexpected or mis-shaped key
    raises CheckpointError naming `what` and listing the offending keys with shapes; so does an
    integer (or bool) tensor where the model holds a floating-point one, which loading would cast
    silently into weights that are only whole numbers (a quantised or mislabelled file).
    `assign=True` adopts the checkpoint tensors (for modules built on the meta device).
    """
    tolerate = tuple(tolerate)
    expected = module.state_dict(keep_vars=True)
    ignored = sorted(k for k in state_dict if k not in expected and _tolerated(k, tolerate))
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected and k not in ignored)
    misshaped = sorted(
        k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    integer = sorted(
        k for k in expected
        if k in state_dict and expected[k].is_floating_point() and not state_dict[k].is_floating_point()
    )
    if missing or unexpected or misshaped or integer:
        parts = []
        if missing:
            parts.append(_listing("missing", missing, lambda k: tuple(expected[k].shape)))
        if unexpected:
            parts.append(_listing("unexpected", unexpected, lambda k: tuple(state_dict[k].shape)))
        if misshaped:
            parts.append(
                _listing(
                    "wrong shape",
                    misshaped,
                    lambda k: f"checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}",
                )
            )
        if integer:
            parts.append(_listing("not floating-point", integer, lambda k: _dtype_pair(state_dict[k], expected[k])))
        non_float = f", {len(integer)} integer where the model is floating-point" if integer else ""
        raise CheckpointError(
            f"The checkpoint for {what} does not match the model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(misshaped)} mis-shaped keys{non_float}); check that the "
            f"model configuration matches the file.\n" + "\n".join(parts)
        )
    module.load_state_dict({k: v for k, v in state_dict.items() if k not in ignored}, strict=True, assign=assign)
    return ignored


def _dtype_pair(theirs: torch.Tensor, ours: torch.Tensor) -> str:
    return f"checkpoint {str(theirs.dtype).removeprefix('torch.')} vs model {str(ours.dtype).removeprefix('torch.')}"


def _listing(label: str, keys: list[str], detail) -> str:
    shown = [f"    {k}: {detail(k)}" for k in keys[:_SHOWN]]
    more = f"\n    ... and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"  {label}:\n" + "\n".join(shown) + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def check_finite_weights(generator: Generator, checkpoint: str | None) -> None:
    """A checkpoint holding NaN/inf weights can only produce garbage: refuse it up front."""
    modules = [generator.policy]
    if has_capability(generator, "tokenizer_decoder") and isinstance(generator.tokenizer_decoder, torch.nn.Module):
        modules.append(generator.tokenizer_decoder)
    for module in modules:
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                source = checkpoint or "the default weights"
                raise CheckpointError(f"Bad checkpoint {source}: its weight '{name}' holds NaN or infinite values "
                                      "(a diverged training run?). Use an earlier checkpoint.")
