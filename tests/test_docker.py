"""docker/Dockerfile: hadolint-clean, pinned to what verl 0.9.1's GPU extras pin, non-root, no secrets.

The image cannot be built here (no Docker engine, no GPU): these checks are what can be verified.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def verl_extra_pins(extra: str) -> dict[str, str]:
    """name -> pinned version of verl's optional extra, from verl's installed METADATA."""
    pins = {}
    for req in importlib.metadata.requires("verl") or []:
        m = re.match(rf'^([\w.-]+)==([\w.]+); extra == "{re.escape(extra)}"$', req)
        if m:
            pins[m[1].lower()] = m[2]
    return pins


def dockerfile_pins() -> dict[str, str]:
    return {name.lower(): version for name, version in re.findall(r'"([\w.-]+)==([\w.]+)"', TEXT)}


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_torch_vllm_flash_attn_match_verl_extras():
    vllm_extra = verl_extra_pins("vllm")
    flash_extra = verl_extra_pins("flash-attn-cu130torch211")
    pins = dockerfile_pins()
    for name in ("torch", "torchvision", "torchaudio"):
        assert pins[name] == vllm_extra[name], name
    assert pins["flash-attn"] == flash_extra["flash-attn"] == "2.8.3"
    # vLLM itself comes through the project's `gpu` extra = verl[vllm]==0.9.1 (vllm pinned there)
    assert vllm_extra["vllm"] == "0.24.0"
    gpu = re.search(r"^gpu = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), flags=re.M)[1]
    assert '"verl[vllm]==0.9.1"' in gpu
    assert 'pip install -e ".[gpu]"' in TEXT


def test_base_image_is_pinned_and_matches_cuda_13_0():
    """verl's extras are built for cu130 (flash-attn-cu130torch211): a CUDA 13.0 devel base, exact tag."""
    (image,) = re.findall(r"^FROM (\S+)", TEXT, flags=re.M)
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-cudnn-devel-ubuntu\d\d\.\d\d", image), image


def test_non_root_and_no_secrets():
    users = re.findall(r"^USER (\S+)", TEXT, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    for line in re.findall(r"^(?:ENV|ARG)\b.*$", TEXT, flags=re.M):
        assert not re.search(r"(TOKEN|SECRET|PASSWORD|API_KEY)\s*=", line, flags=re.I), line


def test_copied_paths_exist_and_make_docker_builds_this_file():
    for src in re.findall(r"^COPY (.+) \S+$", TEXT, flags=re.M):
        for path in src.split():
            assert (REPO / path).exists(), path
    dry = subprocess.run(["make", "-n", "docker"], cwd=REPO, capture_output=True, text=True)
    assert "docker build -f docker/Dockerfile" in dry.stdout
