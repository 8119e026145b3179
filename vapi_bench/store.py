"""Run directories and atomic, lock-protected file writes ("nothing lost").

Every file is written to a temporary sibling and renamed into place, so a process killed half-way
leaves the previous version intact. Leaderboard rows are appended under a file lock.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

from filelock import FileLock, Timeout


TEMP_SUFFIX = ".tmp"


def os_error_remedy(exc: OSError) -> str:
    """What a user can do about a failed read or write, in a few words (for one-line errors)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some disk space (or pass another --runs-dir)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make it writable (or pass another --runs-dir / --results-dir)"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return "a file stands where a folder is needed (or the reverse); move it or pass another path"
    return "check the path"


def _file_mode() -> int:
    """The mode a plain open() would give a new file (0666 less the umask); mkstemp's is 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path | str, writer: Callable[[Path], None]) -> Path:
    """Call writer(tmp_path) then atomically rename tmp_path to path (same directory).

    The file gets the permissions any other file the user writes gets (the umask), not mkstemp's
    private 0600, so leaderboards and images stay readable by the group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            writer(tmp_path)
        except OSError as exc:
            if exc.filename is None:  # a full disk raised inside a library's write: name the file
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
            raise
        os.chmod(tmp_path, _file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, _write)


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: Path | str, record: dict[str, Any]) -> None:
    """Append one JSON line; a single write() of a whole line, flushed, so lines never interleave."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()


def read_jsonl(path: Path | str) -> Iterator[dict[str, Any]]:
    """Yield records; a torn last line (killed writer) is skipped, not fatal."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def write_jsonl(path: Path | str, records: Iterable[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
    return atomic_write_text(path, text)


def write_csv(path: Path | str, rows: Sequence[dict[str, Any]]) -> Path:
    """Rows (dicts with the same keys, in order) as a CSV with a header, written atomically."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def remove_stale_temps(directory: Path | str) -> int:
    """Delete the temporary files (`.<name>.*.tmp`) a killed writer left under `directory`.

    Only safe while this process holds the directory's stage lock (`stage_lock`), so no live
    writer's temporary file is removed. Returns how many were deleted.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    stale = [p for p in directory.rglob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


@contextmanager
def stage_lock(lock_path: Path | str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an inter-process lock for one stage directory.

    Two identical runs started together: the second waits here (calling `on_wait` once, to say so)
    and then finds the first one's done marker and reuses its work instead of redoing it.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), mode=_file_mode())
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
