"""Verifiable math reward for verl: boxed answer, strict grading rules, hard-timed math-verify.

Use it as verl's custom reward function::

    reward.custom_reward_function.path=pkg://sspo.reward
    reward.custom_reward_function.name=compute_score             # the strict training reward
    +reward.custom_reward_function.reward_kwargs.timeout=5.0     # optional, seconds
    +reward.custom_reward_function.reward_kwargs.rules={units:false}   # optional: turn one rule off

Two grading policies share one code path (``sspo.reward.grading``): ``compute_score`` grades with the strict
``training`` policy (one value offered, no boxes hidden in code/quotes/comments, no invisible boxes,
units/percent/degrees checked, math-verify's "equal" guarded); ``compute_score_evaluation`` (or
``policy="evaluation"``) is the standard paper-table grader (last ``\\boxed{}``, normalised match,
math-verify), which ``sspo.tools.evaluation`` uses so our tables stay comparable with published ones.

How a response is scored:

1. the answer is the content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``); none, an empty box, or a
   box left open (a response cut at the length limit) -> 0;
2. the answer and every gold (``ground_truth`` may be a string, a number or a list of alternatives;
   ``extra_info["answer_alternatives"]`` adds more) are compared as canonical strings and exact numbers
   (``0.5`` = ``\\frac{1}{2}`` = ``2/4``, ``1e+20`` = ``10^{20}``) in-process, in microseconds;
3. otherwise math-verify decides, in a worker process (``sspo.reward.math_verify_pool``): pathological answers
   are screened out first, every request gets a worker of its own (a slow neighbour never delays it), and
   the caller waits at most ``timeout`` seconds (default 5, the whole call); a worker that overruns is
   killed and the response scores 0.

A (golds, answer) pair's math-verify verdict is memoised (GRPO repeats answers); so is an overrun, as 0.
``extra_info["truncated"]`` or ``finish_reason == "length"`` forces 0 (verl hands the reward the text only:
a response cut after an earlier, closed box is otherwise scored on that box).

``compute_score`` never raises on any response or gold (math-verify's ``BaseException``-derived
``TimeoutException`` included); only a bad ``policy``/``rules`` argument (configuration) raises ValueError.
This module imports only the standard library at import time.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sspo.reward import math_verify_pool as _mv
from sspo.reward.grading import MAX_GOLD_CHARS, POLICIES, GradingPolicy, gold_answers, grade
from sspo.reward.math_verify_pool import DEFAULT_TIMEOUT_S, screen

if TYPE_CHECKING:
    from sspo.reward.question import Request  # imported at the first question (fast start)

logger = logging.getLogger(__name__)

_DECIMAL_RE = re.compile(r"\d\.\d")
_verdicts: dict[tuple[tuple[str, ...], str, bool, bool], bool] = {}
_VERDICTS_MAX = 65536
_in_flight: dict[tuple[tuple[str, ...], str, bool, bool], threading.Event] = {}
_in_flight_lock = threading.Lock()


def math_verify_equal(
    golds: list[str], pred: str, guard: bool = True, timeout: float = DEFAULT_TIMEOUT_S, exact: bool = False
) -> bool:
    """math-verify's (guarded) verdict for ``pred`` against any of ``golds``: screened, memoised, bounded.

    ``exact``: numbers are compared to 12 decimals, not math-verify's default 6 (``1.41421356`` is not
    ``\\sqrt{2}``).
    """
    reason = screen(pred, golds)
    if reason is not None:
        logger.debug("answer screened out before math-verify (%s): scoring 0; pred=%r", reason, pred[:80])
        return False
    golds = [g for g in golds if len(g) <= _mv.MAX_VERIFY_CHARS]
    exact = exact and "." in pred and bool(_DECIMAL_RE.search(pred))  # rounding only matters for decimals
    key = (tuple(golds), pred, guard, exact)
    hit = _verdicts.get(key)
    if hit is not None:
        return hit
    with _in_flight_lock:  # the same pair already being verified (GRPO repeats answers): wait for it
        first = key not in _in_flight
        done = _in_flight.setdefault(key, threading.Event())
    deadline = time.monotonic() + timeout  # the whole call, the wait for another caller's verdict included
    if not first:
        done.wait(timeout)
        hit = _verdicts.get(key)
        if hit is not None:
            return hit
        if time.monotonic() >= deadline:
            return False  # not remembered: the other caller found no worker in time either
    try:
        # ``exact`` only when set: the four-argument form stays what it was (tests replace ``ask``)
        args = (list(golds), pred, guard, max(0.0, deadline - time.monotonic()))
        verdict, overran = _mv.ask(*args, exact=True) if exact else _mv.ask(*args)
        # An overrun is remembered as False, so a pathological answer costs the bound once, not once per
        # sample; a deadline passed while waiting for a worker is not the answer's fault: not remembered.
        if verdict is not None or overran:
            if len(_verdicts) >= _VERDICTS_MAX:
                _verdicts.clear()
            _verdicts[key] = bool(verdict)
    finally:
        if first:
            with _in_flight_lock:
                _in_flight.pop(key, None)
            done.set()
    return bool(verdict)


def resolve_policy(
    policy: str | GradingPolicy = "training", rules: Mapping[str, bool] | None = None
) -> GradingPolicy:
    """A policy by name (``training``/``evaluation``) or as given, with ``rules`` overriding its fields."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"reward policy {policy!r}: choose one of {sorted(POLICIES)}")
        policy = POLICIES[policy]
    if not isinstance(policy, GradingPolicy):
        raise ValueError(f"reward policy {policy!r}: pass 'training', 'evaluation' or a GradingPolicy")
    if rules:
        known = [f.name for f in dataclasses.fields(GradingPolicy)]
        bad = [k for k in rules if k not in known]
        if bad or not all(isinstance(v, bool) for v in rules.values()):
            raise ValueError(f"reward rules {dict(rules)}: expected booleans for some of {known}")
        policy = dataclasses.replace(policy, **dict(rules))
    return policy


