"""User-facing errors: one or two plain sentences, never a traceback (unless --debug)."""
from __future__ import annotations

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
