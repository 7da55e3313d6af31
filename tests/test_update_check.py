"""The update-direction check (sspo.update_check) on hand-computed batches: the figures CI's runs assert on."""

from __future__ import annotations

import pytest
import torch

from sspo.update_check import update_direction

MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADV = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, -1.1, -3.0]])
# the update's log-ratio per token: response 0 +0.1, +0.2, 0; response 1 -0.3, +0.1 and padding (ignored)
MOVED = torch.tensor([[0.1, 0.2, 0.0], [-0.3, 0.1, 99.0]])


def test_an_update_along_the_advantages():
    check = update_direction(OLD + MOVED, OLD, ADV, MASK)
    # gain (0.1 + 0.2 + 0 + 0.3 - 0.1) / 5 = 0.1; mean |d| = 0.7 / 5 = 0.14
    assert check["surrogate_gain"] == pytest.approx(0.1)
    assert check["mean_abs_log_ratio"] == pytest.approx(0.14)
    # cosine: 0.5 / sqrt(sum A^2 = 5 * sum d^2 = 0.01 + 0.04 + 0 + 0.09 + 0.01 = 0.15)
    assert check["alignment"] == pytest.approx(0.5 / 0.75**0.5)
    # response 0: mean d +0.1 with A > 0; response 1: mean d -0.1 with A < 0
    assert check["responses_agreeing"] == 1.0


def test_an_update_against_the_advantages_is_negative():
    check = update_direction(OLD - MOVED, OLD, ADV, MASK)
    assert check["surrogate_gain"] == pytest.approx(-0.1)
    assert check["alignment"] == pytest.approx(-(0.5 / 0.75**0.5))
    assert check["responses_agreeing"] == 0.0


def test_a_policy_that_did_not_move_reads_zero():
    check = update_direction(OLD.clone(), OLD, ADV, MASK)
    assert check == {"surrogate_gain": 0.0, "alignment": 0.0, "mean_abs_log_ratio": 0.0, "responses_agreeing": 0.0}


def test_zero_advantage_responses_do_not_count_and_bf16_inputs_are_read_in_float64():
    adv = torch.tensor([[0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
    check = update_direction((OLD + MOVED).bfloat16(), OLD.bfloat16(), adv.bfloat16(), MASK)
    # only response 1 counts: gain (0.3 - 0.1) / 5, up to bf16's rounding of the log-probs
    assert check["surrogate_gain"] == pytest.approx(0.04, abs=5e-3)
    assert check["responses_agreeing"] == 1.0


def _steps(moved: list[float], alignment: list[float]) -> dict[int, dict[str, float]]:
    return {
        s: {"actor/update/mean_abs_log_ratio": m, "actor/update/alignment": a}
        for s, (m, a) in enumerate(zip(moved, alignment, strict=True), start=1)
    }


def test_ci_check_passes_a_run_that_moved_along_its_advantages_on_average():
    from helpers import update_check_failures

    # one step's cosine below 0 is noise when the run's mean is above it
    assert update_check_failures(_steps([0.05, 0.03, 0.02], [0.12, -0.01, 0.07]), [1, 2, 3]) == []


def test_ci_check_fails_a_frozen_policy_and_a_reversed_one():
    from helpers import update_check_failures

    frozen = update_check_failures(_steps([0.0, 0.05], [0.0, 0.1]), [1, 2])
    assert frozen == ["step 1: the policy did not move (mean |log-ratio| 0)"]
    reversed_ = update_check_failures(_steps([0.05, 0.04], [-0.1, 0.02]), [1, 2])
    assert len(reversed_) == 1 and reversed_[0].startswith("the updates did not follow the advantages: mean alignment -0.04")
