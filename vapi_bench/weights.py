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
- concurrent processes (torchrun ranks) serialise on a file lock, so only one downloads; a file
  already in the cache is returned without a lock, so a shared read-only cache works;
- they carry no credential to a host it was not meant for: plain URLs are fetched without one, and
  `download(headers=...)` drops Authorization and cookies when a redirect leaves the origin.

`hf://owner/repo[@revision]/path/in/repo` goes through huggingface_hub (`hf_hub_download`) into the
Hugging Face cache (HF_HUB_CACHE, default ~/.cache/huggingface/hub), so weights a user already has
there are found without any network access and not downloaded twice, and the token (HF_TOKEN or
`hf auth login`) follows huggingface_hub's rules: sent to the Hub, never to the CDN a file is
redirected to. HF_ENDPOINT overrides the Hub's address. A file placed by hand at
`cache_dir()/<what>/<name>` (or left there by an older version) is used first.
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
#: headers that authenticate their sender to one origin (urllib spells them capitalised)
_CREDENTIAL_HEADERS = ("Authorization", "Cookie", "Proxy-authorization")

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


def hub_cache_dir() -> Path:
    """The Hugging Face cache: HF_HUB_CACHE as set now, else huggingface_hub's default."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


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
        return f"{_hf_endpoint()}/{self.repo_id}/resolve/{urllib.parse.quote(self.revision, safe='')}/{self.filename}"

    def in_hub_cache(self) -> Path | None:
        """The file in the Hugging Face cache, if it is there (looked up on disk only)."""
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo_id, self.filename, cache_dir=hub_cache_dir(), revision=self.revision)
        return Path(found) if isinstance(found, str) else None

    def download(self, what: str) -> Path:
        """Fetch the file into the Hugging Face cache with huggingface_hub (its resume, locking and token rules)."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError  # where huggingface_hub 0.23 has it too

        try:
            return Path(hf_hub_download(self.repo_id, self.filename, revision=self.revision,
                                        cache_dir=hub_cache_dir(), endpoint=_hf_endpoint()))
        except (OSError, EntryNotFoundError, ValueError) as exc:
            reason = exc.__cause__ or exc  # huggingface_hub wraps the Hub's answer (404, 401) in a cache miss
            detail = (str(reason).strip().splitlines() or [type(reason).__name__])[0]
            raise DownloadError(
                f"{what}: downloading {self.filename} from {self.repo_id} ({self.url}) failed ({detail}). Check the "
                "network and, for a gated or private repository, your token (HF_TOKEN or `hf auth login`); or "
                "pass a local path."
            ) from None


def _hf_endpoint() -> str:
    """The Hub's address: HF_ENDPOINT as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _url_basename(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"Cannot derive a file name from URL {url!r}; give the requirement a local_name.")
    return urllib.parse.unquote(name)


def cached_location(what: str, url: str | None = None, local_name: str | None = None) -> Path:
    """Where the file of `url` for `what` is read from: `cache_dir()/<what>/<name>`, or for a
    Hugging Face file not placed there, its copy in the Hugging Face cache if it has one."""
    if local_name is None:
        if url is None:
            raise ValueError(f"{what}: need a URL or a local_name to place the file in the cache.")
        local_name = HfFile.parse(url).filename if url.startswith("hf://") else _url_basename(url)
    placed = cache_dir() / what / local_name
    if url is not None and url.startswith("hf://") and not placed.is_file():
        return HfFile.parse(url).in_hub_cache() or placed
    return placed


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
    `progress` reports plain URL downloads; huggingface_hub draws its own bar for hf:// files.
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

    target = cached_location(what, url, local_name)
    if target.is_file():
        return target
    if is_offline() if offline is None else offline:
        raise OfflineError(_offline_message(what, url, target))
    if url.startswith("hf://"):
        return _checked_hub_file(HfFile.parse(url).download(what), sha256, what)
    return download(url, target, sha256=sha256, what=what, progress=progress)


def _offline_message(what: str, url: str, target: Path) -> str:
    """Which file is missing, where it comes from, and where an offline run looks for it."""
    if url.startswith("hf://"):
        hf = HfFile.parse(url)
        return (
            f"{what}: {hf.url} is neither in the Hugging Face cache {hub_cache_dir()} nor at "
            f"{target}, and offline mode forbids downloading it. Run `vapi-bench prepare` on a connected machine "
            f"and copy its Hugging Face cache here (or set HF_HUB_CACHE), put the file at {target}, or pass a "
            "local path instead."
        )
    return (
        f"{what}: {target} is missing and offline mode forbids downloading it. Download {url} on a connected "
        f"machine (`vapi-bench prepare` fills the cache {cache_dir()}) and copy the file to {target}, or pass a "
        "local path instead."
    )


def _checked_hub_file(path: Path, sha256: str | None, what: str) -> Path:
    """`path` once its sha256 matches; a mismatch names the file to delete from the Hugging Face cache."""
    try:
        check_sha256(path, sha256, what)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} It is in the Hugging Face cache; delete it and run again.") from None
    return path


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
    """Download `url` to `target`: resumable (.part + Range), locked, sha256-checked, atomic.

    `headers` go to `url`'s origin only: a redirect to another host gets none of its credentials.
    """
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
        response = _OPENER.open(request, timeout=timeout)
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


class _CredentialsStayOnTheirOrigin(urllib.request.HTTPRedirectHandler):
    """Follow redirects, dropping credentials when one leaves the origin (scheme, host, port) they
    were sent to: urllib copies every header to the new host, so a token meant for one server would
    reach whatever host a redirect names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in _CREDENTIAL_HEADERS:
                new.remove_header(name)
        return new


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())


_OPENER = urllib.request.build_opener(_CredentialsStayOnTheirOrigin)


def _total_from_content_range(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes (?:\*|\d+-\d+)/(\d+)", (value or "").strip())
    return int(match.group(1)) if match else None

