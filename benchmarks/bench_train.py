"""VA-π training throughput and peak memory: `shared` vs `per-row` update at the same config.

    python benchmarks/bench_train.py [--config small] [--steps 3] [--device cpu] [--precision fp32]

Each mode runs in a fresh subprocess (so peak memory is its own) on a random-init LlamaGen of the
chosen size with synthetic images; the first step is a warm-up and is not timed. Rows are
appended to results/bench-train.csv. The reward is pixel MSE only (no perceptual network), so the
numbers isolate the policy's forward/backward, where the two modes differ; decoding and reward
cost the same in both.

Peak memory: on CUDA, torch.cuda.max_memory_allocated during training; on CPU, the increase of the
process's peak resident set (ru_maxrss) over its size just before training.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    # name: (generator overrides, method overrides); every config uses G = 8, 8 images per step and
    # micro-batches of 1 image (= the official 8 rows).
    "tiny": (dict(image_size=16, dim=32, n_layer=2, n_head=2, multiple_of=32, codebook_size=64, vq_ch=32,
                  vq_ch_mult=(1, 1, 2), vq_z_channels=32, vq_num_res_blocks=1),
             dict(batch_size=8, group_size=8, micro_batch=1)),
    # VQ-16 layout at 256 px (256 tokens) with a 4-layer GPT: decoding 64 images dominates on CPU
    "decoder-bound": (dict(image_size=256, dim=256, n_layer=4, n_head=4, multiple_of=64, codebook_size=1024,
                           vq_ch=32, vq_ch_mult=(1, 1, 2, 2, 4), vq_z_channels=64, vq_num_res_blocks=1),
                      dict(batch_size=8, group_size=8, micro_batch=1)),
    # the paper's regime (GPT compute >> decoding): 64 px, 8x8 tokens, a 25M-parameter GPT
    "policy-bound": (dict(image_size=64, dim=512, n_layer=8, n_head=8, multiple_of=128, codebook_size=1024,
                          vq_ch=32, vq_ch_mult=(1, 2, 2, 4), vq_z_channels=64, vq_num_res_blocks=1),
                     dict(batch_size=8, group_size=8, micro_batch=1)),
}
MODES = ("shared", "per-row")
FIELDS = ("date", "device", "torch", "threads", "config", "image_size", "tokens", "vocab", "dim", "n_layer",
          "policy_params_m", "batch_size", "group_size", "micro_batch", "precision", "mode", "steps_timed",
          "images_per_s", "step_seconds", "peak_mem_mb", "peak_mem_kind", "speedup_vs_per_row")


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(config: str, mode: str, steps: int, device: str, precision: str, threads: int) -> dict:
    """Run one mode and return its measurements (called in a fresh process)."""
    import torch

    import vapi_bench
    from vapi_bench.interfaces import StageContext
    from vapi_bench.params import resolve_params
    from vapi_bench.plugins.va_pi.method import VAPI_PARAMS, VaPi

    torch.set_num_threads(threads)
    gen_over, method_over = CONFIGS[config]
    dev = torch.device(device)
    generator = vapi_bench.load_generator("llamagen-b", random_init=True, num_classes=10, device=dev, **gen_over)
    with torch.no_grad():  # LlamaGen's zero-initialised head would make every logit equal
        generator.policy.output.weight.normal_(0, 0.02)
    size = generator.image_size
    images = torch.nn.functional.interpolate(torch.rand(64, 3, size // 8, size // 8) * 2 - 1, size=size,
                                             mode="bilinear")
    dataset = [(images[i], i % 10) for i in range(64)]
    params = resolve_params(VAPI_PARAMS, dict(method_over, steps=steps + 1, lr=1e-6, w_perceptual=0.0,
                                              update_mode=mode, precision=precision, ckpt_every=10_000), "va-pi")
    records: list[dict] = []
    before = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(out_dir=Path(tmp), device=dev, seed=0, log=records.append)
        VaPi(**params).finetune(generator, dataset, ctx)
    if dev.type == "cuda":
        peak, kind = (torch.cuda.max_memory_allocated(dev) - base) / 2**20, "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before, "cpu_peak_rss_increase"
    timed = records[1:]  # the first step warms up
    cfg = generator.policy.config
    return {
        "date": dt.date.today().isoformat(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__, "threads": threads, "config": config, "image_size": size,
        "tokens": generator.num_tokens, "vocab": generator.codebook_size, "dim": cfg.dim, "n_layer": cfg.n_layer,
        "policy_params_m": round(sum(p.numel() for p in generator.policy.parameters()) / 1e6, 3),
        "batch_size": params["batch_size"], "group_size": params["group_size"], "micro_batch": params["micro_batch"],
        "precision": precision, "mode": mode, "steps_timed": len(timed),
        "images_per_s": round(statistics.median(r["images_per_s"] for r in timed), 3),
        "step_seconds": round(statistics.median(r["step_seconds"] for r in timed), 3),
        "peak_mem_mb": round(peak, 1), "peak_mem_kind": kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="policy-bound")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "bench-train.csv"))
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.config, args.worker, args.steps, args.device, args.precision, args.threads)))
        return
    rows = []
    for mode in MODES:
        cmd = [sys.executable, __file__, "--worker", mode, "--config", args.config, "--steps", str(args.steps),
               "--device", args.device, "--precision", args.precision, "--threads", str(args.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{mode:8s} {rows[-1]['images_per_s']:8.2f} img/s  {rows[-1]['step_seconds']:7.2f} s/step  "
              f"peak {rows[-1]['peak_mem_mb']:8.1f} MB ({rows[-1]['peak_mem_kind']})")
    per_row = next(r for r in rows if r["mode"] == "per-row")["images_per_s"]
    for row in rows:
        row["speedup_vs_per_row"] = round(row["images_per_s"] / per_row, 2)
    out = Path(args.out)
    new_file = not out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)
    print(f"appended {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
