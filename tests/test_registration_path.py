"""The one registration path: verl's plugin loading (the ``verl.plugins`` entry point, or
``VERL_USE_EXTERNAL_MODULES``) imports ``sspo.verl_plugin``, which registers the loss and the trainers, whatever
was imported first; ``import sspo`` registers nothing, so the reward, data and evaluation start without verl."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(ROOT))
    full_env.pop("VERL_USE_EXTERNAL_MODULES", None)  # a module list left by an earlier test would register "sspo"
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=300
    )


def test_reward_data_evaluation_import_neither_verl_nor_torch():
    proc = _run(
        "import sys, sspo.reward, sspo.tools.data, sspo.tools.evaluation\n"
        "from sspo.tools.data import build_parser as d\nfrom sspo.tools.evaluation import build_parser as e\n"
        "d().format_help(); e().format_help()\n"
        "print(sorted(m for m in ('verl', 'torch', 'ray', 'sympy') if m in sys.modules))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


CHECK = (
    "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R\n"
    "from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY as T\n"
    "print(getattr(R.get('sspo'), '__module__', None), 'sspo_colocate_async' in T)"
)


@pytest.mark.parametrize("first", ["import sspo.reward", "import sspo.verl_plugin", "import sspo.loss", "pass"])
def test_the_installed_entry_point_registers_whatever_was_imported_first(first):
    proc = _run(f"{first}\n{CHECK}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "sspo.verl_plugin.policy_loss True"


def test_verl_use_external_modules_registers_it_without_the_entry_point():
    """The route for code shipped by Ray ``working_dir`` (not installed): the environment variable."""
    proc = _run(CHECK, VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES="sspo.verl_plugin")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "sspo.verl_plugin.policy_loss True"


@pytest.mark.parametrize("first", ["pass", "import sspo, sspo.loss, sspo.reward"])
def test_without_the_plugin_nothing_is_registered(first):
    """The checks above can fail: with plugin loading off, neither verl alone nor ``import sspo`` registers it."""
    proc = _run(f"{first}\n{CHECK}", VERL_USE_EXTERNAL_PLUGINS="none")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "None False"
