#!/usr/bin/env bash
# Before the GPU install downloads anything: does this host fit recipe/gpu/requirements.lock and can it compile
# flash-attn against the locked torch? Run by `make install-gpu` and the GPU image (docker/Dockerfile).
#   recipe/gpu/check-host.sh PYTHON
# - Python 3.11 or 3.12 on Linux x86_64 with glibc >= 2.28: what the lock was resolved for (recipe/gpu/lock.sh);
# - nvcc of torch's CUDA major version (the lock's cuda-toolkit, torch's own dependency: 13.0.x): flash-attn
#   builds with torch's extension builder, which stops on another major version. nvcc is looked up as torch
#   does: CUDA_HOME, CUDA_PATH, nvcc on PATH, /usr/local/cuda.
set -euo pipefail
PY=${1:?usage: recipe/gpu/check-host.sh PYTHON}
LOCK=$(cd "$(dirname "$0")" && pwd)/requirements.lock  # beside this script (the image mounts the folder)
fail() { echo "check-host.sh: $*" >&2; exit 1; }

read -r python system machine glibc < <("$PY" -c 'import platform, sys
print(f"{sys.version_info[0]}.{sys.version_info[1]}", sys.platform, platform.machine(), platform.libc_ver()[1] or "none")')
case "$python" in 3.11 | 3.12) ;; *) fail "$PY is Python $python; $LOCK is for Python 3.11 and 3.12: use one (a fresh .venv: rm -r .venv; make install-gpu PYTHON=python3.12)" ;; esac
if [[ "$system $machine" != "linux x86_64" ]]; then
    fail "this host is $system $machine; $LOCK is for Linux x86_64 (an aarch64 host, e.g. GH200, needs a lock of its own: recipe/gpu/lock.sh with PLATFORM=aarch64-manylinux_2_28)"
fi
if [[ "$glibc" == none || "$(printf '%s\n' 2.28 "$glibc" | sort -V | head -1)" != 2.28 ]]; then
    fail "glibc $glibc: the locked wheels are manylinux_2_28 (torch too): they need glibc >= 2.28"
fi

toolkit=$(grep -oE '^cuda-toolkit==[0-9]+\.[0-9]+' "$LOCK" | cut -d= -f3) || fail "$LOCK pins no cuda-toolkit"
torch=$(grep -oE '^torch==[^ ]+' "$LOCK" | cut -d= -f3) || fail "$LOCK pins no torch"
if [[ -n "${CUDA_HOME:-}" ]]; then nvcc=$CUDA_HOME/bin/nvcc
elif [[ -n "${CUDA_PATH:-}" ]]; then nvcc=$CUDA_PATH/bin/nvcc
else nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc); fi
need="flash-attn is compiled here against torch $torch built with CUDA $toolkit: it needs the CUDA ${toolkit%%.*}.x toolkit's nvcc ($toolkit best; the nvidia/cuda:$toolkit.*-devel images have it), set CUDA_HOME to it"
[[ -x "$nvcc" ]] || fail "no nvcc at $nvcc. $need"
found=$("$nvcc" --version | grep -oE 'release [0-9]+\.[0-9]+' | cut -d' ' -f2) || fail "$nvcc --version names no release. $need"
[[ "${found%%.*}" == "${toolkit%%.*}" ]] || fail "$nvcc is CUDA $found. $need"
echo "check-host.sh: Python $python, $system $machine, glibc $glibc, nvcc $found ($nvcc) for torch's CUDA $toolkit"
