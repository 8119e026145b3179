#!/usr/bin/env bash
# Reproduce the shapes-world evidence committed under results/ (issue 5):
#   1. none / va-pi / sft / post-train-tokenizer / ste, 3 seeds, on shapes-fid (without and with CFG)
#      and on shapes-geneval (shapes-t2i);
#   2. FID against optimizer steps (seed 0) -> results/curve-shapes-fid.{csv,png};
#   3. the paper's ablations: reward terms (Table 4), beta CE vs KL (Fig. 4), context noise xi (Table 5)
#      -> results/ablations-<task>.csv;
#   4. diagnostics for reading them: the FID floor (real and VQ-reconstructed held-out images) and
#      how much of VA-pi's policy gradient is signal at 16 / 64 / 256 images per step.
# Every stage is cached under runs/, so an interrupted script resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VB=.venv/bin/vapi-bench
R="--results-dir results"  # the committed evidence; a plain run writes to runs/results instead
METHODS=none,va-pi,sft,post-train-tokenizer,ste
$VB lab compare $R -m shapes-c2i -t shapes-fid --methods "$METHODS" --seeds 0,1,2 --set task.n=1000
$VB lab compare $R -m shapes-t2i -t shapes-geneval --methods "$METHODS" --seeds 0,1,2 --curve-metric overall
$VB lab compare $R -m shapes-c2i -t shapes-fid --methods none,va-pi,sft --seeds 0 --curve-steps 15,30,45 --set task.n=1000
$VB lab ablate $R reward -m shapes-c2i -t shapes-fid --seeds 0 --set task.n=1000
$VB lab ablate $R beta -m shapes-c2i -t shapes-fid --seeds 0 --set task.n=1000
$VB lab ablate $R xi -m shapes-t2i -t shapes-geneval --seeds 0
# the same budget in steps with 4x the images per step (results/batch64/)
$VB run -m shapes-c2i -a va-pi -a sft -t shapes-fid --seed 0 --set task.n=1000 --set method.batch_size=64 \
  --set method.micro_batch=8 --results-dir results/batch64
# four times the steps (results/steps240/)
$VB run -m shapes-c2i -a va-pi -a sft -t shapes-fid --seed 0 --set task.n=1000 --set method.steps=240 \
  --results-dir results/steps240
# a weaker base model (500 instead of 4000 pre-training steps), far from the data without CFG (results/weak-base/)
.venv/bin/python scripts/shapes_weak_base.py --steps 500 --out runs/weak-base/c2i-500.safetensors
$VB run -m shapes-c2i --checkpoint runs/weak-base/c2i-500.safetensors -a none -a va-pi -a sft -t shapes-fid \
  --seed 0 --seed 1 --set task.n=1000 --results-dir results/weak-base
.venv/bin/python scripts/shapes_fid_floor.py --n 1000
.venv/bin/python scripts/vapi_gradient_signal.py -m shapes-c2i --batches 16,64,256
.venv/bin/python scripts/shapes_policy_drift.py
$VB leaderboard $R -t shapes-fid -f md
$VB leaderboard $R -t shapes-geneval -f md
