"""sspo.reward: extraction, gold normalisation, equivalence, the hard time bound, the 1,560-problem bar."""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sspo.reward import canonical, compute_score, gold_answers, last_boxed_answer
from sspo.reward import math_verify_pool as mvp
from sspo.reward import score as reward

OAT = ("aime24", "amc", "math500", "minerva", "olympiadbench")
SLOW = "(x+1)^{990} - (x+2)^{990}"  # passes the screen; math-verify expands it for far longer than a bound
TEMPLATE = (
    "Let's solve this step by step.\nFirst we set up the equations and simplify them.\n"
    "After some algebra we find the value.\nTherefore, the final answer is $\\boxed{%s}$."
)


def test_last_boxed_answer_nested_last_fbox_and_truncation():
    assert last_boxed_answer(r"a \boxed{1} then \boxed{\frac{1}{2}} end") == r"\frac{1}{2}"
    assert (
        last_boxed_answer(r"x \boxed{\left( 3, \frac{\pi}{2} \right)}.") == r"\left( 3, \frac{\pi}{2} \right)"
    )
    assert last_boxed_answer(r"\fbox{7}") == "7"
    assert last_boxed_answer(r"so \boxed 5.") == "5"
    assert last_boxed_answer(r"\boxed{3} and then \boxed{\frac{1}{") is None  # cut mid-answer
    assert last_boxed_answer(r"\boxed{}") is None
    assert last_boxed_answer("no answer here") is None
    assert last_boxed_answer(None) is None  # type: ignore[arg-type]


def test_gold_answers_normalises_dataset_quirks():
    assert gold_answers("142.0") == ["142"]
    assert gold_answers(142.0) == ["142"]
    assert gold_answers(7) == ["7"]
    assert gold_answers(0.25) == ["0.25"]
    assert gold_answers("['9.6\\n']") == ["9.6"]
    assert gold_answers("[-2, 7]") == ["[-2, 7]"]  # an interval, not a list of answers
    assert gold_answers("[0,1)") == ["[0,1)"]
    assert gold_answers(["3.89e-10\n", "3.89e-10"]) == ["3.89e-10"]  # alternatives deduplicated
    assert gold_answers(["x = \\frac{e^{t}}{3}\n", "\\frac{e^{t}}{3}\n"]) == [
        "x = \\frac{e^{t}}{3}",
        "\\frac{e^{t}}{3}",
    ]
    assert gold_answers(["$\\frac{1}{2 n+2}$"]) == ["\\frac{1}{2 n+2}"]
    assert gold_answers("$69$,$84$") == ["69, 84"]
    assert gold_answers("\\boxed{5}") == ["5"]
    assert gold_answers("so the answer is $\\boxed{1.6} \\mathrm{~cm}$") == ["1.6"]
    assert gold_answers("10 \\text{ cm}") == ["10 \\text{ cm}"]  # units kept: the strict grader checks them
    assert gold_answers("\\$18.90") == ["\\$18.90"]
    assert gold_answers(None) == [] and gold_answers("") == [] and gold_answers(True) == []
    assert gold_answers(float("nan")) == []


