"""Helpers for tests that run verl's own trainer on CPU: a private Ray head, bounded runs, metrics.

Every run is bounded: :func:`run_bounded` kills the run's whole process group when its time is up
and fails the test with the log's tail, so a hang (e.g. in weight sync) never blocks CI.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
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
    """``n`` distinct free TCP ports on 127.0.0.1."""
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


def wait_for_job(address: str, job_id: str, timeout: float = 120) -> tuple[str, str]:
    """(final status, logs) of a submitted job; fails the test with the logs' tail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while (status := rest(address, f"/api/jobs/{job_id}")["status"]) in ("PENDING", "RUNNING"):
        if time.monotonic() > deadline:
            logs = rest(address, f"/api/jobs/{job_id}/logs")["logs"]
            pytest.fail(f"job {job_id} still {status} after {timeout:.0f} s:\n{logs[-4000:]}")
        time.sleep(1)
    return status, rest(address, f"/api/jobs/{job_id}/logs")["logs"]


@dataclass
class RayHead:
    """A running private Ray head: dashboard URL (job server), GCS address, env for its clients."""

    dashboard: str
    gcs: str
    env: dict[str, str]


@contextmanager
def ray_head(num_cpus: int = 8, num_gpus: int = 1) -> Iterator[RayHead]:
    """``ray start --head --block`` in its own process group, on free ports and a private temp dir.

    ``num_gpus`` are fake GPUs (the CPU mode's worker slots). Teardown signals that process group
    only (``ray stop`` would also stop other Ray clusters on the machine). Token authentication is
    off for this private localhost cluster (``RAY_AUTH_MODE=disabled``): Ray turns it on by itself once
    any local ``ray.init()`` wrote ``~/.ray/auth_token``, which would make tests depend on their order.
    """
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    temp_dir = tempfile.mkdtemp(
        prefix="sspo_ray_", dir="/tmp"
    )  # short: Ray's socket paths are length-limited
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        "ray", "start", "--head", "--block", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
        f"--temp-dir={temp_dir}", *(f"{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip
    log_path = Path(temp_dir) / "head.log"
    with log_path.open("w") as log:
        head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    rest(dashboard, "/api/jobs/")
                    break
                except Exception:
                    if head.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"Ray head did not come up: {log_path.read_text()[-2000:]}")
                    time.sleep(0.5)
            yield RayHead(dashboard, f"127.0.0.1:{ports['--port']}", env)
        finally:
            _kill_group(head, graceful_s=5)
            shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen, graceful_s: float = 0) -> None:
    """SIGTERM (if ``graceful_s``) then SIGKILL the process group ``proc`` leads, and reap it."""
    for sig, wait in ((signal.SIGTERM, graceful_s), (signal.SIGKILL, 10)):
        if sig == signal.SIGTERM and not graceful_s:
            continue
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


@dataclass
class RunResult:
    """A finished (or killed) command: exit code, whole output, wall seconds, whether we killed it."""

    returncode: int
    output: str
    seconds: float
    killed: bool


def run_bounded(
    cmd: Sequence[str],
    *,
    log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    kill_when: Callable[[], bool] | None = None,
) -> RunResult:
    """Run ``cmd`` in its own process group, output to ``log``; SIGKILL the group when ``kill_when()``
    turns true (returns ``killed=True``), or fail the test with the log's tail after ``timeout`` s."""
    start = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        killed = False
        while proc.poll() is None:
            if kill_when is not None and kill_when():
                _kill_group(proc)
                killed = True
                break
            if time.monotonic() - start > timeout:
                _kill_group(proc)
                pytest.fail(
                    f"{' '.join(cmd[:4])} ... did not finish in {timeout:.0f} s:\n{log.read_text()[-6000:]}"
                )
            time.sleep(1)
    return RunResult(proc.returncode, log.read_text(), time.monotonic() - start, killed)


