"""Training throughput and peak memory: VA-π's `shared` vs `per-row` update, and VA-π vs AR-GRPO.

    python benchmarks/bench_train.py [--config policy-bound] [--steps 3] [--device cpu] [--precision fp32]
    python benchmarks/bench_train.py --compare ar-grpo --config tokens-256 --steps 1

Each run goes in a fresh subprocess (so peak memory is its own) on a random-init LlamaGen of the
chosen size with synthetic images; the first step is a warm-up and is not timed. Rows are
appended to results/bench-train.csv. VA-π's reward is pixel MSE only (no perceptual network), so
the numbers isolate the policy's forward/backward, where the two update modes differ; decoding and
reward cost the same in both.

`--compare ar-grpo` times VA-π (its default `shared` update) against AR-GRPO at equal G (8),
images (prompts) per step (8), micro-batch and model: AR-GRPO samples its 64 sequences per step
free-running with the KV cache and CFG 2 (its official c2i recipe, β = 0.1 so the reference
forward is included), rewards them with the cheap `shapes-class-prob` network, and runs one
teacher-forced forward/backward per sequence. `vapi_speedup_vs_ar_grpo` is the ratio of images
per second (the paper: VA-π ≈ 13% of AR-GRPO's compute, 7.5x faster on LlamaGen-XL).

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
    # 256 tokens (16x16 at 128 px, VQ downsampling 8) with a 4-layer GPT: free-running sampling's
    # 256 sequential steps against VA-π's single teacher-forced pass
    "tokens-256": (dict(image_size=128, dim=256, n_layer=4, n_head=4, multiple_of=64, codebook_size=1024,
                        vq_ch=32, vq_ch_mult=(1, 1, 2, 2), vq_z_channels=64, vq_num_res_blocks=1),
                   dict(batch_size=8, group_size=8, micro_batch=1)),
}
MODES = ("shared", "per-row")
METHOD_OF_MODE = {"shared": "va-pi", "per-row": "va-pi", "free-running": "ar-grpo"}
FIELDS = ("date", "device", "torch", "threads", "config", "image_size", "tokens", "vocab", "dim", "n_layer",
          "policy_params_m", "batch_size", "group_size", "micro_batch", "precision", "method", "mode", "steps_timed",
          "images_per_s", "step_seconds", "peak_mem_mb", "peak_mem_kind", "speedup_vs_per_row",
          "vapi_speedup_vs_ar_grpo")


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_name() -> str:
    """The CPU's model name as lscpu reports it (platform's guess when lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name:")]
        if names:
            return names[0]
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def _method(mode: str, method_over: dict, steps: int, precision: str):
    """(method object, resolved params) of one benchmarked mode."""
    from vapi_bench.params import resolve_params
    from vapi_bench.plugins.peers.ar_grpo import AR_GRPO_PARAMS, ArGrpo
    from vapi_bench.plugins.va_pi.method import VAPI_PARAMS, VaPi

    common = dict(method_over, steps=steps + 1, lr=1e-6, precision=precision, ckpt_every=10_000)
    if mode == "free-running":
        params = resolve_params(AR_GRPO_PARAMS, dict(common, rewards="shapes-class-prob:1", rollout_cfg=2.0,
                                                     beta=0.1, decode_chunk=8), "ar-grpo")
        return ArGrpo(**params), params
    params = resolve_params(VAPI_PARAMS, dict(common, w_perceptual=0.0, update_mode=mode), "va-pi")
    return VaPi(**params), params


def worker(config: str, mode: str, steps: int, device: str, precision: str, threads: int) -> dict:
    """Run one mode and return its measurements (called in a fresh process)."""
    import torch

    import vapi_bench
    from vapi_bench.interfaces import StageContext

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
    method, params = _method(mode, method_over, steps, precision)
    records: list[dict] = []
    before = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(out_dir=Path(tmp), device=dev, seed=0, log=records.append)
        method.finetune(generator, dataset, ctx)
    if dev.type == "cuda":
        peak, kind = (torch.cuda.max_memory_allocated(dev) - base) / 2**20, "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before, "cpu_peak_rss_increase"
    timed = records[1:]  # the first step warms up
    cfg = generator.policy.config
    return {
        "date": dt.date.today().isoformat(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({_cpu_name()})",
        "torch": torch.__version__, "threads": threads, "config": config, "image_size": size,
        "tokens": generator.num_tokens, "vocab": generator.codebook_size, "dim": cfg.dim, "n_layer": cfg.n_layer,
        "policy_params_m": round(sum(p.numel() for p in generator.policy.parameters()) / 1e6, 3),
        "batch_size": params["batch_size"], "group_size": params["group_size"], "micro_batch": params["micro_batch"],
        "precision": precision, "method": METHOD_OF_MODE[mode], "mode": mode, "steps_timed": len(timed),
        "images_per_s": round(statistics.median(r["images_per_s"] for r in timed), 3),
        "step_seconds": round(statistics.median(r["step_seconds"] for r in timed), 3),
        "peak_mem_mb": round(peak, 1), "peak_mem_kind": kind,
    }


def _run_worker(mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--config", args.config, "--steps", str(args.steps),
           "--device", args.device, "--precision", args.precision, "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{row['method']:8s} {mode:12s} {row['images_per_s']:8.3f} img/s  {row['step_seconds']:7.2f} s/step  "
          f"peak {row['peak_mem_mb']:8.1f} MB ({row['peak_mem_kind']})")
    return row


def _append(out: Path, rows: list[dict]) -> None:
    """Append rows under FIELDS; rows of an older header are carried over (missing columns empty)."""
    from vapi_bench.store import write_csv

    old = []
    if out.exists():
        with open(out, newline="") as fh:
            old = [{**row, "method": row.get("method") or "va-pi"} for row in csv.DictReader(fh)]
    write_csv(out, [{f: row.get(f, "") for f in FIELDS} for row in old + rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="policy-bound")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare", choices=("ar-grpo",), help="VA-π (shared) against this method instead of "
                        "VA-π's two update modes")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "bench-train.csv"))
    parser.add_argument("--worker", choices=(*MODES, "free-running"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.config, args.worker, args.steps, args.device, args.precision, args.threads)))
        return
    if args.compare:
        rows = [_run_worker("shared", args), _run_worker("free-running", args)]
        ratio = round(rows[0]["images_per_s"] / rows[1]["images_per_s"], 2)
        for row in rows:
            row["vapi_speedup_vs_ar_grpo"] = ratio
        print(f"VA-pi / AR-GRPO images per second: {ratio}x (paper: 7.5x on LlamaGen-XL)")
    else:
        rows = [_run_worker(mode, args) for mode in MODES]
        per_row = next(r for r in rows if r["mode"] == "per-row")["images_per_s"]
        for row in rows:
            row["speedup_vs_per_row"] = round(row["images_per_s"] / per_row, 2)
    out = Path(args.out)
    _append(out, rows)
    print(f"appended {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
