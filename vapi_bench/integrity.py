"""Cache entries are checked before they are reused; a damaged one is named, set aside and recomputed.

A stage's done marker is written last, once its outputs are on disk, and a fine-tune's marker lists
the files the stage wrote with their sizes and sha256. Reuse parses a marker strictly and checks
those files, so a truncated marker, a deleted or truncated weights file or a half-written cache is
recomputed instead of half-used (a fine-tune without its VQ file would otherwise sample with the
base decoder, under the fine-tune's own cache key). A damaged file is kept beside the original as
`<name>.corrupt` (one per file, the latest) for whoever wants to look at it, and never read again.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from rich.markup import escape

from .errors import DataError
from .weights import sha256_file

#: the done-marker key listing what a stage wrote: {relative path: {"bytes": n, "sha256": hex}}
FILES_KEY = "written_files"
CORRUPT_SUFFIX = ".corrupt"
#: how numpy reports an .npz that is empty, truncated or not an archive at all
_NPZ_ERRORS = (EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError)

Say = Callable[[str], None]


def warn(text: str) -> None:
    """One `warning:` line on the progress console (stderr), never wrapped, so a path stays whole."""
    from .progress import console

    console.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)


def discard(path: Path, why: str, say: Say = warn) -> None:
    """Say that `path` is corrupt and set it aside, so the entry is recomputed and never read again."""
    aside = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another rank or process set it aside first
        pass
    say(f"{path} is corrupt ({why}); recomputing it (the damaged file is kept as {aside.name})")


def read_marker(path: Path, required: Iterable[str] = (), say: Say = warn) -> dict[str, Any] | None:
    """The JSON object a done marker (or small JSON cache) holds, or None when there is none or it
    is corrupt: not JSON, not an object, or without one of the `required` keys (then said and set
    aside)."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        discard(path, f"not valid JSON: {exc}", say)
        return None
    if not isinstance(value, dict):
        discard(path, f"a JSON {type(value).__name__}, not an object", say)
        return None
    missing = [key for key in required if key not in value]
    if missing:
        discard(path, f"it has no {', '.join(missing)}", say)
        return None
    return value


def file_records(paths: Iterable[Path], root: Path) -> dict[str, dict[str, Any]]:
    """What a stage wrote, for its done marker: each file under `root` with its size and sha256.

    A path that is not a file now (a generator listing one it did not write) is an error here, at
    write time, rather than a damaged cache at the next reuse.
    """
    records = {}
    for path in paths:
        path = Path(path)
        records[str(path.relative_to(root))] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return records


def damaged_file(root: Path, records: dict[str, dict[str, Any]]) -> str | None:
    """Why the files a marker lists are not what the stage wrote (the first one that differs), or
    None when each is there at its recorded size. Sizes, not digests: a reuse of a 14 GB fine-tune
    must not read it twice, and a truncated or missing file, what a killed copy or a cleanup
    leaves, is what this catches; the safetensors loader checks the contents."""
    for name, record in records.items():
        path = Path(root) / name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != record.get("bytes"):
            return f"{path} is corrupt ({size} bytes where {record.get('bytes')} were written)"
    return None


def missing_files(paths: Iterable[Path]) -> list[Path]:
    return [Path(p) for p in paths if not Path(p).is_file()]


def load_npz(path: Path, required: Iterable[str] = (), say: Say = warn) -> dict[str, np.ndarray] | None:
    """Every array of a cached .npz, or None when it is absent or damaged: empty, truncated, not an
    archive or without one of the `required` arrays (then said and set aside). numpy reports an
    empty file as EOFError, which the CLI would otherwise take for an interrupted run."""
    path = Path(path)
    if not path.is_file():
        return None
    arrays, why = _npz_arrays(path)
    missing = [key for key in required if arrays is not None and key not in arrays]
    if arrays is not None and not missing:
        return arrays
    discard(path, why or f"it has no {', '.join(missing)}", say)
    return None


def _npz_arrays(path: Path) -> tuple[dict[str, np.ndarray] | None, str]:
    """(the arrays, "") of a readable .npz, else (None, why not)."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            return None, "a single array, not an .npz archive"
        with data:
            return {name: data[name] for name in data.files}, ""
    except _NPZ_ERRORS as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no data"
        return None, f"{type(exc).__name__}: {detail}"


def check_samples_on_disk(task: Any, items: list, sdir: Path) -> None:
    """Every image the done marker will vouch for is on disk (a folder deleted or moved while
    sampling must not be marked done: the marker would make the next run score a hole)."""
    missing = missing_files(task.image_path(sdir, it) for it in items)
    if missing:
        raise DataError(f"{len(missing)} of {len(items)} images are missing from {sdir} after sampling (first: "
                        f"{missing[0]}); was the folder deleted or moved meanwhile? It is not marked done: run the "
                        "same command again to draw them.")
