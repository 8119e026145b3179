#!/usr/bin/env bash
# Reproduce the shapes lab committed under results/ with the lab protocol of issue 24
# (vapi_bench/lab/tune.py): every method and the base's sampling temperature (tuned-T) get the same
# tries on the VALIDATION setting, each on tune seeds 1000 and 1001 (never test seeds), the grid
# growing by one point at an edge choice; the choices run on test seeds 0-4; matched-lr rows (every
# method at VA-π's lr); temperature controls at each method's entropy match and ± 0.02; bootstrap
# and seed-level paired-t intervals, Holm over each table.
#   1. headroom: each base sampled at temperatures below 1 -> <results>/temperature-*.csv
#      (plain measurements, unchanged by the protocol);
#   2. the labs. Without --full: what results/ holds under this protocol (a 2-core budget): the
#      head-scaled control (shapes-c2i with model.head_scale=1.2, wide grid recipe lr x 1, 10, 100,
#      no CFG) with va-pi, sft and cca -> <results>/head-scale/; the same choices on test seeds 5-9
#      -> head-scale/holdout-seeds5-9/; dpo beside sft -> head-scale/dpo/; va-pi and sft at 4x the
#      training images (--budget-images 3840) -> head-scale/budget-3840/; Table 4's rows (va-pi:reward-only,
#      va-pi:prior-only) beside va-pi and sft -> head-scale/table4/; va-pi and sft scored with and without
#      CFG 2 (the choices made without) -> head-scale/cfg2/; va-pi and sft on shapes-c2i-small-ls (wide
#      grid, no CFG) -> small-ls/, again on seeds 5-9 -> small-ls/holdout-seeds5-9/; on the calibrated
#      shapes-c2i -> shapes-c2i/; the second paradigm, shapes-var (a
#      next-scale VAR), with va-pi, sft and cca on the same grid rule -> shapes-var/. --full: every method on every lab, with
#      and without CFG (hours on one CPU core per method). The tables of the earlier protocol (3
#      seeds, tune seed = test seed 0, bootstrap intervals only) are in results/superseded/protocol1/.
# Every stage is cached under runs/, so an interrupted script resumes where it stopped. With
# --jobs N, each (base, method) is tuned in its own process (N at a time, logs in runs/logs/),
# then one `lab tune` per base with every method rebuilds the tables from the cached stages (and
# runs the matched-lr rows, which need every method's choice).
# Precision is fp32 unless --precision says otherwise, so the stage keys (and, up to the device's
# arithmetic, the numbers) are the same on CPU and GPU.
#
# --deadline S (with --jobs) stops the jobs still running after S seconds; the tables then hold the
# methods that finished and the script names the others (a time-limited machine).
#
#   bash scripts/shapes_evidence.sh --results-dir results [--full] [--device cuda] [--jobs N]
#        [--deadline S] [--set K=V ...]
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=results
FULL=0
DEVICE=cpu
JOBS=1
PRECISION=fp32
DEADLINE=999999  # --deadline S (with --jobs): stop waiting after S seconds; the tables use what finished
EXTRA=()  # --set overrides of every run, after the protocol's (a smoke test: --set method.steps=2)
while [ $# -gt 0 ]; do
  case "$1" in
    --results-dir) RESULTS=$2; shift 2 ;;
    --full) FULL=1; shift ;;
    --device) DEVICE=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --precision) PRECISION=$2; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    --deadline) DEADLINE=$2; shift 2 ;;
    *) echo "unknown option $1 (use --results-dir DIR, --full, --device cpu|cuda, --jobs N, --precision P, --set K=V, --deadline S)" >&2; exit 2 ;;
  esac
done
[ -x .venv/bin/vapi-bench ] && VB=.venv/bin/vapi-bench || { bash scripts/setup.sh; VB=.venv/bin/vapi-bench; }
PY=$(dirname "$VB")/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--batch-size 250 --runs-dir runs --device "$DEVICE" --precision "$PRECISION")
CI=(--ci-reps 200)
ALL=sft,va-pi,va-pi:reward-only,va-pi:prior-only,post-train-tokenizer,ste,ar-grpo,cca,dpo
# the committed results: which methods each lab ran (the 2-core budget of the session that ran them)
declare -A LAB_METHODS=([shapes-c2i:shapes-fid:head]=va-pi,sft,cca [shapes-var:shapes-fid:var]=va-pi,sft,cca
                        [shapes-c2i-small-ls:shapes-fid:ls]=va-pi,sft [shapes-c2i:shapes-fid:cal]=va-pi,sft)
