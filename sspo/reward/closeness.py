"""A graded numeric reward for small models on GSM8K: full credit for the right answer, partial for a close one.

    reward.custom_reward_function.path=pkg://sspo.reward.closeness
    reward.custom_reward_function.name=compute_score

Why: a 135M model (the real-LM diagnostic, ``experiment=diagnose_cpu``) almost never writes ``\\boxed{}``
and rarely gets a GSM8K answer right, so :mod:`sspo.reward`'s 0/1 score is 0 for every sample of a group:
zero advantage, nothing clipped, nothing measured. Here the answer is the last ``\\boxed{}`` or, if there is
none, the last number in the response (lm-eval-harness's "flexible extract" for GSM8K), and

    score = 1                                          if the answer equals the gold (sspo.reward's check)
          = PARTIAL * max(0, 1 - |pred - gold| / max(|gold|, 1))   if it is a number (relative closeness)
          = 0                                          otherwise (no number).

``acc`` stays the exact 0/1 answer check, so the logged accuracy is not inflated by partial credit.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from sspo.reward.grading import gold_answers, last_boxed_answer
from sspo.reward.score import compute_score as exact_score

__all__ = ["PARTIAL", "last_number", "compute_score"]

#: the most a wrong answer can score (a right one scores 1)
PARTIAL = 0.5
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> str | None:
    """The last number in ``text`` (thousands separators removed, trailing ``.`` dropped), or None."""
    found = _NUMBER.findall(text or "")
    return found[-1].replace(",", "") if found else None


def _decimal(text: str | None) -> Decimal | None:
    try:
        value = Decimal(str(text).replace(",", "").strip().lstrip("$"))
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl ``custom_reward_function``: ``{"score": float in [0, 1], "acc": bool, "pred": str}``; never raises.

    ``kwargs`` (e.g. ``timeout``) go to :func:`sspo.reward.compute_score`, which decides exact equality.
    """
    info = extra_info if isinstance(extra_info, dict) else {}
    if info.get("truncated") is True or info.get("finish_reason") == "length":
        return {"score": 0.0, "acc": False, "pred": ""}  # cut at the length limit: no credit, as the exact reward
    boxed = last_boxed_answer(solution_str)
    pred = boxed if boxed is not None else last_number(solution_str)
    if pred is None:
        return {"score": 0.0, "acc": False, "pred": ""}
    exact = exact_score(data_source, f"\\boxed{{{pred}}}", ground_truth, extra_info, **kwargs)
    if exact["acc"]:
        return {"score": 1.0, "acc": True, "pred": pred}
    golds = gold_answers(ground_truth) + gold_answers(info.get("answer_alternatives"))  # as the exact reward reads them
    p = _decimal(pred)
    closeness = [
        max(Decimal(0), 1 - abs(p - g) / max(abs(g), Decimal(1)))
        for g in map(_decimal, golds)
        if g is not None and p is not None
    ]
    return {"score": PARTIAL * float(max(closeness, default=0)), "acc": False, "pred": pred}