def test_gold_answers_parses_lists_without_eval(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"[__import__('pathlib').Path({str(marker)!r}).touch()]"
    assert gold_answers(evil) == [evil]  # kept as text, never executed
    assert not marker.exists()


def test_canonical_forms():
    assert canonical(r"\dfrac12") == canonical(r"\frac{1}{2}")
    assert canonical(r"\left( 3, \frac{\pi}{2} \right)") == canonical(r"(3,\frac{\pi}{2})")
    assert canonical("1,000") == "1000"
    assert canonical(r"50\%") == "50"
    assert canonical(r"30^\circ") == canonical("30")
    assert canonical("142.0") == "142"


def test_compute_score_signature_matches_verl_call():
    # verl calls compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)
    params = inspect.signature(compute_score).parameters
    assert list(params)[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    out = compute_score(
        data_source="math500",
        solution_str=r"\boxed{4}",
        ground_truth="4",
        extra_info={"index": 0, "num_turns": 1, "rollout_reward_scores": {}},
        reward_router_address=None,
        some_future_kwarg=1,
    )
    assert out == {"score": 1.0, "acc": True, "pred": "4"}


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        (r"The answer is \boxed{\frac{1}{2}}.", "0.5", 1.0),
        (r"\boxed{\dfrac12}", r"\frac{1}{2}", 1.0),
        (r"\boxed{142}", 142.0, 1.0),  # float gold
        (r"\boxed{7}", 7, 1.0),  # int gold
        (r"\boxed{9.6}", "['9.6\n']", 1.0),  # list-string gold
        (r"\boxed{3.89 \times 10^{-10}}", ["3.89e-10\n", "3.89e-10"], 1.0),  # list gold
        (r"\boxed{(3,\pi/2)}", r"\left( 3, \frac{\pi}{2} \right)", 1.0),  # math-verify decides
        (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),
        (r"\boxed{x = 5}", "5", 1.0),
        (r"\boxed{3}", "4", 0.0),
        (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", 0.0),
        ("I think it is 4.", "4", 0.0),  # no boxed answer
        (r"so \boxed{4", "4", 0.0),  # truncated inside the box
        (r"\boxed{4}", None, 0.0),  # no gold
        (None, "4", 0.0),  # not a string
    ],
)
def test_compute_score_cases(response, gold, expected):
    # a wide timeout: the first math-verify call may start the workers (slow on a busy machine); the bound
    # itself is tested below
    out = compute_score("math", response, gold, timeout=120)
    assert set(out) == {"score", "acc", "pred"}
    assert out["score"] == expected and out["acc"] is (expected == 1.0)
    assert isinstance(out["pred"], str)


def test_truncated_flag_and_alternatives_from_extra_info():
    assert compute_score("m", r"\boxed{4}", "4", {"finish_reason": "length"})["score"] == 0.0
    assert compute_score("m", r"\boxed{4}", "4", {"truncated": True})["score"] == 0.0
    out = compute_score("m", r"\boxed{4.0}", "x", {"answer_alternatives": ["4"]})
    assert out["score"] == 1.0


def test_never_raises_even_on_base_exceptions(monkeypatch):
    class Boom(BaseException):  # math-verify's TimeoutException derives from BaseException
        pass

    def boom(*a, **k):
        raise Boom("from math-verify")

    monkeypatch.setattr(reward, "math_verify_equal", boom)
    monkeypatch.setattr(reward, "_verdicts", {})
    assert compute_score("m", r"\boxed{2\sqrt{2}}", r"\sqrt{8}") == {"score": 0.0, "acc": False, "pred": ""}


def test_hard_time_bound_from_a_non_main_thread(monkeypatch):
    """A pathological answer: the worker is killed at the bound, the call returns 0, the next call works.

    Judged by the mechanism (the pool counts the killed worker), with wide wall-clock bounds: the next call
    may wait for a new worker's start-up, which a busy machine slows."""
    assert mvp.warmup(timeout=120)  # a started worker: the 1 s bound is spent on the answer, not a start-up
    monkeypatch.setattr(reward, "_verdicts", {})  # no verdict remembered from another test
    pool = mvp.get_pool()
    before = pool.timeouts
    results = {}

    def run():  # math-verify's own signal.alarm timeouts would fail here (not the main thread)
        start = time.monotonic()
        results["slow"] = compute_score("m", r"\boxed{" + SLOW + "}", "42", timeout=1.0)
        results["slow_s"] = time.monotonic() - start
        results["next"] = compute_score(
            "m", r"\boxed{(3,\pi/2)}", r"\left( 3, \frac{\pi}{2} \right)", timeout=120
        )

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=300)
    assert not t.is_alive(), "compute_score hung"
    assert results["slow"] == {"score": 0.0, "acc": False, "pred": SLOW}
    assert pool.timeouts == before + 1  # the overrunning worker was killed and replaced
    assert results["slow_s"] < 60, results["slow_s"]  # the bound held (math-verify alone takes far longer)
    assert results["next"]["score"] == 1.0


def test_worker_that_cannot_start_degrades_to_string_match(monkeypatch, caplog):
    """E.g. math-verify missing in the worker's environment: no exception, no hang, a logged reason."""
    monkeypatch.setattr(mvp, "_pool", None)
    monkeypatch.setattr(mvp, "_start_failures_logged", 0)
    monkeypatch.setattr(reward, "_verdicts", {})  # no verdict remembered from other tests
    monkeypatch.setattr(
        mvp, "_WORKER_CMD", "import sys; sys.stderr.write('No module named math_verify'); sys.exit(3)"
    )
    with caplog.at_level("ERROR", logger="sspo.reward"):
        out = compute_score("m", r"\boxed{(3,\pi/2)}", r"\left( 3, \frac{\pi}{2} \right)", timeout=30)
    assert out["score"] == 0.0  # needed math-verify
    assert "exited at start (code 3)" in caplog.text and "No module named math_verify" in caplog.text
    assert compute_score("m", r"\boxed{\dfrac12}", r"\frac{1}{2}")["score"] == 1.0  # string match still works
    mvp.shutdown()


