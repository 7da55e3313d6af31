"""Test helpers, in one module: verl's config and batches, the recipe's prepared data, bounded CPU runs.

* verl's real ``ppo_trainer`` config composed by Hydra, and a batch in the layout verl's v1 trainer hands to
  the actor (for calling the loss wrapper directly);
* the benchmark parquet written once per session by ``sspo.tools.data`` from ``../shared/data``;
* runs of verl's own trainer on CPU: a private Ray head, bounded runs, metrics. Every run is bounded:
  :func:`run_bounded` kills the run's whole process group when its time is up and fails the test with the
  log's tail, so a hang (e.g. in weight sync) never blocks CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

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


#: where :func:`free_ports` picks: above Ray's worker ports (10002-19999), below the kernel's ephemeral range
PORT_POOL = range(20000, 32768)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1, free now, drawn at random from :data:`PORT_POOL`.

    Not from the kernel's ephemeral range (``bind(0)``): every other process's outgoing connection and
    ``bind(0)`` draws from that range, so a port closed here would soon be handed to someone else before Ray
    binds it. A port outside it is taken only by a process that names it; :func:`ray_head` still retries
    with fresh ports when its head loses that race.
    """
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = PORT_POOL.stop
    candidates = random.SystemRandom().sample(range(PORT_POOL.start, min(PORT_POOL.stop, low)), 64 + n)
    held: list[socket.socket] = []
    try:
        for port in candidates:
            if len(held) == n:
                break
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        if len(held) < n:
            raise RuntimeError(f"found {len(held)} free ports of {n} in {PORT_POOL} on 127.0.0.1")
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