LABS=(shapes-c2i:shapes-fid:head shapes-var:shapes-fid:var shapes-c2i-small-ls:shapes-fid:ls shapes-c2i:shapes-fid:cal)
# model[@head]:temperatures (@head: the head-scaled control, its sweep in <results>/head-scale/;
# shapes-t2i and shapes-t2i-ls: on shapes-geneval with CFG 2, as the t2i lab samples)
SWEEPS=("shapes-c2i:1.0,0.95,0.9" "shapes-c2i-small-ls:1.0,0.9,0.8,0.7" "shapes-c2i-small:1.0,0.9,0.8,0.7"
        "shapes-c2i@head:1.0,0.9,0.8,0.7" "shapes-t2i:1.0,0.9,0.8" "shapes-t2i-ls:1.0,0.9,0.8,0.7")
HEAD=(--set model.head_scale=1.2)
if [ "$FULL" = 1 ]; then
  LABS=(shapes-c2i:shapes-fid shapes-c2i-small-ls:shapes-fid shapes-c2i-small-ls:shapes-fid:wide
        shapes-t2i:shapes-geneval shapes-c2i:shapes-fid:wide shapes-c2i:shapes-fid:head
        shapes-t2i-ls:shapes-geneval:wide shapes-c2i-small:shapes-fid shapes-var:shapes-fid:var)
  for l in "${LABS[@]}"; do LAB_METHODS[$l]=$ALL; done
  # the second and third c2i bases and the smoothed t2i base: build them when the zoo lacks them
  for kind in c2i-small c2i-small-ls t2i-ls; do
    "$PY" -c "import json,sys; sys.exit('$kind' not in json.load(open('plugins/shapes/zoo/manifest.json'))['models'])" \
      || $VB zoo build --only $kind --threads "$OMP_NUM_THREADS"
  done
fi

# lab(model:task, methods, results-dir): the fair protocol for those methods on that base and task.
# shapes-fid: n=1000 images per run. shapes-geneval: its lr is chosen on the VAL prompts
# (task.split=val: 56 colour-binding prompts, none asking for a test prompt's scene) by the highest
# overall, with CFG (the t2i recipe, as the paper reports GenEval); the chosen lr runs test seeds 0-4
# on GenEval's 183 TEST prompts; CIs on overall resample seeds and prompts (within their tag).
# 8 images per prompt (1,464 test images, 448 on validation) cost about what one shapes-fid
# n=1000 run costs with and without CFG (2,000 images): on one CPU thread ~0.086 s per t2i image
# (CFG sampling + detector) against ~0.07 s per c2i image (sampling without and with CFG + features).
lab_cmd() {  # (model:task[:wide|:head], methods, results-dir) -> CMD
  local model=${1%%:*} rest=${1#*:} task size grid=() head=() out=$3
  task=${rest%%:*}
  if [ "$task" = shapes-fid ]; then size=(--set task.n=1000); else size=(--set task.images_per_prompt=8); fi
  # ':wide': the same protocol on the grid recipe lr x 1, 10, 100, its tables in <results>/wide-lr/;
  # ':head': that grid on the head-scaled model, its tables in <results>/head-scale/;
  # ':var': that grid on shapes-var, its tables in <results>/shapes-var/; ':ls': on shapes-c2i-small-ls,
  # in <results>/small-ls/; ':cal': on the calibrated shapes-c2i, in <results>/shapes-c2i/
  case "${rest#"$task"}" in
    :wide) grid=(--lr-factors 1,10,100); out=$3/wide-lr ;;
    :head) grid=(--lr-factors 1,10,100); head=("${HEAD[@]}"); out=$3/head-scale
           [ "$FULL" = 1 ] || head+=(--set task.cfg=without) ;;
    :var) grid=(--lr-factors 1,10,100); out=$3/shapes-var
          [ "$FULL" = 1 ] || head+=(--set task.cfg=without) ;;
    :ls) grid=(--lr-factors 1,10,100); out=$3/small-ls; head=(--set task.cfg=without) ;;
    :cal) grid=(--lr-factors 1,10,100); out=$3/shapes-c2i; head=(--set task.cfg=without) ;;
  esac
  CMD=($VB lab tune -m "$model" -t "$task" --methods "$2" "${grid[@]}" "${CI[@]}" "${size[@]}"
       "${head[@]}" "${COMMON[@]}" "${EXTRA[@]}" --results-dir "$out")
}
sweep_cmd() {  # (model[@head]:temperatures, results-dir) -> CMD
  local model=${1%%:*} head=() out=$2
  if [ "$model" != "${model%@head}" ]; then model=${model%@head}; head=("${HEAD[@]}"); out=$2/head-scale; fi
  local task=(--set task.cfg=without --set task.n=1000)
  [ "$model" != "${model#shapes-t2i}" ] && task=(-t shapes-geneval --set task.images_per_prompt=8)
  CMD=($VB lab temperature -m "$model" --temperatures "${1#*:}" "${task[@]}"
       "${head[@]}" "${COMMON[@]}" "${EXTRA[@]}" --results-dir "$out")
}
# which methods of a lab the final tables include: all of them, or with --jobs those whose job finished
declare -A DONE
for l in "${LABS[@]}"; do DONE[$l]=${LAB_METHODS[$l]}; done

