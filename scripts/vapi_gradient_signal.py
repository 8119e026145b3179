"""How much of VA-π's policy-gradient is signal at a given batch: a diagnostic for the shapes evidence.

For one batch of training images, the PPO term's gradient is computed twice, from two independent
draws of the G sequences per image (same images, same weights). If the term carried a consistent
direction at this batch size, the two gradients would align (cosine near 1); if it is dominated by
sampling noise, their cosine is near 0 and Adam turns it into a random walk of the weights. The
cosine of each PPO gradient with the β·CE gradient (the SFT direction) says whether the reward
pulls towards or away from the data likelihood. Repeated over batch sizes (images per step):
the signal part of a mean of n gradients grows like n, the noise like sqrt(n).

    .venv/bin/python scripts/vapi_gradient_signal.py [-m shapes-c2i] [--batches 16,64,256]

Writes results/vapi-gradient-signal-<model>.csv.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vapi_bench.interfaces import StageContext
from vapi_bench.params import resolve_params
from vapi_bench.plugins.va_pi.method import VAPI_PARAMS, VaPiStep
from vapi_bench.registry import get_registry
from vapi_bench.store import write_csv
from vapi_bench.training import (MetricMeter, build_pixel_objective, load_batch, resolve_method_params, step_indices,
                                 teacher_forced_ce, training_dataset)

RESULTS = Path(__file__).resolve().parent.parent / "results"


def flat_grad(module: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    module.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def pg_gradient(generator, cfg: dict, objective, batch, draw_seed: int) -> torch.Tensor:
    """Gradient of the PPO term alone (β = 0) with the G sequences per image drawn from `draw_seed`.
    The update's label dropout is seeded identically for every draw, so two calls differ only by
    the sampled sequences."""
    step = VaPiStep(generator, {**cfg, "beta": 0.0}, objective, draw_seed)
    roll = step.rollout(batch)
    generator.policy.train()
    torch.manual_seed(0)
    return flat_grad(generator.policy, step.micro_loss(batch.conditions, roll, slice(0, len(batch)), MetricMeter()))


def ce_gradient(generator, cfg: dict, batch) -> torch.Tensor:
    """Gradient of β · teacher-forced CE on the true tokens: the SFT direction (does not depend on a draw)."""
    tokens = generator.encode(batch.images).long()
    generator.policy.train()
    torch.manual_seed(0)
    logits = generator.teacher_forced_logits(tokens, generator.prepare_conditions(batch.conditions))
    return flat_grad(generator.policy, cfg["beta"] * teacher_forced_ce(logits, tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="shapes-c2i")
    parser.add_argument("--batches", default="16,64,256", help="images per step to measure")
    parser.add_argument("--repeats", type=int, default=3, help="batches per size (different images)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    registry = get_registry()
    entry = registry.get("generators", args.model)
    generator = entry.factory(**resolve_params(entry.params, {}, where=args.model))
    ctx = StageContext(out_dir=Path("."), device=torch.device("cpu"), seed=0)
    cfg = resolve_method_params("va-pi", resolve_params(VAPI_PARAMS, {}, where="va-pi"), generator)
    data = training_dataset(None, cfg["dataset"], generator.image_size)
    objective = build_pixel_objective(cfg, ctx.device)
    rows = []
    for size in (int(b) for b in args.batches.split(",")):
        for repeat in range(args.repeats):
            indices = step_indices(1000 + repeat, 0, len(data), size)
            batch = load_batch(data, 0, indices, list(range(size)), ctx.device)
            pg_a, pg_b = (pg_gradient(generator, cfg, objective, batch, draw) for draw in (1, 2))
            ce = ce_gradient(generator, cfg, batch)
            cos = torch.nn.functional.cosine_similarity
            rows.append({"model": args.model, "images_per_step": size, "group_size": cfg["group_size"],
                         "repeat": repeat, "cos_pg_draw_a_vs_b": round(cos(pg_a, pg_b, dim=0).item(), 4),
                         "cos_pg_vs_ce": round(cos(pg_a, ce, dim=0).item(), 4),
                         "norm_pg": round(pg_a.norm().item(), 5), "norm_beta_ce": round(ce.norm().item(), 5)})
            print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"vapi-gradient-signal-{args.model}.csv"
    write_csv(out, rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
