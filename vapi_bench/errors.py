"""User-facing errors: one or two plain sentences, never a traceback (unless --debug)."""
from __future__ import annotations

import re
from typing import Any

#: torch.multinomial's RuntimeError message for NaN / inf / negative probabilities (one draw, or
#: draws without replacement). Draws with replacement fail with another message on the CPU and, on
#: CUDA, with a device-side assert that ends the process; so samplers check their probabilities
#: first and raise RuntimeError(NON_FINITE_PROBABILITIES) themselves, which training turns into
#: TrainingDiverged and sampling into a "bad checkpoint" CheckpointError.
NON_FINITE_PROBABILITIES = "probability tensor contains either `inf`, `nan` or element < 0"


class VapiError(Exception):
    """An error caused by user input or environment, shown without a traceback.

    `exit_code` follows the CLI convention: 2 for bad names/options, 1 for everything else.
    """

    exit_code = 1


class UsageError(VapiError):
    """Bad option, unknown plugin name, invalid --set key or value."""

    exit_code = 2


class CheckpointError(VapiError):
    """A checkpoint file is missing, truncated, or does not match the model (keys or shapes)."""


class DataError(VapiError):
    """A dataset, image or prompt file is missing or corrupt."""


class TrainingDiverged(VapiError):
    """A NaN/inf loss stopped training; the last good checkpoint is kept."""


class OfflineError(VapiError):
    """A file would have to be downloaded while --offline (or VAPI_BENCH_OFFLINE=1) is set."""


class Interrupted(VapiError):
    """Ctrl-C stopped a stage; the message says what was kept and how to resume."""

    exit_code = 130


class StorageError(VapiError):
    """A file could not be written or read (permissions, disk full, a file where a folder should be)."""


#: characters of a user's value that a message repeats; a longer value (a 2,400-word prompt) is
#: cut, so that the sentence saying what is wrong stays on the screen
SHOWN_CHARS = 80

_LONG_QUOTED = re.compile("'[^'\\n]{%d,}'|\"[^\"\\n]{%d,}\"" % (SHOWN_CHARS + 1, SHOWN_CHARS + 1))


def shorten(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`value` as a message shows it: its text, cut to `limit` characters and '…'."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def shorten_quoted(message: str) -> str:
    """`message` with every quoted value longer than SHOWN_CHARS cut (plugins quote values with !r)."""
    return _LONG_QUOTED.sub(lambda m: m.group(0)[: SHOWN_CHARS + 1] + "…" + m.group(0)[-1], message)


def decode_utf8(data: bytes, source: object) -> str:
    """`data` as text, or a DataError naming `source`, the line and the byte offset of the first
    byte that is not UTF-8 (a file saved as Latin-1 or cp1252 by a spreadsheet, say), instead of a
    UnicodeDecodeError traceback that names neither."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{source} line {line} (byte {exc.start}) is not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8 and run again."
        ) from None