if [ "$JOBS" -gt 1 ]; then
  mkdir -p runs/logs runs/jobs
  START=$SECONDS
  declare -A PID_OF  # job name -> pid (each job its own process group, so a deadline can stop it)
  SETSID=$(command -v setsid || true)
  launch() { $SETSID "${CMD[@]}" >"runs/logs/$1.log" 2>&1 & PID_OF[$1]=$!; }
  for s in "${SWEEPS[@]}"; do sweep_cmd "$s" "runs/jobs/temperature-${s%%:*}"; launch "temperature-${s%%:*}"; done
  for l in "${LABS[@]}"; do
    methods=${LAB_METHODS[$l]}
    for method in ${methods//,/ }; do
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ] && [ $((SECONDS - START)) -lt "$DEADLINE" ]; do sleep 1; done
      [ $((SECONDS - START)) -lt "$DEADLINE" ] || break 2
      lab_cmd "$l" "$method" "runs/jobs/${l//:/-}-${method//:/-}"; launch "${l//:/-}-${method//:/-}"
    done
  done
  while [ -n "$(jobs -rp)" ] && [ $((SECONDS - START)) -lt "$DEADLINE" ]; do sleep 1; done
  for name in "${!PID_OF[@]}"; do kill -- -"${PID_OF[$name]}" 2>/dev/null; done
  for l in "${LABS[@]}"; do
    done_methods=()
    methods=${LAB_METHODS[$l]}
    for method in ${methods//,/ }; do
      name="${l//:/-}-${method//:/-}"
      if [ -n "${PID_OF[$name]:-}" ] && wait "${PID_OF[$name]}"; then done_methods+=("$method")
      else echo "$l $method: not finished (see runs/logs/$name.log); left out of the tables" >&2; fi
    done
    DONE[$l]=$(IFS=,; echo "${done_methods[*]}")
  done
fi
for s in "${SWEEPS[@]}"; do
  sweep_cmd "$s" "$RESULTS"; "${CMD[@]}"
done
# one table per lab from the cached stages (with --jobs, the labs side by side)
pids=()
for l in "${LABS[@]}"; do
  [ -n "${DONE[$l]}" ] || continue
  lab_cmd "$l" "${DONE[$l]}" "$RESULTS"
  if [ "$JOBS" -gt 1 ]; then "${CMD[@]}" > "runs/logs/${l//:/-}-tables.log" 2>&1 & pids+=($!); else "${CMD[@]}"; fi
done
for pid in "${pids[@]}"; do wait "$pid" || { echo "a table failed: see runs/logs/*-tables.log" >&2; exit 1; }; done
# the head-scaled control's replication on test seeds no choice used, and DPO beside SFT (the last
# command of a repeated option wins, so these only move the seeds / methods and the output folder)
if [ "$FULL" = 0 ]; then
  lab_cmd shapes-c2i:shapes-fid:head va-pi,sft "$RESULTS"
  "${CMD[@]}" --seeds 5,6,7,8,9 --results-dir "$RESULTS/head-scale/holdout-seeds5-9"
  lab_cmd shapes-c2i:shapes-fid:head sft,dpo "$RESULTS"
  "${CMD[@]}" --matched-lr-to sft --results-dir "$RESULTS/head-scale/dpo"
  lab_cmd shapes-c2i:shapes-fid:head va-pi,sft "$RESULTS"
  "${CMD[@]}" --budget-images 3840 --results-dir "$RESULTS/head-scale/budget-3840"
  lab_cmd shapes-c2i:shapes-fid:head va-pi,va-pi:reward-only,va-pi:prior-only,sft "$RESULTS"
  "${CMD[@]}" --results-dir "$RESULTS/head-scale/table4"
  lab_cmd shapes-c2i-small-ls:shapes-fid:ls va-pi,sft "$RESULTS"
  "${CMD[@]}" --seeds 5,6,7,8,9 --results-dir "$RESULTS/small-ls/holdout-seeds5-9"
  # the same choices (made without CFG on validation) on test rows with and without CFG 2
  $VB lab tune -m shapes-c2i -t shapes-fid --methods va-pi,sft --lr-factors 1,10,100 "${CI[@]}" --set task.n=1000 \
    "${HEAD[@]}" "${COMMON[@]}" "${EXTRA[@]}" --results-dir "$RESULTS/head-scale/cfg2"
fi
# --full: why VA-π raises a t2i policy's entropy: shapes-t2i-ls's wide grid again with the context
# noise off (ξ = 0 instead of the t2i recipe's 0.5) -> <results>/wide-lr/xi0/
if [ "$FULL" = 1 ]; then
  $VB lab tune -m shapes-t2i-ls -t shapes-geneval --methods va-pi --lr-factors 1,10,100 "${CI[@]}" \
    --set task.images_per_prompt=8 --set method.xi=0 "${COMMON[@]}" "${EXTRA[@]}" --results-dir "$RESULTS/wide-lr/xi0"
fi
