"""The control of the reward-rise check: the GRPO row with lr 0 (the policy never changes) must FAIL it.

``make test-extra`` (marker ``extra``; left out of ``make test`` for CI's time budget). Same command, steps and
samples as ``test_main_ppo_cpu.py``'s rows, plus ``actor_rollout_ref.actor.optim.lr=0``.
"""

from __future__ import annotations

import pytest
from helpers import (
    MIN_POOLED_Z,
    RUN_TIMEOUT_S,
    SAMPLES_PER_PASS,
    STEPS,
    STEPS_PER_PASS,
    assert_finished,
    command,
    read_metrics,
    reward_rise,
    run_bounded,
    run_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.extra]


def test_lr_zero_fails_the_reward_rise_check(ray_head, tiny_assets, tmp_path):
    out = tmp_path / "grpo_lr0"
    result = run_bounded(
        command("grpo_cpu", out, "actor_rollout_ref.actor.optim.lr=0.0"),
        log=tmp_path / "run.log",
        timeout=RUN_TIMEOUT_S,
        env=run_env(ray_head, tiny_assets),
    )
    assert_finished(result, "grpo_cpu with lr 0")
    scores = {s: m["critic/score/mean"] for s, m in read_metrics(out / "metrics.jsonl").items() if "critic/score/mean" in m}
    assert sorted(scores) == list(range(1, STEPS + 1))
    gain, z = reward_rise(scores, steps_per_pass=STEPS_PER_PASS, samples_per_pass=SAMPLES_PER_PASS)
    print(f"lr 0: gain {gain:.3f}, z {z:.2f}")
    # the check of test_training_reward_rises_over_the_three_rows, on this row alone (three lr-0 rows pool
    # to z ~ N(0, <= 1) just the same)
    assert z < MIN_POOLED_Z, (gain, z)
