"""Grading a math response against gold answers: extraction, two policies, the in-process comparison.

Two policies, one code path (``grade``):

* ``EVALUATION`` -- the standard of the paper-style tables (Qwen2.5-Math / oat harness habits): the answer
  is the LAST ``\\boxed{}`` of the response, normalised (spacing, ``\\dfrac``, ``%``/``^\\circ``/unit words
  dropped ...), compared as a string or number, then by math-verify. Our table numbers stay comparable.
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

Both policies: numbers in float notation compare as numbers (``1e+20`` = ``10^{20}``), a multiple-choice
gold accepts the letter with its option text (``\\text{(C) Plane}`` for ``\\text{(C)}``). Standard library
only (the worker processes and ``sspo.tools.data`` import it).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class GradingPolicy:
    """Which strict rules apply (see the module docstring); all off is the standard evaluation grader."""

    ignore_hidden_boxes: bool = True
    single_value: bool = True
    reject_invisible: bool = True
    units: bool = True
    guard_math_verify: bool = True


TRAINING = GradingPolicy()
EVALUATION = GradingPolicy(
    ignore_hidden_boxes=False,
    single_value=False,
    reject_invisible=False,
    units=False,
    guard_math_verify=False,
)
POLICIES = {"training": TRAINING, "evaluation": EVALUATION}

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------
def boxed_answers(text: str) -> list[str | None]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``) in ``text``, in order.

    An empty box gives ``""``; a box whose braces never close (a truncated response) gives ``None``.
    """
    out: list[str | None] = []
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
            out.append(None)
            return out
        if text[i] != "{":  # "\boxed 5": the answer runs to the next space, "$" or end
            w = re.match(r"[^\s$]+", text[i:])
            out.append(w.group(0).rstrip(".") if w else "")
            pos = i
            continue
        depth, j = 0, i
        while j < n:
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if j >= n:
            out.append(None)  # unclosed: truncated mid-answer
            return out
        out.append(text[i + 1 : j].strip())
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


_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.S)
_INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
_QUOTE_LINE_RE = re.compile(r"^[ \t]*>.*$", re.M)
# a LaTeX comment: "%" at a line start or after a space, not "\%" nor "20%" (a percentage in prose)
_COMMENT_RE = re.compile(r"(?:^[ \t]*|(?<=[^\d\s{\\])[ \t]+)%.*$", re.M)


def visible_text(response: str) -> str:
    """``response`` without code, markdown quotes and LaTeX comments: boxes there are not answers."""
    text = _FENCE_RE.sub(" ", response)
    text = _INLINE_CODE_RE.sub(" ", text)
    text = _QUOTE_LINE_RE.sub(" ", text)
    return _COMMENT_RE.sub(" ", text)


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


_INVISIBLE_RE = re.compile(
    r"\\(?:phantom|hphantom|vphantom)\s*(?=\{)|\\(?:textcolor|color)\s*\{\s*white\s*\}\s*(?=\{)"
)


def remove_invisible(s: str) -> str:
    """``s`` without ``\\phantom{...}`` (and h/v variants) and ``\\color{white}{...}`` groups."""
    while True:
        m = _INVISIBLE_RE.search(s)
        if m is None:
            return s
        s = s[: m.start()] + s[_skip_group(s, m.end()) :]