# --------------------------------------------------------------------------------------------------
# verl entry points
# --------------------------------------------------------------------------------------------------
def is_equivalent(
    golds: list[str], pred: str, timeout: float = DEFAULT_TIMEOUT_S, policy: str | GradingPolicy = "training"
) -> bool:
    """Whether the boxed answer ``pred`` matches any of ``golds`` under ``policy``."""
    return grade("\\boxed{" + pred + "}", golds, resolve_policy(policy), _bounded_verifier(timeout)).correct


def _bounded_verifier(timeout: float):
    """A ``grading.Verifier`` whose calls together take at most ``timeout`` seconds from now."""
    deadline = time.monotonic() + timeout

    def verify(golds: list[str], pred: str, guard: bool, exact: bool = False) -> bool:
        left = deadline - time.monotonic()
        return left > 0 and math_verify_equal(golds, pred, guard, left, exact)

    return verify


_reported_sources: set[str] = set()


def _report_missing_gold(data_source: Any, ground_truth: Any) -> None:
    """Warn (once per data source) that a row has no usable gold: its responses all score 0."""
    source = str(data_source)
    if source in _reported_sources:
        return
    _reported_sources.add(source)
    shown = repr(ground_truth)
    logger.warning(
        "data_source %r: a row's ground_truth has no usable answer (%s%s): its responses all score 0. "
        "Check reward_model.ground_truth in the data (None, empty, or over %d characters); "
        "python -m sspo.tools.data prepares it. Reported once per data source.",
        source,
        shown[:80],
        "..." if len(shown) > 80 else "",
        MAX_GOLD_CHARS,
    )


_reported_inputs: set[str] = set()


def _report_input_once(kind: str, message: str) -> None:
    """Warn once per kind of bad input (a training step scores thousands of responses)."""
    if kind not in _reported_inputs:
        _reported_inputs.add(kind)
        logger.warning("%s (reported once)", message)


def as_text(response: Any) -> str | None:
    """The response as text: a ``str``; ``bytes``/``bytearray`` decoded as UTF-8 (verl passes text; a custom
    caller may pass the raw bytes); None (scored 0, reported once) for undecodable bytes or another type."""
    if isinstance(response, str):
        return response
    if isinstance(response, bytes | bytearray):
        try:
            return bytes(response).decode("utf-8")
        except UnicodeDecodeError as e:
            _report_input_once(
                "bytes", f"a response of {len(response)} bytes is not UTF-8 ({e}): scoring 0; decode it first"
            )
            return None
    _report_input_once(
        type(response).__name__,
        f"a response of type {type(response).__name__} is not text: scoring 0; pass solution_str as str",
    )
    return None


