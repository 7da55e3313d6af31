"""The verifiable math reward: imports neither torch nor verl (a test enforces it).

``pkg://sspo.reward`` with ``name=compute_score`` is the training reward, ``compute_score_evaluation`` the
paper-table grader; ``pkg://sspo.reward.closeness`` the graded reward of the real-LM diagnostic.

* :mod:`sspo.reward.score`: ``compute_score`` -- boxed answer, in-process exact check, memoised verdicts;
* :mod:`sspo.reward.grading`: the grading rules and the two policies (``training``, ``evaluation``);
* :mod:`sspo.reward.prose`: the answer an unboxed response states (the evaluation policy reads it);
* :mod:`sspo.reward.math_verify_pool`: math-verify in killable worker processes, hard time limit;
* :mod:`sspo.reward.closeness`: partial credit for close numbers (small models on GSM8K).
"""

from sspo.reward.grading import (
    EVALUATION,
    POLICIES,
    TRAINING,
    GradingPolicy,
    canonical,
    gold_answers,
    grade,
    last_boxed_answer,
)
from sspo.reward.math_verify_pool import DEFAULT_TIMEOUT_S, MAX_WORKERS, WARM_WORKERS, shutdown, warmup
from sspo.reward.score import compute_score, compute_score_evaluation, is_equivalent, math_verify_equal

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "EVALUATION",
    "MAX_WORKERS",
    "POLICIES",
    "TRAINING",
    "WARM_WORKERS",
    "GradingPolicy",
    "canonical",
    "compute_score",
    "compute_score_evaluation",
    "gold_answers",
    "grade",
    "is_equivalent",
    "last_boxed_answer",
    "math_verify_equal",
    "shutdown",
    "warmup",
]
