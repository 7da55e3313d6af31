"""The evaluation policy reads an answer stated in prose (``sspo.reward.prose``); the training reward does not.

Classes, each both ways (the value read is right / the value read is wrong), written by hand from how
Math-Verify and the Qwen2.5-Math harness read an unboxed response: a final-answer statement, an answer
statement, the last expression, a final-answer statement after the last box, a box that holds a whole
solution, and the boxes joined to the last one.
"""

from __future__ import annotations

import time

import pytest

from sspo.reward import compute_score, compute_score_evaluation
from sspo.reward.prose import math_spans, prose_answer

T, F = 1.0, 0.0
MINERVA = "We add the two parts.\nFinal Answer: The final answer is $%s$. I hope it is correct."
SOLUTION = (
    "Let the first basket hold a apples and the second b apples. The problem says that the two baskets "
    "together hold twice as many apples as the first one alone, and the first holds six. "
)
# (class, response, gold, evaluation verdict); none of these responses has a box the training reward reads
UNBOXED: list[tuple[str, str, str, float]] = [
    ("final statement", MINERVA % r"\frac{7}{2}", "3.5", T),
    ("final statement", MINERVA % r"\frac{5}{2}", "3.5", F),
    ("final statement", "Final Answer: The area of triangle $PQR$ is 48 square units.", "48", T),
    ("final statement", "Final Answer: The area of triangle $PQR$ is 48 square units.", "PQR", F),
    ("final statement", "**Final Answer**\n\n$-6$", "-6", T),
    ("final statement", "**Final Answer**\n\n$-6$", "6", F),
    ("final statement", "Final answer: she waited 3 hours.", "3", T),
    ("final statement", "The final answer is 5. Some say the answer is 6.", "5", T),
    ("final statement", "The final answer is 5. Some say the answer is 6.", "6", F),
    ("final statement", "The final answer is 5. Wait, recomputing: the final answer is 8.", "8", T),
    ("final statement", "The final answer is 5. Wait, recomputing: the final answer is 8.", "5", F),
    ("answer statement", r"So the answer is $2\sqrt{3}$, as required.", r"2\sqrt{3}", T),
    ("answer statement", r"So the answer is $2\sqrt{3}$, as required.", r"3\sqrt{2}", F),
    ("answer statement", "**Answer:** 17", "17", T),
    ("answer statement", "**Answer:** 17", "71", F),
    ("answer statement", "The answer is 12 apples; 3 baskets had 4 each.", "12", T),
    ("answer statement", "The answer is 12 apples; 3 baskets had 4 each.", "4", F),
    ("last expression", "Adding, we get $x + y = 10$, so the total is 10 dollars.\n", "10", T),
    ("last expression", "Adding, we get $x + y = 10$, so the total is 10 dollars.\n", "11", F),
    ("last expression", "Solving, the ordered pair is $(7, 6)$.", "(7,6)", T),
    ("last expression", "Solving, the ordered pair is $(7, 6)$.", "(6,7)", F),
    ("last expression", "The roots are $1$ and $-2$.", "1, -2", T),
    ("last expression", "The roots are $1$ and $-2$.", "-2", F),
    ("last expression", "Therefore the probability is 2/3.", r"\frac{2}{3}", T),
    ("last expression", "Therefore the probability is 2/3.", r"\frac{3}{2}", F),
    ("last expression", "The total loss is 28%.", r"28\%", T),
    ("last expression", "The population grew to 12,000,023 people.", "12000023", T),
    ("last expression", "The population grew to 12,000,023 people.", "12000032", F),
    ("last expression", "It costs $10 per pound, so Anna pays 7.78 in all.", "7.78", T),
    ("last expression", "It costs $10 per pound, so Anna pays 7.78 in all.", "10", F),
    ("last expression", r"\frac{10}{9}", "10/9", T),
    ("last expression", r"-\frac{10}{9}", "10/9", F),
    ("last expression", "1 000", "1000", T),
    ("nothing stated", "I could not solve it.", "7", F),
    ("nothing stated", "", "7", F),
    ("solution in a box", r"\boxed{" + SOLUTION + "So the second basket holds 6 apples.}", "6", T),
    ("solution in a box", r"\boxed{" + SOLUTION + "So the second basket holds 6 apples.}", "12", F),
]