def test_worker_limit_reached_scores_zero_logged_and_not_remembered(monkeypatch, caplog):
    """Past the pool's limit (here 1 worker, held by another caller until the deadline) -> 0 and a warning
    naming the knob; the verdict is not memoised, so the same answer scores 1 once a worker is free."""
    pool = mvp.WorkerPool(1, limit=1)
    monkeypatch.setattr(mvp, "_pool", pool)
    monkeypatch.setattr(reward, "_verdicts", {})
    held = pool.acquire(reward.time.monotonic() + 120)  # a started worker (start-up is slow on a busy machine)
    assert held is not None
    args = ("m", r"\boxed{2\sqrt{2}}", r"\sqrt{8}")
    try:
        with caplog.at_level("WARNING", logger="sspo.reward"):
            assert compute_score(*args, timeout=0.3)["score"] == 0.0
        assert "no free math-verify worker" in caplog.text and "SSPO_REWARD_MAX_WORKERS" in caplog.text
        assert (
            compute_score("m", r"\boxed{0.5}", r"\frac{1}{2}", timeout=0.3)["score"] == 1.0
        )  # no worker needed
    finally:
        pool.release(held, healthy=True)
    assert compute_score(*args, timeout=60)["score"] == 1.0
    pool.shutdown()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SSPO_REWARD_WORKERS", "eight"),
        ("SSPO_REWARD_WORKERS", "0"),
        ("SSPO_REWARD_TIMEOUT", "-1"),
        ("SSPO_REWARD_MAX_WORKERS", "0"),
    ],
)
def test_bad_environment_value_fails_at_import_naming_it(name, value):
    """A typo in the env var fails when verl loads the reward, not as a silent 0 on every response."""
    import os
    import subprocess
    import sys

    load = (  # the pool module alone, as the math-verify worker loads it
        "import importlib.util, sys; s = importlib.util.spec_from_file_location('r', sys.argv[1]); "
        "s.loader.exec_module(importlib.util.module_from_spec(s))"
    )
    env = dict(os.environ, **{name: value})
    proc = subprocess.run([sys.executable, "-c", load, mvp.__file__], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"environment variable {name}={value!r}: expected a positive" in proc.stderr


def test_worker_pool_is_recreated_after_fork(monkeypatch):
    pool = mvp.get_pool()
    monkeypatch.setattr(mvp, "_pool", pool)  # restored afterwards: the shared pool is not orphaned
    monkeypatch.setattr(pool, "pid", -1)  # as if inherited through fork()
    assert mvp.get_pool() is not pool


def _oat_rows(shared_data):
    rows = []
    for name in OAT:
        with open(shared_data / "benchmarks" / "oat" / f"{name}.jsonl") as f:
            rows += [(name, json.loads(line)["answer"]) for line in f]
    return rows


def _as_written(raw: object) -> str:
    """The gold as a solution would box it, derived here without the code under test (not ``gold_answers``):
    a whole-number float without its ``.0``, the first of a list, math-mode dollars (not ``\\$``) and a trailing
    period dropped."""
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    text = raw[0] if isinstance(raw, list) else str(raw)
    return re.sub(r"(?<!\\)\$", "", text).strip().rstrip(".").strip()


def _as_in_the_data(raw: object) -> str:
    """The gold exactly as the data writes it (first of a list), only the outer whitespace and ``$`` removed."""
    return (raw[0] if isinstance(raw, list) else str(raw)).strip().strip("$")


@pytest.mark.parametrize(
    ("raw", "boxed", "expected"),
    [  # golds as the benchmark files hold them; the boxed answers written by hand
        (142.0, "142", 1.0),  # amc: floats
        (-4.0, "-4", 1.0),
        (142.0, "142.5", 0.0),
        (["56.0\n"], "56", 1.0),  # minerva: a list of strings with newlines
        (["3.89e-10\n", "3.89e-10"], r"3.89 \times 10^{-10}", 1.0),
        (["0.01\n", "0.02\n"], "0.02", 1.0),  # the second alternative
        (["0.01\n", "0.02\n"], "0.03", 0.0),
        (["4.4e7\n", "4.4 \\times 10^7\n"], r"4.4 \times 10^{7}", 1.0),
        (["$8$,$4$"], "8, 4", 1.0),  # olympiadbench: several answers, each in dollars
        (["$8$,$4$"], "8", 0.0),
        (["$-1$,$2$,$-2$"], "-1, 2, -2", 1.0),
        (["$\\frac{32}{9}$,$\\frac{1}{2}$"], r"\frac{32}{9}, \frac{1}{2}", 1.0),
        (["$(-6,6)$, $(2,6)$"], "(-6,6), (2,6)", 1.0),
        (["$(-\\infty, 0) \\cup\\{1\\}$."], r"(-\infty, 0) \cup \{1\}", 1.0),  # a trailing period
        ("\\frac{14}{3}", r"\frac{14}{3}", 1.0),  # math500: LaTeX strings
        ("\\frac{14}{3}", r"\frac{13}{3}", 0.0),
    ],
)
def test_benchmark_gold_forms_score_a_hand_written_answer(raw, boxed, expected):
    """Each form the benchmark files give golds in, against an answer written by hand (no gold prepared by the
    code under test)."""
    assert compute_score("m", TEMPLATE % boxed, raw, timeout=120)["score"] == expected


def _key(gold: str) -> str:
    c = canonical(gold)
    return c.split("=", 1)[1] if c.count("=") == 1 and len(c.split("=")[0]) == 1 else c


def _all_workers_busy(monkeypatch) -> list[str]:
    """Make every math-verify request behave as under full load (no free worker before the deadline)."""
    asked: list[str] = []

    def busy(golds, pred, guard, timeout, **kwargs):
        asked.append(pred)
        return None, False

    monkeypatch.setattr(mvp, "ask", busy)
    monkeypatch.setattr(reward, "_verdicts", {})
    return asked


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("0.5", r"\frac{1}{2}", 1.0),
        (r"\frac12", "0.5", 1.0),
        ("14/3", r"\dfrac{14}{3}", 1.0),
        ("-0.5", r"-\frac{1}{2}", 1.0),
        (r"\frac{-1}{2}", "-0.5", 1.0),
        ("2/4", r"\frac{1}{2}", 1.0),
        ("1,000", "1000", 1.0),
        ("x = 5", "5.0", 1.0),
        (r"\frac{1}{3}", r"\frac{1}{2}", 0.0),
        ("0.75", r"\frac{1}{2}", 0.0),
    ],
)
def test_numeric_forms_never_need_a_worker(monkeypatch, pred, gold, expected):
    """Under load a correct answer that needs math-verify can score 0; a numeric match never needs it."""
    asked = _all_workers_busy(monkeypatch)
    assert compute_score("m", TEMPLATE % pred, gold)["score"] == expected
    assert asked == []


