"""`ray job submit` path, against a REAL local Ray head (CPU): recipe/scripts/submit.sh ships the
checkout as working_dir, the job's driver runs the CLI dry run, which checks GPUs against the cluster.

The head runs as `ray start --head --block` in its own process group, on free ports and a private
temp dir; teardown signals that group only (`ray stop` would also stop other Ray clusters on the
machine). Ray's token authentication is switched off for this private localhost cluster
(RAY_AUTH_MODE=disabled): Ray turns it on by itself once any local `ray.init()` has written
~/.ray/auth_token, which would make the test depend on what ran before it. The test talks to the
job server through its REST API (urllib), so no Ray client state of the pytest process is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_recipe import recipe_data_dir

from sspo import cli

REPO = Path(__file__).resolve().parents[1]
PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--node-manager-port",
    "--object-manager-port",
)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def rest(address: str, path: str) -> dict:
    """GET a JSON document from the Ray dashboard's REST API."""
    with urllib.request.urlopen(f"{address}{path}", timeout=10) as response:
        return json.load(response)


@pytest.fixture
def ray_head() -> Iterator[tuple[str, dict]]:
    """A one-node Ray cluster with the job server: 1 CPU, 1 (declared) GPU. Yields (dashboard URL, env)."""
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    temp_dir = tempfile.mkdtemp(
        prefix="sspo_ray_", dir="/tmp"
    )  # short: Ray's socket paths are length-limited
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        "ray", "start", "--head", "--block", "--num-cpus=1", "--num-gpus=1",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
        f"--temp-dir={temp_dir}", *(f"{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip
    log = open(Path(temp_dir) / "head.log", "w")  # noqa: SIM115  (closed in teardown)
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                rest(address, "/api/jobs/")
                break
            except Exception:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"Ray head did not come up: {(Path(temp_dir) / 'head.log').read_text()[-2000:]}"
                    )
                time.sleep(0.5)
        yield address, env
    finally:
        # only the processes this fixture started: the head's own process group
        for sig, wait in ((signal.SIGTERM, 2), (signal.SIGKILL, 5)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_job(address: str, job_id: str, timeout: float = 120) -> tuple[str, str]:
    """(final status, logs) of a submitted job."""
    deadline = time.monotonic() + timeout
    while (status := rest(address, f"/api/jobs/{job_id}")["status"]) in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, rest(address, f"/api/jobs/{job_id}/logs")["logs"][-3000:]
        time.sleep(0.5)
    return status, rest(address, f"/api/jobs/{job_id}/logs")["logs"]


@pytest.mark.slow
def test_submit_dry_run_job_to_a_local_ray_head(ray_head, tmp_path_factory, shared_data, tmp_path):
    address, env = ray_head
    data = recipe_data_dir(tmp_path_factory, shared_data)
    job_id = f"sspo-test-{os.getpid()}"
    submit = subprocess.run(
        [
            str(REPO / "recipe" / "scripts" / "submit.sh"),
            "--dry-run",
            "experiment=sspo_qwen2.5-math-1.5b",
            "cluster=1x1gpu",
        ],
        env={
            **env,
            "RAY_ADDRESS": address,
            "OUTPUT_DIR": str(tmp_path / "shared_outputs"),
            "DATA_DIR": str(data),
            "SUBMISSION_ID": job_id,
            "NO_WAIT": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    status, logs = wait_for_job(address, job_id)
    assert status == "SUCCEEDED", logs[-4000:]
    # the job ran this checkout's CLI from the shipped working_dir, not from the source tree
    assert cli.RESOLVED_HEADER in logs and cli.CHECKS_HEADER in logs
    assert "runtime_resources/working_dir_files" in logs
    assert "loss_mode: sspo" in logs and "experiment_name: sspo_qwen2.5-math-1.5b" in logs
    assert f"default_local_dir: {tmp_path / 'shared_outputs' / 'sspo' / 'sspo_qwen2.5-math-1.5b'}" in logs
    # the driver of the job registered the loss, and checked GPUs against this very cluster
    assert "[ok  ] loss registered: policy loss 'sspo' is registered" in logs
    assert "(VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin)" in logs  # the runtime env reached the job
    assert "[ok  ] GPUs: 1 x 1 GPUs fit the Ray cluster at" in logs
    assert "dry run OK: sspo_qwen2.5-math-1.5b" in logs


@pytest.mark.parametrize("var", ["OUTPUT_DIR", "DATA_DIR"])
def test_submit_refuses_relative_shared_paths(var, tmp_path):
    """Relative paths would land in the job's temporary working_dir: refused before contacting Ray."""
    env = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:1", "OUTPUT_DIR": str(tmp_path), var: "outputs"}
    result = subprocess.run(
        [str(REPO / "recipe" / "scripts" / "submit.sh"), "experiment=sspo_qwen2.5-math-1.5b"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{var}=outputs must be an absolute path" in result.stderr