@contextmanager
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections for as long as the ``with`` lasts: bound here, never listening.

    For tests of "nothing answers at this address": a fixed port (1, 6379, ...) may be open on a shared machine.
    """
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextmanager
def private_ray(num_cpus: int) -> Iterator[Any]:
    """``ray.init`` of a new local Ray for this process only, whatever else runs on the machine; shut down after.

    ``address="local"`` and no ``RAY_ADDRESS``: never joins a cluster another process started (Ray would
    join one named by ``RAY_ADDRESS`` or recorded in ``/tmp/ray``, and reject ``num_cpus``). Its own temp dir
    (sessions, sockets); token authentication off (``RAY_AUTH_MODE=disabled``), else Ray writes
    ``~/.ray/auth_token``. Fails if Ray is already initialised here: it shuts down only what it started.
    """
    import ray

    if ray.is_initialized():
        pytest.fail("Ray is already initialised in this process: the test needs its own private Ray")
    temp_dir = tempfile.mkdtemp(prefix="sspo_ray_", dir="/tmp")  # short: Ray's socket paths are length-limited
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAY_ADDRESS", raising=False)
        env.setenv("RAY_AUTH_MODE", "disabled")
        try:
            ray.init(
                address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                _temp_dir=temp_dir,
            )  # fmt: skip
            yield ray
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


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


#: the ports a raylet that joins a head opens (the head's own are ``PORT_FLAGS``)
NODE_PORT_FLAGS = PORT_FLAGS[3:]


#: how many times a Ray node is started on fresh ports after it exited at start-up (another process took a port)
NODE_START_TRIES = 3


@contextmanager
def ray_head(num_cpus: int = 8, num_gpus: int = 1, nodes: int = 1) -> Iterator[RayHead]:
    """``ray start --head --block`` in its own process group, on free ports and a private temp dir, and
    ``nodes - 1`` more raylets joining it (``ray start --address``): a cluster of ``nodes`` nodes on this machine.

    Each node has ``num_cpus`` CPUs and ``num_gpus`` fake GPUs (the CPU mode's worker slots). A node that exits
    while starting (a port taken by another process between :func:`free_ports` and Ray's bind) is started
    again on fresh ports, :data:`NODE_START_TRIES` times at most. Teardown signals those process groups only
    (``ray stop`` would also stop other Ray clusters on the machine). Token authentication is off for this
    private localhost cluster (``RAY_AUTH_MODE=disabled``): Ray turns it on by itself once any local
    ``ray.init()`` wrote ``~/.ray/auth_token``, which would make tests depend on their order.
    """
    temp_dir = tempfile.mkdtemp(prefix="sspo_ray_", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    node = ["--block", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", "--disable-usage-stats"]
    head: dict[str, int] = {}
    raylets: list[subprocess.Popen] = []

    def head_cmd() -> list[str]:
        head.clear()
        head.update(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        return [
            "ray", "start", "--head", *node, "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--temp-dir={temp_dir}", *(f"{flag}={port}" for flag, port in head.items()),
        ]  # fmt: skip

    def node_cmd(i: int) -> list[str]:
        ports = free_ports(len(NODE_PORT_FLAGS))
        return [
            "ray", "start", f"--address=127.0.0.1:{head['--port']}", *node, f"--temp-dir={temp_dir}/node{i}",
            *(f"{flag}={port}" for flag, port in zip(NODE_PORT_FLAGS, ports, strict=True)),
        ]  # fmt: skip

    try:
        for i in range(nodes):
            raylets.append(_start_node(head_cmd if i == 0 else lambda i=i: node_cmd(i), i, head, env, temp_dir))
        yield RayHead(f"http://127.0.0.1:{head['--dashboard-port']}", f"127.0.0.1:{head['--port']}", env)
    finally:
        for raylet in reversed(raylets):
            _kill_group(raylet, graceful_s=5)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start_node(
    cmd: Callable[[], list[str]], i: int, head: dict[str, int], env: dict[str, str], temp_dir: str
) -> subprocess.Popen:
    """Start node ``i`` (``cmd()`` draws fresh ports each try) until the cluster has ``i + 1`` nodes alive."""
    logs = []
    for attempt in range(NODE_START_TRIES):
        argv = cmd()
        port = int(next(a for a in argv if a.startswith("--node-manager-port=")).split("=")[1])
        log_path = Path(temp_dir) / f"node{i}.try{attempt}.log"
        with log_path.open("w") as log:
            raylet = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if _wait_for_nodes(f"http://127.0.0.1:{head['--dashboard-port']}", i + 1, raylet, port):
            return raylet
        exited = raylet.poll() is not None
        _kill_group(raylet)  # its children (raylet, GCS, ...) live in its process group
        logs.append(f"try {attempt + 1}: {' '.join(argv)}\n{log_path.read_text()[-2000:]}")
        if not exited:
            break  # alive but not up in time: not a lost port
    pytest.fail(f"Ray node {i + 1} did not come up:\n" + "\n".join(logs))


def _wait_for_nodes(dashboard: str, count: int, raylet: subprocess.Popen, node_manager_port: int,
                    timeout: float = 120) -> bool:
    """Whether ``count`` nodes are alive, this node (``node_manager_port``) among them, before ``raylet`` exits
    or ``timeout`` s pass. The port check: a dashboard answering at our port is ours, not another cluster's
    that took the port first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            summary = rest(dashboard, "/nodes?view=summary")["data"]["summary"]
            alive = [n["raylet"] for n in summary if n["raylet"]["state"] == "ALIVE"]
            if len(alive) >= count and any(int(n["nodeManagerPort"]) == node_manager_port for n in alive):
                return True
        except Exception:
            pass
        if raylet.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def alive_nodes(dashboard: str) -> int:
    """How many nodes of the cluster are alive (the dashboard's node summary)."""
    summary = rest(dashboard, "/nodes?view=summary")["data"]["summary"]
    return sum(node["raylet"]["state"] == "ALIVE" for node in summary)


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
        try:
            while proc.poll() is None:
                if kill_when is not None and kill_when():
                    _kill_group(proc)
                    killed = True
                    break
                if time.monotonic() - start > timeout:
                    pytest.fail(
                        f"{' '.join(cmd[:4])} ... did not finish in {timeout:.0f} s:\n{log.read_text()[-6000:]}"
                    )
                time.sleep(1)
        finally:  # also when pytest-timeout or an error in kill_when interrupts the wait: no run is left behind
            if proc.poll() is None:
                _kill_group(proc)
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


def submit(ray_head: RayHead, env: dict[str, str], job_id: str, args: Sequence[str]) -> None:
    """``recipe/scripts/submit.sh ARGS`` (what ``make submit`` runs) without waiting; ``env``: its settings."""
    result = subprocess.run(
        [str(REPO / "recipe" / "scripts" / "submit.sh"), *args],
        env={**ray_head.env, "RAY_ADDRESS": ray_head.dashboard, "SUBMISSION_ID": job_id, "NO_WAIT": "1",
             "JOB_PYTHON": sys.executable, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def stopped_then_resubmitted(
    ray_head: RayHead, env: dict[str, str], args: Sequence[str], out: Path, *, save_freq: int, timeout: float
) -> Run:
    """Submit a job, stop it (the job API's stop, as ``ray job stop``) once checkpoint ``save_freq`` is written and
    the step after it logged, then submit the same command again (a new job id, as a user resubmits) and wait for
    its end. ``out``: the run's folder; ``metrics_run1.jsonl`` and ``rollouts_run1/`` keep what the first job
    wrote there. Fails if the next checkpoint was written before the stop landed (the resumed step would differ)."""
    first, second = f"sspo-stop-{os.getpid()}", f"sspo-resubmit-{os.getpid()}"
    submit(ray_head, env, first, args)
    deadline = time.monotonic() + timeout
    marker = out / "latest_checkpointed_iteration.txt"
    while not (marker.is_file() and logged(out / "metrics.jsonl", save_freq + 1)):
        status = rest(ray_head.dashboard, f"/api/jobs/{first}")["status"]
        if status not in ("PENDING", "RUNNING") or time.monotonic() > deadline:
            logs = rest(ray_head.dashboard, f"/api/jobs/{first}/logs")["logs"]
            pytest.fail(f"job {first} is {status} before step {save_freq + 1}:\n{logs[-4000:]}")
        time.sleep(0.5)
    request = urllib.request.Request(f"{ray_head.dashboard}/api/jobs/{first}/stop", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.load(response)["stopped"], first
    status, logs1 = wait_for_job(ray_head.dashboard, first, timeout=120)
    assert status == "STOPPED", logs1[-4000:]
    checkpoint = marker.read_text().strip()
    assert checkpoint == str(save_freq), f"the job wrote checkpoint {checkpoint} before it stopped: a later stop"
    shutil.copy(out / "metrics.jsonl", out / "metrics_run1.jsonl")
    shutil.copytree(out / "rollouts", out / "rollouts_run1")
    wait_for_free_gpus(ray_head)
    submit(ray_head, env, second, args)
    status, logs2 = wait_for_job(ray_head.dashboard, second, timeout=timeout)
    assert status == "SUCCEEDED", logs2[-6000:]
    return Run(out, [logs1, logs2])


def wait_for_free_gpus(ray_head: RayHead, timeout: float = 120) -> None:
    """Until no (fake) GPU of the cluster is held: a stopped job's actors and placement groups are gone."""
    deadline = time.monotonic() + timeout
    while True:
        status = subprocess.run(
            ["ray", "status", "--address", ray_head.gcs],
            env=ray_head.env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        if re.search(r"\b0\.0/\d+\.0 GPU\b", status):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the cluster still holds GPUs {timeout:.0f} s after the job stopped:\n{status}")
        time.sleep(2)


# ---------------------------------------------------------------- the end-to-end rows' settings

STEPS = 6  # two passes of 3 steps: each pass sees every one of the 36 problems once (tiny_add)
STEPS_PER_PASS = 3
SAVE_FREQ = 3
RUN_TIMEOUT_S = 600  # a run takes about 2.5 min here: start-up about 2, then about 5 s per step

#: the update check every CI row must pass (sspo.update_check, ``sspo.update_check=true``): at every step the policy
#: moved (mean |log pi_new - log pi_old| over the step's tokens above float noise; exactly 0 at lr 0), and over the
#: run it moved along its advantages (alignment, the cosine of A and the log-ratio, > 0 on average over the steps:
#: one step's cosine is a noisy 0.04-0.14 for GSPO and SSPO here, the run's mean 0.09-0.10, some 5 standard
#: errors above 0; GRPO on the engine row 0.03-0.09 a step). A loss that stopped moving the policy, or moved it against its advantages, fails.
MIN_MEAN_ABS_LOG_RATIO = 1e-4


def update_check_failures(metrics: dict[int, dict[str, float]], steps: Sequence[int]) -> list[str]:
    """What the run's updates failed of the check above (empty: none)."""
    failures = []
    for s in steps:
        moved = metrics[s]["actor/update/mean_abs_log_ratio"]
        if not moved > MIN_MEAN_ABS_LOG_RATIO:
            failures.append(f"step {s}: the policy did not move (mean |log-ratio| {moved:.3g})")
    alignment = statistics.fmean(metrics[s]["actor/update/alignment"] for s in steps)
    if not alignment > 0:
        per_step = [round(metrics[s]["actor/update/alignment"], 3) for s in steps]
        failures.append(f"the updates did not follow the advantages: mean alignment {alignment:.3g} {per_step}")
    return failures


def assert_update_along_advantages(metrics: dict[int, dict[str, float]], steps: Sequence[int]) -> None:
    """The run's updates moved the policy, along its advantages (:func:`update_check_failures`)."""
    assert steps, "no training step logged"
    failures = update_check_failures(metrics, steps)
    assert not failures, failures


def command(experiment: str, out: Path, *overrides: str) -> list[str]:
    """A CI row's command: the row's own settings, the e2e step budget, the update check on."""
    return recipe_command(experiment, out, "sspo.update_check=true", *overrides, steps=STEPS, save_freq=SAVE_FREQ)


def actor_classes(dashboard: str) -> Counter:
    """Class name -> number of actors the cluster has run, dead ones included (Ray's state API)."""
    rows = rest(dashboard, "/api/v0/actors?limit=10000&detail=false")["data"]["result"]["result"]
    return Counter(row["class_name"] for row in rows)


def run_env(ray_head, tiny_assets: Path) -> dict[str, str]:
    return {
        **ray_head.env,
        "RAY_ADDRESS": ray_head.gcs,
        "SSPO_TINY_DIR": str(tiny_assets),
        "PYTHONUNBUFFERED": "1",
    }


# ---------------------------------------------------------------- the recipe's data and dry runs

BENCHMARKS = ["aime24", "amc", "math500", "minerva", "olympiadbench"]
_PREPARED: dict[Path, Path] = {}


def recipe_data_dir(tmp_path_factory, shared_data: Path) -> Path:
    """verl parquet for the dry runs, written once per session by the project's sspo.tools.data from ../shared/data.

    The real training set (MATH level 3-5) is not offline: MATH500 stands in for it as train.parquet
    (same schema, and its 500 rows cover the default train_batch_size of 128). Read-only for tests.
    """
    from sspo.tools.data import prepare

    if shared_data in _PREPARED:
        return _PREPARED[shared_data]
    out_dir = tmp_path_factory.mktemp("recipe_data")
    prepare(
        out_dir,
        train="math",
        benchmarks=BENCHMARKS,
        local_dir=shared_data,
        local_files={"math": shared_data / "benchmarks" / "oat" / "math500.jsonl"},
        remove_overlaps=False,
        progress=False,
    )
    _PREPARED[shared_data] = out_dir
    return out_dir


def check_lines(out: str) -> dict[str, str]:
    """name -> status of each printed pre-flight check line, e.g. {'data files': 'ok'}."""
    return {m[1]: m[0] for m in re.findall(r"^\[(ok|fail|skip)\s*\] ([^:]+):", out, flags=re.M)}


# ---------------------------------------------------------------- verl's config and batches

#: Overrides that make verl's default ``ppo_trainer`` actor runnable on CPU. Everything else keeps
#: verl's defaults (loss_agg_mode, clip ratios, optimizer, ...).
ACTOR_OVERRIDES: tuple[str, ...] = (
    "trainer.device=cpu",
    "trainer.n_gpus_per_node=1",
    "actor_rollout_ref.actor.strategy=fsdp2",
    # eager attention: flash-attn is GPU-only
    "+actor_rollout_ref.model.override_config.attn_implementation=eager",
    # fp32 compute: bf16 autocast on CPU is slow and makes tiny-model tests noisy
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.reduce_dtype=fp32",
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.buffer_dtype=fp32",
    "actor_rollout_ref.actor.use_torch_compile=false",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
    "actor_rollout_ref.rollout.n=1",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.actor.optim.lr=1e-3",
)


def verl_config_dir() -> str:
    """Folder of verl's Hydra configs (``ppo_trainer.yaml`` etc.) in the installed verl."""
    import verl

    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def compose_ppo_config(overrides: Sequence[str] = ()) -> Any:
    """verl's real ``ppo_trainer`` config composed with Hydra's compose API plus ``overrides``.

    Overrides use Hydra's command-line syntax (``key=value``, ``+key=value``), exactly as a user
    would pass them to ``python -m verl.trainer.main_ppo``.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def make_actor_batch(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    advantages: Sequence[float] | Sequence[Sequence[float]],
    old_log_probs: Sequence[Sequence[float]] | None = None,
    entropy: Sequence[Sequence[float]] | None = None,
    response_masks: Sequence[Sequence[int]] | None = None,
    temperature: float = 1.0,
) -> Any:
    """A batch in the layout verl's v1 trainer hands to ``update_actor``/``compute_log_prob``.

    verl builds it per sample in ``AgentLoopWorkerTQ`` (no padding: jagged nested tensors for
    ``prompts``, ``responses``, ``response_mask``, ``loss_mask``, ``input_ids``, ``position_ids``)
    and adds ``old_log_probs``/``entropy`` (``_compute_old_log_prob``) and ``advantages``
    (``_compute_advantage``) as nested tensors. verl has no public helper for this outside its
    TransferQueue path, hence this one.

    Args:
        prompts, responses: token ids per sample (ragged).
        advantages: one scalar per sample (broadcast over its response, as GRPO does) or per token.
        old_log_probs, entropy: per-token values per sample; omit them and call
            :meth:`CPUActor.compute_old_log_prob` to have the actor compute them, as the trainer does.
        response_masks: per-token 0/1 (default all ones).
        temperature: sampling temperature (verl divides logits by it).
    """
    from verl.utils import tensordict_utils as tu

    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses differ in length: {len(prompts)} vs {len(responses)}")
    if any(len(p) == 0 for p in prompts) or any(len(r) == 0 for r in responses):
        raise ValueError("every prompt and every response needs at least one token")

    def nested(rows: Sequence[Any], dtype: torch.dtype) -> torch.Tensor:
        return torch.nested.as_nested_tensor(
            [torch.as_tensor(r, dtype=dtype) for r in rows], layout=torch.jagged
        )

    lengths = [len(r) for r in responses]
    masks = response_masks if response_masks is not None else [[1] * n for n in lengths]
    per_token_adv = [
        [float(a)] * n if torch.as_tensor(a).dim() == 0 else torch.as_tensor(a, dtype=torch.float32).tolist()
        for a, n in zip(advantages, lengths, strict=True)
    ]
    input_ids = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    fields: dict[str, Any] = {
        "prompts": nested(prompts, torch.long),
        "responses": nested(responses, torch.long),
        "response_mask": nested(masks, torch.long),
        "loss_mask": nested(masks, torch.long),
        "input_ids": nested(input_ids, torch.long),
        "position_ids": nested([list(range(len(ids))) for ids in input_ids], torch.long),
        "advantages": nested(per_token_adv, torch.float32),
    }
    if old_log_probs is not None:
        fields["old_log_probs"] = nested(old_log_probs, torch.float32)
    non_tensor: dict[str, Any] = {"temperature": temperature}
    if entropy is not None:
        fields["entropy"] = nested(entropy, torch.float32)
        # what SSPO's trainer adds before the update: H_ref over the whole (here: this) batch
        from sspo.loss import entropy_reference
        from sspo.verl_plugin.actor_loss import ENTROPY_REF_KEY

        padded = tu.get_tensordict({"e": fields["entropy"], "m": fields["response_mask"]}).to_padded_tensor()
        non_tensor[ENTROPY_REF_KEY] = float(entropy_reference(padded["e"], padded["m"]))
    return tu.get_tensordict(fields, non_tensor_dict=non_tensor)


# ---------------------------------------------------------------- the recipe's config tree and dry-run output
# (shared by test_recipe.py, test_algo_groups.py and test_baseline_runs.py; no test module imports another)

RECIPE_CONFIG = REPO / "recipe" / "config"
#: every table row, GPU and CPU (recipe/config/experiment/*.yaml)
ALL_EXPERIMENTS = sorted(p.stem for p in (RECIPE_CONFIG / "experiment").glob("*.yaml"))


def printed_config(out: str) -> dict:
    """The YAML a dry run (``sspo.launch.cli --dry-run``) printed between its two headers, parsed back."""
    import yaml

    from sspo.launch import cli

    body = out.split(cli.RESOLVED_HEADER, 1)[1].split(cli.CHECKS_HEADER, 1)[0]
    return yaml.safe_load(body)


# ---------------------------------------------------------------- the benchmark scripts

def load_benchmark(name: str) -> Any:
    """``benchmarks/<name>.py`` imported as a module (the scripts are not a package), for testing their parts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
