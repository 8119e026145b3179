#!/usr/bin/env bash
# Reproduce the shapes-world evidence committed under results/ (issue 5):
#   1. none / va-pi / sft / post-train-tokenizer / ste, 3 seeds, on shapes-fid (without and with CFG)
#      and on shapes-geneval (shapes-t2i);
#   2. FID against optimizer steps (seed 0) -> results/curve-shapes-fid.{csv,png};
#   3. the paper's ablations: reward terms (Table 4), beta CE vs KL (Fig. 4), context noise xi (Table 5)
#      -> results/ablations-<task>.csv.
# Every stage is cached under runs/, so an interrupted script resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VB=.venv/bin/vapi-bench
METHODS=none,va-pi,sft,post-train-tokenizer,ste
$VB lab compare -m shapes-c2i -t shapes-fid --methods "$METHODS" --seeds 0,1,2
$VB lab compare -m shapes-t2i -t shapes-geneval --methods "$METHODS" --seeds 0,1,2 --curve-metric overall
$VB lab compare -m shapes-c2i -t shapes-fid --methods none,va-pi,sft --seeds 0 --curve-steps 15,30,45
$VB lab ablate reward -m shapes-c2i -t shapes-fid --seeds 0
$VB lab ablate beta -m shapes-c2i -t shapes-fid --seeds 0
$VB lab ablate xi -m shapes-t2i -t shapes-geneval --seeds 0
$VB leaderboard -t shapes-fid -f md
$VB leaderboard -t shapes-geneval -f md
