"""What the question asks for, read from its text, and whether an answer gives it in that form.

Some wrong answers can only be told from right ones with the question at hand: the gold ``500`` of
"how long is it, in cm?" carries no unit, so ``500 \\text{ m}`` matches its number; ``0.375`` is the value of
the gold ``\\frac{3}{8}`` of "express it as a common fraction"; ``x^2+5x+6`` is what math-verify finds equal
to the gold ``(x+2)(x+3)`` of "factor ...". ``read_request`` parses the request of a question once (general
phrasings, not examples: "in <unit>", "how many <unit>", "as a decimal", "factor", "in terms of <vars>"),
and ``violation`` says why an answer does not give what was asked. Each rule only applies when the gold
itself is in the asked form, so a gold always passes its own question (the rule can only reject a form the
gold does not have). Standard library only; linear in the question's length; memoised per question.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from math import gcd
from typing import NamedTuple

_rx = lru_cache(maxsize=None)(re.compile)  # patterns compiled at first use: the reward must import fast
MAX_QUESTION_CHARS = 20_000  # a longer "question" is ignored (the reward behaves as without one)

# --------------------------------------------------------------------------------------------------
# Units the question asks the answer in
# --------------------------------------------------------------------------------------------------
# physical units only: a count ("how many students") is no unit an answer can be given in "instead"
_UNIT_NAMES = {
    "millimeter": "millimeter|millimetre|mm", "centimeter": "centimeter|centimetre|cm",
    "meter": "meter|metre|m", "kilometer": "kilometer|kilometre|km", "inch": "inch|inche|in",
    "foot": "foot|feet|ft", "yard": "yard|yd", "mile": "mile|mi",
    "second": "second|sec|s", "minute": "minute|min", "hour": "hour|hr|h", "day": "day", "week": "week",
    "month": "month", "year": "year|yr",
    "gram": "gram|g", "kilogram": "kilogram|kg", "pound": "pound|lb", "ounce": "ounce|oz", "ton": "ton",
    "liter": "liter|litre|l", "milliliter": "milliliter|millilitre|ml", "gallon": "gallon|gal",
    "dollar": "dollar", "cent": "cent", "°": "°|degree", "radian": "radian|rad",
}  # fmt: skip
_UNIT_OF = {alias: unit for unit, aliases in _UNIT_NAMES.items() for alias in aliases.split("|")}
PHYSICAL_UNITS = frozenset(_UNIT_NAMES)
_UNIT_WORD = (
    r"(?:square\s+|sq\.?\s+|cubic\s+)?("
    + "|".join(sorted({a + s for a in _UNIT_OF for s in ("", "s", "es")}, key=len, reverse=True))
    + r")\b(?!\s*\}?\s*/)\s*\}?(?:\s*(?:\^\s*\{?\s*([23])\s*\}?|²|³))?"
)  # "m/s" is no unit of its own
# "in cm", "in square feet", "(in meters)", "how many minutes", "how many more dollars", "number of hours"
_ASKED_UNIT = (
    r"(?i)(?:(?<![\\\w])in\s+(?:units\s+of\s+)?|\bhow\s+(?:many|much)\s+(?:more\s+|fewer\s+|less\s+|total\s+)?"
    r"|\bnumber\s+of\s+|\bto\s+the\s+nearest\s+)(?:\\(?:text|mathrm)\s*\{\s*)?" + _UNIT_WORD
)


def _base_unit(word: str) -> str:
    """One name per unit: ``cm``, ``centimetres`` -> ``centimeter``; an unknown word as it is."""
    w = word.lower()
    return _UNIT_OF.get(w) or _UNIT_OF.get(w[:-1]) or _UNIT_OF.get(w[:-2]) or w


def unit_key(tag: str) -> str:
    """A unit tag of ``grading.split_units`` (``centimeter^2``, ``yd``) in this module's names."""
    base, _, exp = tag.partition("^")
    return _base_unit(base) + ("^" + exp if exp else "")


def _unit_key(word: str, square: str, power: str | None) -> str:
    """The tag of a unit the question names (``centimeter^2`` for "square cm")."""
    base = _base_unit(word)
    size = re.search(r"(?i)\b(square|sq|cubic)\b", square)
    exp = power or ("" if size is None else "3" if size.group(1).lower() == "cubic" else "2")
    return base + ("^" + exp if exp else "")


