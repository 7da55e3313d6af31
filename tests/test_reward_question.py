"""The training reward reads the question (``extra_info["problem"]``), by class; the reward's inputs.

Classes: units asked vs given, conversions (decimal/fraction/radical/scientific/percent), factor / expand /
simplify, "in terms of", a restatement of a given expression. Each case: the question, the gold, the
answer, the expected score with the question and without it (the rule must matter, and the gold-only
grading must stay what it was). In the class tables math-verify is stood in for by a verifier that says
"equal": every pair there is equal in value, so only the question can tell them apart.

Run as a script for the measurement on the 1,560 benchmark golds (false negatives the question rules
create) and, given an unpacked math-verify sdist, its regression suite against verl's ``math_verify``::

    PYTHONPATH=. python tests/test_reward_question.py [--data ../shared/data] [--math-verify-tests DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

OAT = ("aime24", "amc", "math500", "minerva", "olympiadbench")
RESPONSE = "We work it out step by step.\n\nTherefore, the final answer is $\\boxed{%s}$."


def _equal(*_args, **_kwargs) -> bool:
    """math-verify's verdict stood in for: every pair in the class tables is equal in value."""
    return True


def _grade(question: str | None, gold: str, answer: str) -> float:
    from sspo.reward.grading import TRAINING, grade
    from sspo.reward.question import NO_REQUEST, read_request

    request = read_request(question) if question is not None else NO_REQUEST
    return 1.0 if grade(RESPONSE % answer, [gold], TRAINING, _equal, request).correct else 0.0


