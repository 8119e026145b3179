"""The lab's result format: the files `lab tune` writes and the report reads.

Under a results directory, per model <m> and task <t>:
- `lab-<m>-<t>.csv`: one row per label and variant (mean and std over seeds, the chosen lr and grid,
  delta_<metric>_vs_{none,sft,control} with _ci_low / _ci_high and real_vs_*);
- `lab-<m>-<t>-seeds.csv`: the test rows, one per label, variant and seed;
- `lab-<m>-<t>-validation.csv`: every grid point's validation rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

#: the labels every method is compared against (when they are part of the run)
REFERENCES = ("none", "sft")
#: the task metrics a summary row gives as mean and std over seeds (when the task reports them)
SUMMARY_METRICS = ("fid", "kid", "inception_score", "precision", "recall", "class_accuracy", "overall")


@dataclass(frozen=True)
class LabPaths:
    summary: Path
    seeds: Path
    validation: Path


def lab_paths(results_dir: Path, model: str, task: str) -> LabPaths:
    stem = results_dir / f"lab-{model}-{task}"
    return LabPaths(Path(f"{stem}.csv"), Path(f"{stem}-seeds.csv"), Path(f"{stem}-validation.csv"))


def summary_tables(results_dir: Path, task: str) -> list[tuple[str, pd.DataFrame]]:
    """Every non-empty lab summary of `task` under results_dir, by file name."""
    return [(path.name, pd.read_csv(path)) for path in sorted(results_dir.glob(f"lab-*-{task}.csv"))
            if path.stat().st_size]
