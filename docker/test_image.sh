#!/usr/bin/env bash
# Checks the CPU image (`make docker-test` builds it first): inside it, as a uid that is neither root nor the
# image's own (1000), with the outputs on a mounted folder,
#   1. the image's default user is not root;
#   2. the benchmark/training parquet is prepared by sspo.tools.data (from a local data mirror), then the dry run of
#      every GPU row (recipe/config/experiment/*.yaml but *_cpu) passes;
#   3. the CPU demo path (recipe/scripts/demo_cpu.sh: tiny assets, verl's main_ppo with vLLM-CPU, report,
#      table) trains grpo_cpu for STEPS steps: exit 0, a checkpoint at STEPS, TensorBoard metrics, the
#      table, and every file in the mounted folder owned by the test uid.
# Env: DOCKER (client), CPU_IMAGE (sspo-verl:cpu), DATA_SOURCE (local mirror of the raw data, default
# ../shared/data; or DATA_DIR: an already prepared `make data` folder), TEST_UID (default: yours; 4321 when
# you are root), WORK_DIR (default: a new folder under TMPDIR), SHM_SIZE (8g), STEPS (2), TRAIN_TIMEOUT
# (seconds, 900), TRAIN_PREFIX (a command put before the training's `docker run`, e.g. a lock), SKIP_TRAIN=1.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-docker}
IMAGE=${CPU_IMAGE:-sspo-verl:cpu}
SHM_SIZE=${SHM_SIZE:-8g}
STEPS=${STEPS:-2}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-900}
TEST_UID=${TEST_UID:-$(id -u)}
[[ $TEST_UID == 0 ]] && TEST_UID=4321
TEST_GID=${TEST_GID:-$TEST_UID}
WORK_DIR=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/sspo-docker-test.XXXXXX")}
OUT=$WORK_DIR/outputs
mkdir -p "$OUT"
[[ $(id -u) == 0 ]] && chown "$TEST_UID:$TEST_GID" "$OUT"
NAME=sspo-docker-test-$$
trap '"$DOCKER" rm -f "$NAME" > /dev/null 2>&1 || true' EXIT
run() {  # docker run as the test uid, outputs mounted; extra docker options before `--`
    local opts=()
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    "$DOCKER" run --rm --name "$NAME" --user "$TEST_UID:$TEST_GID" --shm-size "$SHM_SIZE" \
        -v "$OUT:/outputs" "${opts[@]}" "$IMAGE" "$@"
}
fail() { echo "docker-test FAILED: $*" >&2; exit 1; }
start=$SECONDS

echo "== image $IMAGE: $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1 / 1e9}')," \
     "test uid $TEST_UID:$TEST_GID, work dir $WORK_DIR"
default_uid=$("$DOCKER" run --rm --entrypoint id "$IMAGE" -u)
[[ $default_uid != 0 ]] || fail "the image's default user is root"
[[ $default_uid != "$TEST_UID" ]] || fail "TEST_UID $TEST_UID is the image's default uid: pick another"
echo "ok   default user uid $default_uid"

if [[ -z ${DATA_DIR:-} ]]; then
    src=${DATA_SOURCE:-../shared/data}
    [[ -d $src ]] || fail "no data: set DATA_DIR (a \`make data\` folder) or DATA_SOURCE (a local data mirror)"
    DATA_DIR=$OUT/data
    # MATH500 stands in for the training set (the MATH level 3-5 set is on the hub only), as in the tests
    run -v "$(realpath "$src"):/src:ro" --entrypoint python -- -m sspo.tools.data --out-dir /outputs/data \
        --local-dir /src --local-file math=/src/benchmarks/oat/math500.jsonl --keep-overlap --no-progress \
        > "$WORK_DIR/data.log" 2>&1 || { tail -20 "$WORK_DIR/data.log"; fail "sspo.tools.data"; }
    echo "ok   data prepared inside the image -> $DATA_DIR"
fi
DATA_MOUNT=(-v "$(realpath "$DATA_DIR"):/data:ro")

rows=$(find recipe/config/experiment -name '*.yaml' ! -name '*_cpu.yaml' -exec basename {} .yaml \; | sort)
[[ -n $rows ]] || fail "no GPU rows in recipe/config/experiment"
for row in $rows; do
    log=$WORK_DIR/dry-run-$row.log
    run "${DATA_MOUNT[@]}" -- --dry-run "experiment=$row" > "$log" 2>&1 \
        || { tail -20 "$log"; fail "dry run of $row"; }
    grep -q "^dry run OK: $row " "$log" || { tail -5 "$log"; fail "dry run of $row printed no OK line"; }
    echo "ok   dry run $row"
done

if [[ ${SKIP_TRAIN:-0} == 1 ]]; then
    echo "== SKIP_TRAIN=1: training not run ($(( SECONDS - start )) s)"
    exit 0
fi
log=$WORK_DIR/train.log
echo "== training grpo_cpu, $STEPS steps, through the demo path (log: $log)   [$(( SECONDS - start )) s]"
t0=$SECONDS
# shellcheck disable=SC2086  # TRAIN_PREFIX is a command with its arguments
${TRAIN_PREFIX:-} timeout --kill-after 30 "$TRAIN_TIMEOUT" "$DOCKER" run --rm --name "$NAME" \
    --user "$TEST_UID:$TEST_GID" --shm-size "$SHM_SIZE" -v "$OUT:/outputs" -e ALGOS=grpo \
    "$IMAGE" demo "trainer.total_training_steps=$STEPS" > "$log" 2>&1 \
    || { tail -40 "$log"; fail "training exited non-zero (or ran past ${TRAIN_TIMEOUT}s)"; }
echo "ok   demo exited 0 after $(( SECONDS - t0 )) s (a wait in TRAIN_PREFIX included)"
run_dir=$OUT/sspo/grpo_cpu
[[ $(cat "$run_dir/latest_checkpointed_iteration.txt" 2>/dev/null) == "$STEPS" ]] \
    || fail "no checkpoint at step $STEPS in $run_dir"
[[ -d $run_dir/global_step_$STEPS ]] || fail "no $run_dir/global_step_$STEPS"
find "$run_dir/tensorboard" -name 'events.out.tfevents.*' | grep -q . || fail "no TensorBoard metrics"
[[ -s $OUT/demo/table.md ]] || fail "no demo table"
echo "ok   checkpoint global_step_$STEPS, TensorBoard metrics, $OUT/demo/table.md"
others=$(find "$OUT" ! -uid "$TEST_UID" | head -5)
[[ -z $others ]] || fail "files not owned by uid $TEST_UID: $others"
echo "ok   all $(find "$OUT" | wc -l) paths in the volume owned by uid $TEST_UID"
echo "== docker-test passed in $(( SECONDS - start )) s"
