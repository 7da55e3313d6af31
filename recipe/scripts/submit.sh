#!/usr/bin/env bash
# Submit one recipe run to a Ray cluster with `ray job submit`; arguments go to `python -m sspo.launch.cli`.
#
#   RAY_ADDRESS=http://HEAD:8265 OUTPUT_DIR=/shared/sspo DATA_DIR=/shared/sspo/data \
#     recipe/scripts/submit.sh experiment=sspo_qwen2.5-math-7b cluster=2x8gpu
#
# The runtime env ships this checkout as the job's working_dir (without .venv, data, outputs) and sets
# VERL_USE_EXTERNAL_MODULES so every verl process of the job (TaskRunner, workers) imports
# sspo.verl_plugin even where the project is not pip-installed. Checkpoints, validation dumps and
# logs go to OUTPUT_DIR (must be a filesystem every node sees); trainer.resume_mode=auto makes a
# resubmission of the same command continue a preempted run from its last checkpoint.
#
# Environment:
#   RAY_ADDRESS    Ray dashboard address (required), e.g. http://127.0.0.1:8265
#   OUTPUT_DIR     shared directory for checkpoints and logs (required; becomes SSPO_OUTPUT_DIR)
#   DATA_DIR       shared directory of the prepared parquet files (optional; becomes SSPO_DATA_DIR)
#   SSPO_TINY_DIR  the CPU rows' assets (python -m sspo.tools.tiny_task --out DIR), forwarded when set
#   SUBMISSION_ID  Ray job id (default: sspo-<date>-<random>)
#   NO_WAIT=1      return after submitting instead of following the logs
#   JOB_PYTHON     interpreter on the cluster (default: python)
#   HF_HOME, HF_TOKEN, WANDB_API_KEY are forwarded when set (never written to a file).
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${RAY_ADDRESS:?set RAY_ADDRESS to the Ray dashboard address, e.g. http://HEAD:8265}"
: "${OUTPUT_DIR:?set OUTPUT_DIR to a directory every node sees (checkpoints, logs, resume)}"
# relative paths would resolve inside the job's temporary working_dir on the cluster
for var in OUTPUT_DIR DATA_DIR; do
  if [[ -n "${!var:-}" && "${!var}" != /* ]]; then
    echo "submit.sh: $var=${!var} must be an absolute path on a filesystem every node sees" >&2
    exit 2
  fi
done
SUBMISSION_ID="${SUBMISSION_ID:-sspo-$(date +%Y%m%d-%H%M%S)-$RANDOM}"
PYTHON="${PYTHON:-python}"

# the overrides compose here and pass the config checks before anything is uploaded (a typo, a value outside
# its meaning, a bad clip range, batch sizes that do not split: found now, not on the cluster); `--print-key`
# runs every check that needs no cluster, data or model (the job's own pre-flight checks those there).
# Skipped where this Python cannot import the project (submitting from a bare checkout)
if "$PYTHON" -c "import sspo.launch.cli" 2>/dev/null; then
  if ! composed=$("$PYTHON" -m sspo.launch.cli --print-key trainer.experiment_name "$@" 2>&1 > /dev/null); then
    echo "$composed" >&2  # the config error (and verl's import chatter, printed only when it fails)
    exit 2
  fi
fi

# one line, within 10 s, instead of Ray's tracebacks when the dashboard is not there
if ! "$PYTHON" - "$RAY_ADDRESS" <<'PY'
import sys, urllib.request
address = sys.argv[1]
url = address if "://" in address else f"http://{address}"
try:
    urllib.request.urlopen(f"{url.rstrip('/')}/api/version", timeout=10).read()
except Exception as err:
    hint = (" (that looks like the `ray start` address: jobs go to the dashboard, e.g. http://HEAD:8265)"
            if address.rstrip("/").endswith(":6379") else "")
    sys.exit(f"submit.sh: no Ray dashboard answers at RAY_ADDRESS={address} within 10 s ({type(err).__name__}){hint}. "
             "Set RAY_ADDRESS to the dashboard URL http://HEAD:8265 and check the cluster with `ray status` on the head.")
PY
then
  exit 2
fi

runtime_env="$("$PYTHON" - <<'PY'
import json, os

# RAY_OVERRIDE_JOB_RUNTIME_ENV: the trainer's own ray.init runtime env (e.g. the CPU preset's
# VERL_USE_EXTERNAL_MODULES) refines this one instead of failing on a key both set
env_vars = {"VERL_USE_EXTERNAL_MODULES": "sspo.verl_plugin", "PYTHONUNBUFFERED": "1",
            "SSPO_OUTPUT_DIR": os.environ["OUTPUT_DIR"], "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}
if os.environ.get("DATA_DIR"):
    env_vars["SSPO_DATA_DIR"] = os.environ["DATA_DIR"]
if os.environ.get("SSPO_TINY_DIR"):  # the CPU rows' tiny model and task (python -m sspo.tools.tiny_task)
    env_vars["SSPO_TINY_DIR"] = os.environ["SSPO_TINY_DIR"]
for key in ("HF_HOME", "HF_TOKEN", "WANDB_API_KEY"):
    if os.environ.get(key):
        env_vars[key] = os.environ[key]
excludes = [".git", ".venv", "data", "outputs", "checkpoints", "runs", "multirun",
            "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"]
print(json.dumps({"working_dir": ".", "excludes": excludes, "env_vars": env_vars}))
PY
)"

echo "submitting $SUBMISSION_ID to $RAY_ADDRESS: sspo.launch.cli $*"
exec ray job submit --address "$RAY_ADDRESS" --submission-id "$SUBMISSION_ID" \
  --runtime-env-json "$runtime_env" ${NO_WAIT:+--no-wait} \
  -- "${JOB_PYTHON:-python}" -m sspo.launch.cli "$@"
