"""`vapi-bench prepare`: fetch every file a run needs into the cache, ahead of an offline run.

Plugins declare what they need as `WeightRequirement`s (checkpoints, tokenizers, Inception, LPIPS
backbones, CLIP, detector weights, reference batches, prompt files). `prepare` resolves them all
through `weights.resolve_weight`, so the files land exactly where an offline run will look for them
(`cache_dir()/<what>/<name>`, or the Hugging Face cache for `hf://` files), and reports one outcome per file instead of stopping at the first
failure: on a connected machine it downloads what is missing; with `offline=True` it only checks
that the cache is complete and says which file is missing and where to put it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

from .errors import VapiError
from .weights import Progress, cached_location, check_sha256, resolve_weight

Status = Literal["local", "cached", "downloaded", "missing", "failed"]


@dataclass(frozen=True)
class WeightRequirement:
    """One file a plugin needs at run time.

    what: short name, shown in messages and used as the cache sub-folder ("inception", ...).
    url: default location, an http(s) URL or `hf://owner/repo[@revision]/path`.
    spec: the user's override (local path, URL or hf://); when set it replaces `url`.
    sha256: full hex digest or a prefix of at least 8 hex characters; checked after download.
    local_name: file name in the cache when the URL's last path component is not a good one.
    description: one line telling the user what the file is for.
    derive: optional local step from the fetched file to the file runs actually read (for example
        an OpenMMLab `.pth` converted to safetensors in the cache); `prepare` runs it once the file
        is present, so an offline run finds the derived file ready. It must be idempotent.
    """

    what: str
    url: str | None = None
    spec: str | None = None
    sha256: str | None = None
    local_name: str | None = None
    description: str = ""
    derive: Callable[[Path], Path] | None = None

    @property
    def source(self) -> str | None:
        """Where the file comes from: the override if given, else the default URL."""
        return self.spec or self.url

    def is_local(self) -> bool:
        return bool(self.spec) and not str(self.spec).startswith(("http://", "https://", "hf://"))

    def location(self) -> Path:
        """The file an offline run will read."""
        if self.is_local():
            return Path(str(self.spec)).expanduser()
        return cached_location(self.what, self.source, self.local_name)

    def resolve(self, offline: bool | None = None, progress: Progress | None = None) -> Path:
        """The local file, downloading it if allowed (see weights.resolve_weight)."""
        return resolve_weight(
            self.spec, what=self.what, url=self.url, sha256=self.sha256, local_name=self.local_name,
            offline=offline, progress=progress,
        )


@dataclass(frozen=True)
class PrepareOutcome:
    """What `prepare` did for one requirement."""

    requirement: WeightRequirement
    status: Status
    path: Path
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("local", "cached", "downloaded")


def prepare(
    requirements: Iterable[WeightRequirement],
    offline: bool = False,
    *,
    verify: bool = True,
    progress: Callable[[WeightRequirement], Progress | None] | None = None,
) -> list[PrepareOutcome]:
    """Make every requirement available locally; one outcome per distinct file, in input order.

    offline: only check presence (never touch the network). verify: re-check the sha256 of files
    already present (a cache copied between machines may be damaged). progress: optional factory
    giving a byte-progress callback per requirement (the CLI passes a rich progress bar).
    Errors are recorded in the outcome, never raised, so one bad URL does not hide the others.
    """
    outcomes: list[PrepareOutcome] = []
    seen: set[Path] = set()
    for req in requirements:
        path = req.location()
        if path in seen:
            continue
        seen.add(path)
        outcomes.append(_prepare_one(req, path, offline, verify, progress(req) if progress else None))
    return outcomes


def _prepare_one(
    req: WeightRequirement, path: Path, offline: bool, verify: bool, progress: Progress | None
) -> PrepareOutcome:
    present = path.is_file()
    try:
        if present and verify:
            check_sha256(path, req.sha256, req.what)
        resolved = req.resolve(offline=offline, progress=progress)
    except VapiError as exc:
        status: Status = "missing" if not present and offline else "failed"
        return PrepareOutcome(req, status, path, str(exc))
    message = ""
    if req.derive is not None:
        try:
            derived = req.derive(resolved)
        except VapiError as exc:
            return PrepareOutcome(req, "failed", resolved, str(exc))
        resolved, message = derived, f"derived from {resolved}"
    if req.is_local():
        return PrepareOutcome(req, "local", resolved, message)
    return PrepareOutcome(req, "cached" if present else "downloaded", resolved, message)