# --------------------------------------------------------------------------------------------------
# Forms: decimal, fraction, radical, scientific notation, percent, factored, expanded/simplified
# --------------------------------------------------------------------------------------------------
_FORM_RES = {
    "decimal": r"\bas\s+a\s+decimal|\bdecimal\s+(?:form|notation|number|answer|value|approximation)|"
    r"\bin\s+decimal\b|\bto\s+the\s+nearest\s+(?:tenth|hundredth|thousandth|ten-thousandth)|"
    r"\b(?:round|rounded|correct|accurate)\b[^.?!]{0,40}?\bdecimal\s+places?\b",
    "fraction": r"\b(?:common|proper|improper|simple|reduced)\s+fraction|\bas\s+an?\s+(?:\w+\s+)?fraction\b|"
    r"\bin\s+(?:simplest|lowest|reduced)\s+(?:form|terms)|\bfraction\s+in\s+(?:simplest|lowest)",
    "radical": r"\bsimplest\s+radical\s+form|\bradical\s+form|\bsimplified\s+radical",
    "scientific": r"\bscientific\s+notation|\bstandard\s+form\s+a\s*\\times",
    "percent": r"\b(?:what|which|as\s+a|in|how\s+many)\s+(?:\w+\s+)?percent(?:age)?s?\b|\bpercent(?:age)?\s+"
    r"(?:increase|decrease|change|error|of\s+the)",
    "factored": r"(?:^|[.?!:]\s*|\b(?:completely|fully|then|and|to)\s+)factor(?:i[sz]e)?\b|\bfactored\s+form"
    r"|\bfactori[sz]ation\s+of\b|\bas\s+a\s+product\b|\bfactor\s+(?:the\s+)?(?:expression|polynomial|\$)",
    "expanded": r"\bexpand\b|\bmultiply\s+out|\bexpanded\s+form|\bas\s+a\s+polynomial|\bsimplify\b"
    r"|\bin\s+(?:standard|simplest)\s+form\b",
}


@lru_cache(maxsize=1)
def _patterns() -> tuple[re.Pattern, dict[str, re.Pattern]]:
    """The question patterns, compiled at the first question (not at import: the reward must start fast)."""
    return re.compile(_ASKED_UNIT), {name: re.compile("(?im)" + rx) for name, rx in _FORM_RES.items()}


# "in terms of $x$ and $y$", "as a function of $t$"
_TERMS_OF_RE = r"(?is)\b(?:in\s+terms\s+of|as\s+a\s+function\s+of)\s+(.{1,120}?)(?:[.?!;](?:\s|$)|$)"
_MATH_SPAN_RE = r"(?s)\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]"
_LOOSE_LETTER_RE = r"(?<![\w\\])([A-Za-z])(?![\w'])"
_GREEK = (
    "alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|xi|rho|"
    "sigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Sigma|Phi|Psi|Omega"
)
_GREEK_RE = r"\\(" + _GREEK + r")(?![a-zA-Z])"
_TEXTLIKE_RE = r"\\(?:text\w*|math(?:rm|bf|it|sf|cal|bb)|mbox|operatorname|begin|end)\s*\{[^{}]*\}"
_COMMAND_RE = r"\\[a-zA-Z]+"


def variables(latex: str) -> frozenset[str]:
    """Variable names in ``latex``: single letters and Greek commands (not ``e``, ``i``, text, commands)."""
    s = _rx(_TEXTLIKE_RE).sub(" ", latex)
    greek = set(_rx(_GREEK_RE).findall(s))
    return frozenset((set(re.findall(r"[A-Za-z]", _rx(_COMMAND_RE).sub(" ", s))) - {"e", "i"}) | greek)


class Request(NamedTuple):
    """What a question asks for: units, forms, variables (``None``: not asked), its given expressions."""

    units: frozenset[str] = frozenset()
    forms: frozenset[str] = frozenset()
    variables: frozenset[str] | None = None
    givens: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.units or self.forms or self.variables is not None or self.givens)


NO_REQUEST = Request()


def _asked_variables(question: str) -> frozenset[str] | None:
    """The variables of every "in terms of ..." phrase, or None when there is none."""
    found: set[str] | None = None
    for m in _rx(_TERMS_OF_RE).finditer(question):
        phrase = m.group(1)
        found = set() if found is None else found
        for span in _rx(_MATH_SPAN_RE).finditer(phrase):
            found |= variables(next(g for g in span.groups() if g is not None))
        prose = _rx(_MATH_SPAN_RE).sub(" ", phrase)
        found |= set(_rx(_LOOSE_LETTER_RE).findall(prose)) - {"e", "i"}
        found |= set(_rx(_GREEK_RE).findall(prose)) | {g for g in re.findall(r"\b(" + _GREEK + r")\b", prose)}
    return None if found is None else frozenset(found)


