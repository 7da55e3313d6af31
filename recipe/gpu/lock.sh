#!/usr/bin/env bash
# The GPU environment's lock, recipe/gpu/requirements.lock: pyproject.toml's `gpu` and `test` extras plus
# recipe/gpu/build.in, resolved by uv (a resolution: nothing is downloaded but metadata, nothing installed) for
# Linux x86_64 (manylinux_2_28, the torch 2.11.0 wheels' tag) at Python 3.11 and 3.12, which must give the same
# set (recipe/gpu/constraints.txt holds the bounds that make them agree). flash-attn is left out of the
# resolution and pinned in recipe/gpu/flash-attn.txt (why: there).
#   recipe/gpu/lock.sh [OUTPUT]     (default recipe/gpu/requirements.lock)
# Env: PY (default .venv/bin/python: a Python with pip and uv, as `make install` leaves it). By default the
# committed lock's pins constrain the resolution: it reproduces the lock while every pin is still found and the
# sources still accept it, adds what a new dependency needs, and fails naming the conflict when a source moved a
# pin (tests/test_gpu_lock.py runs it so, in CI). UPGRADE=1 resolves afresh: the newest versions the sources allow.
# Wheel sources: pip's own settings, handed to uv as recipe/cpu/install.sh does (recipe/uv-from-pip.sh); a
# constraint file in pip's settings is a machine's install cap, not an input of the project's lock: not used.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
LOCK=recipe/gpu/requirements.lock
OUT=${1:-$LOCK}
PLATFORM=${PLATFORM:-x86_64-manylinux_2_28}  # the wheels' platform tag the lock is for
PYTHONS=(3.11 3.12)  # the first one's output (annotated) is written

if ! "$PY" -m uv --version >/dev/null 2>&1; then
    echo "lock.sh: $PY has no uv: run \`make install\` (it installs the pinned uv) or give PY=<a python with uv>" >&2
    exit 2
fi
source recipe/uv-from-pip.sh
uv_env_from_pip
unset UV_CONSTRAINT

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the committed pins as constraints, not as uv's preferences (an existing output file): with preferences and
# pip's extra indexes (unsafe-best-match), uv 0.13.8 took a version from an index holding only some of its wheels
# and found no cp312 wheel of matplotlib 3.11.2 on this machine
pins="$tmp/pins.txt"
keep=()
if [[ -z "${UPGRADE:-}" && -f "$LOCK" ]]; then
    grep -E '^[A-Za-z0-9]' "$LOCK" | cut -d' ' -f1 >"$pins"
    keep=(--constraints "$pins")
fi
resolve() {  # $1: the Python version
    local version=$1
    "$PY" -m uv pip compile --quiet pyproject.toml recipe/gpu/build.in --extra gpu --extra test \
        --excludes recipe/gpu/flash-attn.txt --constraints recipe/gpu/constraints.txt "${keep[@]}" \
        --python-platform "$PLATFORM" --python-version "$version" --annotation-style line \
        --custom-compile-command "recipe/gpu/lock.sh" --output-file "$tmp/$version.txt"
    # the pins' own file out of the annotations: the lock reads the same whichever way it was made
    sed -i -e "s|, -c $pins||" -e "s|-c $pins, ||" "$tmp/$version.txt"
}
# the versions side by side (the time is the index's answers, not CPU): ~20 s instead of ~35 s here
jobs=()
for version in "${PYTHONS[@]}"; do resolve "$version" & jobs+=($!); done
failed=0
for job in "${jobs[@]}"; do wait "$job" || failed=1; done
if ((failed)); then echo "lock.sh: the resolution failed (uv's reason above)" >&2; exit 1; fi
pins() { grep -E '^[A-Za-z0-9]' "$1" | cut -d' ' -f1 | sort; }
first=${PYTHONS[0]}
for version in "${PYTHONS[@]:1}"; do
    if ! differ=$(diff <(pins "$tmp/$first.txt") <(pins "$tmp/$version.txt")); then
        echo "lock.sh: Python $first and $version resolve to different versions (< $first, > $version):" >&2
        echo "$differ" >&2
        echo "add a bound both can install to recipe/gpu/constraints.txt" >&2
        exit 1
    fi
done
cp "$tmp/$first.txt" "$OUT"
echo "lock.sh: $(pins "$OUT" | wc -l) pins for Python ${PYTHONS[*]} on $PLATFORM in $OUT"
