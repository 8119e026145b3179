"""Resolve pretrained weights: local path, URL or Hugging Face id, with a cache and --offline.

Every weight in the suite goes through `resolve_weight`, so one flag (`--offline` or
VAPI_BENCH_OFFLINE=1) guarantees no network access and a clear message naming the missing file
and where to put it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from pathlib import Path

from .errors import OfflineError


def cache_dir() -> Path:
    """Root of the download cache (VAPI_BENCH_CACHE, default ~/.cache/vapi-bench)."""
    return Path(os.environ.get("VAPI_BENCH_CACHE", Path.home() / ".cache" / "vapi-bench"))


def is_offline() -> bool:
    return os.environ.get("VAPI_BENCH_OFFLINE", "").lower() in {"1", "true", "yes"} or os.environ.get(
        "HF_HUB_OFFLINE", ""
    ) == "1"


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_weight(
    spec: str | None,
    *,
    what: str,
    url: str | None = None,
    hf_repo: str | None = None,
    hf_filename: str | None = None,
    sha256: str | None = None,
) -> Path:
    """Return a local file for `spec`.

    spec: a local path (used as is), an http(s) URL, `hf://repo/filename`, or None to use the
    default `url` / (`hf_repo`, `hf_filename`). Downloads land in cache_dir()/<what>/ and are
    verified against `sha256` when given.
    """
    if spec and not spec.startswith(("http://", "https://", "hf://")):
        path = Path(spec).expanduser()
        if not path.exists():
            raise OfflineError(f"{what}: local file {path} does not exist.")
        return path
    if spec and spec.startswith("hf://"):
        repo, _, filename = spec[5:].rpartition("/")
        hf_repo, hf_filename, url = repo, filename, None
    elif spec:
        url = spec
    target_dir = cache_dir() / what
    name = hf_filename if hf_repo else (url.rsplit("/", 1)[-1] if url else None)
    if name is None:
        raise OfflineError(f"{what}: no local path given and no default download location is known.")
    target = target_dir / name
    if target.exists():
        return target
    if is_offline():
        source = f"https://huggingface.co/{hf_repo}/{hf_filename}" if hf_repo else url
        raise OfflineError(
            f"{what}: {target} is missing and offline mode forbids downloading it. Fetch {source} "
            f"on a connected machine (`vapi-bench prepare`) and copy it there, or pass a local path."
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    if hf_repo:
        from huggingface_hub import hf_hub_download

        downloaded = Path(hf_hub_download(hf_repo, hf_filename, cache_dir=str(target_dir / ".hf")))
        shutil.copyfile(downloaded, target)
    else:
        assert url is not None
        download(url, target, sha256=sha256)
    if sha256 and sha256_file(target) != sha256:
        target.unlink()
        raise OfflineError(f"{what}: checksum mismatch for {name}; the download was discarded.")
    return target


def download(url: str, target: Path, sha256: str | None = None) -> Path:
    """Download url to target atomically (temp file + rename)."""
    tmp = target.with_name(f".{target.name}.part")
    with urllib.request.urlopen(url) as resp, open(tmp, "wb") as fh:
        shutil.copyfileobj(resp, fh)
    if sha256 and sha256_file(tmp) != sha256:
        tmp.unlink()
        raise OfflineError(f"checksum mismatch downloading {url}")
    os.replace(tmp, target)
    return target
