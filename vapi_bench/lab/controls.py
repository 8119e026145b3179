"""The temperature control: does a method do more than sharpen the base's distribution?

Per trained label: the mean teacher-forced entropy of its fine-tuned policies on held-out images,
the base temperature with that entropy (exact to 3 decimals, no coarser rounding: FID moved
≈ 0.11 between T = 0.92 and 0.93 on the head-scaled base), and the base sampled there on every test
seed (`T-control:<label>`); with a curve step δ, also at T ± δ (`T-curve:<label>`), so "beats
temperature" is read off a curve around the match, not one point.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UsageError
from ..hashing import stable_hash
from ..progress import console
from ..training.losses import teacher_forced_ce
from .protocol import LabMethod
from .results import CONTROL_PREFIX, CURVE_PREFIX
from .summary import run_record
from .temperature import TemperatureCurve, cached_policy_stats, heldout_set, policy_stats, teacher_forced_logits

def _heldout(setup: Any, generator: Any) -> tuple[Any, list[Any]]:
    """The generator's default dataset, held-out 'test' split, first control_n items."""
    from ..params import resolve_params
    from ..registry import get_registry

    entry = get_registry().get("datasets", generator.default_dataset)
    names = {p.name for p in entry.params}
    if "split" not in names:
        raise UsageError(f"lab tune --controls: dataset '{entry.name}' has no held-out split; use --no-controls.")
    given = {"split": "test", "n": str(setup.control_n)}
    for size_key in ("image_size", "size"):
        if size_key in names:
            given[size_key] = str(generator.image_size)
    dataset = entry.factory(**resolve_params(entry.params, {k: v for k, v in given.items() if k in names}, entry.name))
    return heldout_set(dataset, setup.control_n)


def temperature_controls(setup: Any, base: Any, load_tuned: Callable[[], Any], labs: list[LabMethod],
                         test_rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]],
                         sample_base: Callable[[str, float], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Annotate every fine-tuned row with its policy's entropy and matched temperature, and return
    the control rows: `sample_base(label, temperature)` samples the base on every test seed."""
    images, conditions = _heldout(setup, base)
    heldout_key = stable_hash({"dataset": base.default_dataset, "split": "test", "n": setup.control_n,
                               "image_size": base.image_size, "model": setup.model_overrides,
                               "device": next(base.policy.parameters()).device.type})
    base_logits, base_tokens = teacher_forced_logits(base, images, conditions)
    curve = TemperatureCurve(base_logits)
    base_stats = {"entropy": curve.entropy(1.0), "heldout_ce": float(teacher_forced_ce(base_logits, base_tokens))}
    for row in test_rows + validation_rows:
        if row["label"] == "none":
            row.update(base_stats)

    def annotate(rows: list[dict[str, Any]], label: str) -> list[Any]:
        stats = []
        for run_id in dict.fromkeys(r["run_id"] for r in rows if r["label"] == label):
            stage = setup.runs_dir / "finetune" / run_record(setup.runs_dir, run_id)["stage_keys"]["finetune"]

            def compute(weights: Path = stage / "weights") -> Any:
                tuned = load_tuned()
                tuned.load_finetuned(weights)
                return policy_stats(tuned, images, conditions)

            stats.append((run_id, cached_policy_stats(stage, heldout_key, compute)))
        matched = {run_id: round(curve.temperature_for(s.entropy), 3) for run_id, s in stats}
        for row in rows:
            for run_id, s in stats:
                if row["run_id"] == run_id:
                    row["entropy"], row["heldout_ce"] = s.entropy, s.heldout_ce
                    row["matched_temperature"] = matched[run_id]
        return stats

    out = []
    for lab in labs:
        annotate(validation_rows, lab.label)
        stats = annotate(test_rows, lab.label)
        entropy = float(np.mean([s.entropy for _, s in stats]))
        temperature = round(curve.temperature_for(entropy), 3)
        console.print(f"{lab.label}: teacher-forced entropy {entropy:.4f} = base at T={temperature:g}")
        out += [{**r, "label": f"{CONTROL_PREFIX}{lab.label}", "control_temperature": temperature}
                for r in sample_base(f"{CONTROL_PREFIX}{lab.label}", temperature)]
        if setup.control_curve > 0:
            for t in (temperature - setup.control_curve, temperature + setup.control_curve):
                t = round(t, 3)
                out += [{**r, "label": f"{CURVE_PREFIX}{lab.label}@T={t:g}", "control_temperature": t}
                        for r in sample_base(f"{CURVE_PREFIX}{lab.label}", t)]
    return out