# (question, gold, answer, score with the question, score without it)
UNITS = [
    ("How long is the rope, in centimeters?", "500", r"500 \text{ m}", 0, 1),
    ("What is the distance between the towns in km?", "12", r"12 \text{ miles}", 0, 1),
    ("How many minutes does the trip take?", "150", r"150 \text{ hours}", 0, 1),
    ("What is the area of the garden in square feet?", "36", r"36 \text{ in}^2", 0, 1),
    ("How many dollars did she spend in all?", "15", r"15 \text{ cents}", 0, 1),
    ("What is the measure of the angle, in degrees?", "30", r"30 \text{ radians}", 0, 1),
    ("Find the mass of the sample (in grams).", "250", r"250 \text{ kg}", 0, 1),
    ("How long is the rope, in centimeters?", "500", r"500 \text{ cm}", 1, 1),
    ("How long is the rope, in centimeters?", "500", r"500 \text{ centimetres}", 1, 1),
    ("How many minutes does the trip take?", "150", "150", 1, 1),
    ("How many minutes does the trip take?", "150", r"150 \text{ min}", 1, 1),
    ("What is the area of the garden in square feet?", "36", r"36 \text{ ft}^2", 1, 1),
    ("What is the measure of the angle, in degrees?", "30", r"30^\circ", 1, 1),
    ("The car goes 40 miles. What is its speed in m/s?", "5", r"5 \text{ m/s}", 1, 1),
]
CONVERSIONS = [
    (r"Express $\frac{3}{8}$ as a decimal.", "0.375", r"\frac{3}{8}", 0, 1),
    (r"Express $0.375$ as a common fraction.", r"\frac{3}{8}", "0.375", 0, 1),
    ("What is the probability? Express your answer as a fraction in lowest terms.", r"\frac{3}{8}",
     r"\frac{6}{16}", 0, 1),
    ("Express your answer in simplest radical form.", r"2\sqrt{2}", r"\sqrt{8}", 0, 1),
    ("Round your answer to the nearest tenth.", "3.2", r"\frac{16}{5}", 0, 1),
    ("Give the answer correct to two decimal places.", "0.25", r"\frac{1}{4}", 0, 1),
    ("Write the number in scientific notation.", r"3.2\times10^{5}", "320000", 0, 1),
    ("What percent of 80 is 20?", r"25\%", "0.25", 0, 1),
    (r"Express $0.375$ as a common fraction.", r"\frac{3}{8}", "3/8", 1, 1),
    (r"Express $\frac{3}{8}$ as a decimal.", "0.375", "0.3750", 1, 1),
    ("Express your answer in simplest radical form.", r"2\sqrt{2}", r"2 \sqrt 2", 1, 1),
    ("What percent of 80 is 20?", "25", r"25\%", 1, 0),  # the gold omits "%": the question says it is one
    ("What percent of 80 is 20?", r"25\%", "25", 1, 1),
]  # fmt: skip
FACTOR_EXPAND_SIMPLIFY = [
    ("Factor $x^2+5x+6$.", "(x+2)(x+3)", "x^2+5x+6", 0, 1),
    ("Completely factor the expression $y^2-9$.", "(y-3)(y+3)", "y^2 - 9", 0, 1),
    ("Write $a^2+2ab+b^2$ as a product.", "(a+b)^2", "b^2+2ab+a^2", 0, 1),
    ("Expand $(x+2)(x+3)$.", "x^2+5x+6", "(x+3)(x+2)", 0, 1),
    ("Expand the product ${(2x+3)(x+4)}$.", "2x^2+11x+12", "(2x+3)(x + 4)", 0, 1),
    ("Multiply out $3(x-1)^2$.", "3x^2-6x+3", "3(x-1)^2", 0, 1),
    (r"Simplify $\sqrt{50}$.", r"5\sqrt{2}", r"\sqrt{25\cdot 2}", 0, 1),
    (r"Simplify $\frac{x^2-1}{x-1}$.", "x+1", r"\frac{(x-1)(x+1)}{x-1}", 0, 1),
    (r"Simplify $\frac{12}{16}$.", r"\frac{3}{4}", r"\frac{6}{8}", 0, 1),
    ("Factor $x^2+5x+6$.", "(x+2)(x+3)", "(x+3)(x+2)", 1, 1),
    ("Expand $(x+2)(x+3)$.", "x^2+5x+6", "6+5x+x^2", 1, 1),
    (r"Simplify $\sqrt{50}$.", r"5\sqrt{2}", r"5\sqrt2", 1, 1),
    ("What is the largest prime factor of 91?", "13", "13", 1, 1),  # "factor" that asks no factorisation
]
IN_TERMS_OF = [
    ("Let $y = 2t$ and $t = x + 1$. Express $y$ in terms of $x$.", "2x+2", "2t", 0, 1),
    ("Find the volume of the cylinder in terms of $r$ and $h$.", r"\pi r^2 h", r"\frac{\pi d^2 h}{4}", 0, 1),
    ("Write the position as a function of $t$.", "3t^2", "3s^2", 0, 1),
    ("The side is s. Give the area in terms of s.", "s^2", "a^2", 0, 1),
    ("Let $y = 2t$ and $t = x + 1$. Express $y$ in terms of $x$.", "2x+2", "2(x+1)", 1, 1),
    ("Find the volume of the cylinder in terms of $r$ and $h$.", r"\pi r^2 h", r"h \pi r^2", 1, 1),
    (r"Express the area in terms of $\pi$.", r"36\pi", r"36 \pi", 1, 1),
]
RESTATEMENT = [
    (r"Compute $\dbinom{8}{4}$.", "70", r"\dbinom{8}{4}", 0, 1),
    (r"Evaluate $\log_2 64$.", "6", r"\log_2 64", 0, 1),
    (r"Rationalize the denominator of $\frac{1}{\sqrt{2}}$.", r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", 0, 1),
    ("Find $f(2)$ if $f(x) = x^2 + 1$.", "5", "f(2)", 0, 1),
    (r"What is $\sqrt{3} \cdot \sqrt{12}$?", "6", r"\sqrt{3}\cdot\sqrt{12}", 0, 1),
    (r"Compute $\dbinom{8}{4}$.", "70", "70", 1, 1),
    ("If $x = 7$ and $y = x + 2$, what is $x$?", "7", "7", 1, 1),
    (r"Show that $\frac{\sqrt{2}}{2} = \sin 45^\circ$ and give its value.", r"\frac{\sqrt{2}}{2}",
     r"\frac{\sqrt{2}}{2}", 1, 1),
]  # fmt: skip
CLASSES = {
    "units": UNITS,
    "conversions": CONVERSIONS,
    "factor/expand/simplify": FACTOR_EXPAND_SIMPLIFY,
    "in terms of": IN_TERMS_OF,
    "restatement": RESTATEMENT,
}
ALL = [(cls, *case) for cls, cases in CLASSES.items() for case in cases]


def test_every_class_has_both_directions():
    for cls, cases in CLASSES.items():
        assert sum(c[3] == 0 for c in cases) >= 3 and sum(c[3] == 1 for c in cases) >= 3, cls


@pytest.mark.parametrize(("cls", "question", "gold", "answer", "with_q", "without_q"), ALL,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(ALL)])  # fmt: skip
def test_question_classes(cls, question, gold, answer, with_q, without_q):
    assert _grade(question, gold, answer) == with_q
    assert _grade(None, gold, answer) == without_q


