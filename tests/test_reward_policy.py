"""sspo.reward policies and load: each strict rule can be turned off, bad settings fail by name, math-verify's
fragment parses are refused, pathological answers never reach a worker, and verdicts do not depend on load."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sspo.reward import compute_score, compute_score_evaluation
from sspo.reward import math_verify_pool as mvp
from sspo.reward import score as reward

HBAR = r"\hbar \omega(v+1 / 2)-\frac{E_{0}^{2} e^{2}}{2 m \omega^{2}}"


@pytest.mark.parametrize(
    ("rule", "response", "gold"),
    [
        ("ignore_hidden_boxes", "I am done.\n% \\boxed{204}", "204"),
        ("reject_hedges", "\\boxed{204}, though 203 might also work", "204"),
        ("exact_numbers", "\\boxed{1.41421356}", "\\sqrt{2}"),
        ("single_value", r"\boxed{203 \lor 204}", "204"),
        ("reject_invisible", r"\boxed{\phantom{204}}", "204"),
        ("units", r"\boxed{8^\circ}", r"8\%"),
        ("guard_math_verify", r"\boxed{" + HBAR + "}", "2"),
        ("boxed_only", "Final Answer: The final answer is $204$. I hope it is correct.", "204"),
    ],
)
def test_each_rule_decides_its_case_and_can_be_turned_off(rule, response, gold):
    assert compute_score("m", response, gold, timeout=30)["score"] == 0.0
    assert compute_score("m", response, gold, timeout=30, rules={rule: False})["score"] == 1.0
    assert compute_score_evaluation("m", response, gold, timeout=30)["score"] == 1.0  # the standard grader


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "strict"}, "reward policy 'strict': choose one of ['evaluation', 'training']"),
        ({"rules": {"unit": False}}, "expected booleans for some of"),
        ({"rules": {"units": "no"}}, "expected booleans for some of"),
    ],
)
def test_bad_policy_or_rule_fails_naming_it(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compute_score("m", r"\boxed{4}", "4", **kwargs)


def test_guard_refuses_fragment_parses_both_ways_and_keeps_real_equivalences():
    """math-verify reads HBAR as 2 (and ``k n + 17 - E_0^2`` as 17); the guard refuses, in both directions."""
    assert compute_score("m", r"\boxed{" + HBAR + "}", "2", timeout=30)["score"] == 0.0
    assert compute_score("m", r"\boxed{2}", HBAR, timeout=30)["score"] == 0.0
    assert compute_score("m", r"\boxed{k n + 17 - E_{0}^{2}}", "17", timeout=30)["score"] == 0.0
    for pred, gold in [
        (HBAR, HBAR.replace(" ", "")),
        ("(x+1)^2", "x^2+2x+1"),
        (r"2\sqrt{2}", r"\sqrt{8}"),
        (r"\{2, 1\}", r"\{1, 2\}"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    ]:
        assert compute_score("m", r"\boxed{" + pred + "}", gold, timeout=30)["score"] == 1.0, pred


PATHOLOGICAL = [
    r"10^{10^{10^{10}}}",  # power tower
    r"9^{9^{9}}",
    "{" * 10_000 + "1" + "}" * 10_000,  # 10k nested braces
    r"\frac{1}{" * 40 + "1" + "}" * 40,
    "100000!",
    "2^{123456789}",
    "7" * 5000,
]


@pytest.mark.parametrize("pred", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_pathological_answers_never_reach_a_worker(monkeypatch, pred):
    asked = []
    monkeypatch.setattr(mvp, "ask", lambda *a: asked.append(a) or (True, False))
    monkeypatch.setattr(reward, "_verdicts", {})
    assert compute_score("m", r"\boxed{" + pred + "}", "42")["score"] == 0.0
    assert asked == []


def test_screen_allows_what_the_gold_itself_has_except_towers():
    """Limits are relative to the gold (a nested gold may be answered in kind); towers of 3 never go: sympy
    cannot compare them in bounded time (identical strings still match in-process)."""
    assert mvp.screen(r"10^{10^{10^{10}}}", ["42"]) is not None
    assert mvp.screen(r"10^{10^{10^{10}}}", [r"10^{10^{10^{11}}}"]) == "power tower of height 4"
    assert compute_score("m", r"\boxed{10^{10^{10^{11}}}}", r"10^{10^{10^{11}}}")["score"] == 1.0
    assert mvp.screen(r"\frac{1}{" * 14 + "x" + "}" * 14, [r"\frac{1}{" * 14 + "y" + "}" * 14]) is None
    assert (
        mvp.screen(r"2^{2^{2}}", ["16"]) is not None
    )  # an exponent holding a power: not unless the gold has one
    assert mvp.screen(r"e^{x^{2}}", [r"e^{x^2}"]) is None
    assert mvp.screen(r"\frac{\sqrt{2}}{2}", ["1"]) is None


def test_a_slow_request_does_not_starve_a_normal_one(monkeypatch):
    """One worker is held (as by a pathological answer) for the whole test: the pool starts another for the
    waiting request, which gets math-verify's verdict well before its deadline."""
    pool = mvp.WorkerPool(1, limit=4)
    monkeypatch.setattr(mvp, "_pool", pool)
    monkeypatch.setattr(reward, "_verdicts", {})
    held = pool.acquire(time.monotonic() + 120)
    assert held is not None
    try:
        # a wide timeout (the new worker's start-up is slow on a busy machine); pool.started shows the mechanism
        out = compute_score("m", r"\boxed{2\sqrt{2}}", r"\sqrt{8}", timeout=300)
        assert out["score"] == 1.0 and pool.started == 2
    finally:
        pool.release(held, healthy=True)
        pool.shutdown()


