"""The control of CI's learning check: the GRPO row with lr 0 (the policy never changes) must FAIL it.

CI asserts that every row's updates moved the policy, along its advantages
(``helpers.assert_update_along_advantages``, from ``sspo.update_check``). Here the same row and step budget with
``actor_rollout_ref.actor.optim.lr=0``: every step and the run's mean alignment must fail it. ``make test-extra`` (marker ``extra``;
left out of ``make test`` for CI's time budget).
"""

from __future__ import annotations

import pytest
from helpers import (
    RUN_TIMEOUT_S,
    STEPS,
    assert_finished,
    command,
    read_metrics,
    run_bounded,
    run_env,
    update_check_failures,
)

pytestmark = [pytest.mark.slow, pytest.mark.extra]


def test_lr_zero_fails_the_update_check(ray_head, tiny_assets, tmp_path):
    out = tmp_path / "grpo_lr0"
    result = run_bounded(
        command("grpo_cpu", out, "actor_rollout_ref.actor.optim.lr=0.0"),
        log=tmp_path / "run.log",
        timeout=RUN_TIMEOUT_S,
        env=run_env(ray_head, tiny_assets),
    )
    assert_finished(result, "grpo_cpu with lr 0")
    metrics = read_metrics(out / "metrics.jsonl")
    steps = sorted(s for s, m in metrics.items() if "critic/score/mean" in m)
    assert steps == list(range(1, STEPS + 1))
    print({s: {k: metrics[s][k] for k in metrics[s] if k.startswith("actor/update/")} for s in steps})
    # every step unmoved, and no mean alignment above 0
    assert len(update_check_failures(metrics, steps)) == STEPS + 1
