"""Grading a math response against gold answers: extraction, two policies, the in-process comparison.

Two policies, one code path (``grade``):

* ``EVALUATION`` -- the standard of the paper-style tables (Qwen2.5-Math / oat harness habits): the answer
  is the LAST ``\\boxed{}`` of the response, normalised (spacing, ``\\dfrac``, ``%``/``^\\circ``/unit words
  dropped ...), compared as a string or number, then by math-verify. Our table numbers stay comparable. A
  response with no box is read as those graders read it (``sspo.reward.prose``: a final-answer statement,
  an answer statement, else the last expression), and so is a final-answer statement after the last box.
* ``TRAINING`` -- the reward a policy optimises, so every false positive is a hack to be found. On top of
  the above (each rule a field of ``GradingPolicy``, each can be turned off):

  - ``ignore_hidden_boxes``: boxes in code (fenced or inline), markdown quotes (``> ...``) and LaTeX
    comments (``% ...``) are not answers;
  - ``single_value``: the response offers ONE value: every box, every side of ``\\lor``/"or", every item
    of a list or set (when the gold is one value), every side of an equation that is not a
    ``variable =`` name must equal the gold; ``\\pm`` when the gold has none scores 0;
  - ``reject_invisible``: ``\\phantom{...}`` and white text are removed first, so an invisible box is empty;
  - ``units``: ``%``, ``^\\circ`` and unit words are kept apart from the value. When both gold and answer
    carry some, the answer's must be among the gold's (``90\\%`` is not ``90^\\circ``, hours are not
    minutes); ``x\\%`` for a gold without ``%`` is the number ``x/100``;
  - ``guard_math_verify``: math-verify's "equal" counts only when its parse keeps every variable of the
    answer (it reads ``\\hbar \\omega(v+1/2)-...`` as ``2``); see ``sspo.reward.math_verify_pool``.
  - ``boxed_only``: the answer is a box; prose is never read for one (a reward that read the last number
    would stop rewarding the box and accept a number that merely ends a derivation).

Both policies: numbers in float notation compare as numbers (``1e+20`` = ``10^{20}``), a multiple-choice
gold accepts the letter with its option text (``\\text{(C) Plane}`` for ``\\text{(C)}``). Standard library
only (the worker processes and ``sspo.tools.data`` import it).
"""

from __future__ import annotations

import ast
import bisect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sspo.reward.forms import (
    compare_powers,
    expand_pm,
    is_label,
    label_value,
    list_items,
    repeating_decimal,
    unwrap_visible,
)

if TYPE_CHECKING:  # imported at first use: a response without colour commands, a row without a question
    from sspo.reward.question import Request  # never load them (the reward must start fast)


@dataclass(frozen=True)
class GradingPolicy:
    """Which strict rules apply (see the module docstring); all off is the standard evaluation grader."""

    ignore_hidden_boxes: bool = True
    single_value: bool = True
    reject_invisible: bool = True
    units: bool = True
    guard_math_verify: bool = True
    exact_numbers: bool = True
    reject_hedges: bool = True
    read_question: bool = True
    boxed_only: bool = True


TRAINING = GradingPolicy()
EVALUATION = GradingPolicy(
    ignore_hidden_boxes=False,
    single_value=False,
    reject_invisible=False,
    units=False,
    guard_math_verify=False,
    exact_numbers=False,
    reject_hedges=False,
    read_question=False,
    boxed_only=False,
)
POLICIES = {"training": TRAINING, "evaluation": EVALUATION}

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_BARE_BOX_RE = re.compile(r"[^\s$]+")
_BRACE_RE = re.compile(r"[{}]")
_rx = lru_cache(maxsize=None)(re.compile)  # patterns of rarer paths, compiled at first use (fast import)
MAX_RESPONSE_CHARS = 500_000  # a longer response scores 0 unread (verl's responses are far shorter)
MAX_GOLD_CHARS = 100_000  # a longer gold string is no usable gold (reported by compute_score)


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------
def boxed_answers(text: str) -> list[str | None]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``) in ``text``, in order.

    An empty box gives ``""``; a box whose braces never close (a truncated response) gives ``None``.
    """
    return [b for _, _, b in box_spans(text)]


def box_spans(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, content) of every box in ``text``, in order (content as in ``boxed_answers``)."""
    out: list[tuple[int, int, str | None]] = []
    n = len(text)
    pos = 0
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            return out
        i = m.end()
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            out.append((m.start(), n, None))
            return out
        if text[i] != "{":  # "\boxed 5": the answer runs to the next space, "$" or end
            w = _BARE_BOX_RE.match(text, i)
            out.append((m.start(), w.end() if w else i, w.group(0).rstrip(".") if w else ""))
            pos = i
            continue
        depth, j = 0, n
        for b in _BRACE_RE.finditer(text, i):
            depth += 1 if b.group(0) == "{" else -1
            if depth == 0:
                j = b.start()
                break
        if j >= n:
            out.append((m.start(), n, None))  # unclosed: truncated mid-answer
            return out
        out.append((m.start(), j + 1, text[i + 1 : j].strip()))
        pos = j + 1


def last_boxed_answer(text: str) -> str | None:
    """Content of the last box in ``text``; None when there is none, it is empty or never closes."""
    # Not verl's last_boxed_only_string + remove_boxed: math_reward's takes any earlier "\boxed 3" over a
    # later "\boxed{5}" and raises AssertionError on "\fbox{7}"; math_dapo's ignores \fbox and "\boxed 5";
    # both return "" for an empty box instead of "no answer".
    if not isinstance(text, str):
        return None
    boxes = boxed_answers(text)
    return boxes[-1] or None if boxes else None


# A fence Markdown accepts: 3+ backticks or tildes at a line's start (any indentation: deeper than 3 spaces it
# is an indented code block, code just the same; inside a list item or a blockquote too), an optional info
# string; closed by a line of the same character, at least as long, or by the end.
# Chat renderers also open a fence at the end of a line of prose ("I think 41. ```latex"): taken as one too.
_FENCE_OPEN_RE = "(?m)" + (
    r"(?:^[ \t]*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)?|(?<=[^\s`~])[ \t]*(?=(?:`{3,}|~{3,})(?:[A-Za-z][\w+-]*)?[ \t]*$))"
    r"(`{3,}|~{3,})([^\n]*)$"
)
_BLANK_LINE_RE = r"\n[ \t]*\n"
_BACKTICKS_RE = r"`+"
_SHOWN_FENCES = ("latex", "tex", "math", "katex", "markdown", "md")  # a fence that typesets its box
_VERB_RE = re.compile(r"\\verb\*?([^\sA-Za-z*])[^\n]{0,200}?\1")  # bounded: linear on any line
_QUOTE_MARK_RE = re.compile(r"^[ \t]*>[> \t]*", re.M)
# a LaTeX comment: "%" at a line start or after a space, not "\%" nor "20%" (a percentage in prose)
_COMMENT_RE = re.compile(r"(?:^[ \t]*|(?<=[^\d\s{\\])[ \t]+)%.*$", re.M)