# --------------------------------------------------------------------------------------------------
# Gold answers: raw dataset values -> list of answer strings (shared with sspo.tools.data)
# --------------------------------------------------------------------------------------------------
def _number_to_str(x: float | int) -> str:
    if isinstance(x, bool | int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if float(x).is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(float(x))


def _strip_dollars(s: str) -> str:
    s = s.strip()
    if s.startswith("$$") and s.endswith("$$") and len(s) > 4:
        s = s[2:-2]
    # "$69$,$84$" or "$x$": drop math-mode dollars; a lone literal "\$" (currency) is kept
    return re.sub(r"(?<!\\)\$", "", s).strip()


def gold_answers(raw: Any) -> list[str]:
    """Turn a dataset's raw answer into a list of answer strings (alternatives, first = canonical).

    Handles numbers (``142.0`` -> ``"142"``), lists and Python-list strings (``"['9.6\\n']"``, parsed with
    ``ast.literal_eval``), ``$...$`` wrappers, a ``\\boxed{}`` around (or at the end of) the gold, and
    several ``$..$`` answers in one string (``"$69$,$84$"`` -> ``"69, 84"``). Units, ``%`` and currency are
    kept (the strict grader checks them). Returns ``[]`` when nothing usable is left.
    """
    if raw is None or isinstance(raw, bool):
        return []
    if isinstance(raw, int | float):
        return [_number_to_str(raw)] if math.isfinite(raw) else []
    if hasattr(raw, "tolist") and not isinstance(raw, str):  # numpy arrays / scalars from parquet
        return gold_answers(raw.tolist())
    if isinstance(raw, list | tuple):
        out: list[str] = []
        for item in raw:
            for ans in gold_answers(item):
                if ans not in out:
                    out.append(ans)
        return out
    if not isinstance(raw, str):
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
        boxed = last_boxed_answer(s)
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
    s = _strip_trailing_unit(s)
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
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
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


def fast_compare(gold: str, pred: str) -> bool | None:
    """True/False when decided without math-verify, None when math-verify must decide."""
    g, p = canonical(gold), canonical(pred)
    if not p:
        return False
    if g == p:
        return True
    gc = choice_letter(gold)
    if gc is not None and not gc[1]:  # a multiple-choice gold: the letter decides
        pc = choice_letter(pred)
        return pc is not None and pc[0] == gc[0] and not re.search(r"\([A-E]\)", pc[1])
    if "=" not in g:  # "x = 5" answers "5"
        m = _SIMPLE_LHS_RE.match(p)
        if m:
            p = m.group(1)
            if g == p:
                return True
    gn, pn = as_rational(g), as_rational(p)
    if gn is not None and pn is not None:
        scale = max(Fraction(1), abs(gn), abs(pn))
        # clearly different numbers are decided here; near-equal ones go to math-verify's rounding
        return True if gn == pn else (None if abs(gn - pn) <= scale * Fraction(1, 10**6) else False)
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


def offered_values(pred: str, golds: list[str]) -> list[str] | None:
    """Every value ``pred`` offers as the answer (each must equal the gold); None: offers two by ``\\pm``."""
    gold_text = " ".join(golds)
    if _PM_RE.search(pred) and not _PM_RE.search(gold_text):
        return None
    values = [pred]
    one_value = not any(_several_values(g) for g in golds)  # a list gold may be answered "2 or 3"
    if not one_value and not any(_RELATION_RE.search(g) for g in golds):
        # "x = 2 \text{ or } x = 3" answers the list "2, 3": one value, the list of right-hand sides
        items = [q for p in _split_top_level(pred, _OR_RE) for q in _split_top_level(p, _LIST_SEP_RE)]
        sides = [_split_top_level(q, _RELATION_RE) for q in items]
        if len(items) > 1 and all(len(x) == 1 or (len(x) == 2 and _NAME_RE.match(x[0])) for x in sides):
            return [", ".join(x[-1] for x in sides)]
    if one_value and not _OR_RE.search(gold_text):
        values = [v for p in values for v in _split_top_level(p, _OR_RE)]
    if one_value:
        unwrapped = []
        for v in values:
            inner = re.fullmatch(r"\\(?:left)?\\\{(.*)\\(?:right)?\\\}", v.strip(), re.S)
            if inner:
                v = inner.group(1)
            unwrapped += _split_top_level(v, _LIST_SEP_RE)
        values = unwrapped
    if not any(_RELATION_RE.search(g) for g in golds):
        sides = []
        for v in values:
            parts = _split_top_level(v, _RELATION_RE)
            # "x = 5", "f(x) = 5", "\angle A = 30^\circ": a name on the left; any other side is a value
            sides += [p for p in parts[:-1] if not _NAME_RE.match(p)] + parts[-1:]
        values = sides
    return [v for v in values if v] or [""]


# --------------------------------------------------------------------------------------------------
# The one code path
# --------------------------------------------------------------------------------------------------
Verifier = Callable[[list[str], str, bool], bool]  # (golds, pred, guard) -> equal (math-verify, bounded)


@dataclass(frozen=True)
class Grade:
    """A verdict: ``correct``, the extracted answer ``pred`` and, when wrong, why (``reason``)."""

    correct: bool
    pred: str
    reason: str = ""


def equal_one(golds: list[str], pred: str, policy: GradingPolicy, verify: Verifier) -> bool:
    """Whether the single value ``pred`` equals any gold under ``policy`` (in-process first, then ``verify``)."""
    p, ptags = split_units(pred) if policy.units else (pred, frozenset())
    if not p:
        return False
    undecided: list[str] = []
    for gold in golds:
        g, gtags = split_units(gold) if policy.units else (gold, frozenset())
        if not units_compatible(gtags, ptags):
            continue
        if "%" in ptags and "%" not in gtags:  # "50\\%" is the number 0.5 for a gold without "%"
            gn, pn = as_rational(canonical(g)), as_rational(canonical(p))
            if gn is not None and pn is not None and gn == pn / 100:
                return True
            continue
        fast = fast_compare(g, p)
        if fast is True:
            return True
        if fast is None:
            undecided.append(g)
    return bool(undecided) and verify(undecided, p, policy.guard_math_verify)


def grade(response: Any, golds: list[str], policy: GradingPolicy, verify: Verifier) -> Grade:
    """Grade ``response`` against ``golds`` under ``policy``; ``verify`` is asked only what strings cannot decide."""
    if not isinstance(response, str):
        return Grade(False, "", "response is not a string")
    text = visible_text(response) if policy.ignore_hidden_boxes else response
    boxes = boxed_answers(text)
    if not boxes or boxes[-1] is None:
        return Grade(False, "", "no boxed answer" if not boxes else "last box never closes (truncated)")
    pred = boxes[-1]
    if policy.reject_invisible:
        boxes = [remove_invisible(b) for b in boxes if b is not None]
        pred = boxes[-1]
        if not re.sub(r"\\[,;:! ]|\\quad|\\qquad|~|\s|\{|\}|\\text|\\mathrm", "", pred):
            return Grade(False, pred, "empty or invisible answer")
    if not pred:
        return Grade(False, "", "empty box")
    if not golds:
        return Grade(False, pred, "no gold answer")
    if not policy.single_value:
        ok = equal_one(golds, pred, policy, verify)
        return Grade(ok, pred, "" if ok else "not equal")
    distinct = list(dict.fromkeys(canonical(b) for b in boxes if b))
    if len(distinct) > 1:
        joined = ", ".join(b for b in boxes if b)
        if any(_several_values(g) for g in golds) and equal_one(golds, joined, policy, verify):
            return Grade(True, joined)  # a list gold answered one box per item
    answers = list(dict.fromkeys(b for b in boxes if b)) if len(distinct) > 1 else [pred]
    for answer in answers:
        values = offered_values(answer, golds)
        if values is None:
            return Grade(False, pred, "\\pm offers two values")
        for v in values:
            if not equal_one(golds, v, policy, verify):
                return Grade(False, pred, f"offered value {v!r} is not the gold")
    return Grade(True, pred)
