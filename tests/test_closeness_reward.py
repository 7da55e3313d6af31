"""sspo.reward.closeness: exact answers score 1, numbers score by closeness (at most PARTIAL), the rest 0."""

from __future__ import annotations

import pytest

from sspo.reward.closeness import PARTIAL, compute_score, last_number


def test_last_number_takes_the_last_one_without_separators():
    assert last_number("48/2 = 24 clips, so 48 + 24 = 1,072.") == "1072"
    assert last_number("I owe -3.5 dollars") == "-3.5"
    assert last_number("no digits here") is None


@pytest.mark.parametrize(
    "response, pred",
    [
        ("So she sold 72 clips.", "72"),  # the last number, its full stop dropped
        ("The answer is \\boxed{72}.", "72"),
        ("Total: 72.0", "72.0"),  # as written: the exact check decides 72.0 == 72
        ("\\boxed{72} but then I wrote 10", "72"),  # a boxed answer wins over later numbers
    ],
)
def test_right_answer_scores_one(response, pred):
    assert compute_score("gsm8k", response, "72") == {"score": 1.0, "acc": True, "pred": pred}


def test_wrong_numbers_score_by_relative_closeness():
    near, far, negative = (compute_score("gsm8k", f"It is {x}.", "100") for x in ("90", "150", "-300"))
    assert near["score"] == pytest.approx(PARTIAL * 0.9) and not near["acc"]
    assert far["score"] == pytest.approx(PARTIAL * 0.5)
    assert negative["score"] == 0.0  # more than |gold| away: no credit
    assert compute_score("gsm8k", "It is 3.", "0")["score"] == 0.0  # |gold| < 1: distance over 1


def test_boxed_answer_wins_over_later_numbers_and_no_number_scores_zero():
    assert compute_score("gsm8k", "\\boxed{50} (then 100)", "100")["score"] == pytest.approx(PARTIAL * 0.5)
    assert compute_score("gsm8k", "I do not know.", "100") == {"score": 0.0, "acc": False, "pred": ""}


def test_group_rewards_vary_where_the_exact_reward_is_flat():
    """The reason for this reward: wrong answers of a group still get different scores."""
    from sspo.reward import compute_score as exact

    responses = ["It is 70.", "It is 40.", "It is 7.", "I give up."]
    assert {exact("gsm8k", r, "72")["score"] for r in responses} == {0.0}
    assert len({compute_score("gsm8k", r, "72")["score"] for r in responses}) == 4
