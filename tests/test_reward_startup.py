"""Fast start: the reward, data and evaluation entry points never import verl/torch, while ``import sspo``
still registers the loss as soon as verl's ``core_algos`` is imported (before or after ``sspo``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    full_env.pop("VERL_USE_EXTERNAL_MODULES", None)  # a module list left by an earlier test would register "sspo"
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


@pytest.mark.parametrize("sspo_first", [True, False])
def test_import_sspo_registers_the_loss_in_either_order(sspo_first):
    """Entry-point plugins off (VERL_USE_EXTERNAL_PLUGINS=none): only ``import sspo`` can register it."""
    lines = ["import sspo", "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R"]
    code = "\n".join(lines if sspo_first else lines[::-1]) + "\nprint('sspo' in R)"
    proc = _run(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "True"


def test_verl_alone_does_not_register_it():
    """The check above can fail: without ``import sspo`` (and no plugin) the registry lacks "sspo"."""
    proc = _run(
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R\nprint('sspo' in R)",
        VERL_USE_EXTERNAL_PLUGINS="none",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_submodules_are_attributes_and_unknown_names_raise_attribute_error():
    import sspo

    assert sspo.reward.compute_score is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sspo.nope  # noqa: B018
