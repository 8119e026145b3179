"""What the user asked for (`RunRequest`), what a run returns (`RunResult`), and the checks that
need nothing but the request: ranges, folders and the device, before anything is built or cached."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError

STAGES = ("finetune", "sample", "score")
#: images per sampling batch when neither --batch-size nor the generator (`sample_batch_size`) says
DEFAULT_SAMPLE_BATCH = 16


@dataclass
class RunRequest:
    """What the user asked for (CLI options before resolution)."""

    model: str
    method: str
    task: str | None
    overrides: dict[str, str] = field(default_factory=dict)
    checkpoint: str | None = None
    seed: int = 0
    runs_dir: Path = Path("runs")
    results_dir: Path | None = None  # None: <runs_dir>/results (the committed evidence is never the default)
    limit: int | None = None
    device: str = "cpu"
    force: bool = False
    batch_size: int | None = None  # None: the generator's `sample_batch_size`, else DEFAULT_SAMPLE_BATCH
    precision: str = "auto"
    stages: tuple[str, ...] = STAGES
    leaderboard: bool = True
    quiet: bool = False
    #: every method of this invocation (`run -a none -a sft -a va-pi`): --set keys are validated
    #: against all of them and routed to each that declares them; () = just `method`
    methods: tuple[str, ...] = ()
    #: the row's name on the board when one method appears twice in a comparison (e.g. "tuned-T":
    #: the base at another sampling temperature); "" = the method's name
    label: str = ""


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    rows: list[dict[str, Any]]
    reused: dict[str, bool]
    finetune_summary: dict[str, Any] = field(default_factory=dict)
    #: what the verdict needs to pair samples across runs: the task, its items, and each scored
    #: variant's sample folder (row i of every run is item i under the same seed)
    task: Any = None
    items: list[Any] = field(default_factory=list)
    sample_dirs: dict[str, Path] = field(default_factory=dict)
    score_dirs: dict[str, Path] = field(default_factory=dict)


def default_results_dir(runs_dir: Path) -> Path:
    """Where a user's own leaderboard rows go unless --results-dir says otherwise."""
    return Path(runs_dir) / "results"


def check_ranges(req: RunRequest) -> None:
    """Reject CLI options outside their range before anything is computed or cached under them
    (--set values are checked by their declared Params)."""
    if req.limit is not None and req.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {req.limit}.")
    if req.batch_size is not None and req.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {req.batch_size}.")


def check_folder(path: Path, option: str) -> None:
    """A folder option that names an existing file would fail only after the compute: say so now."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder; pass a folder path.")


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was requested but CUDA is not available on this machine.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device must be cpu, cuda or cuda:N, not {name!r}.") from None