def read_metrics(path: Path) -> dict[int, dict[str, float]]:
    """verl's file logger (``{"step": N, "data": {...}}`` per line) -> step -> metrics."""
    steps: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            steps.setdefault(int(row["step"]), {}).update(row["data"])
    return steps


def logged(metrics: Path, step: int) -> bool:
    """``step``'s training metrics are in verl's file-logger output (a line being written does not count)."""
    try:
        return "critic/score/mean" in read_metrics(metrics).get(step, {})
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def recipe_command(experiment: str, out: Path, *overrides: str, steps: int, save_freq: int) -> list[str]:
    """The user's command for one CPU row, plus per-run output paths and a test's step budget."""
    return [
        sys.executable, "-m", "sspo.launch.cli", f"experiment={experiment}",
        f"trainer.default_local_dir={out}",
        f"trainer.total_training_steps={steps}", f"trainer.save_freq={save_freq}", f"trainer.test_freq={steps}",
        "trainer.logger=[console,file,tensorboard]",
        f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={out}/metrics.jsonl",
        f"trainer.rollout_data_dir={out}/rollouts",
        *overrides,
    ]  # fmt: skip


def assert_finished(result: RunResult, what: str) -> None:
    """Fail with the output's tail unless ``result`` exited 0."""
    assert result.returncode == 0, f"{what} failed (exit {result.returncode}):\n{result.output[-6000:]}"


@dataclass
class Run:
    """One row's output folder and what its runs printed."""

    out: Path
    outputs: list[str]

    @property
    def metrics(self) -> dict[int, dict[str, float]]:
        return read_metrics(self.out / "metrics.jsonl")

    def training_steps(self, metrics: dict[int, dict[str, float]] | None = None) -> list[int]:
        metrics = self.metrics if metrics is None else metrics
        return sorted(s for s, m in metrics.items() if "critic/score/mean" in m)


def killed_then_rerun(
    cmd: Sequence[str], out: Path, env: dict[str, str], *, save_freq: int, timeout: float
) -> Run:
    """Run ``cmd``, SIGKILL its process group once checkpoint ``save_freq`` is written and that step's metrics
    are logged, then run the same command again to its end. ``metrics_run1.jsonl`` keeps the first run's
    metrics (verl's file logger truncates on restart)."""
    marker = out / "latest_checkpointed_iteration.txt"
    first = run_bounded(
        cmd,
        log=out / "run1.log",
        timeout=timeout,
        env=env,
        kill_when=lambda: (
            marker.is_file()
            and marker.read_text().strip() == str(save_freq)
            and logged(out / "metrics.jsonl", save_freq)
        ),
    )
    assert first.killed, f"the first run ended before it could be killed:\n{first.output[-4000:]}"
    shutil.copy(out / "metrics.jsonl", out / "metrics_run1.jsonl")
    second = run_bounded(cmd, log=out / "run2.log", timeout=timeout, env=env)
    assert_finished(second, f"{' '.join(cmd[2:4])} rerun")
    return Run(out, [first.output, second.output])


def reward_rise(scores: dict[int, float], *, steps_per_pass: int, samples_per_pass: int) -> tuple[float, float]:
    """(gain, z) of a run's training reward (``critic/score/mean`` per step, a 0/1 score).

    gain: the mean over the last pass through the training problems minus the mean over the first (each
    pass sees every problem once, so the two hold the same problems); z: gain over its sampling standard
    error, sqrt((p1 (1 - p1) + p2 (1 - p2)) / n), an upper bound for n samples of fixed problems. A run whose
    policy never changes (lr 0) gives |z| > 3 about once in 700 runs.
    """
    steps = sorted(scores)
    first = statistics.fmean(scores[s] for s in steps[:steps_per_pass])
    last = statistics.fmean(scores[s] for s in steps[-steps_per_pass:])
    se = math.sqrt((first * (1 - first) + last * (1 - last)) / samples_per_pass)
    return last - first, (last - first) / max(se, 1e-9)