def test_compute_score_reads_the_problem_from_extra_info_and_only_under_training():
    """End to end (numbers: decided in-process, no math-verify worker)."""
    from sspo.reward import compute_score, compute_score_evaluation

    q = {"problem": "How long is the rope, in centimeters?", "split": "test", "index": 3}
    hack, right = RESPONSE % r"500 \text{ m}", RESPONSE % r"500 \text{ cm}"
    assert compute_score("m", hack, "500", q)["score"] == 0.0
    assert compute_score("m", right, "500", q)["score"] == 1.0
    assert compute_score("m", hack, "500", {"split": "test"})["score"] == 1.0  # no question: as before
    assert compute_score("m", hack, "500")["score"] == 1.0
    assert compute_score("m", hack, "500", {"question": q["problem"]})["score"] == 0.0  # the other field name
    assert compute_score_evaluation("m", hack, "500", q)["score"] == 1.0  # the paper grader: gold only
    assert compute_score("m", hack, "500", q, rules={"read_question": False})["score"] == 1.0
    conv = {"problem": r"Express $\frac{3}{8}$ as a decimal."}
    assert compute_score("m", RESPONSE % r"\frac{3}{8}", "0.375", conv)["score"] == 0.0
    assert compute_score("m", RESPONSE % "0.375", "0.375", conv)["score"] == 1.0


def test_the_prepared_rows_extra_info_carries_the_question_the_reward_reads():
    """``sspo.tools.data`` writes the problem into ``extra_info``; verl hands that dict to ``compute_score``."""
    from sspo.reward import compute_score
    from sspo.tools.data import SOURCES, Report, to_verl_rows

    raw = [{"problem": r"Express $\frac{3}{8}$ as a decimal.", "answer": "0.375"}]
    (row,) = to_verl_rows(SOURCES["math500"], raw, Report("math500"), "qwen25-math", progress=False)
    assert row["extra_info"]["problem"] == raw[0]["problem"]
    gold = row["reward_model"]["ground_truth"]
    assert compute_score(row["data_source"], RESPONSE % "0.375", gold, row["extra_info"])["score"] == 1.0
    assert (
        compute_score(row["data_source"], RESPONSE % r"\frac{3}{8}", gold, row["extra_info"])["score"] == 0.0
    )


@pytest.mark.parametrize("question", [None, 7, "", " ", "x" * 30_000, ["How many minutes?"]])
def test_a_missing_or_unusable_question_grades_as_before(question):
    from sspo.reward import compute_score

    out = compute_score("m", RESPONSE % r"150 \text{ hours}", "150", {"problem": question})
    assert out["score"] == 1.0


def _oat_rows(shared_data: Path) -> list[tuple[str, str, object]]:
    rows = []
    for name in OAT:
        with open(shared_data / "benchmarks" / "oat" / f"{name}.jsonl") as f:
            rows += [(name, r["problem"], r["answer"]) for r in map(json.loads, f)]
    return rows