def test_all_benchmark_golds_are_matched_without_a_worker(shared_data, monkeypatch):
    rows = _oat_rows(shared_data)
    asked = _all_workers_busy(monkeypatch)
    hits = sum(compute_score(b, TEMPLATE % _as_written(raw), raw)["acc"] for b, raw in rows)
    hits += sum(compute_score(b, TEMPLATE % _as_in_the_data(raw), raw)["acc"] for b, raw in rows)
    assert (hits, asked) == (2 * len(rows), [])
    # ...while a symbolic equivalence does ask, and scores 0 when no worker is free
    assert compute_score("m", TEMPLATE % r"2\sqrt{2}", r"\sqrt{8}")["score"] == 0.0
    assert asked == ["2\\sqrt{2}"]


def test_quality_bar_on_all_1560_benchmark_problems(shared_data):
    """Gold boxed in a typical response scores 1 (>= 99.5%); another problem's different gold scores 0
    (>= 99.9%). Both as a solution would write it and as written in the raw data (forms derived by the test
    itself, not by ``gold_answers``)."""
    rows = _oat_rows(shared_data)
    assert len(rows) == 30 + 83 + 500 + 272 + 675
    written = [_as_written(raw) for _, raw in rows]
    assert all(written)

    hits_written = sum(
        compute_score(b, TEMPLATE % w, raw)["acc"] for (b, raw), w in zip(rows, written, strict=True)
    )
    hits_raw = sum(compute_score(b, TEMPLATE % _as_in_the_data(raw), raw)["acc"] for b, raw in rows)
    assert hits_written / len(rows) >= 0.995, hits_written
    assert hits_raw / len(rows) >= 0.995, hits_raw

    pairs = []
    for i, ((bench, raw), w) in enumerate(zip(rows, written, strict=True)):
        j = (i + 1) % len(rows)  # the next problem of the same benchmark with a different answer
        while rows[j][0] != bench or _key(written[j]) == _key(w):
            j = (j + 1) % len(rows)
        pairs.append((bench, raw, written[j]))
    # threads share the worker pool, as in verl's reward loop (one thread per worker: nobody waits)
    with ThreadPoolExecutor(max_workers=max(1, min(4, mvp.MAX_WORKERS))) as ex:
        accepted = list(ex.map(lambda p: compute_score(p[0], TEMPLATE % p[2], p[1])["acc"], pairs))
    false_pos = [p for p, acc in zip(pairs, accepted, strict=True) if acc]
    assert len(false_pos) / len(rows) <= 0.001, false_pos
