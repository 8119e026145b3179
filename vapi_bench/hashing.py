"""Content hashes: stable JSON hashes of specs, and file digests cached by (path, size, mtime).

Large checkpoints are hashed once; the digest is remembered in the cache so later runs only stat
the file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from filelock import FileLock

from .store import atomic_write_json


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of obj (sorted keys), truncated to `length` hex chars."""
    text = json.dumps(obj, sort_keys=True, default=_default, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    if hasattr(obj, "__dict__"):
        return vars(obj)
    return repr(obj)


def _digest_cache_path() -> Path:
    from .weights import cache_dir

    return cache_dir() / "digests.json"


def file_digest(path: Path | str) -> str:
    """sha256 of a file (or of a directory's files, in sorted order), cached by path/size/mtime."""
    path = Path(path).resolve()
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(child.relative_to(path)).encode())
            h.update(file_digest(child).encode())
        return h.hexdigest()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = _digest_cache_path()
    known = _read_digests(cache_file).get(key)
    if known is not None:
        return known
    from .weights import sha256_file

    digest = sha256_file(path)
    if stat.st_size >= (1 << 20):  # only worth remembering for large files
        _remember(cache_file, key, digest)
    return digest


def _remember(cache_file: Path, key: str, digest: str) -> None:
    """Add a digest to the cache, if the cache can be written: a shared cache filled once by
    `vapi-bench prepare` is often read-only, and a run must not fail for want of a memo."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache_file) + ".lock"):
            atomic_write_json(cache_file, {**_read_digests(cache_file), key: digest})
    except OSError:
        return


def _read_digests(cache_file: Path) -> dict[str, str]:
    """The remembered digests ({} if the cache is missing or damaged: it is only a cache)."""
    try:
        return json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def environment_versions() -> dict[str, str]:
    """Versions recorded in every run (python, torch, numpy, vapi-bench)."""
    import platform

    import numpy
    import torch

    from . import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "vapi_bench": __version__,
        "cuda": torch.version.cuda or "",
    }


def git_commit(start: Path | None = None) -> str:
    """The git commit of the source tree when available ('' otherwise)."""
    import subprocess

    here = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