def gold_hits_with_question(rows, ask_nobody: bool = True) -> tuple[int, int, list]:
    """(hits, tries, misses): every gold, prepared and as written, boxed, with its question present."""
    from sspo.reward import compute_score, gold_answers

    hits, misses = 0, []
    for bench, problem, raw in rows:
        forms = [gold_answers(raw)[0], (raw[0] if isinstance(raw, list) else str(raw)).strip().strip("$")]
        for form in forms:
            ok = compute_score(bench, RESPONSE % form, raw, {"problem": problem})["acc"]
            hits += ok
            if not ok:
                misses.append((bench, form, problem[-120:]))
    return hits, 2 * len(rows), misses


def test_all_1560_golds_score_1_with_their_question(shared_data, monkeypatch):
    """The false negatives the question rules could create, measured on the benchmarks' own golds: none.
    No math-verify worker is asked (every gold form is decided in-process)."""
    from sspo.reward import math_verify_pool as mvp
    from sspo.reward import score

    asked = []
    monkeypatch.setattr(mvp, "ask", lambda golds, pred, *a, **k: (asked.append(pred), (None, False))[1])
    monkeypatch.setattr(score, "_verdicts", {})
    rows = _oat_rows(shared_data)
    assert len(rows) == 1560
    hits, tries, misses = gold_hits_with_question(rows)
    assert (hits, misses, asked) == (tries, [], [])


def test_a_gold_with_the_asked_unit_written_out_still_scores_1(shared_data):
    """Near misses built from the data: the gold followed by the unit its question asks."""
    from sspo.reward import compute_score, gold_answers
    from sspo.reward.question import read_request

    tried = 0
    for bench, problem, raw in _oat_rows(shared_data):
        units = read_request(problem).units
        gold = gold_answers(raw)[0]
        if len(units) != 1 or not gold.replace(".", "").isdigit():
            continue
        (unit,) = units
        written = {"°": "^\\circ"}.get(unit, f"\\text{{ {unit.split('^')[0]}s}}" + (
            f"^{unit.split('^')[1]}" if "^" in unit else ""))  # fmt: skip
        assert compute_score(bench, RESPONSE % (gold + written), raw, {"problem": problem})["acc"], (
            gold,
            written,
        )
        tried += 1
    assert tried >= 20


# --------------------------------------------------------------------------------------------------
# The reward's inputs: bytes responses, numeric golds
# --------------------------------------------------------------------------------------------------
def test_a_bytes_response_is_decoded_as_utf8_and_undecodable_bytes_say_so(caplog):
    from sspo.reward import compute_score

    assert compute_score("m", (RESPONSE % "58").encode(), "58")["score"] == 1.0
    assert compute_score("m", bytearray((RESPONSE % "58").encode()), "58")["score"] == 1.0
    assert compute_score("m", ("Voilà, π ≈ 3.14. " + RESPONSE % "58").encode("utf-8"), "58")["score"] == 1.0
    with caplog.at_level("WARNING", logger="sspo.reward.score"):
        out = compute_score("m", b"\xff\xfe" + (RESPONSE % "58").encode(), "58")
    assert out["score"] == 0.0 and "not UTF-8" in caplog.text and "decode it first" in caplog.text


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [
        (float("inf"), r"\infty", 1.0),
        (float("-inf"), r"-\infty", 1.0),
        (float("inf"), "1000000", 0.0),
        (0.1 + 0.2, "0.3", 1.0),
        (0.1 + 0.2, r"\frac{3}{10}", 1.0),
        (0.1 + 0.2, "0.31", 0.0),
        (1 / 3, r"\frac{1}{3}", 1.0),
        (1 / 3, "0.333333", 0.0),  # an approximation of the value is not the value
        (2.5, r"\frac{5}{2}", 1.0),
        (142.0, "142", 1.0),
        (7, "7", 1.0),
        (7, "7.5", 0.0),
        (Fraction(3, 8), "0.375", 1.0),
        (Decimal("0.30"), "0.3", 1.0),
        (b"12", "12", 1.0),
    ],
)
def test_numeric_golds_are_matched_by_value(gold, answer, expected):
    from sspo.reward import compute_score

    assert compute_score("m", RESPONSE % answer, gold)["score"] == expected