def _givens(question: str, canonical) -> frozenset[str]:
    """Canonical forms of the question's non-numeric math expressions (each span and each side of ``=``)."""
    out: set[str] = set()
    for span in _rx(_MATH_SPAN_RE).finditer(question):
        text = next(g for g in span.groups() if g is not None)
        if len(text) > 400:
            continue
        for part in [text, *re.split(r"(?<![<>!\\])=", text)]:
            c = canonical(part.strip().rstrip(".,;:?"))
            if len(c) >= 3 and not re.fullmatch(r"[+-]?[\d.,]+", c) and not re.fullmatch(r"[A-Za-z]", c):
                out.add(c)
    return frozenset(out)


@lru_cache(maxsize=8192)
def read_request(question: str) -> Request:
    """Parse what ``question`` asks for (memoised: a GRPO group's samples share their question)."""
    if not isinstance(question, str) or not question.strip() or len(question) > MAX_QUESTION_CHARS:
        return NO_REQUEST
    from sspo.reward.grading import canonical  # grading imports this module

    asked_unit, form_res = _patterns()
    units = frozenset(_unit_key(m.group(1), m.group(0), m.group(2)) for m in asked_unit.finditer(question))
    forms = frozenset(name for name, rx in form_res.items() if rx.search(question))
    return Request(units, forms, _asked_variables(question), _givens(question, canonical))


# --------------------------------------------------------------------------------------------------
# Forms of an answer
# --------------------------------------------------------------------------------------------------
_DECIMAL_RE = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$"
_HAS_DECIMAL_RE = r"\d\.\d"
_HAS_FRACTION_RE = r"\\frac|\d\s*/\s*\d"
_INT_FRACTION_RE = r"\\frac\{(\d{1,30})\}\{(\d{1,30})\}|(?<![\d.])(\d{1,30})/(\d{1,30})(?![\d.])"
_SQRT_INT_RE = r"\\sqrt(?:\[(\d+)\])?\{(\d{1,12})\}"
_SCI_RE = r"\\(?:times|cdot)\s*10\s*\^|\d[eE][+-]?\d"
_LETTER_RE = r"[A-Za-z]"
_UNEVALUATED_RE = r"\d\}?(?:\\cdot|\\times|\*)\{?\d"  # "25\cdot2": arithmetic left to do
_CHOICE_RE = r"\(?[A-E]\)?"  # a multiple-choice letter is no variable


def _top_level_sum(c: str) -> bool:
    """Whether canonical ``c`` has a ``+``/``-`` outside brackets (not a leading sign, not in an exponent)."""
    depth = 0
    for i, ch in enumerate(c):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch in "+-" and depth == 0 and i > 0 and c[i - 1] not in "^_(eE{[,=":
            return True
    return False


def _product_of_sums(c: str) -> bool:
    """Whether ``c`` multiplies or raises a bracketed sum: ``(x+1)(x+2)``, ``3(x-1)``, ``(a+b)^2``."""
    stack: list[int] = []
    for i, ch in enumerate(c):
        if ch == "(":
            stack.append(i)
        elif ch == ")" and stack:
            start = stack.pop()
            inner = c[start + 1 : i]
            if not _top_level_sum(inner):
                continue
            after, before = c[i + 1 : i + 2], c[start - 1 : start] if start else ""
            if (
                after in ("(", "^")
                or after.isalnum()
                or after == "\\"
                or before.isalnum()
                or before in (")", "}")
            ):
                return True
    return False


def _reduced(c: str) -> bool:
    """Every integer fraction in ``c`` is in lowest terms."""
    for m in _rx(_INT_FRACTION_RE).finditer(c):
        num, den = (int(x) for x in (m.group(1, 2) if m.group(1) else m.group(3, 4)))
        if den and gcd(num, den) > 1:
            return False
    return True


def _square_free(n: int, k: int = 2) -> bool:
    """Whether no k-th power above 1 divides ``n`` (radicands up to 10^12: trial division to the k-th root)."""
    f = 2
    while f**k <= n:
        if n % f**k == 0:
            return False
        f += 1
    return True


