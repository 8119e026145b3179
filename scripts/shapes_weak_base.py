"""A deliberately weaker shapes-c2i GPT: the zoo's recipe with fewer training steps.

The shipped c2i GPT is already close to the data without CFG (shapes-fid 0.32 vs a floor of
0.10), unlike LlamaGen-XXL (14.4), so it cannot show whether VA-π helps an unguided model that is
far from its data. This script trains the same architecture on the same tokens (zoo VQ, same
seed and optimiser) for --steps steps only and writes a checkpoint that any command takes with
`--checkpoint`:

    .venv/bin/python scripts/shapes_weak_base.py --steps 500 --out runs/weak-base/c2i-500.safetensors
    vapi-bench run -m shapes-c2i --checkpoint runs/weak-base/c2i-500.safetensors -a va-pi -a sft ...
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from vapi_bench.plugins.llamagen.gpt import GPT
from vapi_bench.plugins.shapes.zoo.build import render_sets
from vapi_bench.plugins.shapes.zoo.config import FULL
from vapi_bench.plugins.shapes.zoo.files import gpt_config, load_vq, read_manifest, save_module, zoo_dir_or_default
from vapi_bench.plugins.shapes.zoo.train import encode_dataset, train_gpt
from vapi_bench.seeding import derive_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="optimiser steps (the zoo uses 4000)")
    parser.add_argument("--out", type=Path, default=Path("runs/weak-base/c2i-500.safetensors"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = zoo_dir_or_default(None)
    manifest = read_manifest(root)
    seed = manifest["seed"]
    sets = render_sets(FULL, seed, step=lambda n: None)  # the zoo's training data, as `zoo build` renders it
    labels = sets.class_labels
    tokens = encode_dataset(load_vq(root, manifest), sets.class_images)
    torch.manual_seed(derive_seed(seed, 0, "zoo/c2i"))  # the zoo's initialisation
    gpt = GPT(gpt_config(manifest, "c2i"))
    losses = train_gpt(gpt, tokens, lambda rows: labels[rows], replace(FULL.c2i_optim, steps=args.steps),
                       derive_seed(seed, 0, "zoo/c2i"), bf16=FULL.bf16)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_module(args.out, gpt)
    print(f"{args.steps} steps, train CE {losses.get('ce', float('nan')):.3f} -> {args.out}")


if __name__ == "__main__":
    main()
