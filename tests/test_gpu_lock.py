"""recipe/gpu/requirements.lock, the GPU environment's lock: it still resolves from its pins (a resolution against
the package index, no install: needs the index, which CI reaches), it pins verl's GPU stack with CUDA 13 wheels
and the project's own pins, `make install-gpu` and the GPU image install it in the same steps, and the two
checks around that install (recipe/gpu/check-host.sh before, check_installed.py after) refuse what they must.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from helpers import REPO, run_bounded
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

GPU = REPO / "recipe" / "gpu"
LOCK = GPU / "requirements.lock"
#: the two resolutions of lock.sh run side by side: ~25 s here, cold cache or warm; the bound leaves room
RESOLVE_TIMEOUT_S = 240


def pins(path: Path) -> dict[str, str]:
    """name (canonical) -> version of every ``name==version`` line of a requirements file."""
    found = re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", path.read_text(), flags=re.M)
    return {canonicalize_name(name): version for name, version in found}


def test_the_lock_still_resolves_from_its_pins(tmp_path):
    """lock.sh again, the committed pins as constraints, for Python 3.11 and 3.12: the same name==version set.
    It fails when a pin is gone from the index, a source (pyproject.toml, recipe/gpu/*.in|txt) moved past a
    pin or added a package, or the index cannot be reached: never skipped, CI has the index."""
    out = tmp_path / "requirements.lock"
    env = {**os.environ, "PY": sys.executable}
    result = run_bounded(["bash", str(GPU / "lock.sh"), str(out)], log=tmp_path / "lock.log",
                         timeout=RESOLVE_TIMEOUT_S, env=env, cwd=REPO)  # fmt: skip
    if result.returncode != 0:
        pytest.fail(
            "recipe/gpu/lock.sh could not resolve the lock's pins (a network error here means the package index"
            f" was unreachable; otherwise re-lock: recipe/gpu/lock.sh, or UPGRADE=1):\n{result.output[-6000:]}"
        )
    want, got = pins(LOCK), pins(out)
    added = sorted(f"{n}=={v}" for n, v in got.items() if want.get(n) != v)
    gone = sorted(f"{n}=={v}" for n, v in want.items() if got.get(n) != v)
    assert not added and not gone, f"the resolution now gives {added}, not {gone}: re-lock with recipe/gpu/lock.sh"
    assert len(want) > 200  # the whole environment, not a stub


def test_the_lock_is_verl_gpu_stack_on_cuda_13_without_flash_attn():
    locked = pins(LOCK)
    # verl 0.9.1's `vllm` extra (the project's `gpu` extra is verl[vllm]==0.9.1)
    expected = {"verl": "0.9.1", "torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0",
                "vllm": "0.24.0", "transformers": "5.9.0"}  # fmt: skip
    assert {name: locked.get(name) for name in expected} == expected
    # torch 2.11.0's Linux wheels on PyPI are CUDA 13.0 builds: their CUDA libraries are the cu13 ones
    assert locked["cuda-toolkit"].startswith("13.0."), locked["cuda-toolkit"]
    assert {"nvidia-nccl-cu13", "nvidia-cudnn-cu13", "nvidia-cusparselt-cu13"} <= locked.keys()
    assert not [name for name in locked if re.search(r"cu(da)?-?12", name)], "a CUDA 12 package in the lock"
    # flash-attn: pinned beside the lock (an sdist that imports torch to build), its requirements in the lock
    assert "flash-attn" not in locked
    assert pins(GPU / "flash-attn.txt") == {"flash-attn": "2.8.3"}
    flash_attn_needs = {"torch", "einops"} | {"setuptools", "wheel", "packaging", "psutil", "ninja"}  # run | build
    assert flash_attn_needs <= locked.keys()


def test_the_lock_keeps_the_projects_own_requirements():
    """Every requirement of pyproject.toml's core, `gpu` and `test` lists is met by the locked version."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    locked = pins(LOCK)
    unmet = []
    for line in project["dependencies"] + extras["gpu"] + extras["test"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name == "flash-attn":
            continue
        if name not in locked or locked[name] not in req.specifier:
            unmet.append(f"{line} (locked: {locked.get(name)})")
    assert not unmet, unmet


def steps(lines: list[str]) -> list[str]:
    """The GPU install's steps, in order, named by what each line does (the other lines ignored)."""
    kinds = [
        ("check-host", r"recipe/gpu/check-host\.sh \S*python\b|/tmp/gpu/check-host\.sh python"),
        ("lock", r"pip install (-q )?-r \S*requirements\.lock"),
        ("flash-attn", r"FLASH_ATTENTION_FORCE_BUILD=TRUE (\S*python -m )?pip install (-q )?--no-build-isolation --no-deps -r "
                       r"\S*flash-attn\.txt"),
        ("project", r"pip install (-q )?--no-build-isolation --no-deps -e \.( |$)"),
        ("check-installed", r"python recipe/gpu/check_installed\.py"),
    ]  # fmt: skip
    return [kind for line in lines for kind, pattern in kinds if re.search(pattern, line)]


def test_make_install_gpu_and_the_image_install_the_lock_in_the_same_steps():
    make = subprocess.run(["make", "-n", "install-gpu"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert make.returncode == 0, make.stderr
    order = ["check-host", "lock", "flash-attn", "project", "check-installed"]
    assert steps(make.stdout.splitlines()) == order, make.stdout
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    gpu_stages = [dockerfile.split(f" AS {name}\n", 1)[1].split("\nFROM ", 1)[0] for name in ("gpu-deps", "gpu")]
    assert steps("\n".join(gpu_stages).splitlines()) == order
    assert "source=recipe/gpu,target=/tmp/gpu" in gpu_stages[0]
    assert "torch==" not in dockerfile and "torch==" not in make.stdout  # no pin beside the lock's


def fake_tool(folder: Path, name: str, output: str) -> Path:
    """An executable ``folder/name`` that prints ``output`` whatever its arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\necho '{output}'\n")
    tool.chmod(0o755)
    return tool


def check_host(python: str, cuda_home: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    if cuda_home is not None:
        env["CUDA_HOME"] = str(cuda_home)
    return subprocess.run(["bash", str(GPU / "check-host.sh"), python], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_check_host_needs_cuda_13_nvcc_and_the_locks_python(tmp_path):
    cuda13, cuda12 = tmp_path / "cuda13", tmp_path / "cuda12"
    fake_tool(cuda13 / "bin", "nvcc", "Cuda compilation tools, release 13.0, V13.0.88")
    fake_tool(cuda12 / "bin", "nvcc", "Cuda compilation tools, release 12.8, V12.8.93")
    # a fake Python the lock fits, not this interpreter (the tests may run on any Python the project allows)
    good = fake_tool(tmp_path / "good", "python", "3.11 linux x86_64 2.36")
    ok = check_host(str(good), cuda13)
    assert ok.returncode == 0 and "nvcc 13.0" in ok.stdout, ok.stderr
    old = check_host(str(good), cuda12)
    assert old.returncode == 1 and "is CUDA 12.8" in old.stderr and "CUDA 13.x toolkit" in old.stderr
    none = check_host(str(good), tmp_path / "no-cuda")
    assert none.returncode == 1 and "no nvcc at" in none.stderr
    py310 = fake_tool(tmp_path / "py", "python", "3.10 linux x86_64 2.36")
    refused = check_host(str(py310), cuda13)
    assert refused.returncode == 1 and "Python 3.10" in refused.stderr and "3.11 and 3.12" in refused.stderr
    arm = fake_tool(tmp_path / "arm", "python", "3.12 linux aarch64 2.39")
    assert "Linux x86_64" in check_host(str(arm), cuda13).stderr
    old_glibc = fake_tool(tmp_path / "glibc", "python", "3.12 linux x86_64 2.27")
    assert "glibc >= 2.28" in check_host(str(old_glibc), cuda13).stderr


def test_check_installed_names_every_difference(tmp_path):
    """This CPU venv against a small lock: matching pins pass, a wrong or missing one is named, and a CPU torch
    is refused where the lock names a CUDA toolkit."""
    pytest_version = importlib.metadata.version("pytest")
    torch_version = importlib.metadata.version("torch")  # 2.13.0+cpu here
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"pytest=={pytest_version}\ntorch=={torch_version}\nruff==0.0.1\ncuda-toolkit==13.0.2\n")
    flash = tmp_path / "flash-attn.txt"
    flash.write_text("# comment\nflash-attn==2.8.3\n")
    result = subprocess.run([sys.executable, str(GPU / "check_installed.py"), "--lock", str(lock),
                             "--flash-attn", str(flash)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1
    lines = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert lines == [
        "cuda-toolkit: pinned 13.0.2, installed nothing",
        "flash-attn: pinned 2.8.3, installed nothing",
        f"ruff: pinned 0.0.1, installed {importlib.metadata.version('ruff')}",
        f"torch {torch_version} is built for CUDA None, the lock's cuda-toolkit is 13.0.2",
    ], result.stderr