def test_numpy_golds_are_matched_by_value_at_their_own_precision():
    import numpy as np

    from sspo.reward import compute_score

    for gold, answer, expected in [
        (np.float32(0.1), "0.1", 1.0),  # float32(0.1) is 0.100000001490116...: its 6 digits are 0.1
        (np.float32(1 / 3), r"\frac{1}{3}", 1.0),
        (np.float64(0.1) + np.float64(0.2), "0.3", 1.0),
        (np.int64(12), "12", 1.0),
        (np.float64("nan"), "0", 0.0),
        (np.array([3.0, 4.0]), "4", 1.0),
    ]:
        assert compute_score("m", RESPONSE % answer, gold)["score"] == expected, (gold, answer)


# --------------------------------------------------------------------------------------------------
# Script: the measurements behind docs/reward.md
# --------------------------------------------------------------------------------------------------
def _math_verify_rows(tests_dir: Path) -> list[dict]:
    """(gold, pred, expected) rows of math-verify's own tests (literal parametrize lists)."""
    import ast

    rows = []
    for path in sorted(tests_dir.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "parametrize"):
                continue
            try:
                names = ast.literal_eval(node.args[0])
                values = ast.literal_eval(node.args[1])
            except (ValueError, SyntaxError, IndexError):
                continue  # an f-string list (float precision): not a literal
            names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
            if {"gold", "pred"} <= set(names) and ({"expected"} & set(names) or {"result"} & set(names)):
                for v in values:
                    r = dict(zip(names, v, strict=True))
                    rows.append(
                        {"gold": r["gold"], "pred": r["pred"], "expected": r.get("expected", r.get("result"))}
                    )
    return rows


def math_verify_suite(tests_dir: Path, box_predictions: bool = False) -> dict[str, tuple[int, int]]:
    """Agreement and false positives on math-verify's suite: our evaluation policy vs verl's scorer.

    The response is the row's prediction as math-verify's own tests pass it (our evaluation policy reads an
    unboxed answer as math-verify does: ``sspo.reward.prose``); ``box_predictions`` puts a prediction with no
    box of its own inside one (the measurement before the prose reader). verl's ``math_verify`` scorer is
    called as verl's reward loop calls it (it boxes the gold)."""
    from verl.utils.reward_score import math_verify as verl_mv

    from sspo.reward import compute_score_evaluation

    rows = _math_verify_rows(tests_dir)
    out = {"sspo evaluation": [0, 0], "verl math_verify": [0, 0]}
    for r in rows:
        boxed = "\\boxed" in r["pred"] or "\\fbox" in r["pred"]
        response = "\\boxed{" + r["pred"] + "}" if box_predictions and not boxed else r["pred"]
        scores = {
            "sspo evaluation": compute_score_evaluation(None, response, r["gold"], timeout=30)["score"],
            "verl math_verify": verl_mv.compute_score(response, r["gold"]),
        }
        for name, s in scores.items():
            out[name][0] += int(s) == r["expected"]
            out[name][1] += int(s) == 1 and r["expected"] == 0
    print(f"{len(rows)} rows, predictions {'boxed' if box_predictions else 'as math-verify passes them'}")
    return {k: tuple(v) for k, v in out.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--math-verify-tests", default=None, help="the tests/ folder of a math-verify sdist")
    args = p.parse_args()
    hits, tries, misses = gold_hits_with_question(_oat_rows(Path(args.data)))
    print(f"golds with their question: {hits}/{tries} score 1; misses: {misses}")
    if args.math_verify_tests:
        for box_predictions in (False, True):
            for name, (agree, fp) in math_verify_suite(Path(args.math_verify_tests), box_predictions).items():
                print(f"{name}: agrees with the expected verdict on {agree} rows, {fp} false positives")
    return 0


if __name__ == "__main__":
    sys.exit(main())
