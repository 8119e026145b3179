"""Where each fine-tuning method moved the shapes-c2i policy: held-out likelihood and entropy.

For each base GPT (the zoo's, and any --checkpoint a run started from, e.g. the weak base) and
every fine-tuned shapes-c2i GPT found under runs/finetune (the evidence runs), teacher-forced
on held-out 'test' images: the cross-entropy of the true tokens (how well the model still fits
the data distribution) and the mean entropy of its next-token distribution
(sharper or flatter than the base). A method that raises held-out CE moves the unguided sample
distribution away from the data, which is what FID without CFG measures.
Writes results/policy-drift-shapes-c2i.csv.

    .venv/bin/python scripts/shapes_policy_drift.py [--runs-dir runs] [--n 1000]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vapi_bench import load_generator
from vapi_bench.errors import CheckpointError
from vapi_bench.plugins.shapes.data import class_dataset
from vapi_bench.plugins.shapes.zoo.train import images_to_float
from vapi_bench.lab.temperature import policy_stats
from vapi_bench.store import write_csv

RESULTS = Path(__file__).resolve().parent.parent / "results"


def finetuned_runs(runs_dir: Path) -> dict[str, dict]:
    """finetune stage key -> the spec of a run that used it (the runner names stages by hash)."""
    out = {}
    for path in runs_dir.glob("*/run.json"):
        record = json.loads(path.read_text())
        key = record.get("stage_keys", {}).get("finetune")
        if key and record["spec"]["model"] == "shapes-c2i" and not record["spec"].get("method_identity"):
            out[key] = record["spec"]
    return out


def _base_name(checkpoint: str) -> str:
    """'zoo' for the shipped GPT, else the --checkpoint file the run fine-tuned (e.g. the weak base)."""
    return Path(checkpoint).name if checkpoint else "zoo"


def _settings(params: dict) -> str:
    """The ablated knobs of a VA-π run (empty for the baselines)."""
    keys = ("w_mse", "w_perceptual", "beta", "use_kl", "kl_coef", "xi") if "group_size" in params else ()
    return " ".join(f"{k}={params[k]}" for k in keys if k in params)


def drift(generator, images: torch.Tensor, labels: list[int]) -> tuple[float, float]:
    stats = policy_stats(generator, images, labels)
    return stats.heldout_ce, stats.entropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = class_dataset("test", args.n, 32, 7)
    images = images_to_float(torch.from_numpy(np.stack([data.scene(i).image for i in range(args.n)])).permute(0, 3, 1, 2))
    labels = data.labels()
    runs = finetuned_runs(args.runs_dir)
    rows = []
    for base in sorted({spec.get("checkpoint") or "" for spec in runs.values()} | {""}):
        ce, entropy = drift(load_generator("shapes-c2i", checkpoint=base or None), images, labels)
        rows.append({"base": _base_name(base), "method": "none", "steps": 0, "batch_size": 0, "seed": "",
                     "settings": "", "run": "", "heldout_ce": ce, "entropy": entropy})
    order = lambda kv: (kv[1].get("checkpoint") or "", kv[1]["method"], kv[0])  # noqa: E731
    for key, spec in sorted(runs.items(), key=order):
        stage = args.runs_dir / "finetune" / key
        weights = stage / "weights" / "gpt.safetensors"
        if not weights.exists():
            continue  # a method that trains the tokenizer: its GPT is the base model's
        params = json.loads((stage / "finetune.json").read_text()).get("params", {})
        try:
            generator = load_generator("shapes-c2i", checkpoint=str(weights))
        except CheckpointError:
            print(f"skipped {stage}: fine-tuned from another zoo build", flush=True)
            continue
        ce, entropy = drift(generator, images, labels)
        rows.append({"base": _base_name(spec.get("checkpoint") or ""), "method": spec["method"],
                     "steps": params.get("steps"), "batch_size": params.get("batch_size"), "seed": spec["seed"],
                     "settings": _settings(params), "run": key, "heldout_ce": ce, "entropy": entropy})
        print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "policy-drift-shapes-c2i.csv"
    write_csv(out, rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
