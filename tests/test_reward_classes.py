"""The grading classes of issue 21, both directions (accepted look-alikes and rejected ones), both policies.

Each case: (class, response, gold, training verdict, evaluation verdict); ``None`` where the policy makes no
claim. Run as a script to count per class (the same cases measure an older ``sspo.reward`` with
``PYTHONPATH=<old checkout>``)::

    PYTHONPATH=. python tests/test_reward_classes.py
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import pytest

P = "We check each step.\n"


def box(ans: str) -> str:
    """A typical response ending in ``\\boxed{ans}``."""
    return P + "Therefore, the final answer is $\\boxed{" + ans + "}$."


T, F = 1.0, 0.0
CASES: list[tuple[str, str, str, float, float | None]] = [
    # 1. a gold with several boxes keeps all of them
    ("1 gold boxes", box("-5, 3"), r"\(\boxed{3}\) and \(\boxed{-5}\)", T, T),
    ("1 gold boxes", box("3, -5"), r"\(\boxed{3}\) and \(\boxed{-5}\)", T, T),
    ("1 gold boxes", box("4, 9"), r"\boxed{4} red and \boxed{9} blue", T, T),
    ("1 gold boxes", box("x = 7 \\text{ or } x = -2"), r"$x=\boxed{7}$ or $x=\boxed{-2}$", T, T),
    ("1 gold boxes", box("(2, 5)"), r"ordered pair $(\boxed{2}, \boxed{5})$", T, T),
    ("1 gold boxes", box("-5"), r"\(\boxed{3}\) and \(\boxed{-5}\)", F, F),
    ("1 gold boxes", box("9"), r"\boxed{4} red and \boxed{9} blue", F, F),
    ("1 gold boxes", box("3"), r"\(\boxed{3}\) and \(\boxed{-5}\)", F, F),
    ("1 gold boxes", box("(5, 2)"), r"ordered pair $(\boxed{2}, \boxed{5})$", F, F),
    ("1 gold boxes", box("4, 9, 11"), r"\boxed{4} red and \boxed{9} blue", F, F),
    # 2. labelled gold answered with the bare value, and the mirror
    ("2 labels", box("7"), "|PQ| = 7", T, T),
    ("2 labels", box("2, 9"), "a=2, b=9", T, T),
    ("2 labels", box("5:8"), "x:y = 5:8", T, T),
    ("2 labels", box("p+q = 125"), "125", T, T),
    ("2 labels", box("m + n = 34"), "34", T, T),
    ("2 labels", box("AB = 12"), "12", T, T),
    ("2 labels", box("\\angle ABC = 40^\\circ"), "40^\\circ", T, T),
    ("2 labels", box("PQ = 7"), "|PQ| = 7", T, T),
    ("2 labels", box("a = 2, b = 9"), "a=2, b=9", T, T),
    ("2 labels", box("t = 6 = 2"), "2", F, None),
    ("2 labels", box("p+q = 124"), "125", F, F),
    ("2 labels", box("8"), "|PQ| = 7", F, F),
    ("2 labels", box("9, 2"), "a=2, b=9", F, None),
    ("2 labels", box("8:5"), "x:y = 5:8", F, F),
    ("2 labels", box("2p + 1 = 125"), "125", F, None),
    ("2 labels", box("p+q = 125 = 126"), "125", F, None),
    # 3. several boxes that together give a multi-part answer; hedging stays rejected
    ("3 multi-box", P + r"The points are $\boxed{(1, 3)}$ and $\boxed{(4, 0)}$.", "(1,3),(4,0)", T, T),
    ("3 multi-box", P + r"So $\boxed{0.35}$, i.e. $\boxed{35\%}$.", "0.35", T, T),
    ("3 multi-box", P + r"So $\boxed{\frac{1}{4}}$, that is $\boxed{25\%}$.", r"\frac{1}{4}", T, T),
    ("3 multi-box", P + r"We get $x = \boxed{2}$ and $y = \boxed{7}$.", "(2, 7)", T, T),
    (
        "3 multi-box",
        P + r"So the total is $\boxed{63}$. Wait, I miscounted; the correct total is $\boxed{64}$.",
        "64",
        T,
        T,
    ),
    (
        "3 multi-box",
        P + r"That gives $\boxed{10}$. I made an error above: redoing it, the answer is $\boxed{12}$.",
        "12",
        T,
        T,
    ),
    ("3 multi-box", P + r"It is $\boxed{86}$ or $\boxed{87}$.", "87", F, T),
    ("3 multi-box", P + r"$\boxed{86}$ $\boxed{87}$", "87", F, T),
    ("3 multi-box", P + r"The answer is $\boxed{86}$. Hmm, wait, it is 87.", "86", F, T),
    ("3 multi-box", P + r"The answer is $\boxed{60}$, though 61 might also work.", "60", F, T),
    ("3 multi-box", P + r"The answer is $\boxed{60}$. Actually, maybe 59.", "60", F, T),
    ("3 multi-box", P + r"The answer is $\boxed{60}$, but I am not sure.", "60", F, T),
    ("3 multi-box", P + r"The answer is $\boxed{60}$. Alternatively it could be 62.", "60", F, T),
    (
        "3 multi-box",
        P + r"So $\boxed{63}$. Wait, I miscounted; the correct total is $\boxed{64}$.",
        "63",
        F,
        F,
    ),
    ("3 multi-box", P + r"The points are $\boxed{(1, 3)}$ and $\boxed{(4, 1)}$.", "(1,3),(4,0)", F, F),
    # 4. plus-minus golds against both roots written out
    ("4 pm", box(r"2 + \sqrt{3}, 2 - \sqrt{3}"), r"2 \pm \sqrt{3}", T, T),
    ("4 pm", box(r"x = 5 + \sqrt{2} \text{ or } x = 5 - \sqrt{2}"), r"5 \pm \sqrt{2}", T, T),
    ("4 pm", box(r"1 - 2i, 1 + 2i"), r"1 \pm 2i", T, T),
    ("4 pm", box(r"\frac{3 + \sqrt{5}}{2}, \frac{3 - \sqrt{5}}{2}"), r"\frac{3 \pm \sqrt{5}}{2}", T, T),
    ("4 pm", box(r"2 \pm \sqrt{3}"), r"2 \pm \sqrt{3}", T, T),
    ("4 pm", box(r"2 + \sqrt{3}"), r"2 \pm \sqrt{3}", F, None),
    ("4 pm", box(r"2 + \sqrt{3}, 2 + \sqrt{3}"), r"2 \pm \sqrt{3}", F, None),
    ("4 pm", box(r"2 + \sqrt{3}, 3 - \sqrt{3}"), r"2 \pm \sqrt{3}", F, F),
    ("4 pm", box(r"x = 5 + \sqrt{2} \text{ or } x = 5 - \sqrt{3}"), r"5 \pm \sqrt{2}", F, F),
    ("4 pm", box(r"\pm 5"), "5", F, None),
    # 5. lists, thousands separators, decimal commas
    ("5 commas", box("12, 500"), "12500", F, F),
    ("5 commas", box("12, 500"), "12, 500", T, T),
    ("5 commas", box("12,500"), "12500", T, T),
    ("5 commas", box("1,234,567"), "1234567", T, T),
    ("5 commas", box("3,75"), "3.75", F, F),
    ("5 commas", box("3,75"), "3,75", T, T),
    ("5 commas", box("12500"), "12, 500", F, F),
    ("5 commas", box("1, 000"), "1000", F, F),
    ("5 commas", box("12,50"), "1250", F, F),
    ("5 commas", box("12{,}500"), "12500", T, T),
    # 6. percent and its decimal or fraction; repeating decimals
    ("6 percent", box("0.125"), r"12.5\%", T, T),
    ("6 percent", box(r"\frac{1}{8}"), r"12.5\%", T, T),
    ("6 percent", box("0.06"), r"6\%", T, T),
    ("6 percent", box("6"), r"6\%", T, T),
    ("6 percent", box(r"0.\overline{6}"), r"\frac{2}{3}", T, T),
    ("6 percent", box(r"-0.\overline{1}"), r"-\frac{1}{9}", T, T),
    ("6 percent", box(r"0.1\overline{6}"), r"\frac{1}{6}", T, T),
    ("6 percent", box(r"\frac{2}{3}"), r"0.\overline{6}", T, T),
    ("6 percent", box("0.125\\%"), r"12.5\%", F, F),
    ("6 percent", box("0.6"), r"6\%", F, F),
    ("6 percent", box(r"0.\overline{6}"), r"\frac{3}{5}", F, F),
    ("6 percent", box(r"0.\overline{3}"), r"\frac{2}{3}", F, F),
    ("6 percent", box("1250"), r"12.5\%", F, None),
    # 7. towers and large exact values
    ("7 towers", box("3^{3^{3}}"), "3^{27}", T, T),
    ("7 towers", box("2^{2^{10}}"), "2^{1024}", T, T),
    ("7 towers", box("9^{9}"), "3^{18}", T, T),
    ("7 towers", box("4^{2^{3}}"), "2^{16}", T, T),
    ("7 towers", box("3^{3^{3}}"), "7625597484987", T, T),
    ("7 towers", box("2^{2^{10}}"), "2^{1023}", F, F),
    ("7 towers", box("3^{3^{3}}"), "3^{28}", F, F),
    ("7 towers", box("2^{2^{2^{5}}}"), "2^{4294967297}", F, F),
    ("7 towers", box("10^{10^{10^{10}}}"), "10^{10^{10^{10}}+1}", F, F),
    ("7 towers", box("3^{3^{3}}"), "7625597484986", F, F),
    # 8. visible wrappers accepted; boxes that are not the answer rejected
    ("8 wrappers", box(r"\color{red}{58}"), "58", T, T),
    ("8 wrappers", box(r"\textcolor{blue}{\frac{3}{4}}"), r"\frac{3}{4}", T, T),
    ("8 wrappers", P + "> The answer is $\\boxed{12}$", "12", T, T),
    ("8 wrappers", P + "Final answer:\n```latex\n\\boxed{42}\n```", "42", T, T),
    ("8 wrappers", box(r"\mathbf{58}"), "58", T, T),
    ("8 wrappers", box(r"{\color{red} 58}"), "58", T, T),
    ("8 wrappers", P + "I think 41. Also `\\boxed{42}`.", "42", F, None),
    ("8 wrappers", P + "I think 41. \\verb|\\boxed{42}|", "42", F, None),
    ("8 wrappers", P + "I think 41. Use this template:\n```latex\n\\boxed{42}\n```", "42", F, None),
    ("8 wrappers", P + 'I think 41. Write it like "\\boxed{42}".', "42", F, None),
    ("8 wrappers", P + "I think 41.\n> put your answer in the form \\boxed{42}", "42", F, None),
    ("8 wrappers", box(r"\color{red}{59}"), "58", F, F),
    ("8 wrappers", box(r"\color{white}{58}"), "58", F, None),
    # 9. false positives to close
    ("9 false positives", box("1.41421356"), r"\sqrt{2}", F, None),
    ("9 false positives", box("2.718281"), "e", F, None),
    ("9 false positives", box("0.333333"), r"\frac{1}{3}", F, None),
    ("9 false positives", box("3.14159265"), r"\pi", F, None),
    ("9 false positives", box("0.6667"), r"\frac{2}{3}", F, None),
    ("9 false positives", box(r"\{2, -5, 7\}"), "(2,-5,7)", F, F),
    ("9 false positives", box("30'"), r"30^\circ", F, F),
    ("9 false positives", box("0.125"), r"\frac{1}{8}", T, T),
    ("9 false positives", box(r"\frac{\sqrt{2}}{2}"), r"\frac{1}{\sqrt{2}}", T, T),
    ("9 false positives", box("(2, -5, 7)"), "(2,-5,7)", T, T),
    ("9 false positives", box(r"30^{\circ}"), r"30^\circ", T, T),
    ("9 false positives", box(r"\{-5, 2, 7\}"), r"\{2,-5,7\}", T, T),
    ("9 false positives", box("0.5"), r"2^{-1}", T, T),
]
# more cases of each class (other shapes than the examples)
CASES += [
    ("1 gold boxes", box("1, 2"), r"The answers are \boxed{1} and \boxed{2}", T, T),
    ("1 gold boxes", box("2, 1"), r"The answers are \boxed{1} and \boxed{2}", T, T),
    ("1 gold boxes", box(r"1 \text{ and } 2"), r"The answers are \boxed{1} and \boxed{2}", T, None),
    ("1 gold boxes", box("5, 12"), r"$\boxed{5}$ cm and $\boxed{12}$ cm", T, T),
    ("1 gold boxes", box("2"), r"The answers are \boxed{1} and \boxed{2}", F, F),
    ("2 labels", box("12"), "AB = 12", T, T),
    ("2 labels", box("30"), r"m\angle A = 30^\circ", T, T),
    ("2 labels", box("10"), "a+b = 10", T, T),
    ("2 labels", box("a+b+c = 15"), "15", T, T),
    ("2 labels", box("|x| = 4"), "4", T, T),
    ("2 labels", box("x = 3 = 4"), "4", F, None),
    ("2 labels", box("n = 5"), "n=5", T, T),
    ("2 labels", box(r"\frac{m}{n} = \frac{3}{4}"), r"\frac{3}{4}", T, T),
    ("2 labels", box("XY = 9"), "XY=8", F, F),
    ("3 multi-box", P + r"So $\boxed{42}$. But it could also be 43.", "42", F, T),
    ("3 multi-box", P + r"So $\boxed{42}$ (or possibly 43).", "42", F, T),
    ("3 multi-box", P + r"So $\boxed{42}$? Not sure.", "42", F, T),
    ("3 multi-box", P + r"So $\boxed{41}$. Oops, that was wrong. The answer is $\boxed{42}$.", "42", T, T),
    ("3 multi-box", P + r"So $\boxed{41}$. Correction: $\boxed{42}$.", "42", T, T),
    ("3 multi-box", P + r"So $\boxed{41}$. Let me recompute: the sum is $\boxed{42}$.", "42", T, T),
    ("3 multi-box", P + r"So $\boxed{\frac{1}{2}} = \boxed{0.5}$.", "0.5", T, T),
    ("3 multi-box", P + r"The roots are $\boxed{2}$ and $\boxed{3}$.", "2, 3", T, T),
    ("3 multi-box", P + r"The roots are $\boxed{2}$ and $\boxed{3}$.", "3", F, T),
    ("4 pm", box(r"x = 2 \pm \sqrt{3}"), r"2 \pm \sqrt{3}", T, T),
    ("4 pm", box(r"x_1 = 2+\sqrt{3}, x_2 = 2-\sqrt{3}"), r"2 \pm \sqrt{3}", T, T),
    ("4 pm", box(r"2 + \sqrt{3} \text{ and } 2 - \sqrt{3}"), r"2 \pm \sqrt{3}", T, None),
    ("4 pm", box(r"-3 \pm 2\sqrt{2}"), r"-3 \pm 2\sqrt{2}", T, T),
    ("4 pm", box(r"-3 + 2\sqrt{2}, -3 - 2\sqrt{2}"), r"-3 \pm 2\sqrt{2}", T, T),
    ("4 pm", box(r"\pm 3"), r"\pm 3", T, T),
    ("4 pm", box(r"3, -3"), r"\pm 3", T, T),
    ("4 pm", box(r"3"), r"\pm 3", F, None),
    ("5 commas", box("1,000,000"), "1000000", T, T),
    ("5 commas", box("2, 3"), "23", F, F),
    ("5 commas", box("10,5"), "10.5", F, F),
    ("5 commas", box("10,5"), "10,5", T, T),
    ("5 commas", box(r"1{,}000"), "1000", T, T),
    ("5 commas", box(r"12,\!500"), "12500", T, T),
    ("6 percent", box(r"25\%"), "0.25", T, T),
    ("6 percent", box(r"0.25"), r"25\%", T, T),
    ("6 percent", box(r"\frac{1}{2}"), r"50\%", T, T),
    ("6 percent", box(r"0.\overline{142857}"), r"\frac{1}{7}", T, T),
    ("6 percent", box(r"0.\bar{3}"), r"\frac{1}{3}", T, T),
    ("6 percent", box(r"1.\overline{3}"), r"\frac{4}{3}", T, T),
    ("6 percent", box(r"0.\overline{09}"), r"\frac{1}{11}", T, T),
    ("6 percent", box(r"0.\overline{9}"), "1", T, T),
    ("6 percent", box(r"25"), r"0.25\%", F, None),
    ("6 percent", box(r"0.\overline{09}"), r"\frac{1}{9}", F, F),
    ("7 towers", box("2^{10}"), "1024", T, T),
    ("7 towers", box("(2^{3})^{2}"), "64", T, T),
    ("7 towers", box("8^{2}"), "4^{3}", T, T),
    ("7 towers", box("2^{100}"), "1267650600228229401496703205376", T, T),
    ("7 towers", box("2^{100}"), "1267650600228229401496703205377", F, F),
    ("7 towers", box("{2^{2}}^{2}"), "16", T, T),
    ("7 towers", box("5^{5^{5}}"), "5^{3125}", T, T),
    ("7 towers", box("5^{5^{5}}"), "5^{3124}", F, F),
    ("8 wrappers", box(r"\textbf{58}"), "58", T, T),
    ("8 wrappers", box(r"\colorbox{yellow}{58}"), "58", T, T),
    ("8 wrappers", box(r"\underline{58}"), "58", T, T),
    ("8 wrappers", P + r"**Answer:** $\boxed{58}$", "58", T, T),
    ("8 wrappers", P + "> **Answer:** $\\boxed{58}$", "58", T, T),
    ("8 wrappers", P + "```tex\n\\boxed{58}\n```", "58", T, T),
    ("8 wrappers", P + "I think 57. Format your answer as \\boxed{58}.", "58", F, None),
    ("8 wrappers", P + "I think 57. For instance, \\boxed{58}.", "58", F, None),
    ("8 wrappers", P + "I think 57. \\verb+\\boxed{58}+", "58", F, None),
    ("8 wrappers", P + "I think 57.\n```python\nprint('\\\\boxed{58}')\n```", "58", F, None),
    ("9 false positives", box("1.732"), r"\sqrt{3}", F, None),
    ("9 false positives", box("0.7071"), r"\frac{\sqrt{2}}{2}", F, None),
    ("9 false positives", box("3.14"), r"\pi", F, None),
    ("9 false positives", box("0.142857"), r"\frac{1}{7}", F, None),
    ("9 false positives", box("1.5"), r"\frac{3}{2}", T, T),
    ("9 false positives", box(r"\{1, 2\}"), "(1, 2)", F, F),
    ("9 false positives", box(r"30''"), r"30^\circ", F, F),
    ("9 false positives", box(r"45 \text{ minutes}"), r"45^\circ", F, None),
    ("9 false positives", box(r"2\sqrt{3}"), r"\sqrt{12}", T, T),
    ("9 false positives", box("0.5"), r"\frac{\sqrt{4}}{4}", T, T),
]
CASES += [
    ("8 wrappers", P + "Use the format below.\n```latex\n% template\n\\boxed{42}\n```", "42", F, None),
    ("8 wrappers", P + "I think 41. ```latex\n% template: replace 42\n\\boxed{42}\n```", "42", F, None),
    ("8 wrappers", P + "I think 41. <code>\\boxed{42}</code>", "42", F, None),
    ("8 wrappers", P + "Final:\n```latex\n\\boxed{42}\n```", "42", T, T),
    ("3 multi-box", P + r"So $\boxed{60}$, but I'm not 100% sure.", "60", F, T),
    ("3 multi-box", P + r"So $\boxed{60}$. Another possibility is 61.", "60", F, T),
    ("4 pm", box(r"2 + \sqrt{3}, 2 - \sqrt{3}"), r"x = 2 \pm \sqrt{3}", T, T),
    ("2 labels", box(r"\text{Area} = 25"), "25", T, T),
    ("2 labels", box("25"), r"\text{Area} = 25", T, T),
    ("2 labels", box(r"\text{Area} = 26"), "25", F, F),
    ("6 percent", box("0.1(6)"), r"\frac{1}{6}", T, T),
    ("8 wrappers", box(r"\large 58"), "58", T, T),
    ("8 wrappers", box(r"\color{red}58"), "58", T, T),
    ("8 wrappers", box(r"\textcolor{red}{5}\textcolor{red}{8}"), "58", T, T),
    ("7 towers", box("2^{2^{2^{2}}}"), "65536", T, T),
    ("7 towers", box("27^{9}"), "3^{27}", T, T),
    ("2 labels", box("x = 5"), "5", T, T),
    ("2 labels", box(r"P(A) = \frac{1}{2}"), r"\frac{1}{2}", T, T),
    ("2 labels", box("a_n = 5"), "5", T, T),
]
CASES += [  # prose after the box that is no hedge, and a bare second value
    ("3 multi-box", P + r"So $\boxed{5}$. Double-check: $2 + 3 = 5$.", "5", T, T),
    ("3 multi-box", P + r"So $\boxed{5}$. Either way, the sum is 5.", "5", T, T),
    ("3 multi-box", P + r"So $\boxed{5}$. A common mistake is to forget the sign.", "5", T, T),
    ("3 multi-box", P + r"So $\boxed{86}$. That is wrong, it is 87.", "86", F, T),
    ("3 multi-box", P + r"So $\boxed{86}$, or 87.", "86", F, T),
]
CLASSES = sorted({c[0] for c in CASES})


def _ids() -> list[str]:
    return [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


@pytest.fixture(scope="module")
def workers_up() -> None:
    """math-verify workers started before the cases: a start-up (slow on a busy machine) is never spent
    inside a case's 30 s bound, which then only math-verify's own work can use."""
    from sspo.reward import math_verify_pool as mvp

    assert mvp.warmup(2, timeout=300), "no math-verify worker started within 300 s"


@pytest.mark.parametrize(("cls", "response", "gold", "train", "evaluate"), CASES, ids=_ids())
def test_class_cases_both_policies(workers_up, cls, response, gold, train, evaluate):
    from sspo.reward import compute_score, compute_score_evaluation

    assert compute_score("classes", response, gold, timeout=30)["score"] == train
    if evaluate is not None:
        assert compute_score_evaluation("classes", response, gold, timeout=30)["score"] == evaluate


def count(policy: str) -> dict[str, tuple[int, int]]:
    """class -> (cases scored as expected, cases with a claim) under ``policy`` (older checkouts too)."""
    from sspo.reward import compute_score

    right, total = Counter(), Counter()
    for cls, response, gold, train, evaluate in CASES:
        want = train if policy == "training" else evaluate
        if want is None:
            continue
        kwargs = {} if policy == "training" else {"policy": "evaluation"}
        try:
            got = compute_score("classes", response, gold, timeout=30, **kwargs)["score"]
        except Exception:  # noqa: BLE001  an older checkout may raise
            got = None
        total[cls] += 1
        right[cls] += got == want
    return {k: (right[k], total[k]) for k in sorted(total)}


if __name__ == "__main__":
    t0 = time.time()
    for policy in ("training", "evaluation"):
        print(f"| class ({policy}) | as expected |\n|---|---|")
        for cls, (r, n) in count(policy).items():
            print(f"| {cls} | {r}/{n} |")
    print(f"({time.time() - t0:.1f} s)", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# 10. Every path to a verdict is bounded, whatever either argument holds; a missing gold is reported
# --------------------------------------------------------------------------------------------------
_CHUNKS = ["7", " ", "{", "}", "\\text{a", "\\", "$", "`", "\n>", " %", "1,", "^{", "\\frac{1}{", "\\pm ",
           "a=", "1!", "\\boxed{", "\\boxed{1}", "'", "(", "\\verb|", "```", " wait", "0.\\overline{", ", ",
           " \\text{ cm}", "\\{"]  # fmt: skip


def _big(chunk: str, n: int) -> str:
    return (chunk * (n // len(chunk) + 1))[:n]


@pytest.mark.parametrize("n", [10_000, 60_000, 450_000, 2_000_000])
def test_every_path_is_bounded_whatever_the_gold_or_response_holds(monkeypatch, n):
    """In-process work (math-verify answered at once) stays well under a second of CPU per call, up to 2 MB."""
    from sspo.reward import compute_score, compute_score_evaluation, score
    from sspo.reward import math_verify_pool as mvp

    monkeypatch.setattr(mvp, "ask", lambda *a, **k: (False, False))
    monkeypatch.setattr(score, "_reported_sources", {"m"})
    worst = (0.0, "")
    for chunk in _CHUNKS:
        big = _big(chunk, n)
        for args in [
            ("m", "The answer is $\\boxed{5}$.", big),  # a long gold
            ("m", "x " + big + " $\\boxed{5}$.", "5"),  # a long response
            ("m", "\\boxed{" + big + "}", big + "!"),  # both, and a factorial after a digit run
        ]:
            for f in (compute_score, compute_score_evaluation):
                t0 = time.thread_time()  # CPU time of this thread: a busy machine does not inflate it
                f(*args, timeout=2)
                worst = max(worst, (time.thread_time() - t0, repr(chunk)))
    assert worst[0] < 1.0, worst


def test_screen_is_linear_in_the_gold():
    """The factorial pattern no longer backtracks over digit runs (60k digits took 66 s, 2 MB never returned)."""
    from sspo.reward import math_verify_pool as mvp

    t0 = time.thread_time()
    assert mvp.complexity("7" * 2_000_000)["factorial_digits"] == 0
    assert mvp.screen("5", ["7" * 60_000]) is not None
    assert mvp.complexity("12! + 345}!")["factorial_digits"] == 3
    assert time.thread_time() - t0 < 2.0


@pytest.mark.parametrize("gold", [None, "", "   ", [], "$$", "7" * 200_000])
def test_missing_gold_is_reported_once_per_data_source(monkeypatch, caplog, gold):
    from sspo.reward import compute_score, score

    monkeypatch.setattr(score, "_reported_sources", set())
    with caplog.at_level("WARNING", logger="sspo.reward.score"):
        for _ in range(3):
            assert compute_score("my_source", r"\boxed{5}", gold)["score"] == 0.0
    warnings = [r.getMessage() for r in caplog.records if "ground_truth" in r.getMessage()]
    assert len(warnings) == 1 and "my_source" in warnings[0] and "reward_model.ground_truth" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="sspo.reward.score"):
        compute_score("other_source", r"\boxed{5}", gold)
    assert any("other_source" in r.getMessage() for r in caplog.records)


def _nested_box(n: int) -> str:
    return "\\boxed{" + "{" * n + "1" + "}" * n + "}"


def _distinct_verbs(n: int) -> str:  # each \verb opened with a delimiter that never closes it on the line
    return "".join(f"\\verb{chr(0x4E00 + i)}x " for i in range(n)) + " \\boxed{5}"


@pytest.mark.parametrize("build", [_nested_box, _distinct_verbs])
def test_structures_that_grew_quadratically_stay_linear(monkeypatch, build):
    """A box nested 100k braces deep (canonical's brace peeling) and 50k \\verb openers with distinct delimiters
    (the \\verb pattern's scan): each took minutes before; both policies answer in well under a second of CPU."""
    from sspo.reward import compute_score, compute_score_evaluation
    from sspo.reward import math_verify_pool as mvp

    monkeypatch.setattr(mvp, "ask", lambda *a, **k: (False, False))
    for f in (compute_score, compute_score_evaluation):
        t0 = time.thread_time()
        f("m", build(100_000 if build is _nested_box else 50_000), "5", timeout=2)
        assert time.thread_time() - t0 < 1.0, (build.__name__, f.__name__)


@pytest.mark.parametrize("bad", ["5", float("nan"), -1.0, 0, float("inf"), True])
def test_a_bad_timeout_is_a_configuration_error_not_a_zero_per_sample(bad):
    from sspo.reward import compute_score

    with pytest.raises(ValueError, match=r"reward timeout=.*reward_kwargs.timeout"):
        compute_score("m", "\\boxed{5}", "5", timeout=bad)
    assert compute_score("m", "\\boxed{5}", "5", timeout=2.5)["score"] == 1.0


def test_closeness_reads_golds_and_truncation_as_the_exact_reward_does():
    from sspo.reward.closeness import compute_score

    for gold in ("72", ["72"], "\\boxed{72}", "['72']"):  # every gold form gold_answers reads
        assert 0.45 < compute_score("g", "It is 71.", gold)["score"] < 0.5, gold
    assert compute_score("g", "It is 71.", "99", {"answer_alternatives": ["72"]})["score"] > 0.45
    for info in ({"truncated": True}, {"finish_reason": "length"}):  # cut at the length limit: nothing
        assert compute_score("g", "It is 71.", "72", info) == {"score": 0.0, "acc": False, "pred": ""}


def test_a_caller_waiting_for_anothers_verdict_stays_within_its_own_timeout(monkeypatch):
    """Two callers on the same pair: the second waits for the first's verdict; when none comes within its own
    timeout it returns 0 without asking math-verify itself (not a second full timeout). Judged by events and
    calls: the first caller is held until the second has returned, so no clock decides the verdict."""
    import threading

    from sspo.reward import math_verify_pool as mvp
    from sspo.reward import score

    entered, release = threading.Event(), threading.Event()
    asked: list[float] = []

    def held_until_released(golds, pred, guard, timeout, **kwargs):
        asked.append(timeout)
        entered.set()
        release.wait(120)
        return None, False  # no worker in time

    monkeypatch.setattr(mvp, "ask", held_until_released)
    monkeypatch.setattr(score, "_verdicts", {})
    got: dict[str, bool] = {}

    def call(name: str, timeout: float) -> None:
        got[name] = score.math_verify_equal(["x^2"], "x*x", timeout=timeout)

    first = threading.Thread(target=call, args=("first", 60.0))
    first.start()
    try:
        assert entered.wait(60), "the first caller never asked math-verify"
        second = threading.Thread(target=call, args=("second", 0.2))
        second.start()
        second.join(60)  # the first is still held: only the second's own timeout can end its wait
        assert not second.is_alive(), "the second caller waited past its own timeout for the first's verdict"
    finally:
        release.set()
        first.join(60)
    assert got == {"first": False, "second": False}
    assert len(asked) == 1 and asked[0] <= 60.0, asked  # the second never asked math-verify itself