def test_verdicts_do_not_depend_on_the_neighbours(monkeypatch):
    """The same batch (symbolic answers needing math-verify, pathological ones) scored one by one and from
    8 threads gives the same verdicts."""
    monkeypatch.setattr(reward, "_verdicts", {})
    batch = []
    for k in range(2, 14):
        batch.append((rf"\boxed{{{k}\sqrt{{2}}}}", rf"\sqrt{{{2 * k * k}}}", 1.0))
        batch.append((rf"\boxed{{{k}\sqrt{{3}}}}", rf"\sqrt{{{2 * k * k}}}", 0.0))
        batch.append((rf"\boxed{{(x+{k})^2}}", rf"x^2+{2 * k}x+{k * k}", 1.0))
    batch += [(r"\boxed{" + p + "}", "42", 0.0) for p in PATHOLOGICAL]
    # the time bound is not what is judged here: 300 s for answers math-verify decides in milliseconds once a
    # worker is up (start-ups are slow on a busy machine); 30 s for the pathological ones (0 however they end)
    bound = {r: 30.0 if g == "42" else 300.0 for r, g, _ in batch}
    alone = [compute_score("m", r, g, timeout=bound[r])["score"] for r, g, _ in batch]
    reward._verdicts.clear()
    with ThreadPoolExecutor(max_workers=8) as ex:
        together = list(ex.map(lambda c: compute_score("m", c[0], c[1], timeout=bound[c[0]])["score"], batch))
    assert alone == together == [e for _, _, e in batch]


def test_a_slow_request_gets_the_lowest_cpu_priority_a_quick_one_does_not():
    """Judged by the worker's CPU time (not wall time, which a busy machine inflates for everyone): the slow
    request is watched until its worker is reniced, with a wide deadline, then stopped."""
    worker = mvp._Worker()
    try:
        assert worker.ask([r"\sqrt{8}"], r"2\sqrt{2}", True, time.monotonic() + 300) is True
        assert not worker.niced and os.getpriority(os.PRIO_PROCESS, worker.proc.pid) == 0
        slow = "(x+1)^{990} - (x+2)^{990}"
        got: dict[str, bool | None] = {}
        asking = threading.Thread(target=lambda: got.update(eq=worker.ask(["42"], slow, True, time.monotonic() + 600)))
        asking.start()
        deadline = time.monotonic() + 600  # the worker's 1 s of CPU comes late on a busy machine, never not at all
        while not worker.niced and asking.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.niced and os.getpriority(os.PRIO_PROCESS, worker.proc.pid) == 19
        worker.proc.kill()  # the expansion's end is not the point: its request ends at the worker's EOF
        asking.join(60)
        assert not asking.is_alive() and got["eq"] is not True
    finally:
        worker.kill()


