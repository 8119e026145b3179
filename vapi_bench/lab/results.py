"""The lab's result format: the files `lab tune` writes and the report reads.

Under a results directory, per model <m> and task <t>:
- `lab-<m>-<t>.csv`: one row per label and variant: mean and std over seeds, the chosen lr and grid,
  and per comparison <ref> in COMPARISONS: delta_<metric>_vs_<ref>, the bootstrap interval
  (_ci_low / _ci_high), the seed-level paired t interval (_t_low / _t_high), its p (_p) and Holm
  adjustment (_p_holm), mde_<metric>_vs_<ref> and real_vs_<ref> (Holm-adjusted p < 0.05); the
  `multiplicity` column says over how many comparisons Holm ran. Labels: `none` (the base),
  `tuned-T` (the base at its tuned temperature), each method or variant, `T-control:<label>`
  (the entropy-matched base) and `<label>@lr=<x>` (a method at another method's chosen lr; a
  method that chose that lr itself is compared with that method in its own row, `_vs_matched`);
- `lab-<m>-<t>-seeds.csv`: the test rows, one per label, variant and seed;
- `lab-<m>-<t>-validation.csv`: every grid point's validation rows;
- `lab-<m>-<t>-cost.csv`: what the table cost (cost.py): per label and phase the distinct
  fine-tunes, sample sets and scores and their recorded minutes, then the whole table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

#: the base sampled at its validation-chosen temperature: the cheapest alternative a user has
TUNED_T = "tuned-T"
#: a method's temperature control: the base at the temperature matching the method's entropy
CONTROL_PREFIX = "T-control:"
#: the base at the control temperature ± the curve step: the control's neighbourhood
CURVE_PREFIX = "T-curve:"
#: a matched-lr row's label: `<label>@lr=<x>`, the method at another method's chosen lr
MATCHED_LR_MARK = "@lr="
#: the comparisons a summary row may carry (delta_<metric>_vs_<name>), in reading order
COMPARISONS = ("none", "sft", "tuned_t", "control", "matched")
#: the task metrics a summary row gives as mean and std over seeds (when the task reports them)
SUMMARY_METRICS = ("fid", "kid", "inception_score", "precision", "recall", "class_accuracy", "overall")


@dataclass(frozen=True)
class LabPaths:
    summary: Path
    seeds: Path
    validation: Path
    cost: Path


def lab_paths(results_dir: Path, model: str, task: str) -> LabPaths:
    return _paths(str(results_dir / f"lab-{model}-{task}"))


def _paths(stem: str) -> LabPaths:
    return LabPaths(Path(f"{stem}.csv"), Path(f"{stem}-seeds.csv"), Path(f"{stem}-validation.csv"),
                    Path(f"{stem}-cost.csv"))


def summary_tables(results_dir: Path, task: str) -> list[tuple[str, pd.DataFrame]]:
    """Every non-empty lab summary of `task` under results_dir, by file name."""
    return [(path.name, pd.read_csv(path)) for path in sorted(results_dir.glob(f"lab-*-{task}.csv"))
            if path.stat().st_size]


def lab_tables(results_dir: Path) -> list[LabPaths]:
    """The files of every lab table under results_dir (one per `lab-<m>-<t>-seeds.csv`)."""
    return [_paths(str(seeds)[: -len("-seeds.csv")]) for seeds in sorted(Path(results_dir).glob("lab-*-seeds.csv"))]
