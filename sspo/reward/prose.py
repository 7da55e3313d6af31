"""The final answer a response states in prose, read the way the field's graders read an unboxed response.

The evaluation policy only (``GradingPolicy.boxed_only`` off): the training reward keeps the last box as its
one answer, since a reward that read the last number of the text would stop rewarding the box and accept a
number that merely ends a derivation. In the order Math-Verify (and the Qwen2.5-Math harness) read a response:

1. a final-answer statement, the last one: "The final answer is $X$. I hope it is correct." (the Minerva
   format), "Final Answer: the volume is 120.", "**Final Answer**" and X on the next line;
2. else an answer statement, the last one: "the answer is X", "Answer: X", "**Answer:** X";
3. else the last expression of the text: its last number after its last math span (``$...$``, ``$$...$$``,
   ``\\(...\\)``, ``\\[...\\]``), else that span.

A statement's X is read in its sentence: the expression after its last "is"/"="/"equals", else its first
expression ("Final Answer: The volume of $ABCDEF$ is 120." -> ``120``; "Answer: she started 3 hours ago." ->
``3``). A final-answer statement after a response's last box outranks the box (both graders read it so);
other prose after a box does not. Linear in the response: math spans are paired in one left-to-right pass,
and a statement is read within the 600 characters after it. Standard library only.
"""

from __future__ import annotations

import re
from itertools import islice

# openers as literals only (a fast scan); an escaped "\\$" and a "$" right after a digit are skipped in the loop
_OPEN_RE = re.compile(r"\\[\[($]|\$\$?")
_CLOSE_RE = {
    "$$": re.compile(r"(?<!\\)\$\$"),
    "$": re.compile(r"(?<!\\)\$"),
    "\\[": re.compile(r"\\\]"),
    "\\(": re.compile(r"\\\)"),
}
# a number outside math: 12, -3.5, .5, 1,234,567.8 (or 2,74: read as the grader reads commas), 2/3, 25%,
# 25 percent (not the 2 of "x2", "10^2" or "{2}"), and a bare LaTeX fraction (-\frac{10}{9})
_NUMBER_RE = re.compile(
    r"(?<![\w.\\^_/{}])-?(?:\d+(?:,\d+)*(?:\.\d+)?|\.\d+)(?:/\d+)?"
    r"(?:\s*(?:\\?%|percent\b))?|-?\\[dt]?frac\{[^{}]{1,50}\}\{[^{}]{1,50}\}"
)
_PERCENT_TAIL_RE = re.compile(r"\s*(?:\\?%|percent)$")
_JOINER_RE = re.compile(r"[\s\"'\u201c\u201d]*(?:,|\band\b|\bor\b|,\s*(?:and|or)\b)[\s\"'\u201c\u201d]*")
_PROSE_WORD_RE = re.compile(r"(?<!\\)\b[A-Za-z]{2,}")  # a word, not a LaTeX command
ONE_EXPRESSION_CHARS = 200  # a response this short with no word and no math delimiter is its own answer
# "final answer" followed by what states it: "is" (within 100 characters: "the final answer to it is 5"), a
# colon, or a line break (a "**Final Answer**" heading); "my final answer." or "the final answer to part 3" is none
_FINAL_RE = re.compile(r"(?i)\bfinal\s+answer\b(?:[^.\n]{0,100}?\bis\b|(?:\s*\*\*)?\s*:|(?:\*\*)?[ \t]*\n)")
_ANSWER_RE = re.compile(r"(?i)\banswer\b(?:\s*\*\*)?\s*(?::|\bis\b)")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)|\n[ \t]*\n|\bI hope\b")
_COPULA_RE = re.compile(r"\bis\b|\bare\b|\bequals?\b|=|\\approx\b|≈")
STATEMENT_CHARS = 600  # how far after "answer" its value is looked for
JOINED_MAX = 6  # at most this many math spans in a row are one answer (as Math-Verify joins them)
SOLUTION_WORDS = 20  # a box with this many words holds a solution: its stated answer is read


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each math span of ``text``, paired left to right in one pass.

    An opener with no closer after it is text, and so is an inline ``$`` whose closer is on another line (a
    price, "$10 a pound"); a ``$`` right after a digit opens nothing.
    """
    out: list[tuple[int, int, str]] = []
    pos, dead = 0, set()
    while True:
        m = _OPEN_RE.search(text, pos)
        if m is None:
            return out
        kind, pos = m.group(0), m.end()
        if kind in dead or kind == "\\$" or (kind == "$" and m.start() and text[m.start() - 1].isdigit()):
            continue
        c = _CLOSE_RE[kind].search(text, m.end())
        if c is None:
            dead.add(kind)  # no closer after this one: none after any later opener of its kind either
            continue
        if kind == "$" and "\n" in text[m.end() : c.start()]:
            continue  # inline math stays on its line; the "$" found next is tried as an opener
        out.append((m.start(), c.end(), text[m.end() : c.start()].strip()))
        pos = c.end()


def _mask(text: str, spans: list[tuple[int, int, str]]) -> str:
    """``text`` with its math spans blanked (same length), so prose patterns never read inside math."""
    pieces, prev = [], 0
    for i, j, _ in spans:
        pieces += [text[prev:i], " " * (j - i)]
        prev = j
    return "".join(pieces) + text[prev:]


def _expressions(text: str) -> tuple[list[tuple[int, int, str, bool]], str]:
    """((start, end, value, is math) of every math span and every number outside them, in order; ``text``
    with the spans blanked)."""
    spans = math_spans(text)
    masked = _mask(text, spans)
    numbers = [(m.start(), m.end(), _number(m.group(0)), False) for m in _NUMBER_RE.finditer(masked)]
    return sorted([(i, j, c, True) for i, j, c in spans] + numbers), masked


def _last_number(masked: str, start: int) -> tuple[int, int, str, bool] | None:
    """The last number of ``masked`` at or after ``start``, looked for in the tail first (a response ends
    with its answer): a number cut by a window's edge is never read as its digits after the edge."""
    n = len(masked)
    for window in (256, 4096, n):
        last = _last_match(_NUMBER_RE, masked, max(start, n - window))
        if last is not None:
            return (last.start(), last.end(), _number(last.group(0)), False)
        if n - window <= start:
            return None
    return None


