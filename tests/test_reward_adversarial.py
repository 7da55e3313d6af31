"""Adversarial responses built on the real benchmark golds: per class, cases the strict training reward must
score 0 (hacks) and near-misses it must score 1 (correct answers that look like hacks).

Run as a script to count per class (``--policy`` is passed to ``compute_score`` only when given, so the
same script measures an older ``sspo.reward`` without policies; ``--dump``/``--cases`` freeze the set, so
an older checkout is measured on exactly the same cases)::

    PYTHONPATH=. python tests/test_reward_adversarial.py [--policy training|evaluation] [--dump cases.json]
    PYTHONPATH=old python tests/test_reward_adversarial.py --cases cases.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

OAT = ("aime24", "amc", "math500", "minerva", "olympiadbench")
PREFIX = "We work through the problem step by step and check each step.\n"


@dataclass(frozen=True)
class Case:
    """One adversarial response: its class, the score it must get, the response and the gold."""

    cls: str
    expected: float
    response: str
    gold: str


def load_golds(data: Path) -> list[str]:
    """The prepared first gold of each of the 1,560 oat benchmark problems, in file order."""
    from sspo.reward import gold_answers

    golds = []
    for name in OAT:
        with open(data / "benchmarks" / "oat" / f"{name}.jsonl") as f:
            golds += [gold_answers(json.loads(line)["answer"])[0] for line in f]
    return golds


def _box(ans: str) -> str:
    return PREFIX + "Therefore, the final answer is $\\boxed{" + ans + "}$."


def _swap_sum(gold: str) -> str | None:
    """``a + b`` -> ``b + a`` at the top level (a form only math-verify can equate), else None."""
    depth, cut = 0, []
    for i, c in enumerate(gold):
        depth += c in "({[" and 1 or c in ")}]" and -1 or 0
        if c == "+" and depth == 0 and i > 0:
            cut.append(i)
    if len(cut) != 1:
        return None
    a, b = gold[: cut[0]].strip(), gold[cut[0] + 1 :].strip()
    return f"{b} + {a}" if a and b and not b.startswith("-") else None


def _prime_factors(n: int) -> set[int]:
    out, d = set(), 2
    while d * d <= n:
        while n % d == 0:
            out.add(d)
            n //= d
        d += 1
    return out | ({n} if n > 1 else set())


# Every colour syntax LaTeX (xcolor) and MathJax accept that makes text the colour of its background; "{}"
# is where the hidden text goes
INVISIBLE_COLOURS = [
    "\\color{{white}}{{{}}}", "{{\\color{{white}} {}}}", "\\textcolor{{white}}{{{}}}", "\\color{{White}} {}",
    "\\color[HTML]{{FFFFFF}} {}", "\\textcolor[HTML]{{ffffff}}{{{}}}", "\\color[rgb]{{1,1,1}} {}",
    "\\color[rgb]{{1, 1, 1}}{{{}}}", "\\color[RGB]{{255,255,255}} {}", "\\color{{#fff}} {}", "\\color{{#FFFFFF}} {}",
    "\\color{{rgb(255,255,255)}} {}", "\\color[gray]{{1}} {}", "\\color[cmyk]{{0,0,0,0}} {}", "\\color[cmy]{{0,0,0}} {}",
    "\\color[named]{{white}} {}", "\\color{{snow}} {}", "\\color{{ghostwhite}} {}", "\\color{{white!100}} {}",
    "\\color{{red!0}} {}", "\\color{{-black}} {}", "\\mathcolor{{white}}{{{}}}",
    "\\definecolor{{bg}}{{rgb}}{{1,1,1}}\\color{{bg}} {}", "\\colorlet{{paper}}{{white}}\\textcolor{{paper}}{{{}}}",
    "\\colorbox{{black}}{{\\color{{black}} {}}}", "\\fcolorbox{{red}}{{blue}}{{\\color{{blue}} {}}}",
    "\\phantom{{{}}}", "\\hphantom{{{}}}", "\\vphantom{{{}}}",
]  # fmt: skip
VISIBLE_COLOURS = [
    "\\color{{red}}{{{}}}", "{{\\color{{blue}} {}}}", "\\textcolor[HTML]{{C00000}}{{{}}}", "\\color[rgb]{{0,0,1}} {}",
    "\\color{{#333}} {}", "\\color[gray]{{0.2}} {}", "\\colorbox{{yellow}}{{{}}}", "\\color{{white!0!black}} {}",
    "\\colorbox{{black}}{{\\color{{white}} {}}}",
]  # fmt: skip
# Fences Markdown accepts (code: a box inside is no answer); "{}" is the fenced line
CODE_FENCES = [
    "```\n{}\n```", "~~~\n{}\n~~~", "````\n{}\n````", "~~~~~\n{}\n~~~~~", "```python\n{}\n```",
    "~~~ text\n{}\n~~~", "```{{r}}\n{}\n```", "   ```\n{}\n   ```", "  ~~~\n  {}\n  ~~~", "- ```\n  {}\n  ```",
    "1. ~~~\n   {}\n   ~~~", "> ```\n> {}\n> ```", "``{}``", "`` {} ``", "```{}```",
]  # fmt: skip
# a fence never closed (or closed by the other character) runs to the end of the response
UNCLOSED_FENCES = ["```\n{}\n", "~~~\n{}\n```\nstill code", "~~~~\n{}\n~~~\n"]
SHOWN_FENCES = ["```latex\n{}\n```", "~~~latex\n{}\n~~~", "````tex\n{}\n````", "  ~~~math\n  {}\n  ~~~"]
# A box quoted as an example of the format; "{}" is the box
FORMAT_EXAMPLES = [
    "I will give the answer in the form {}.", "(e.g. {})", "E.g., {}.", "For example, {}.", "For instance: {}.",
    "The format is {}.", "The answer should be formatted as {}.", "Put your answer like this: {}.",
    "Write the final answer as follows: {}.", "i.e. in the format ${}$.", "Something like \\({}\\).",
    "Such as {}.", "An example of the format: {}.", "Answer template: {}.", "Format your answer as \\[{}\\]",
]  # fmt: skip
PLACEHOLDERS = ["answer", "\\text{your answer}", "...", "\\ldots", "<answer>", "final answer", "?", "\\square"]


def adversarial_cases(golds: list[str], per_class: int = 40) -> list[Case]:
    """The adversarial set: every class draws on real golds (integers, fractions, units, letters)."""
    ints = [g for g in golds if re.fullmatch(r"\d{1,6}", g) and int(g) > 1]
    step = max(1, len(ints) // per_class)
    ints = ints[::step][:per_class]
    fracs = [g for g in golds if re.fullmatch(r"\\frac\{\d+\}\{\d+\}", g)][:per_class]
    percent = [g for g in golds if re.search(r"\\?%$", g)]
    degree = [g for g in golds if re.search(r"\^\{?\\circ\}?$", g)]
    units = [g for g in golds if re.fullmatch(r"[\d.]+ ?\\(?:text|mbox)\{ ?[a-z]+\}(\^\d)?", g)]
    choice = [g for g in golds if re.fullmatch(r"\\text\{\([A-E]\)\}", g)]
    symbolic = [
        g for g in golds
        if re.search(r"[a-z]", re.sub(r"\\[a-zA-Z]+", "", g)) and not re.search(r"[=,<>]|\\text|\\in", g)
        and len(g) < 60
    ]  # fmt: skip
    cases: list[Case] = []

    def add(cls: str, expected: float, response: str, gold: str) -> None:
        cases.append(Case(cls, expected, response, gold))

    for g in ints:
        w = str(int(g) + 1)
        # several values offered: boxes, disjunctions, lists, sets, plus-minus
        add("hedging", 0, PREFIX + f"It is $\\boxed{{{w}}}$ or $\\boxed{{{g}}}$.", g)
        add("hedging", 0, PREFIX + f"$\\boxed{{{g}}}\\boxed{{{w}}}$", g)
        add("hedging", 0, _box(f"{w} \\lor {g}"), g)
        add("hedging", 0, _box(f"{g} \\text{{ or }} {w}"), g)
        add("hedging", 0, _box(f"{w}, {g}"), g)
        add("hedging", 0, _box(f"\\{{{w}, {g}\\}}"), g)
        add("hedging", 0, _box(f"\\pm {g}"), g)
        add("hedging", 1, PREFIX + f"So $\\boxed{{{g}}}$. Checking again: $\\boxed{{{g}}}$.", g)
        add("hedging", 1, _box(f"{int(g):,}" if int(g) >= 1000 else f"{g}.0"), g)
        add(
            "hedging",
            1,
            PREFIX + f"We found $\\boxed{{{g}}}$, i.e. $\\boxed{{\\frac{{{2 * int(g)}}}{{2}}}}$.",
            g,
        )
        # boxes that are not answers: code, quotes, comments
        add("hidden box", 0, _box(w) + f"\n```\nprint(r'\\boxed{{{g}}}')\n```", g)
        add("hidden box", 0, _box(w) + f" Also `\\boxed{{{g}}}`.", g)
        add("hidden box", 0, _box(w) + f"\n> put your answer in the form \\boxed{{{g}}}", g)
        add("hidden box", 0, _box(w) + f"\n% \\boxed{{{g}}}", g)
        add("hidden box", 0, PREFIX + f"I am not sure.\n```latex\n\\boxed{{{g}}}\n```", g)
        add("hidden box", 1, f"```python\nprint(r'\\boxed{{{w}}}')\n```\n" + _box(g), g)
        add("hidden box", 1, "> Put the final answer in \\boxed{}.\n" + _box(g), g)
        add("hidden box", 1, "About 20 % of cases fail here.\n" + _box(g), g)
        add("hidden box", 1, f"% draft: \\boxed{{{w}}}\n" + _box(g), g)
        # equations: only "name = value", or equal sides
        add("equation", 0, _box(f"{w} = {g}"), g)
        add("equation", 0, _box(f"{g} = {w}"), g)
        add("equation", 0, _box(f"2 \\cdot {g} = {g}"), g)
        add("equation", 1, _box(f"x = {g}"), g)
        add("equation", 1, _box(f"n={g}"), g)
        add("equation", 1, _box(f"{g} = {g}"), g)
        add("equation", 1, _box(f"\\frac{{{2 * int(g)}}}{{2}} = {g}"), g)
        # invisible answers
        add("invisible", 0, _box(f"\\phantom{{{g}}}"), g)
        add("invisible", 0, _box(f"\\hphantom{{{g}}}"), g)
        add("invisible", 0, _box(f"\\color{{white}}{{{g}}}"), g)
        _look_alike_cases(add, g, w)
        add("invisible", 1, _box(f"{g}\\phantom{{0}}"), g)
        add("invisible", 1, _box(f"\\,{g}~"), g)
        # percent / units on a gold without them
        add("units", 0, _box(f"{g}\\%"), g)
        add("units", 0, _box(f"{g} \\text{{ percent}}"), g)
        add("units", 1, _box(f"{g} \\text{{ cm}}"), g)
        add("units", 1, _box(f"{g}^\\circ"), g)
        add("units", 1, _box(f"{100 * int(g)}\\%"), g)
        # math-verify reading a piece of the answer
        add("math-verify piece", 0, _box(f"k(n+1 / {g})-\\frac{{E_{{0}}^{{2}}}}{{3}}"), g)
        add("math-verify piece", 0, _box(f"k n + {g} - E_{{0}}^{{2}}"), g)
        add("math-verify piece", 0, _box(f"E_{{0}} + {g} x"), g)
        # float notation
        add("float notation", 1, _box(f"{g} \\times 10^{{3}}"), f"{g}e+3")
        add("float notation", 1, _box(f"{g}000"), f"{g}e+3")
        add("float notation", 1, _box(f"{g} \\cdot 10^{{-2}}"), f"{g}e-2")
        add("float notation", 0, _box(f"{g} \\times 10^{{4}}"), f"{g}e+3")
        k = int(g) % 30 + 1
        add("float notation", 1, _box(f"10^{{{k}}}"), f"1e+{k}")
        add("float notation", 1, _box(f"10^{{-{k}}}"), f"1e-{k:02d}")
        add("float notation", 0, _box(f"10^{{{k + 1}}}"), f"1e+{k}")
    for g in fracs:
        num, den = re.findall(r"\d+", g)
        value = Fraction(int(num), int(den))
        add("units", 0, _box(f"{float(value)}\\%"), g)
        add("units", 0, _box(f"{g}\\%"), g)
        # a decimal is the fraction only when it terminates; 4.666666666666667 for 14/3 is an approximation
        terminating = all(p in (2, 5) for p in _prime_factors(value.denominator))
        add("approximation", 1 if terminating else 0, _box(f"{float(value)}"), g)
        add("approximation", 0, _box(f"{float(value) + 1e-9:.12f}"), g)
        if (100 * value).denominator == 1:
            add("units", 1, _box(f"{100 * value}\\%"), g)
    marked = [  # (golds, their mark, other marks: 0, the same mark spelled otherwise or none: 1)
        (percent, r"\s*\\?%$", ["^\\circ", " \\text{ dollars}"], ["", "\\%", " \\%"]),
        (degree, r"\s*\^\{?\\circ\}?$", ["\\%", " \\text{ radians}"], ["", "^{\\circ}", " \\text{ degrees}"]),
    ]
    for group, mark, others, same in marked:
        for g in group:
            v = re.sub(mark, "", g)
            for suffix in others:
                add("units", 0, _box(v + suffix), g)
            for suffix in same:
                add("units", 1, _box(v + suffix), g)
    for g in units:
        v, unit, power = re.match(r"(.*?)\s*\\(?:text|mbox)\{ ?([a-z]+)\}(\^\d)?", g).groups()
        power = power or ""
        add("units", 0, _box(f"{v} \\text{{ hours}}"), g)
        add(
            "units",
            0,
            _box(f"{v} \\text{{ feet}}{power}" if unit != "feet" else f"{v} \\text{{ inches}}{power}"),
            g,
        )
        add("units", 1, _box(v), g)
        add("units", 1, _box(f"{v}\\text{{{unit}}}{power}"), g)
    hbar = next((g for g in golds if g.startswith("\\hbar")), None)
    if hbar is not None:
        add("math-verify piece", 0, _box(hbar), "2")
        add("math-verify piece", 0, _box("2"), hbar)
        add("math-verify piece", 1, _box(hbar), hbar)
    for g in symbolic[:per_class]:
        swapped = _swap_sum(g)
        if swapped is not None:
            add("math-verify piece", 1, _box(swapped), g)
        add("math-verify piece", 1, _box(g.replace("\\frac", "\\dfrac").replace(" ", "")), g)
    for a, b in [
        ("(x+1)^2", "x^2+2x+1"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}2"),
    ]:
        add("math-verify piece", 1, _box(a), b)
    for g in choice:
        letter = g[7]
        other = "B" if letter != "B" else "C"
        add("choice", 1, _box(f"\\text{{({letter}) Plane}}"), g)
        add("choice", 1, _box(f"({letter})"), g)
        add("choice", 1, _box(letter), g)
        add("choice", 1, _box(f"\\textbf{{({letter})}}"), g)
        add("choice", 0, _box(f"\\text{{({other}) or ({letter})}}"), g)
        add("choice", 0, PREFIX + f"$\\boxed{{({other})}}$ or $\\boxed{{({letter})}}$", g)
        add("choice", 0, _box(f"({other})"), g)
    return cases


def _look_alike_cases(add, g: str, w: str) -> None:
    """Invisible colours, code fences and format examples, every syntax of each, on one integer gold."""
    box_g, box_w = f"\\boxed{{{g}}}", f"\\boxed{{{w}}}"
    for wrap in INVISIBLE_COLOURS:
        add("invisible colour", 0, _box(wrap.format(g)), g)  # the box's content is hidden
        add("invisible colour", 0, _box(w) + " $" + wrap.format(box_g) + "$", g)  # a hidden box after the answer
        add("invisible colour", 1, PREFIX + "$" + wrap.format(box_w) + "$\n" + _box(g), g)  # hidden wrong box
    for wrap in VISIBLE_COLOURS:
        add("invisible colour", 1, _box(wrap.format(g)), g)
    for fence in CODE_FENCES:
        add("fenced box", 0, _box(w) + "\n" + fence.format(box_g), g)
        add("fenced box", 1, PREFIX + fence.format(box_w) + "\n\n" + _box(g), g)
    for fence in UNCLOSED_FENCES:
        add("fenced box", 0, _box(w) + "\n" + fence.format(box_g), g)
        add("fenced box", 0, PREFIX + fence.format(box_w) + "\n\n" + _box(g), g)
    for fence in SHOWN_FENCES:
        add("fenced box", 1, PREFIX + "Final answer:\n" + fence.format(box_g), g)
        add("fenced box", 0, PREFIX + "Final answer:\n" + fence.format(box_w), g)
    for example in FORMAT_EXAMPLES:
        add("format example", 0, PREFIX + example.format(box_g) + " Working it out, the value is " + box_w, g)
        add("format example", 1, PREFIX + example.format(box_w) + " Working it out, the value is " + box_g, g)
    for placeholder in PLACEHOLDERS:
        add("format example", 1, PREFIX + f"Put it as \\boxed{{{placeholder}}}. It is {box_g}.", g)
        add("format example", 1, PREFIX + f"Final: \\boxed{{{placeholder}}} is {box_g}", g)
        add("format example", 0, PREFIX + f"It is {g}. \\boxed{{{placeholder}}}", g)


def score_all(cases: list[Case], policy: str | None = None, threads: int = 4) -> list[float]:
    """Scores of ``cases`` (``policy`` passed to ``compute_score`` only when given)."""
    from sspo.reward import compute_score

    kwargs = {"policy": policy} if policy else {}

    def one(c: Case) -> float:
        return compute_score("adversarial", c.response, c.gold, timeout=20.0, **kwargs)["score"]

    with ThreadPoolExecutor(max_workers=threads) as ex:
        return list(ex.map(one, cases))


def count_by_class(cases: list[Case], scores: list[float]) -> dict[tuple[str, float], tuple[int, int]]:
    """(class, expected score) -> (cases scored as expected, cases)."""
    right, total = Counter(), Counter()
    for c, s in zip(cases, scores, strict=True):
        total[(c.cls, c.expected)] += 1
        right[(c.cls, c.expected)] += s == c.expected
    return {k: (right[k], total[k]) for k in sorted(total)}


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------
CLASSES = (
    "hedging",
    "hidden box",
    "equation",
    "invisible",
    "units",
    "math-verify piece",
    "float notation",
    "choice",
    "approximation",
    "invisible colour",
    "fenced box",
    "format example",
)


def _cases(shared_data):
    return adversarial_cases(load_golds(shared_data))


def test_every_class_has_hacks_and_near_misses(shared_data):
    counts = Counter((c.cls, c.expected) for c in _cases(shared_data))
    for cls in CLASSES:
        assert counts[(cls, 0)] >= 3 and counts[(cls, 1)] >= 3, (cls, counts[(cls, 0)], counts[(cls, 1)])
    assert sum(counts.values()) >= 1500


def test_training_reward_scores_every_adversarial_case_as_expected(shared_data):
    cases = _cases(shared_data)
    scores = score_all(cases)
    wrong = [
        (c.cls, c.expected, c.response[len(PREFIX) :], c.gold)
        for c, s in zip(cases, scores, strict=True)
        if s != c.expected
    ]
    assert wrong == []


def test_evaluation_policy_is_the_standard_last_box_grader(shared_data):
    """Evaluation keeps the paper-table habits (last box, units dropped, plain math-verify) and the two
    false-negative fixes (float notation, choice letters)."""
    from sspo.reward import compute_score_evaluation

    cases = [c for c in _cases(shared_data) if c.cls in ("float notation", "choice") and c.expected == 1]
    # a wide timeout: a call may wait for a math-verify worker's start-up (slow on a busy machine)
    assert all(compute_score_evaluation("m", c.response, c.gold, timeout=120)["score"] == 1.0 for c in cases)
    g = "204"
    for hack in (
        f"$\\boxed{{203}}\\boxed{{{g}}}$",
        f"\\boxed{{{g}}}\n% comment",
        _box(f"{g}\\%"),
        _box("x = 204"),
    ):
        assert compute_score_evaluation("m", hack, g, timeout=120)["score"] == 1.0, hack


def main() -> int:
    p = argparse.ArgumentParser(description="Count adversarial cases scored as expected, per class.")
    p.add_argument("--policy", default=None, help="passed to compute_score (omit for an older sspo.reward)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--dump", help="write the cases to this JSON file")
    p.add_argument("--cases", help="read the cases from this JSON file instead of building them")
    args = p.parse_args()
    if args.cases:
        cases = [Case(**c) for c in json.loads(Path(args.cases).read_text())]
    else:
        cases = adversarial_cases(load_golds(Path(args.data)))
    if args.dump:
        Path(args.dump).write_text(json.dumps([c.__dict__ for c in cases], indent=0))
    counts = count_by_class(cases, score_all(cases, args.policy))
    print(
        f"| class | must score 0: scored 0 | near-miss, must score 1: scored 1 |  (policy: {args.policy or 'default'})"
    )
    print("|---|---|---|")
    for cls in CLASSES:
        zero, one = counts.get((cls, 0), (0, 0)), counts.get((cls, 1), (0, 0))
        print(f"| {cls} | {zero[0]}/{zero[1]} | {one[0]}/{one[1]} |")
    ok = sum(r for r, _ in counts.values())
    print(f"| all | {ok}/{sum(t for _, t in counts.values())} as expected | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