@pytest.mark.parametrize(("cls", "response", "gold", "evaluation"), UNBOXED)
def test_evaluation_reads_the_answer_prose_states_and_training_does_not(cls, response, gold, evaluation):
    assert compute_score_evaluation("m", response, gold, timeout=30)["score"] == evaluation, cls
    assert compute_score("m", response, gold, timeout=30)["score"] == 0.0, cls  # training: the box only


ROOTS = r"First, \boxed{3} is no root. So the roots are \boxed{-2} and \boxed{%s}."
# (class, response, gold, evaluation verdict, training verdict)
BOXED: list[tuple[str, str, str, float, float]] = [
    # a final-answer statement after the last box is the answer (both field graders read it so)
    ("statement after box", MINERVA.replace("We add", r"We add $\boxed{255}$ and") % "10,455", "10455", T, F),
    ("statement after box", MINERVA.replace("We add", r"We add $\boxed{255}$ and") % "10,455", "255", F, T),
    # "final answer" that states nothing keeps the box
    ("statement after box", r"\boxed{42}. This is my final answer.", "42", T, T),
    ("statement after box", r"\boxed{42} is my final answer to part 3.", "42", T, T),
    ("statement after box", r"\boxed{42} is my final answer to part 3.", "3", F, F),
    # a short box with words is an answer as written, not a solution to read
    ("solution in a box", r"\boxed{\text{all real numbers except } 2}", "2", F, F),
    # the last box and the boxes joined to it are the answer to a list gold
    ("joined boxes", ROOTS % "1", "1, -2", T, F),
    ("joined boxes", ROOTS % "3", "1, -2", F, F),
]


@pytest.mark.parametrize(("cls", "response", "gold", "evaluation", "training"), BOXED)
def test_a_box_gives_way_only_to_a_final_statement_after_it_or_when_it_holds_a_solution(
    cls, response, gold, evaluation, training
):
    assert compute_score_evaluation("m", response, gold, timeout=30)["score"] == evaluation, cls
    assert compute_score("m", response, gold, timeout=30)["score"] == training, cls


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"Price $10 a pound; total $\frac{70}{9}$ \approx 7.78.", "7.78"),  # a price opens no math
        ("The answer is $\\$12$.", "\\$12"),
        ("$$\n5\n$$", "5"),
        (r"\[ x = 3 \]", "x = 3"),
        ("x^2 = 4", "x^2 = 4"),  # no word: the response is the expression
        ("Final answer: $1$, $2$ or $3$.", "1, 2, 3"),
        ("She is 10 years old and her brother is 7.", "7"),
        ("No idea.", None),
    ],
)
def test_prose_answer_reads_as_the_field_reads(text, expected):
    assert prose_answer(text) == expected


def test_math_spans_pair_left_to_right_and_an_unclosed_opener_is_text():
    assert [c for _, _, c in math_spans(r"a $1$ b $$2$$ c \(3\) d \[4\] e $5")] == ["1", "2", "3", "4"]
    assert math_spans("costs $10 and\n$20 later") == []  # inline math stays on one line


@pytest.mark.parametrize(
    "chunk",
    ["$", "$$", "\\[", "\\(", "final answer is ", "Final Answer:\n", "answer: ", "1,", "$1$ and ", "a "],
)
def test_reading_prose_is_linear_in_the_response(chunk):
    """450k characters of each pattern the prose reader scans: well under a second of CPU, a verdict each."""
    big = (chunk * (450_000 // len(chunk) + 1))[:450_000]
    for response in (big, r"\boxed{5} " + big, r"\boxed{" + big + "}"):
        t0 = time.thread_time()  # CPU time of this thread: a busy machine does not inflate it
        out = compute_score_evaluation("m", response, "5", timeout=2)
        assert time.thread_time() - t0 < 1.0, chunk
        assert out["score"] in (0.0, 1.0)
