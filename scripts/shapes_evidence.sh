#!/usr/bin/env bash
# Reproduce the shapes lab committed under results/ (issue 15):
#   1. headroom: each c2i base sampled without CFG at temperatures below 1
#      -> <results>/temperature-<model>-shapes-fid.csv;
#   2. the fair lab on each base: every method gets the same lr grid (recipe lr x 1/3, 1, 3; the
#      recipe lr is the zoo's final pre-training lr / 100), the same 60 steps x 16 images; the
#      grid point with the best no-CFG FID on the VALIDATION reference is run with seeds 0, 1, 2
#      and scored on the TEST reference; the base sampled at each method's entropy-matched
#      temperature (the control); paired bootstrap CIs vs none / sft / the control
#      -> <results>/lab-<model>-shapes-fid{,-seeds,-validation}.csv and leaderboard rows.
# Without --full: shapes-c2i, sft and va-pi, no CFG (a 2-core budget). --full: every registered
# method, with and without CFG, on both c2i bases (hours on one CPU core; minutes on one GPU with
# --device cuda --jobs 16).
# Every stage is cached under runs/, so an interrupted script resumes where it stopped. With
# --jobs N, each (base, method) is tuned in its own process (N at a time, logs in runs/logs/),
# then one `lab tune` per base with every method rebuilds the tables from the cached stages.
# Precision is fp32 unless --precision says otherwise, so the stage keys (and, up to the device's
# arithmetic, the numbers) are the same on CPU and GPU.
#
#   bash scripts/shapes_evidence.sh --results-dir results [--full] [--device cuda] [--jobs N] [--set K=V ...]
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=results
FULL=0
DEVICE=cpu
JOBS=1
PRECISION=fp32
EXTRA=()  # --set overrides of every run, after the protocol's (a smoke test: --set task.n=64 --set method.steps=2)
while [ $# -gt 0 ]; do
  case "$1" in
    --results-dir) RESULTS=$2; shift 2 ;;
    --full) FULL=1; shift ;;
    --device) DEVICE=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --precision) PRECISION=$2; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    *) echo "unknown option $1 (use --results-dir DIR, --full, --device cpu|cuda, --jobs N, --precision P, --set K=V)" >&2; exit 2 ;;
  esac
done
[ -x .venv/bin/vapi-bench ] && VB=.venv/bin/vapi-bench || { bash scripts/setup.sh; VB=.venv/bin/vapi-bench; }
PY=$(dirname "$VB")/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--set task.n=1000 --batch-size 250 --runs-dir runs --device "$DEVICE" --precision "$PRECISION" "${EXTRA[@]}")
CI=(--ci-reps 200)
METHODS=sft,va-pi
CFG=(--set task.cfg=without)
MODELS=(shapes-c2i)
SWEEPS=("shapes-c2i:1.0,0.95,0.9")
if [ "$FULL" = 1 ]; then
  METHODS=sft,va-pi,va-pi:reward-only,va-pi:prior-only,post-train-tokenizer,ste,ar-grpo,cca
  CFG=()
  MODELS=(shapes-c2i shapes-c2i-small)
  SWEEPS=("shapes-c2i:1.0,0.95,0.9" "shapes-c2i-small:1.0,0.9,0.8,0.7")
  # the second base: build it when the zoo does not have it yet
  "$PY" -c "import json,sys; sys.exit('c2i-small' not in json.load(open('plugins/shapes/zoo/manifest.json'))['models'])" \
    || $VB zoo build --only c2i-small --threads "$OMP_NUM_THREADS"
fi

# tune(model, methods, results-dir): the fair protocol for those methods on that base
tune() {
  $VB lab tune -m "$1" -t shapes-fid --methods "$2" --seeds 0,1,2 "${CI[@]}" "${CFG[@]}" "${COMMON[@]}" --results-dir "$3"
}

if [ "$JOBS" -gt 1 ]; then
  mkdir -p runs/logs
  pids=()
  for sweep in "${SWEEPS[@]}"; do
    model=${sweep%%:*}
    $VB lab temperature -m "$model" --temperatures "${sweep#*:}" --set task.cfg=without "${COMMON[@]}" \
      --results-dir "runs/jobs/temperature-$model" >"runs/logs/temperature-$model.log" 2>&1 &
    pids+=($!)
  done
  for model in "${MODELS[@]}"; do
    for method in ${METHODS//,/ }; do
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
      tune "$model" "$method" "runs/jobs/$model-${method//:/-}" >"runs/logs/$model-${method//:/-}.log" 2>&1 &
      pids+=($!)
    done
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || echo "some jobs failed: see runs/logs/ (the tables below are built from what finished)" >&2
fi
for sweep in "${SWEEPS[@]}"; do
  $VB lab temperature -m "${sweep%%:*}" --temperatures "${sweep#*:}" --set task.cfg=without "${COMMON[@]}" --results-dir "$RESULTS"
done
for model in "${MODELS[@]}"; do
  tune "$model" "$METHODS" "$RESULTS"
done

# ---- the t2i lab (--full only): shapes-t2i on shapes-geneval ---------------------------------------
# Every method's lr is chosen on the VAL prompts (task.split=val: 56 colour-binding prompts, none
# asking for a test prompt's scene) by the highest overall, with CFG (the t2i recipe, as the paper
# reports GenEval); the chosen lr runs seeds 0, 1, 2 on GenEval's 183 TEST prompts; CIs on overall
# resample seeds and prompts (within their tag). 8 images per prompt (1,464 test images, 448 on
# validation) cost about what one shapes-fid n=1000 run above costs with and without CFG (2,000
# images): measured on one CPU thread, ~0.086 s per t2i image (CFG sampling + detector) against
# ~0.07 s per c2i image (sampling without and with CFG + features).
T2I=(--set task.images_per_prompt=8 --batch-size 250 --runs-dir runs --results-dir "$RESULTS")
$VB lab tune -m shapes-t2i -t shapes-geneval --methods "$METHODS" --seeds 0,1,2 "${CI[@]}" "${T2I[@]}"