def _joined(a: tuple[int, int, str, bool], b: tuple[int, int, str, bool], masked: str) -> bool:
    """Whether two math spans in a row are one answer: "$12$ and $13$", "$1$, $-2$" (Math-Verify's reading;
    bare numbers are never joined: "12 because 3 times 4 = 12 and 1 more" states 12)."""
    return a[3] and b[3] and _JOINER_RE.fullmatch(masked, a[1], b[0]) is not None


def _number(s: str) -> str:
    """A number as an answer string: ``25 percent`` -> ``25\\%``."""
    return _PERCENT_TAIL_RE.sub(r"\\%", s)


def read_statement(text: str, start: int) -> str | None:
    """The value a statement states in its sentence, from ``start`` (just after "answer"); None if none."""
    window = text[start : start + STATEMENT_CHARS]
    found, masked = _expressions(window)
    lead = len(masked) - len(masked.lstrip(" \t\n:*"))
    end = _SENTENCE_END_RE.search(masked, lead)
    stop = end.start() if end else len(masked)
    found = [f for f in found if f[0] < stop and f[2]]
    if not found:
        return None
    copulas = [m.end() for m in _COPULA_RE.finditer(masked, 0, stop)]
    after = [f for f in found if copulas and f[0] >= copulas[-1]] or found
    run = after[:1]
    for f in after[1:JOINED_MAX]:  # "$12$ and $13$": math joined by "and"/"or"/"," is one answer
        if not _joined(run[-1], f, masked):
            break
        run.append(f)
    return ", ".join(f[2] for f in run)


def _last_match(pattern: re.Pattern, text: str, pos: int = 0) -> re.Match | None:
    last = None
    for last in pattern.finditer(text, pos):  # noqa: B007  the last match is the one read
        pass
    return last


def final_statement(text: str, pos: int = 0) -> str | None:
    """The value of the last final-answer statement of ``text`` from ``pos`` on (step 1), or None."""
    m = _last_match(_FINAL_RE, text, pos)
    return read_statement(text, m.end()) if m else None


def is_solution(content: str) -> bool:
    """Whether a box holds a worked solution rather than an answer: a paragraph of 20 or more words."""
    if len(content) < 3 * SOLUTION_WORDS:  # 20 words of 2+ letters need 59 characters
        return False
    return sum(1 for _ in islice(_PROSE_WORD_RE.finditer(content), SOLUTION_WORDS)) >= SOLUTION_WORDS


def prose_answer(text: str) -> str | None:
    """The final answer of a response with no box (steps 1-3 above), or None when it states none."""
    stated = None
    if "answer" in text.lower():  # a C-speed test before the case-blind patterns
        stated = final_statement(text)
        if stated is None:
            m = _last_match(_ANSWER_RE, text)
            stated = read_statement(text, m.end()) if m else None
    if stated is not None:
        return stated
    alone = text.strip().rstrip(".").strip()
    if len(alone) <= ONE_EXPRESSION_CHARS and "\n" not in alone and not _PROSE_WORD_RE.search(alone):
        if not _OPEN_RE.search(alone):
            return alone or None  # "\\frac{10}{9}", "1 000": the response is the expression
    spans = [(i, j, c, True) for i, j, c in math_spans(text) if c]
    masked = _mask(text, [s[:3] for s in spans])
    number = _last_number(masked, spans[-1][1] if spans else 0)
    if number is not None:
        return number[2]
    if not spans:
        return None
    run = spans[-1:]
    for f in reversed(spans[-JOINED_MAX:-1]):  # "the roots are $1$ and $-2$."
        if not _joined(f, run[0], masked):
            break
        run.insert(0, f)
    return ", ".join(f[2] for f in run)
