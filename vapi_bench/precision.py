"""`--precision auto|fp32|bf16`: resolve the automatic choice from the hardware.

bf16 autocast pays off only where the hardware multiplies bf16 natively: CUDA devices with bf16
support, and CPUs with AVX512-BF16 or AMX (x86) or the BF16 extension (Arm). On an AVX2-only CPU
bf16 is emulated, about 60x slower than fp32, so `auto` picks fp32 there and an explicit `bf16`
warns. The resolved value (never "auto") is what run.json records and the stage keys hash.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from .errors import UsageError

CHOICES = ("auto", "fp32", "bf16")

#: /proc/cpuinfo flags that mean bf16 matrix multiplies run natively
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU's flags (Linux /proc/cpuinfo) include a native bf16 instruction set."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            if NATIVE_BF16_FLAGS & set(line.split(":", 1)[-1].split()):
                return True
    return False


def device_has_native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str | None]:
    """(fp32 | bf16, a warning or None) for `--precision requested` on `device`."""
    if requested not in CHOICES:
        raise UsageError(f"--precision must be one of {', '.join(CHOICES)}, not {requested!r}.")
    native = device_has_native_bf16(device)
    if requested == "auto":
        return ("bf16" if native else "fp32"), None
    if requested == "bf16" and not native:
        return "bf16", (f"--precision bf16 on {device.type} without native bf16 support is emulated and much slower "
                        "than fp32 (use --precision auto or fp32).")
    return requested, None
