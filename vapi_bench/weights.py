"""Resolve pretrained weights: local path, URL or Hugging Face id, with one cache and --offline.

Every weight in the suite goes through `resolve_weight`, so one flag (`--offline` or
VAPI_BENCH_OFFLINE=1) guarantees no network access and a clear message naming the missing file
and where to put it.

Downloads land in `cache_dir()/<what>/<name>`:
- they are resumable: bytes go to a hidden `.<name>.part` file, and a later attempt asks the server
  for the rest with an HTTP Range request (a server that ignores Range makes us start over);
- they are atomic: the file appears under its final name only once complete and verified, so an
  interrupted run never leaves a truncated checkpoint that looks valid;
- they are verified against a sha256 when one is known: a full 64-hex digest, or a hex prefix of at
  least 8 characters (torch hub's convention of putting the prefix in the file name);
- concurrent processes (torchrun ranks) serialise on a file lock, so only one downloads.

`hf://owner/repo[@revision]/path/in/repo` is fetched from the Hugging Face `resolve` endpoint
(HF_ENDPOINT overrides the host, HF_TOKEN or the huggingface_hub login adds authorisation) with the
same downloader, so Hugging Face files get the same cache layout, resume, checksum and offline
behaviour as plain URLs.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from .errors import CheckpointError, OfflineError, VapiError

_CHUNK = 1 << 20
_MIN_SHA256_PREFIX = 8

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


class DownloadError(VapiError):
    """A download failed (network error, HTTP error, interrupted transfer)."""


def cache_dir() -> Path:
    """Root of the download cache (VAPI_BENCH_CACHE, default ~/.cache/vapi-bench)."""
    return Path(os.environ.get("VAPI_BENCH_CACHE", Path.home() / ".cache" / "vapi-bench"))


def is_offline() -> bool:
    """True when VAPI_BENCH_OFFLINE (or HF_HUB_OFFLINE) forbids network access."""
    return os.environ.get("VAPI_BENCH_OFFLINE", "").lower() in {"1", "true", "yes"} or os.environ.get(
        "HF_HUB_OFFLINE", ""
    ) == "1"


def sha256_file(path: Path | str, chunk: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, expected: str | None, what: str) -> None:
    """Raise CheckpointError unless the file's sha256 equals (or starts with) `expected`."""
    if not expected:
        return
    expected = expected.lower()
    if not re.fullmatch(r"[0-9a-f]{%d,64}" % _MIN_SHA256_PREFIX, expected):
        raise ValueError(f"{what}: sha256 {expected!r} must be 8 to 64 hex characters.")
    actual = sha256_file(path)
    if not actual.startswith(expected):
        raise CheckpointError(
            f"{what}: {path} has sha256 {actual}, expected {expected}"
            f"{'...' if len(expected) < 64 else ''}. The file is corrupt or not the expected release."
        )


@dataclass(frozen=True)
class HfFile:
    """A file in a Hugging Face repository, parsed from `hf://owner/repo[@revision]/path`."""

    repo_id: str
    filename: str
    revision: str = "main"

    @classmethod
    def parse(cls, spec: str) -> "HfFile":
        body = spec[len("hf://") :] if spec.startswith("hf://") else spec
        parts = body.split("/")
        if len(parts) < 3 or not all(parts):
            raise ValueError(f"Bad Hugging Face id {spec!r}: expected hf://owner/repo[@revision]/path/to/file.")
        repo_name, _, revision = parts[1].partition("@")
        return cls(f"{parts[0]}/{repo_name}", "/".join(parts[2:]), revision or "main")

    @property
    def url(self) -> str:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        return f"{endpoint}/{self.repo_id}/resolve/{urllib.parse.quote(self.revision, safe='')}/{self.filename}"


def _hf_headers() -> dict[str, str]:
    token = os.environ.get("HF_TOKEN")
    if token is None:
        try:
            from huggingface_hub import get_token

            token = get_token()
        except ImportError:
            token = None
    return {"Authorization": f"Bearer {token}"} if token else {}


def _url_basename(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"Cannot derive a file name from URL {url!r}; give the requirement a local_name.")
    return urllib.parse.unquote(name)