_TEMPLATE_WORDS_RE = re.compile(
    r"(?i)\b(?:template|format(?:ted)?|example|e\.g\.|for\s+instance|placeholder|fill\s+in|replace)\b"
)
_HTML_CODE_RE = re.compile(r"<(code|pre|tt)>.*?(?:</\1>|\Z)", re.S)


def _fence(info: str, body: str, before: str) -> str:
    """A fenced block: its text when it is LaTeX/Markdown (shown typeset) and no template, else nothing."""
    words = info.strip().lower().split()
    lang = words[0].lstrip("{.").rstrip("}") if words else ""
    if lang not in _SHOWN_FENCES or "`" in info:
        return " "
    before = before[-80:]
    if _TEMPLATE_WORDS_RE.search(before[max(before.rfind(". "), before.rfind(".\n")) + 1 :] + body):
        return " "  # presented as a template or an example of the format
    return " " + body + "\n"


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a fence opened by ``fence`` (the same character, at least as many, nothing else)."""
    t = line.strip()
    return len(t) >= len(fence) and t == fence[0] * len(t)


def remove_fences(text: str) -> str:
    """``text`` with every fenced block replaced (``_fence``); linear: each line is looked at once or twice."""
    if "```" not in text and "~~~" not in text:
        return text
    out, pos = [], 0
    while True:
        m = _rx(_FENCE_OPEN_RE).search(text, pos)
        if m is None or (m.group(1)[0] == "`" and "`" in m.group(2)):  # "```a```" on one line: a code span
            if m is None:
                out.append(text[pos:])
                return "".join(out)
            out.append(text[pos : m.end()])
            pos = m.end()
            continue
        fence, end, close = m.group(1), len(text), len(text)
        line_start = m.end() + 1
        while line_start < len(text):
            line_end = text.find("\n", line_start)
            line_end = len(text) if line_end < 0 else line_end
            if _closes(text[line_start:line_end], fence):
                end, close = line_start, line_end
                break
            line_start = line_end + 1
        out.append(text[pos : m.start()])
        out.append(_fence(m.group(2), text[m.end() + 1 : end], "".join(out[-3:])))
        pos = close


def remove_code_spans(text: str) -> str:
    """``text`` without Markdown code spans: a run of n backticks up to the next run of exactly n (no blank
    line between), as CommonMark reads them; linear (each run's partner is found in one backward pass)."""
    runs = list(_rx(_BACKTICKS_RE).finditer(text)) if "`" in text else []
    if not runs:
        return text
    partner: list[int | None] = [None] * len(runs)
    last: dict[int, int] = {}
    for k in range(len(runs) - 1, -1, -1):
        n = runs[k].end() - runs[k].start()
        partner[k], last[n] = last.get(n), k
    blanks = [b.start() for b in _rx(_BLANK_LINE_RE).finditer(text)]
    out, pos, k = [], 0, 0
    while k < len(runs):
        j = partner[k]
        if j is not None:
            i = bisect.bisect_left(blanks, runs[k].end())
            if i == len(blanks) or blanks[i] >= runs[j].start():
                out += [text[pos : runs[k].start()], " "]
                pos, k = runs[j].end(), j + 1
                continue
        k += 1
    out.append(text[pos:])
    return "".join(out)


def visible_text(response: str) -> str:
    """``response`` as a reader sees it: no code (fenced with backticks or tildes, code spans, ``\\verb``,
    HTML), no LaTeX comments; the text of LaTeX/Markdown fences (unless a template) and of Markdown
    blockquotes stays (a box there is shown)."""
    text = _QUOTE_MARK_RE.sub(" ", response)  # first: a fence inside a blockquote is a fence
    text = remove_fences(text)
    text = _HTML_CODE_RE.sub(" ", text)
    text = _VERB_RE.sub(" ", text)
    text = remove_code_spans(text)
    return _COMMENT_RE.sub(" ", text)


# A box that only shows the required format ("write it like \boxed{42}", "use this template: ..."): the
# instruction runs up to the box, with nothing but quotes, colons, "$" or a fence opener in between.
# the phrases that introduce a sample of the format, then at most a joining word, "this"/"the following",
# punctuation, quotes, "$", "\\(", "\\[" or an opening bracket before the box
_EXAMPLE_RE = (
    r"(?i)(?:\b(?:in|of)\s+the\s+(?:form|format|style|shape)(?:\s+of)?|\bformat(?:ted|s)?|\btemplate|\be\.?g\.?"
    r"|\bi\.e\.|\bex\.|\bfor\s+(?:example|instance)|\bsuch\s+as|\bexamples?|\bsample|\bsyntax|\bsay"
    r"|(?<!looks )(?<!look )\blike(?:\s+(?:this|so))?|\bas\s+(?:follows|in)|\bsomething\s+like"
    r"|\b(?:put|write|enter|enclose|give|format|present|box|wrap|mark)\s+(?:it|them|your\s+(?:final\s+)?answer"
    r"|the\s+(?:final\s+)?answer))(?:\s+(?:in|as|inside|like|with|using|within|is|are|would\s+be))?"
    r"\s*(?:this|the\s+following|below)?\s*[:,\-]?(?:[\s\"'“‘`$(\[]|\\[(\[])*$"
)
# a box that holds a placeholder, not a value: "\\boxed{answer}", "\\boxed{...}", "\\boxed{<answer>}"
_PLACEHOLDER_RE = (
    r"(?i)^(?:\\(?:text|mathrm|textit|mathit)\s*\{)?\s*(?:your\s+|the\s+|final\s+|numerical\s+|numeric\s+)*"
    r"(?:answer|ans|result|solution|value|expression|number)(?:\s+here)?\s*\}?$"
    r"|^\\(?:l|c)?dots$|^\.{3}$|^…$|^<[^<>]{1,30}>$|^\[[A-Za-z ]{3,30}\]$|^\?+$|^\\(?:square|Box|blacksquare)$|^(?:\\_|_)+$"
)


_ABBREVIATION_END_RE = r"(?i)\b(?:e\.g|i\.e|ex|eg|vs)$"


def is_placeholder(content: str | None) -> bool:
    """Whether a box's content is a placeholder (``answer``, ``...``, ``<answer>``) rather than a value."""
    return content is not None and len(content) <= 60 and bool(_rx(_PLACEHOLDER_RE).match(content.strip()))


def is_example_box(text: str, start: int, prev_end: int = 0) -> bool:
    """Whether the box at ``text[start]`` is a format example (the sentence before it asks for a format)."""
    window = text[max(prev_end, start - 80) : start]
    cut = len(window)
    while cut > 0:  # the last sentence end: a full stop before a space, not "e.g. ", "i.e. ", "vs. "
        cut = max(window.rfind(". ", 0, cut), window.rfind(".\n", 0, cut))
        if cut < 0 or not _rx(_ABBREVIATION_END_RE).search(window, max(0, cut - 4), cut):
            break
    return bool(_rx(_EXAMPLE_RE).search(window, cut + 1 if cut >= 0 else 0))


def _skip_group(s: str, i: int) -> int:
    """Index just past the balanced ``{...}`` starting at ``s[i] == "{"`` (or ``len(s)``)."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(s)


_INVISIBLE_HINT_RE = re.compile(
    r"\\(?:color|textcolor|mathcolor|colorbox|fcolorbox|pagecolor|[hv]?phantom|definecolor|colorlet)"
)


def remove_invisible(s: str) -> str:
    """``s`` without what a reader cannot see (phantoms, text coloured like its background): see
    ``sspo.reward.colours``, loaded only for a text that has a colour or phantom command."""
    if not _INVISIBLE_HINT_RE.search(s):
        return s
    from sspo.reward.colours import hide_invisible

    return hide_invisible(s)


# --------------------------------------------------------------------------------------------------
# Gold answers: raw dataset values -> list of answer strings (shared with sspo.tools.data)
# --------------------------------------------------------------------------------------------------
_FLOAT_DIGITS = {2: 3, 4: 6, 8: 15}  # decimal digits a binary float of that many bytes holds (DIG of C)


def _number_to_str(x: float | int, digits: int = 15) -> str:
    """A numeric gold as the decimal it stands for: a float is its value to the ``digits`` significant digits
    its type holds (``0.1 + 0.2`` -> ``0.3``, ``float32(0.1)`` -> ``0.1``), infinities are ``\\infty``."""
    if isinstance(x, bool | int):
        return str(x)
    if math.isinf(x):
        return "\\infty" if x > 0 else "-\\infty"
    if float(x).is_integer() and abs(x) < 1e16:
        return str(int(x))
    return format(float(x), f".{digits}g")


def _float_gold(x: float, digits: int) -> list[str]:
    """A float gold by value: its decimal to ``digits`` significant digits, and the simple fraction it is the
    float of when there is one (``1/3`` -> ``0.333333333333333`` and ``\\frac{1}{3}``)."""
    decimal = _number_to_str(x, digits)
    out = [decimal]
    simple = Fraction(x).limit_denominator(10 ** (digits // 2))
    if (
        simple.denominator > 1
        and _number_to_str(float(simple), digits) == decimal
        and simple != Fraction(decimal)
    ):
        out.append(
            f"\\frac{{{simple.numerator}}}{{{simple.denominator}}}"
            if simple > 0
            else f"-\\frac{{{-simple.numerator}}}{{{simple.denominator}}}"
        )
    return out


def _strip_dollars(s: str) -> str:
    s = s.strip()
    if s.startswith("$$") and s.endswith("$$") and len(s) > 4:
        s = s[2:-2]
    # "$69$,$84$" or "$x$": drop math-mode dollars; a lone literal "\$" (currency) is kept
    return re.sub(r"(?<!\\)\$", "", s).strip()


# what may stand between the boxes of a gold that are one answer together: punctuation, math delimiters,
# "and"/"or", spacing, a label ("y = ") -- as math-verify joins boxes separated by ",", "and" or "or"
_BOX_JOINER_RE = (
    r"(?:\s|[,;.&$()]|\\[()\[\],;:! ]|\\q?quad|\\(?:text|mathrm)\s*\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b"
    r"|[A-Za-z](?:_\{?\w{1,4}\}?)?\s*=)*$"
)


def _joins(between: str) -> bool:
    """Whether the text between two boxes of a gold makes them one answer: only joiners, or a short phrase
    with a connective (``\\boxed{4} red and \\boxed{9} blue``)."""
    if _rx(_BOX_JOINER_RE).match(between) or not _rx(_PROSE_WORD_RE).search(
        _rx(_COMMAND_OR_JOIN_WORD_RE).sub(" ", between)
    ):
        return True  # symbols only ("\\boxed{35} ++ \\boxed{4}" in one formula)
    return len(between) <= 40 and bool(_rx(_CONNECTIVE_RE).search(between))


_CONNECTIVE_RE = r"[,;&]|\band\b|\bor\b"
_PROSE_WORD_RE = r"[A-Za-z]{2,}"
_COMMAND_OR_JOIN_WORD_RE = r"\\[A-Za-z]+|\b(?:and|or)\b"


def _gold_boxes(s: str) -> str | None:
    """The answer a boxed gold states: its box, or all its boxes together (``\\boxed{3}`` and ``\\boxed{-5}``
    -> ``3, -5``; a tuple ``(2, 5)`` when the boxes stand inside parentheses or the text says "ordered")."""
    spans = [(i, j, b) for i, j, b in box_spans(s) if b]
    if len(spans) < 2:
        return last_boxed_answer(s)
    if not all(_joins(s[spans[k][1] : spans[k + 1][0]]) for k in range(len(spans) - 1)):
        return spans[-1][
            2
        ]  # prose between the boxes ("\\boxed{1} no no \\boxed{2}"): the last one is the answer
    boxes = [b for _, _, b in spans]
    joined = ", ".join(dict.fromkeys(boxes))
    ordered = re.search(r"(?<!\\)\(\s*\$?\s*\\(?:boxed|fbox)", s) or re.search(r"(?i)\bordered\b", s)
    return f"({joined})" if ordered else joined


def gold_answers(raw: Any) -> list[str]:
    """Turn a dataset's raw answer into a list of answer strings (alternatives, first = canonical).

    Handles numbers (``142.0`` -> ``"142"``), lists and Python-list strings (``"['9.6\\n']"``, parsed with
    ``ast.literal_eval``), ``$...$`` wrappers, a ``\\boxed{}`` around (or at the end of) the gold, and
    several ``$..$`` answers in one string (``"$69$,$84$"`` -> ``"69, 84"``). Units, ``%`` and currency are
    kept (the strict grader checks them). Returns ``[]`` when nothing usable is left.
    """
    if raw is None or isinstance(raw, bool):
        return []
    if isinstance(raw, float) and raw == raw and math.isfinite(raw) and not raw.is_integer():
        return _float_gold(raw, 15)
    if isinstance(raw, int | float):
        return [] if raw != raw else [_number_to_str(raw)]  # NaN is no answer
    if isinstance(raw, bytes | bytearray):
        try:
            return gold_answers(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError:
            return []
    if isinstance(raw, Fraction):
        return gold_answers(
            str(raw.numerator) if raw.denominator == 1 else f"\\frac{{{raw.numerator}}}{{{raw.denominator}}}"
        )
    if isinstance(raw, Decimal):
        return gold_answers(float(raw)) if not raw.is_finite() else [format(raw.normalize(), "f")]
    dtype = getattr(raw, "dtype", None)
    if dtype is not None and getattr(dtype, "kind", "") == "f" and getattr(raw, "ndim", 1) == 0:
        x, digits = float(raw), _FLOAT_DIGITS.get(dtype.itemsize, 18)  # the digits its own precision holds
        return (
            []
            if x != x
            else _float_gold(x, digits)
            if math.isfinite(x) and not x.is_integer()
            else [_number_to_str(x)]
        )
    if hasattr(raw, "tolist") and not isinstance(raw, str):  # numpy arrays / scalars from parquet
        return gold_answers(raw.tolist())
    if isinstance(raw, list | tuple):
        out: list[str] = []
        for item in raw:
            for ans in gold_answers(item):
                if ans not in out:
                    out.append(ans)
        return out
    if not isinstance(raw, str) or len(raw) > MAX_GOLD_CHARS:
        return []
    s = raw.strip()
    if len(s) >= 2 and s[0] == "[" and s[-1] == "]":
        try:
            parsed = ast.literal_eval(s)  # never eval(): the data is untrusted
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        # only a list of strings is a serialised answer list ("['9.6\\n']"); "[-2, 7]" is an interval
        if isinstance(parsed, list | tuple) and parsed and all(isinstance(x, str) for x in parsed):
            return gold_answers(list(parsed))
    if _BOX_RE.search(s):
        boxed = _gold_boxes(s)
        if boxed is not None:
            s = boxed
    if s.count("$") >= 4 and re.fullmatch(r"\s*\$[^$]+\$(\s*,\s*\$[^$]+\$)+\s*", s):
        s = ", ".join(part.strip() for part in re.findall(r"\$([^$]+)\$", s))
    s = _strip_dollars(s)
    s = re.sub(r"\s+", " ", s).strip()
    if re.fullmatch(r"[+-]?\d+\.0+", s):
        s = s.split(".")[0]
    s = s.rstrip(".").strip() if not re.fullmatch(r"[+-]?\d*\.", s) else s
    return [s] if s else []


# --------------------------------------------------------------------------------------------------
# Units, percent, degrees
# --------------------------------------------------------------------------------------------------
_UNIT_WORDS = (
    "dollars?|cents?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|meters?|metres?|"
    "centimeters?|cm|mm|km|feet|foot|ft|inch(?:es)?|miles?|yards?|units?|square units|sq units|degrees?|"
    "percent|grams?|kg|pounds?|lbs?|liters?|litres?|gallons?|ways|people|students|points|times"
)
_TEXT_CMD = r"\\(?:text|mathrm|mbox|textrm|textnormal|rm|textit|mathit)\s*"
_EXP = r"(?:\s*\^\s*(?:\{\s*[+-]?\d+\s*\}|[+-]?\d))?"
_UNIT_TAIL_RE = re.compile(
    r"(?:\s|\\[,;:! ]|~)*(?:"
    + _TEXT_CMD
    + r"\{\s*~?\s*([A-Za-z][A-Za-z .]*?)\s*\}|(?<![A-Za-z\\])("
    + _UNIT_WORDS
    + r"))("
    + _EXP
    + r")\s*$"
)
_PERCENT_TAIL_RE = re.compile(r"(?:\s|\\[,;:! ]|~)*(?:\\%|%|" + _TEXT_CMD + r"\{\s*percent\s*\})\s*$")
_DEGREE_TAIL_RE = re.compile(
    r"\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree)\s*(?:\\(?:text|mathrm)\s*\{\s*([CFK])\s*\}|([CFK]))?\s*$"
)
_CURRENCY_HEAD_RE = re.compile(r"^\s*\\\$\s*")
_ALIASES = {
    "hr": "hour", "h": "hour", "min": "minute", "sec": "second", "s": "second", "metre": "meter",
    "m": "meter", "cm": "centimeter", "mm": "millimeter", "km": "kilometer", "ft": "foot", "feet": "foot",
    "in": "inch", "inche": "inch", "lb": "pound", "litre": "liter", "kg": "kilogram", "g": "gram",
    "degree": "°", "percent": "%",
}  # fmt: skip


def _unit_word(words: str, exponent: str) -> str:
    """Normalised unit: singular, aliases resolved, ``square``/``cubic`` as exponents (``inch^2``)."""
    parts = words.lower().replace(".", " ").split()
    power = re.sub(r"[\s{}^]", "", exponent)
    if parts and parts[0] in ("square", "sq", "cubic"):
        power = power or ("3" if parts[0] == "cubic" else "2")
        parts = parts[1:]
    out = []
    for w in parts:
        if w.endswith("ies") and len(w) > 4:
            w = w[:-3] + "y"
        elif w.endswith("s") and len(w) > 3 and not w.endswith("ss"):
            w = w[:-1]
        out.append(_ALIASES.get(w, w))
    unit = " ".join(out)
    return unit + ("^" + power if power else "")


@lru_cache(maxsize=65536)
def split_units(s: str) -> tuple[str, frozenset[str]]:
    """``"288\\pi \\text{ cm}^3"`` -> (``"288\\pi"``, {``"centimeter^3"``}); ``%`` and ``°`` are tags too.

    Only TRAILING units after a value (and a leading ``\\$``) count: ``\\text{east}`` alone is an answer.
    """
    tags: set[str] = set()
    value = s.strip()
    m = _CURRENCY_HEAD_RE.match(value)
    if m and m.end() < len(value):
        value, tags = value[m.end() :], {"dollar"}
    for _ in range(4):  # "1950^\circ C", "15000 \text{ kcal m}^{-2} \text{yr}^{-1}", "62.5 \%"
        m = _PERCENT_TAIL_RE.search(value)
        if m and m.start() > 0:
            value, tag = value[: m.start()], "%"
        else:
            m = _DEGREE_TAIL_RE.search(value)
            if m and m.start() > 0:
                value, tag = value[: m.start()], "°"
                if m.group(1) or m.group(2):  # a temperature scale: "1950^\circ C" carries ° and °C
                    tags.add("°" + (m.group(1) or m.group(2)))
            else:
                m = _UNIT_TAIL_RE.search(value)
                if not m or m.start() == 0 or not value[: m.start()].strip():
                    break
                value, tag = value[: m.start()], _unit_word(m.group(1) or m.group(2), m.group(3))
        tags.add(tag)
    return value.strip(), frozenset(tags)


def units_compatible(gold_tags: frozenset[str], pred_tags: frozenset[str]) -> bool:
    """The answer carries none of the gold's units, or only units the gold carries (``%`` apart)."""
    if not pred_tags or not gold_tags:
        return True
    return pred_tags <= gold_tags


# --------------------------------------------------------------------------------------------------
# Canonical strings and numbers for the fast comparison
# --------------------------------------------------------------------------------------------------
_SPACES_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~|\s+")
_FRAC_SHORT_RE = re.compile(r"\\frac(\d)(\d)")
_FRAC_HALF_RE = re.compile(r"\\frac\{([^{}]+)\}(\d)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt(\d+)")
_SPACED_COMMA_RE = re.compile(r",(?:\s|\\[,;: ]|~)")
_ZERO_COMMA_RE = r"^[+-]?0,\d{3}$"  # "0,111" looks like thousands, but no integer starts "0,"
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+(?:\.\d*)?|\.\d+)(e[+-]?\d+)?$")
_SCI_RE = re.compile(r"^(?:([+-]?(?:\d+(?:\.\d*)?|\.\d+))\\(?:times|cdot))?10\^\{?([+-]?\d{1,3})\}?$")
_SIMPLE_LHS_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?=(.+)$")
_LATEX_FRAC_RE = re.compile(r"^([+-]?)\\frac\{([+-]?\d{1,400})\}\{([+-]?\d{1,400})\}$")
_SLASH_FRAC_RE = re.compile(r"^([+-]?\d{1,400})/(\d{1,400})$")
_LEGACY_UNIT_RE = re.compile(r"\\(?:text|mathrm|mbox|textrm)\{\s*~?\s*[A-Za-z][A-Za-z ./^{}\-]*\}\s*$")


