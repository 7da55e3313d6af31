"""`ray job submit` path, against a REAL local Ray head (CPU, the session's ``ray_head`` fixture):
recipe/scripts/submit.sh ships the checkout as working_dir, the job's driver runs the CLI dry run,
which checks GPUs against the cluster. (A real CPU training job: tests/test_main_ppo_cpu.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import closed_port, recipe_data_dir, wait_for_job

from sspo.launch import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_submit_dry_run_job_to_a_local_ray_head(ray_head, tmp_path_factory, shared_data, tmp_path):
    address, env = ray_head.dashboard, ray_head.env
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
    assert "[ok  ] sspo config: loss 'sspo', trainer 'sspo' -> SSPOSyncTrainer" in logs
    assert "via VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin)" in logs  # the runtime env reached the job
    assert "[ok  ] GPUs: trainer.nnodes=1 x trainer.n_gpus_per_node=1 fit the Ray cluster at" in logs
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


@pytest.mark.parametrize(
    "address, hint",
    [("http://127.0.0.1:{closed}", "Set RAY_ADDRESS to the dashboard URL"),
     ("127.0.0.1:6379", "looks like the `ray start` address")],
)  # fmt: skip
def test_submit_to_an_unreachable_cluster_says_so_in_one_line(address, hint, tmp_path):
    """Not Ray's 116 lines of tracebacks: one line naming the address and the form `ray job submit` expects.

    ``{closed}``: a port this test holds closed. 6379 (the hint is about that port) may be taken on a shared
    machine: whatever answers there is no Ray dashboard, and the probe's answer is the same line.
    """
    with closed_port() as port:
        address = address.format(closed=port)
        env = {**os.environ, "RAY_ADDRESS": address, "OUTPUT_DIR": str(tmp_path)}
        result = subprocess.run(
            [str(REPO / "recipe" / "scripts" / "submit.sh"), "experiment=sspo_qwen2.5-math-1.5b"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"RAY_ADDRESS={address}" in lines[0] and hint in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_submit_checks_the_overrides_here_before_uploading(tmp_path):
    """A typo in the row is found on the submitting machine, before any upload (the address is never contacted)."""
    env = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:1", "OUTPUT_DIR": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(
        [str(REPO / "recipe" / "scripts" / "submit.sh"), "experiment=sspo_qwen2.5-math-1.5bb"],
        env=env, capture_output=True, text=True, timeout=600,  # a hang guard only: the composition imports verl
    )  # fmt: skip
    assert result.returncode == 2 and "Could not find 'experiment/sspo_qwen2.5-math-1.5bb'" in result.stderr
    assert "no Ray dashboard answers" not in result.stderr


def test_submit_runs_the_config_checks_before_uploading(tmp_path):
    """--print-key used to skip pre-flight: a bad clip range reached the cluster. Now the config checks run here
    (not the cluster's resources: the data dir does not exist on this machine and need not)."""
    env = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:1", "OUTPUT_DIR": str(tmp_path), "PYTHON": sys.executable,
           "DATA_DIR": str(tmp_path / "cluster_data")}  # fmt: skip
    result = subprocess.run(
        [str(REPO / "recipe" / "scripts" / "submit.sh"), "experiment=sspo_qwen2.5-math-1.5b",
         "actor_rollout_ref.actor.clip_ratio_low=1.5"],
        env=env, capture_output=True, text=True, timeout=600,  # a hang guard only: the composition imports verl
    )  # fmt: skip
    assert result.returncode == 2 and "clip_ratio_low=1.5 is out of range" in result.stderr
    assert "no Ray dashboard answers" not in result.stderr and "Traceback" not in result.stderr


def test_make_submit_needs_an_output_dir_the_cluster_sees():
    """`make submit` used to pass its default OUTPUT_DIR (outputs, this machine's), so submit.sh's check never fired."""
    env = {k: v for k, v in os.environ.items() if k not in ("OUTPUT_DIR", "MAKEFLAGS", "MAKELEVEL")}
    refused = subprocess.run(["make", "-n", "submit", "RAY_ADDRESS=http://h:8265"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip  (a hang guard: make -n takes ~20 s, more on a busy machine)
    assert refused.returncode == 2 and "make submit: set OUTPUT_DIR=/shared/path" in refused.stderr
    assert "submit.sh" not in refused.stdout  # nothing would run
    for how in (["OUTPUT_DIR=/shared/sspo"], []):  # on the command line, or from the environment
        run_env = env if how else {**env, "OUTPUT_DIR": "/shared/sspo"}
        ok = subprocess.run(["make", "-n", "submit", "RAY_ADDRESS=http://h:8265", *how], cwd=REPO, env=run_env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
        assert ok.returncode == 0 and "OUTPUT_DIR=/shared/sspo" in ok.stdout and "submit.sh" in ok.stdout


@pytest.mark.parametrize("setting", ["JOBS=abc", "JOBS=2.5", "JOBS=0", "JOBS=-1", "JOBS_ROW_GB=0", "JOBS_ROW_GB=x"])
def test_demo_refuses_bad_row_settings_before_building_anything(setting, tmp_path):
    """JOBS=abc used to fail after the tiny model was built, JOBS=2.5 in a bash syntax error, JOBS_ROW_GB=0
    in a division by zero. PYTHON=false: the refusal must come before any Python runs."""
    name, value = setting.split("=")
    env = {**os.environ, name: value, "PYTHON": "false", "TINY_DIR": str(tmp_path / "tiny")}
    result = subprocess.run([str(REPO / "recipe" / "scripts" / "demo_cpu.sh")], env=env, capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2 and f"demo: {setting} is not a whole number >= 1" in result.stderr
    assert f"Fix: {name}=" in result.stderr and result.stdout == "" and not (tmp_path / "tiny").exists()