ISSUE_HACKS = [  # the examples of issue 9: each scored 1 before, must score 0
    (r"\boxed{203} or \boxed{204}", "204"),
    (r"\boxed{203}\boxed{204}", "204"),
    (r"\boxed{(B)} or \boxed{(C)}", r"\text{(C)}"),
    (r"\boxed{203 \lor 204}", "204"),
    ("```\n\\boxed{204}\n```", "204"),
    ("I think 203.\n> put your answer in the form \\boxed{204}", "204"),
    ("I think 203.\n% \\boxed{204}", "204"),
    (r"\boxed{203 = 204}", "204"),
    (r"\boxed{\phantom{204}}", "204"),
    (r"\boxed{0.5\%}", r"\frac{1}{2}"),
    (r"\boxed{\frac{1}{2}\%}", r"\frac{1}{2}"),
    (r"\boxed{62.5^\circ}", "62.5%"),
    (r"\boxed{8^\circ}", r"8 \%"),
    (r"\boxed{8 \text{dollars}}", r"8 \%"),
    (r"\boxed{90\%}", r"90^\circ"),
    (r"\boxed{5 \text{ hours}}", r"5 \text{ minutes}"),
    (r"\boxed{5.4 \text{ dollars}}", r"5.4 \text{ cents}"),
    (r"\boxed{864 \text{ feet}^2}", r"864 \mbox{ inches}^2"),
    (r"\boxed{" + HBAR + "}", "2"),
]
ISSUE_NEAR_MISSES = [  # must score 1
    (r"\boxed{10^{20}}", "1e+20"),
    (r"\boxed{\text{(C) Plane}}", r"\text{(C)}"),
    (r"\boxed{288\pi \text{ cm}^3}", r"288\pi"),
    (r"\boxed{62.5}", "62.5%"),
    (r"\boxed{8\%}", r"8 \%"),
    (r"\boxed{90}", r"90^\circ"),
    (r"\boxed{864 \text{ square inches}}", r"864 \mbox{ inches}^2"),
    (r"\boxed{5.4}", r"5.4 \text{ cents}"),
    (r"\boxed{\$32,\!348}", r"\$32,\!348"),
    (r"\boxed{1950^\circ}", r"1950^\circ C"),
    (r"\boxed{x = 204}", "204"),
    (r"\boxed{\frac{408}{2} = 204}", "204"),
    (r"\boxed{69}, \boxed{84}", "69, 84"),
    (r"\boxed{1,000}", "1000"),
    (r"\boxed{50\%}", r"\frac{1}{2}"),
]


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [(r, g, 0.0) for r, g in ISSUE_HACKS] + [(r, g, 1.0) for r, g in ISSUE_NEAR_MISSES],
)
def test_issue_examples_hacks_score_zero_near_misses_one(response, gold, expected):
    assert compute_score("m", response, gold, timeout=30)["score"] == expected


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        (r"\boxed{x=2 \text{ or } x=3}", "2, 3", 1.0),  # a list gold answered with "or" and names
        (r"\boxed{2 \text{ or } 3}", "2, 3", 1.0),
        (r"\boxed{x=2, y=3}", "(2, 3)", 1.0),
        (r"\boxed{3, 2}", "2, 3", 1.0),
        (r"\boxed{x=2 \text{ or } x=4}", "2, 3", 0.0),
        (r"\boxed{2 \text{ or } 3}", "3", 0.0),
    ],
)
def test_list_golds_accept_their_items_offered_together(response, gold, expected):
    assert compute_score("m", response, gold, timeout=30)["score"] == expected