def _strip_trailing_unit(s: str) -> str:
    """``"10 \\text{ cm}"`` -> ``"10"`` (evaluation policy: a unit after a number is not compared)."""
    m = _LEGACY_UNIT_RE.search(s) if "\\" in s else None  # linear: anchored at the unit, not the number
    if m and m.start() > 0 and s[: m.start()].rstrip()[-1:].isdigit():
        return s[: m.start()].strip()
    return s


@lru_cache(maxsize=65536)
def canonical(s: str) -> str:
    """A canonical string for exact comparison (never used to decide a mismatch of complex LaTeX)."""
    # Not math_dapo.normalize_final_answer: that one is lossy because it is the final verdict there (it
    # deletes "a ", unit words, everything before "="), e.g. it accepts "2a + b" for gold "2 + b". Here a
    # string mismatch is never a verdict on LaTeX; math-verify decides those.
    s = s.strip()
    s = _strip_dollars(s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = unwrap_visible(s)
    s = _strip_trailing_unit(s)
    spaced_comma = "," in s and _SPACED_COMMA_RE.search(s)  # "12, 500" is a list of two, not 12500
    s = _SPACES_RE.sub("", s)
    for deg in ("^{\\circ}", "^\\circ", "°", "\\%", "%", "\\$"):
        s = s.replace(deg, "")
    s = s.replace("{,}", "")
    s = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF_RE.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    if s.startswith("\\text{") and s.endswith("}") and s.count("{") == 1:
        s = s[6:-1]
    s = s.rstrip(".")
    if not spaced_comma and _THOUSANDS_RE.match(s):
        s = s.replace(",", "") if not _rx(_ZERO_COMMA_RE).match(s) else s.replace(",", ".", 1)
    if s.startswith("."):
        s = "0" + s
    elif s.startswith("-."):
        s = "-0" + s[1:]
    if re.fullmatch(r"[+-]?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def _as_number(c: str) -> Decimal | None:
    """A canonical string that is a plain number (``12``, ``-0.5``, ``1e+20``, ``10^{20}``, ``8.7\\times10^{8}``)."""
    m = _SCI_RE.match(c)
    if m:
        c = f"{m.group(1) or 1}e{m.group(2)}"
    if not _NUMBER_RE.match(c.lower()):
        return None
    try:
        d = Decimal(c.lower())
    except InvalidOperation:
        return None
    return d if d.is_finite() and abs(d.adjusted()) < 400 else None


def as_rational(c: str) -> Fraction | None:
    """A canonical string that is a plain number or an integer fraction (``\\frac{14}{3}``, ``-14/3``).

    Exact, so "0.5" vs "\\frac{1}{2}" is decided in-process: the common numeric case never waits for a
    math-verify worker.
    """
    d = _as_number(c)
    if d is not None:
        return Fraction(d)
    if "." in c and ("\\" in c or "(" in c):
        return repeating_decimal(c)
    m = _LATEX_FRAC_RE.match(c)
    if m:
        sign, num, den = m.groups()
    else:
        m = _SLASH_FRAC_RE.match(c)
        if not m:
            return None
        sign, (num, den) = "", m.groups()
    if int(den) == 0:
        return None
    value = Fraction(int(num), int(den))
    return -value if sign == "-" else value


_CHOICE_RE = re.compile(
    r"^(?:\\(?:text|textbf|mathrm|mathbf)\{)?\(?([A-E])\)(.*?)\}?$|^(?:\\(?:text|textbf|mathrm)\{)?([A-E])\}?$"
)


def choice_letter(s: str) -> tuple[str, str] | None:
    """(letter, rest) of a multiple-choice answer: ``\\text{(C) Plane}`` -> (``C``, ``Plane``), ``C`` -> (``C``, "")."""
    m = _CHOICE_RE.match(re.sub(r"\s+", " ", s.strip()))
    if not m:
        return None
    return (m.group(1), m.group(2).strip()) if m.group(1) else (m.group(3), "")


_ARCMIN_RE = re.compile(r"\d\s*(?:'|\^\s*\{?\s*\\prime)")
_TUPLE_RE = re.compile(r"^(?:\\left)?\((.*)(?:\\right)?\)$", re.S)
_SET_LITERAL_RE = re.compile(r"^(?:\\left)?\\\{(.*?)(?:\\right)?\\\}$", re.S)
MAX_LIST_ITEMS = 50


def _outer(s: str) -> tuple[str, str]:
    """(kind, inside) of a list: ``tuple`` for ``(...)`` spanning ``s``, ``set`` for ``\\{...\\}``, else ``list``."""
    s = s.strip()
    for kind, rx in (("tuple", _TUPLE_RE), ("set", _SET_LITERAL_RE)):
        m = rx.match(s)
        if m and _balanced(m.group(1)):
            return kind, m.group(1)
    return "list", s


def _balanced(s: str) -> bool:
    """Whether the brackets of ``s`` never close below depth 0 (so ``(a),(b)`` is no tuple)."""
    depth = 0
    for c in s:
        depth += (c in "([{") - (c in ")]}")
        if depth < 0:
            return False
    return depth == 0


def compare_lists(gold: str, pred: str, exact: bool = False) -> bool | None:
    """Lists, tuples and sets item by item (a tuple in order); None when not both lists or undecided.

    ``12, 500`` is two items (no thousands mark after a space), an unordered set is no ordered tuple.
    """
    (gk, gin), (pk, pin) = _outer(gold), _outer(pred)
    gi, pi = list_items(gin), list_items(pin)
    if len(gi) > 1 and "=" in gin and "=" not in pin:  # "a=2, b=9" answered "2, 9": the values, in order
        values = label_value(gin)
        if values is not None:
            (gk, gin), gi = _outer(values), list_items(_outer(values)[1])
    if gk == "tuple" and pk == "set" and len(gi) > 1:
        return False
    if (len(gi) > 1) != (len(pi) > 1):  # one value against several: decided when the single one is a number
        single = pin if len(pi) == 1 else gin
        return False if as_rational(canonical(single)) is not None else None
    if len(gi) < 2 or len(gi) > MAX_LIST_ITEMS or len(pi) > MAX_LIST_ITEMS:
        return None
    if len(gi) != len(pi):
        return False if all(as_rational(canonical(x)) is not None for x in gi + pi) else None
    if gk == "tuple" and pk != "set":
        verdicts = [fast_compare(g, p, exact) for g, p in zip(gi, pi, strict=True)]
        return False if False in verdicts else (True if all(verdicts) else None)
    unused, undecided = list(gi), False
    for p in pi:  # unordered: every item matches a distinct gold item
        verdicts = [fast_compare(g, p, exact) for g in unused]
        if True in verdicts:
            unused.pop(verdicts.index(True))
        elif None in verdicts:
            undecided = True
        else:
            return False
    return None if undecided else True


def _strip_label(p: str) -> str:
    """``x=5`` / ``p+q=125`` / ``|PQ|=7`` -> the value (one label, one ``=``); else ``p``."""
    m = _SIMPLE_LHS_RE.match(p)
    if m:
        return m.group(1)
    sides = p.split("=")
    return sides[1] if len(sides) == 2 and sides[1] and is_label(sides[0]) else p


def fast_compare(gold: str, pred: str, exact: bool = False) -> bool | None:
    """True/False when decided without math-verify, None when math-verify must decide.

    ``exact``: two different numbers are different (``0.333333`` is not 1/3); otherwise near-equal ones
    go to math-verify's rounding.
    """
    g, p = canonical(gold), canonical(pred)
    if not p:
        return False
    if g == p:
        return True
    gc = choice_letter(gold)
    if gc is not None and not gc[1]:  # a multiple-choice gold: the letter decides
        pc = choice_letter(pred)
        return pc is not None and pc[0] == gc[0] and not re.search(r"\([A-E]\)", pc[1])
    if "=" not in g and "=" in p:  # "x = 5", "p+q = 125" answer "5", "125"
        p = _strip_label(p)
        if g == p:
            return True
    if ("," in gold or ";" in gold or "," in pred or ";" in pred) and len(gold) + len(pred) < 2000:
        lists = compare_lists(gold, _strip_label(pred) if p != canonical(pred) else pred, exact)
        if lists is not None:
            return lists
    gn, pn = as_rational(g), as_rational(p)
    if gn is not None and pn is not None:
        if gn == pn:
            return True
        scale = max(Fraction(1), abs(gn), abs(pn))
        # clearly different numbers are decided here; near-equal ones go to math-verify's rounding
        return None if not exact and abs(gn - pn) <= scale * Fraction(1, 10**6) else False
    if "^" in g or "^" in p:
        powers = compare_powers(g, p)
        if powers is not None:
            return powers
    if _ARCMIN_RE.search(p) and not _ARCMIN_RE.search(g):
        return False  # arcminutes (30') are not the gold's unit
    return None


# --------------------------------------------------------------------------------------------------
# Strict structure: which values does an answer offer?
# --------------------------------------------------------------------------------------------------
_OR_RE = re.compile(
    r"\\lor(?![a-zA-Z])|\\vee(?![a-zA-Z])|\\(?:text|textrm|mathrm|mbox|textbf)\s*\{\s*(?:or|and/or)\s*\}|(?<![A-Za-z\\])or(?![A-Za-z])"
)
_PM_RE = re.compile(r"\\pm(?![a-zA-Z])|\\mp(?![a-zA-Z])|±|∓")
_RELATION_RE = re.compile(r"(?<![<>!\\])=|\\approx(?![a-zA-Z])")
_NAME_RE = re.compile(
    r"^(?:m\s*)?(?:\\angle\s*)?(?:\\overline\s*\{[A-Za-z]{1,3}\}|[A-Za-z]{1,3}|\\[a-zA-Z]+)"
    r"(?:_\{?[\w\\]+\}?)?'*(?:\^\{?[\w\\]+\}?)?(?:\s*\([A-Za-z0-9,\s]*\))?$"
)
_OPEN, _CLOSE = "([{", ")]}"


def _split_top_level(s: str, seps: re.Pattern) -> list[str]:
    """``s`` split at matches of ``seps`` outside (), [], {} (``\\left(``, ``\\{`` count as brackets)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth = max(0, depth - 1)
        elif depth == 0:
            m = seps.match(s, i)
            if m and m.end() > i:
                parts.append(s[start:i])
                start = i = m.end()
                continue
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


_LIST_SEP_RE = re.compile(
    r"(?<!\\);|(?<!\\),(?!\d{3}(?!\d))(?!\\!\s*\d{3}(?!\d))"
)  # "1,000", "10,\!080" are numbers; "\," a space


def _several_values(gold: str) -> bool:
    """A gold that is not one value: a list, tuple, set or interval (a comma that is no thousands mark)."""
    return bool(re.search(r"[,;]", canonical(gold)))


def _is_name(s: str) -> bool:
    """A side of an equation that names the quantity (``x``, ``f(x)``, ``\\angle A``, ``p+q``, ``|PQ|``)."""
    return bool(_NAME_RE.match(s)) or is_label(s)


def offered_values(pred: str, golds: list[str]) -> list[str] | None:
    """Every value ``pred`` offers as the answer (each must equal the gold); None: offers two by ``\\pm``."""
    gold_text = " ".join(golds)
    if _PM_RE.search(pred) and not _PM_RE.search(gold_text):
        return None
    pred = _strip_dollars(pred)  # "$" inside a box is no part of the value
    values = [pred]
    one_value = not any(_several_values(g) for g in golds)  # a list gold may be answered "2 or 3"
    relation = any(_RELATION_RE.search(g) and label_value(g) is None for g in golds)  # "|PQ| = 7" is 7
    if not one_value and not relation:
        # "x = 2 \text{ or } x = 3" answers the list "2, 3": one value, the list of right-hand sides
        items = [q for p in _split_top_level(pred, _OR_RE) for q in _split_top_level(p, _LIST_SEP_RE)]
        sides = [_split_top_level(q, _RELATION_RE) for q in items]
        if len(items) > 1 and all(len(x) == 1 or (len(x) == 2 and _is_name(x[0])) for x in sides):
            return [", ".join("=".join(x) for x in sides)]  # labels kept: "b=9, a=2" is "a=2, b=9"
    if one_value and not _OR_RE.search(gold_text):
        values = [v for p in values for v in _split_top_level(p, _OR_RE)]
    if one_value:
        unwrapped = []
        for v in values:
            inner = _SET_LITERAL_RE.match(v.strip())
            if inner:
                v = inner.group(1)
            unwrapped += _split_top_level(v, _LIST_SEP_RE)
        values = unwrapped
    if not relation:
        sides = []
        for v in values:
            parts = _split_top_level(v, _RELATION_RE)
            # "x = 5", "f(x) = 5", "p+q = 125": a name on the left; any other side is a value
            sides += [p for p in parts[:-1] if not _is_name(p)] + parts[-1:]
        values = sides
    return [v for v in values if v] or [""]


# --------------------------------------------------------------------------------------------------
# The one code path
# --------------------------------------------------------------------------------------------------
Verifier = Callable[..., bool]  # (golds, pred, guard, exact) -> equal (math-verify, bounded)
MAX_ANSWER_CHARS = 1000  # a longer answer or gold is compared as text only (no normalisation, no math-verify)


@dataclass(frozen=True)
class Grade:
    """A verdict: ``correct``, the extracted answer ``pred`` and, when wrong, why (``reason``)."""

    correct: bool
    pred: str
    reason: str = ""


def _is_percent(s: str) -> bool:
    """Whether ``s`` ends in a percent sign (``12.5\\%``, ``12.5%``, ``12.5 \\text{ percent}``)."""
    t = s.rstrip().rstrip("}").rstrip()
    return t.endswith("%") or t.endswith("percent")


def _percent_equal(g: str, p: str, gold_pct: bool, pred_pct: bool) -> bool:
    """One side a percentage, the other its value: ``12.5\\%`` = ``0.125`` = ``\\frac{1}{8}`` (Qwen2.5-Math)."""
    if gold_pct == pred_pct:
        return False
    gn, pn = as_rational(canonical(g)), as_rational(canonical(p))
    if gn is None or pn is None:
        return False
    return pn == gn / 100 if gold_pct else pn / 100 == gn


def equal_one(golds: list[str], pred: str, policy: GradingPolicy, verify: Verifier) -> bool:
    """Whether the single value ``pred`` equals any gold under ``policy`` (in-process first, then ``verify``)."""
    if len(pred) > MAX_ANSWER_CHARS:
        return any(_squash(g) == _squash(pred) for g in golds)
    p, ptags = split_units(pred) if policy.units else (pred, frozenset("%" if _is_percent(pred) else ""))
    if not p:
        return False
    undecided: list[str] = []
    for gold in golds:
        g, gtags = split_units(gold) if policy.units else (gold, frozenset("%" if _is_percent(gold) else ""))
        if not units_compatible(gtags, ptags):
            continue
        if _percent_equal(g, p, "%" in gtags, "%" in ptags):
            return True
        if policy.units and "%" in ptags and "%" not in gtags:
            continue  # strict: "50\\%" is the number 0.5 for a gold without "%", never 50
        fast = fast_compare(g, p, policy.exact_numbers)
        if fast is True:
            return True
        if fast is None:
            undecided.append(g)
    return bool(undecided) and verify(undecided, p, policy.guard_math_verify, policy.exact_numbers)


def _squash(s: str) -> str:
    return "".join(s.split())


def expand_golds(golds: list[str]) -> list[str]:
    """``golds`` plus the forms they state: a labelled gold's value, a ``\\pm`` gold's values written out."""
    out = []
    for g in golds:
        value = label_value(g)
        for form in (g, value, expand_pm(g), expand_pm(value) if value else None):
            if form and form not in out:
                out.append(form)
    return out


# Prose that takes the final box back or offers another value ("wait, it is 87", "though 61 might work")
# A verification after the box ("double-check: 2 + 3 = 5") or a remark ("either way", "a common mistake is")
# is no hedge; a retraction names the box wrong ("that is wrong") or doubts it ("wait", "actually", "might").
_HEDGE_AFTER_RE = re.compile(
    r"(?i)\b(?:wait|hmm+|actually|though|although|might|maybe|perhaps|possibly|probably|alternatively|unless"
    r"|instead|another\s+(?:possibility|option|candidate|answer)|not\s+(?:\w+%?\s+)?(?:sure|certain|confident)"
    r"|unsure|uncertain|on\s+second\s+thought|i\s+guess|hold\s+on|scratch\s+that|correction"
    r"|(?:that|this|it|i)\W+(?:\w+\W+){0,2}(?:wrong|incorrect|a\s+mistake|miscalculated|miscounted)"
    r"|could\s+(?:also\s+)?be|or\s+(?:maybe|possibly|perhaps|it|\$?[-+]?\d+))\b"
)
_HEDGE_BEFORE_RE = re.compile(
    r"(?i)\b(?:not\s+(?:\w+%?\s+)?(?:sure|certain|confident)|unsure|i\s+guess|maybe|perhaps|possibly|probably|might\s+be)\b"
)
# An explicit self-correction between a box and the box that replaces it
_CORRECTION_RE = re.compile(
    r"(?i)\b(?:wait|actually|mistake|miscount\w*|miscalculat\w*|error|wrong|incorrect|oops|correct(?:ed|ion)?"
    r"|redo\w*|re-?calculat\w*|re-?comput\w*|recount\w*|re-?check\w*|reconsider\w*|second\s+thought"
    r"|should\s+(?:be|have\s+been)|instead|fix\w*)\b"
)


def hedged(text: str, spans: list[tuple[int, int, str | None]]) -> bool:
    """Whether prose next to the final box hedges it: a retraction or another value after it, doubt before."""
    start, end, _ = spans[-1]
    after = text[end : end + 400]
    before = text[max(start - 60, spans[-2][1] if len(spans) > 1 else 0) : start]
    return bool(_HEDGE_AFTER_RE.search(after) or _HEDGE_BEFORE_RE.search(before))


def corrected_from(text: str, spans: list[tuple[int, int, str | None]], boxes: list[str]) -> int:
    """Index of the first box that counts: after the last explicit self-correction to the final value, else 0."""
    final = canonical(boxes[-1])
    j = len(boxes) - 2
    while j >= 0 and canonical(boxes[j]) == final:
        j -= 1
    if j < 0:
        return 0
    between = text[spans[j][1] : spans[j + 1][0]]
    return j + 1 if _CORRECTION_RE.search(between[-600:]) else 0


def _answer_spans(response: str, policy: GradingPolicy) -> tuple[str, list[tuple[int, int, str | None]]]:
    """(the text read, the boxes that are answers): hidden boxes and format examples dropped (strict)."""
    if not policy.ignore_hidden_boxes:
        text = remove_invisible(response) if policy.reject_invisible else response
        return text, box_spans(text)
    text = visible_text(response)
    if policy.reject_invisible:
        text = remove_invisible(text)  # after the code is gone: a colour command in code shows as text
    spans, prev = [], 0
    for span in box_spans(text):
        if not is_example_box(text, span[0], prev) and not is_placeholder(span[2]):
            spans.append(span)
        prev = span[1]
    return text, spans


def _stated_answer(text: str, spans: list[tuple[int, int, str | None]]) -> list[tuple[int, int, str | None]]:
    """Not boxed only: a final-answer statement after the last box replaces it, and so does the answer a box
    holding a whole solution states; with no box, the answer the prose states (``sspo.reward.prose``) is the
    one box. Otherwise ``spans`` as they are."""
    prose = _prose()
    if not spans:
        stated = prose.prose_answer(text)
    else:
        stated = prose.final_statement(text, spans[-1][1])
        if stated is None and prose.is_solution(spans[-1][2]):
            stated = prose.prose_answer(spans[-1][2])
    return spans if stated is None else [(len(text), len(text), stated)]


_prose_module: ModuleType | None = None


def _prose() -> ModuleType:
    """``sspo.reward.prose``, imported at its first use (the training reward never needs it: fast start)."""
    global _prose_module
    if _prose_module is None:
        from sspo.reward import prose

        _prose_module = prose
    return _prose_module


def _final_run(text: str, spans: list[tuple[int, int, str | None]], boxes: list[str]) -> list[str]:
    """The last box and the boxes before it joined to it as one answer (the rule of a gold's boxes)."""
    k = len(spans) - 1
    while k > 0 and _joins(text[spans[k - 1][1] : spans[k][0]]):
        k -= 1
    return [b for b in boxes[k:] if b]


def grade(
    response: Any, golds: list[str], policy: GradingPolicy, verify: Verifier, request: Request | None = None
) -> Grade:
    """Grade ``response`` against ``golds`` under ``policy``; ``verify`` is asked only what strings cannot decide.

    ``request``: what the question asks (``sspo.reward.question.read_request``), judged when
    ``policy.read_question``; None (no question) grades as before.
    """
    if not isinstance(response, str):
        return Grade(False, "", "response is not a string")
    if len(response) > MAX_RESPONSE_CHARS:
        return Grade(False, "", f"response longer than {MAX_RESPONSE_CHARS} characters")
    text, spans = _answer_spans(response, policy)
    if not policy.boxed_only and (not spans or spans[-1][2] is not None):
        spans = _stated_answer(text, spans)
    if not spans or spans[-1][2] is None:
        return Grade(False, "", "no boxed answer" if not spans else "last box never closes (truncated)")
    boxes = [b for _, _, b in spans]
    if policy.reject_invisible:
        boxes = [remove_invisible(b) for b in boxes]
        if not re.sub(r"\\[,;:! ]|\\quad|\\qquad|~|\s|\{|\}|\\text|\\mathrm", "", boxes[-1]):
            return Grade(False, boxes[-1], "empty or invisible answer")
    boxes = [unwrap_visible(b) if len(b) <= MAX_ANSWER_CHARS else b for b in boxes]
    pred = boxes[-1]
    if not pred:
        return Grade(False, "", "empty box")
    if not golds:
        return Grade(False, pred, "no gold answer")
    if any(_squash(g) == _squash(pred) for g in golds if len(g) > MAX_ANSWER_CHARS):
        return Grade(True, pred)  # an overlong gold is compared as text only
    golds = expand_golds([g for g in golds if len(g) <= MAX_ANSWER_CHARS])
    if not golds:
        return Grade(False, pred, f"gold longer than {MAX_ANSWER_CHARS} characters: compared as text only")
    several = any(_several_values(g) for g in golds)
    if not policy.single_value:  # the standard last box; a list gold may be answered one box per item
        ok = equal_one(golds, pred, policy, verify)
        if not ok and several and len({canonical(b) for b in boxes if b}) > 1:
            ok = equal_one(golds, ", ".join(b for b in boxes if b), policy, verify)
            run = _final_run(text, spans, boxes)
            if not ok and 1 < len(run) < len(boxes):
                ok = equal_one(golds, ", ".join(run), policy, verify)
        return Grade(ok, pred, "" if ok else "not equal")
    if policy.reject_hedges and hedged(text, spans):
        return Grade(False, pred, "hedged: prose next to the final box takes it back or offers another value")
    boxes = [b for b in boxes[corrected_from(text, spans, boxes) :] if b]
    return _grade_offered(golds, boxes, several, policy, verify, request if policy.read_question else None)


def _asked(request: Request, golds: list[str], value: str) -> tuple[list[str], str | None]:
    """(the golds ``value`` is compared with, why ``value`` does not give what the question asks or None)."""
    from sspo.reward.question import percent_golds, violation

    if "percent" in request.forms:  # "12.5" and "12.5\%" answer "what percent"; its value 0.125 does not
        golds = percent_golds(golds, _is_percent(value), _is_percent)
    v, vtags = split_units(value)
    if (
        not (request.units or request.forms or request.variables is not None)
        and canonical(v) not in request.givens
    ):
        return golds, None  # the common case: only givens asked about, and the answer restates none
    return golds, violation(request, v, vtags, [split_units(g) for g in golds], canonical)


def _grade_offered(
    golds: list[str],
    boxes: list[str],
    several: bool,
    policy: GradingPolicy,
    verify: Verifier,
    request: Request | None = None,
) -> Grade:
    """Strict: every value the boxes offer equals the gold (or the boxes together are the list gold)."""
    pred = boxes[-1]
    distinct = list(dict.fromkeys(canonical(b) for b in boxes))
    if len(distinct) > 1:
        joined = ", ".join(boxes)
        if several and equal_one(golds, joined, policy, verify):
            return Grade(True, joined)  # a list gold answered one box per item
    answers = list(dict.fromkeys(boxes)) if len(distinct) > 1 else [pred]
    for answer in answers:
        values = offered_values(answer, golds) if len(answer) <= MAX_ANSWER_CHARS else [answer]
        if values is None:
            return Grade(False, pred, "\\pm offers two values")
        for v in values:
            asked_golds, why = _asked(request, golds, v) if request else (golds, None)
            if why is not None:
                return Grade(False, pred, why)
            if not equal_one(asked_golds, v, policy, verify):
                return Grade(False, pred, f"offered value {v!r} is not the gold")
    return Grade(True, pred)