def _simplest_radicals(c: str) -> bool:
    """Every integer radicand in ``c`` has no square (k-th power) factor: ``2\\sqrt{2}``, not ``\\sqrt{8}``."""
    return all(_square_free(int(m.group(2)), int(m.group(1) or 2)) for m in _rx(_SQRT_INT_RE).finditer(c))


def _form_ok(form: str, c: str) -> bool:
    """Whether canonical answer ``c`` is written in ``form`` (a value-free check of its notation)."""
    if form == "decimal":
        return bool(_rx(_DECIMAL_RE).match(c.replace(",", "")))
    if form == "fraction":
        return not _rx(_HAS_DECIMAL_RE).search(c) and _reduced(c)
    if form == "radical":
        return not _rx(_HAS_DECIMAL_RE).search(c) and _simplest_radicals(c) and _reduced(c)
    if form == "scientific":
        return bool(_rx(_SCI_RE).search(c))
    if form == "factored":
        return not _top_level_sum(c)
    if form == "expanded":
        return (
            not _product_of_sums(c)
            and _reduced(c)
            and _simplest_radicals(c)
            and not _rx(_UNEVALUATED_RE).search(c)
        )
    return True


def _gold_in_form(form: str, g: str) -> bool:
    """Whether canonical gold ``g`` shows ``form`` (so the rule can judge an answer against it)."""
    if form == "fraction":
        return bool(_rx(_HAS_FRACTION_RE).search(g)) and _form_ok(form, g)
    if form == "radical":
        return "\\sqrt" in g and _form_ok(form, g)
    if form == "decimal":
        return bool(_rx(_HAS_DECIMAL_RE).search(g)) and _form_ok(form, g)
    if form == "factored":
        return _product_of_sums(g) and not _top_level_sum(g) and bool(_rx(_LETTER_RE).search(g))
    if form == "expanded":
        return _form_ok(form, g)
    return _form_ok(form, g)


def violation(
    request: Request,
    value: str,
    value_units: frozenset[str],
    golds: list[tuple[str, frozenset[str]]],
    canonical: Callable[[str], str],
) -> str | None:
    """Why the offered ``value`` (units split off) does not give what ``request`` asks, or None.

    ``golds``: (value, units) of each gold, split as the answer. Every rule is skipped for a gold not in
    the asked form, so a gold never violates its own question.
    """
    c = canonical(value)
    gold_c = [canonical(g) for g, _ in golds]
    physical = {unit_key(t) for t in value_units} & PHYSICAL_UNITS_TAGS
    if request.units and physical:
        allowed = set(request.units).union(*({unit_key(t) for t in u} for _, u in golds))
        if not physical <= allowed:
            return f"answer in {sorted(physical)}, the question asks {sorted(request.units)}"
    for form in sorted(request.forms - {"percent"}):
        if any(_gold_in_form(form, g) for g in gold_c) and not _form_ok(form, c) and c not in gold_c:
            return f"the question asks the {form} form"
    if request.variables is not None and not _rx(_CHOICE_RE).fullmatch(c):
        allowed = set(request.variables).union(*(variables(g) for g, _ in golds))  # spaces kept: "\\pi d"
        extra = variables(value) - allowed
        if extra:
            return f"answer uses {sorted(extra)}, the question asks in terms of {sorted(request.variables)}"
    if c in request.givens and c not in gold_c:
        return "the answer restates an expression the question gives"
    return None


def _physical_tags() -> frozenset[str]:
    tags = set(PHYSICAL_UNITS)
    for unit in PHYSICAL_UNITS:
        tags |= {unit + "^2", unit + "^3"}
    return frozenset(tags)


PHYSICAL_UNITS_TAGS = _physical_tags()


def percent_golds(golds: list[str], answer_has_percent: bool, is_percent: Callable[[str], bool]) -> list[str]:
    """Golds of a question that asks a percentage: ``12.5`` and ``12.5\\%`` are one answer, its value
    ``0.125`` is not (an answer with ``%`` meets golds with it, an answer without meets them without)."""
    out = []
    for g in golds:
        has = is_percent(g)
        if answer_has_percent:
            out.append(g if has else g + "\\%")
        else:
            out.append(re.sub(r"\s*(?:\\%|%|\\text\s*\{\s*percent\s*\})\s*$", "", g) if has else g)
    return out


__all__ = [
    "MAX_QUESTION_CHARS",
    "NO_REQUEST",
    "Request",
    "percent_golds",
    "read_request",
    "unit_key",
    "variables",
    "violation",
]