def cached_location(what: str, url: str | None = None, local_name: str | None = None) -> Path:
    """Where a download of `url` for `what` lives in the cache (whether or not it is there)."""
    if local_name is None:
        if url is None:
            raise ValueError(f"{what}: need a URL or a local_name to place the file in the cache.")
        local_name = HfFile.parse(url).filename if url.startswith("hf://") else _url_basename(url)
    return cache_dir() / what / local_name


def resolve_weight(
    spec: str | Path | None,
    *,
    what: str,
    url: str | None = None,
    hf_repo: str | None = None,
    hf_filename: str | None = None,
    sha256: str | None = None,
    local_name: str | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
) -> Path:
    """Return a local file for `spec`, downloading it into the cache if needed and allowed.

    spec: a local path (used as is, never copied), an http(s) URL, `hf://owner/repo/file`, or None
    for the default location (`url`, which may itself be hf://, or `hf_repo` + `hf_filename`).
    `what` names the weight in messages and is the cache sub-folder. `offline` defaults to
    is_offline(). Raises OfflineError when the file is absent and downloading is not allowed.
    """
    if spec is not None and str(spec) != "":
        text = str(spec)
        if not text.startswith(("http://", "https://", "hf://")):
            path = Path(text).expanduser()
            if not path.is_file():
                raise OfflineError(f"{what}: local file {path} does not exist (or is not a file).")
            return path
        url = text
    elif url is None and hf_repo and hf_filename:
        url = f"hf://{hf_repo}/{hf_filename}"
    if url is None:
        raise OfflineError(f"{what}: no local path was given and no default download location is known.")

    source = HfFile.parse(url).url if url.startswith("hf://") else url
    target = cached_location(what, url, local_name)
    if target.is_file():
        return target
    if is_offline() if offline is None else offline:
        raise OfflineError(
            f"{what}: {target} is missing and offline mode forbids downloading it. Download {source} "
            f"on a connected machine (`vapi-bench prepare` fills the cache {cache_dir()}) and copy the file "
            f"to {target}, or pass a local path instead."
        )
    headers = _hf_headers() if url.startswith("hf://") else {}
    return download(source, target, sha256=sha256, what=what, headers=headers, progress=progress)


def download(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    what: str = "download",
    headers: dict[str, str] | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `target`: resumable (.part + Range), locked, sha256-checked, atomic."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(f".{target.name}.lock"))):
        if target.is_file():  # another process finished it while we waited
            return target
        part = target.with_name(f".{target.name}.part")
        _fetch_into(url, part, what=what, headers=headers or {}, progress=progress, timeout=timeout)
        try:
            check_sha256(part, sha256, what)
        except CheckpointError as exc:
            part.unlink()
            raise CheckpointError(f"{exc} Downloaded from {url}; the download was discarded.") from None
        os.replace(part, target)
    return target


def _fetch_into(
    url: str, part: Path, *, what: str, headers: dict[str, str], progress: Progress | None, timeout: float
) -> None:
    """Append the missing bytes of `url` to `part`, restarting if the server ignores Range."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers=dict(headers))
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part file is already complete
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total is None or total == have:
                return
            part.unlink()  # the part is longer than the file: it belongs to something else
            return _fetch_into(url, part, what=what, headers=headers, progress=progress, timeout=timeout)
        raise DownloadError(f"{what}: downloading {url} failed: HTTP {exc.code} {exc.reason}.") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"{what}: cannot reach {url} ({reason}). Check the network, or run with a local path / --offline."
        ) from None
    with response:
        resumed = have > 0 and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        done = have
        try:
            with open(part, "ab" if resumed else "wb") as fh:
                while block := response.read(_CHUNK):
                    fh.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
                fh.flush()
                os.fsync(fh.fileno())
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"{what}: download of {url} was interrupted after {done} bytes ({exc}); run again to resume."
            ) from None
    if total is not None and done != total:
        raise DownloadError(
            f"{what}: download of {url} stopped after {done} of {total} bytes; run again to resume."
        )


def _total_from_content_range(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes (?:\*|\d+-\d+)/(\d+)", (value or "").strip())
    return int(match.group(1)) if match else None