def question_request(info: Mapping[str, Any]) -> Request | None:
    """What the row's question asks (``extra_info["problem"]``, or ``"question"``); None without one."""
    question = info.get("problem")
    if not isinstance(question, str):
        question = info.get("question")
    if not isinstance(question, str):
        return None
    from sspo.reward.question import read_request

    return read_request(question) or None


#: the most a caller may allow one response (a reward call that waits longer stalls a training step)
MAX_TIMEOUT_S = 600.0


def resolve_timeout(timeout: Any) -> float:
    """``timeout`` in seconds (None: the default), or ValueError naming the value: a configuration error, raised
    before any sample is scored, not a 0 for every sample."""
    if timeout is None:
        return DEFAULT_TIMEOUT_S
    value = timeout if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else None
    if value is None or not 0 < value <= MAX_TIMEOUT_S:
        raise ValueError(
            f"reward timeout={timeout!r}: need seconds in (0, {MAX_TIMEOUT_S:g}] "
            "(reward.custom_reward_function.reward_kwargs.timeout), or leave it unset for the default"
        )
    return float(value)


def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    timeout: float | None = None,
    policy: str | GradingPolicy = "training",
    rules: Mapping[str, bool] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl ``custom_reward_function``: ``{"score": 1.0|0.0, "acc": bool, "pred": str}``; never raises on data.

    Args:
        data_source: the row's ``data_source`` (unused: every source is scored as math).
        solution_str: the decoded response.
        ground_truth: the gold answer: a string, a number, or a list of alternative answers.
        extra_info: the row's ``extra_info``; ``answer_alternatives`` (list of str) adds gold forms,
            ``truncated=True`` (or ``finish_reason == "length"``) forces 0, and ``problem`` (the question, as
            ``sspo.tools.data`` writes it) lets the training policy check the asked unit, form and variables
            (``sspo.reward.question``); without it the score is what it was.
        timeout: seconds for the whole call (default ``SSPO_REWARD_TIMEOUT`` or 5.0); past it -> 0.
        policy: ``"training"`` (strict, the default) or ``"evaluation"`` (the standard grader), or a
            ``GradingPolicy``; a bad value raises ValueError.
        rules: ``GradingPolicy`` fields to override, e.g. ``{"units": False}``; a bad name raises ValueError.
        **kwargs: whatever else verl passes (e.g. ``reward_router_address``): ignored.
    """
    chosen = resolve_policy(policy, rules)
    t = resolve_timeout(timeout)
    pred = ""
    try:
        info = extra_info if isinstance(extra_info, dict) else {}
        if info.get("truncated") is True or info.get("finish_reason") == "length":
            return {"score": 0.0, "acc": False, "pred": ""}
        text = as_text(solution_str)
        if text is None:
            return {"score": 0.0, "acc": False, "pred": ""}
        golds = gold_answers(ground_truth)
        for alt in gold_answers(info.get("answer_alternatives")):
            if alt not in golds:
                golds.append(alt)
        if not golds:
            _report_missing_gold(data_source, ground_truth)
        request = question_request(info) if chosen.read_question else None
        verdict = grade(text, golds, chosen, _bounded_verifier(t), request)
        pred = verdict.pred
        return {"score": 1.0 if verdict.correct else 0.0, "acc": verdict.correct, "pred": pred}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001  a reward must never kill the training step
        logger.warning("compute_score failed (%s: %s): scoring 0", type(e).__name__, e)
        return {"score": 0.0, "acc": False, "pred": pred if isinstance(pred, str) else ""}


def compute_score_evaluation(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``compute_score`` with the standard evaluation policy (last box, math-verify), for paper-style tables."""
    kwargs.pop("policy", None)
    return compute_score(
        data_source, solution_str, ground_truth, extra_info, timeout, policy="evaluation", **kwargs
    )
