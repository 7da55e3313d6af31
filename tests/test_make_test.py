"""`make test`'s verdict over its two pytest passes (not slow, then slow), with a fake pytest in a fake .venv.

A pass that collects nothing (pytest's exit 5: `make test PYTEST_ARGS=<a file without slow tests>`) is fine when the
other pass ran tests; the command fails when no pass ran a test (CI's guarantee), or when a pass failed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

FAKE_PYTEST = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_PYTEST_LOG"
case "$*" in *"not slow"*) exit "$FAKE_RC_FAST";; *) exit "$FAKE_RC_SLOW";; esac
"""
FAST = "-m not slow -n auto tests/test_x.py"  # the passes as the fake pytest sees them (PYTEST_ARGS last)
SLOW = "-m slow and not extra tests/test_x.py"
EXTRA = "-m extra tests/test_reward_control_cpu.py tests/test_layouts_cpu.py tests/test_diagnose_cpu.py tests/test_x.py"
NO_TEST = "pytest collected no tests: failing"


def _fake_venv(root: Path) -> Path:
    """A .venv whose install target is up to date (so make installs nothing) and whose pytest is FAKE_PYTEST."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    for name, text in (
        ("pytest", FAKE_PYTEST),
        ("python", "#!/bin/sh\necho 'no install here' >&2\nexit 99\n"),
    ):
        (venv / "bin" / name).write_text(text)
        (venv / "bin" / name).chmod(0o755)
    marker = venv / ".installed"
    marker.write_text("")
    prerequisites = ("pyproject.toml", "recipe/cpu/vllm-dist/pyproject.toml", "recipe/cpu/install.sh")
    newest = max(os.path.getmtime(REPO / p) for p in prerequisites)
    os.utime(marker, (newest + 60, newest + 60))  # newer than every prerequisite of $(VENV)/.installed
    return venv


def _make(tmp_path: Path, target: str, rc_fast: int, rc_slow: int) -> tuple[int, str, list[str]]:
    """Run ``make <target>`` on the repository's Makefile with the fake pytest: (exit code, output, pytest calls)."""
    log = tmp_path / "calls.log"
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    }
    env.update(FAKE_PYTEST_LOG=str(log), FAKE_RC_FAST=str(rc_fast), FAKE_RC_SLOW=str(rc_slow))
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), target, f"VENV={_fake_venv(tmp_path)}",
         "PYTEST_ARGS=tests/test_x.py"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, done.stdout + done.stderr, calls


@pytest.mark.parametrize(
    "rc_fast, rc_slow, passes",
    [
        (0, 0, True),
        (0, 5, True),  # PYTEST_ARGS names a file without slow tests
        (5, 0, True),  # ... or a file with slow tests only
        (1, 0, False),  # a failing test
        (0, 1, False),
        (0, 2, False),  # interrupted
        (0, 4, False),  # a usage error is no "nothing collected"
    ],
)
def test_make_test_passes_when_a_pass_ran_tests_and_none_failed(tmp_path, rc_fast, rc_slow, passes):
    rc, output, calls = _make(tmp_path, "test", rc_fast, rc_slow)
    assert (rc == 0) == passes, output
    assert NO_TEST not in output
    # both passes, in order, with PYTEST_ARGS; a failing fast pass stops before the ~20-minute slow one
    assert calls == ([FAST] if rc_fast == 1 else [FAST, SLOW]), output


def test_make_test_fails_when_neither_pass_ran_a_test(tmp_path):
    rc, output, calls = _make(tmp_path, "test", 5, 5)
    assert rc != 0 and NO_TEST in output, output
    assert calls == [FAST, SLOW]


@pytest.mark.parametrize("target, call", [("test-fast", FAST), ("test-extra", EXTRA)])
@pytest.mark.parametrize("rc, passes", [(0, True), (5, False), (1, False)])
def test_one_pass_targets_fail_when_their_pass_ran_no_test(tmp_path, target, call, rc, passes):
    code, output, calls = _make(tmp_path, target, rc, rc)
    assert (code == 0) == passes, output
    assert (NO_TEST in output) == (rc == 5), output
    assert calls == [call]
