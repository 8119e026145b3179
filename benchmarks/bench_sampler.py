"""LlamaGen sampler throughput and peak memory: KV cache vs a no-cache recompute baseline.

    python benchmarks/bench_sampler.py [--out results/bench-sampler.csv] [--threads 1] [--quick]

For each configuration (a tiny GPT and a real-size GPT-B, random weights) the sampler runs with
the KV cache (fp32 and bf16 autocast) and with the naive baseline that re-runs the whole prefix
through the teacher-forced forward at every step. Each case runs in a fresh subprocess so its
peak memory is its own: peak RSS growth during sampling on CPU, `max_memory_allocated` on CUDA.
Throughput is image tokens per second (CFG's unconditional half not counted), and the achieved
GFLOP/s is compared with the machine's own matmul peak measured in the same setting.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    # name: (GPT config overrides, batch, image tokens sampled, block size)
    "tiny": (dict(dim=64, n_layer=2, n_head=4), 8, 256, 256),
    "gpt-b": (dict(dim=768, n_layer=12, n_head=12), 4, 64, 256),
}
METHODS = ("kv-cache", "kv-cache-bf16", "recompute")
RECIPE = dict(cfg_scale=2.0, temperature=1.0, top_k=0, top_p=1.0)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def flops_per_row_token(cfg, context_len: int) -> float:
    """Forward FLOPs of one row for one new token with `context_len` keys (2 per multiply-add)."""
    dense = 4 * cfg.dim * cfg.dim + 3 * cfg.dim * cfg.ffn_hidden
    attention = 2 * cfg.dim * context_len
    return 2.0 * (cfg.n_layer * (dense + attention) + cfg.dim * cfg.vocab_size)


def matmul_peak_gflops(device, dtype, size: int = 2048, reps: int = 5) -> float:
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def recompute_generate(gpt, cond, *, num_tokens, recipe, uniforms):
    """The naive sampler: no cache, the whole prefix re-run at every step (same draws as generate)."""
    import torch

    from vapi_bench.plugins.llamagen.sampling import (
        cfg_combine, concat_conditions, inverse_cdf_draw, logits_to_probs, uses_cfg_at,
    )

    batch = uniforms.shape[0]
    guided = recipe.cfg_scale > 1.0
    rows = concat_conditions(cond, gpt.null_condition(cond)) if guided else cond
    tokens = torch.zeros(batch, num_tokens, dtype=torch.long, device=uniforms.device)
    with torch.no_grad():
        for step in range(num_tokens):
            context = tokens[:, : step + 1]  # the last column is a placeholder, never attended
            logits = gpt(rows, torch.cat([context, context]) if guided else context)[:, step].float()
            if guided:
                c, u = logits.split(batch)
                logits = cfg_combine(c, u, recipe.cfg_scale) if uses_cfg_at(step, recipe) else c
            tokens[:, step] = inverse_cdf_draw(logits_to_probs(logits, recipe), uniforms[:, step])
    return tokens


def run_case(case: str, method: str, device_name: str, threads: int) -> dict:
    import torch

    from vapi_bench.interfaces import SamplingRecipe
    from vapi_bench.plugins.llamagen.gpt import GPT, GPTConfig
    from vapi_bench.plugins.llamagen.sampling import generate

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    overrides, batch, num_tokens, block = CASES[case]
    torch.manual_seed(0)
    cfg = GPTConfig(**overrides, block_size=block, vocab_size=16384, num_classes=1000)
    gpt = GPT(cfg).to(device).eval()
    torch.nn.init.normal_(gpt.output.weight, std=0.02)
    recipe = SamplingRecipe(**RECIPE)
    labels = torch.arange(batch, device=device) * 7 % 1000
    uniforms = torch.rand(batch, num_tokens, generator=torch.Generator().manual_seed(1)).to(device)
    autocast = torch.bfloat16 if method == "kv-cache-bf16" else None

    def sample(n=num_tokens):
        if method == "recompute":
            return recompute_generate(gpt, labels, num_tokens=n, recipe=recipe, uniforms=uniforms[:, :n])
        return generate(gpt, labels, num_tokens=n, recipe=recipe, uniforms=uniforms[:, :n], autocast_dtype=autocast)

    sample(2)  # warm-up: lazy initialisation, kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    start = time.perf_counter()
    tokens = sample()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    rows = 2 * batch
    cond_len = cfg.cls_token_num
    if method == "recompute":  # every step re-runs the full prefix
        flops = sum(rows * (cond_len + t) * flops_per_row_token(cfg, (cond_len + t) / 2) for t in range(num_tokens))
    else:
        flops = sum(rows * flops_per_row_token(cfg, cond_len + t) for t in range(num_tokens))
    peak_gflops = matmul_peak_gflops(device, torch.bfloat16 if autocast else torch.float32)
    achieved = flops / wall / 1e9
    return {
        "config": case, "params_m": round(sum(p.numel() for p in gpt.parameters()) / 1e6, 1),
        "device": device.type, "threads": threads, "method": method,
        "batch": batch, "cfg_rows": rows, "num_tokens": num_tokens,
        "wall_s": round(wall, 3), "tokens_per_s": round(batch * num_tokens / wall, 1),
        "peak_mem_mb": round(peak, 1), "achieved_gflops": round(achieved, 1),
        "matmul_peak_gflops": round(peak_gflops, 1), "pct_of_matmul_peak": round(100 * achieved / peak_gflops, 1),
        "tokens": tokens.cpu().tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench-sampler.csv")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        case, method, device = args.case.split(":")
        print(json.dumps(run_case(case, method, device, args.threads)))
        return

    import torch

    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    results = []
    for device in devices:
        for case in CASES:
            cached_tokens = None
            for method in METHODS:
                spec = f"{case}:{method}:{device}"
                proc = subprocess.run([sys.executable, __file__, "--case", spec, "--threads", str(args.threads)],
                                      capture_output=True, text=True, check=True)
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                tokens = row.pop("tokens")
                if method == "kv-cache":
                    cached_tokens = tokens
                same = sum(a == b for ra, rb in zip(tokens, cached_tokens) for a, b in zip(ra, rb))
                row["token_agreement_with_kv_cache"] = round(same / (len(tokens) * len(tokens[0])), 4)
                results.append(row)
                print(f"{spec:28s} {row['tokens_per_s']:9.1f} tok/s  peak {row['peak_mem_mb']:8.1f} MB  "
                      f"{row['pct_of_matmul_peak']:5.1f}% of matmul peak  agree {row['token_agreement_with_kv_cache']}",
                      flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
