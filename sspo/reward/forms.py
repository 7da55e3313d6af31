"""Answer forms decided in-process: repeating decimals, exact powers and towers, labels, ``\\pm``, lists, wrappers.

Standard library only, every function linear (or bounded) in its input: each is a pure string/number
transformation that ``sspo.reward.grading`` applies before (never instead of) its comparison.
"""

from __future__ import annotations

import re
from fractions import Fraction

# --------------------------------------------------------------------------------------------------
# Repeating decimals: 0.\overline{6} = 2/3, -0.1\overline{6} = -1/6
# --------------------------------------------------------------------------------------------------
_REPEAT_RE = re.compile(
    r"^([+-]?)(\d{0,50})\.(\d{0,50})(?:\\(?:overline|bar|dot)\{?(\d{1,50})\}?|\((\d{1,50})\))$"
)


def repeating_decimal(c: str) -> Fraction | None:
    """The exact value of a canonical repeating decimal (``0.\\overline{6}`` -> 2/3), else None."""
    m = _REPEAT_RE.match(c)
    if not m:
        return None
    sign, whole, fixed, rep, paren = m.groups()
    rep = rep or paren
    value = int(whole or 0) + Fraction(int(fixed or 0), 10 ** len(fixed))
    value += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    return -value if sign == "-" else value


# --------------------------------------------------------------------------------------------------
# Integer powers and towers, compared exactly (never by floating point), in bounded time
# --------------------------------------------------------------------------------------------------
MAX_INT_BITS = 20_000  # values up to this size are computed; larger ones are kept as (root, exponent)
_MAX_LITERAL_DIGITS = 4000  # int() of a longer literal is refused by Python itself (4300 digits)
_INT_RE = re.compile(r"\d{1," + str(_MAX_LITERAL_DIGITS) + "}")
Power = int | tuple[int, int]  # an exact non-negative integer, or root**exponent (root not a perfect power)


def _perfect_root(b: int) -> tuple[int, int]:
    """(r, k) with r**k == b and r not a perfect power (bases under 2**64; larger ones are kept as they are)."""
    if b < 4 or b >= 2**64:
        return b, 1
    for k in range(b.bit_length(), 1, -1):
        est = round(b ** (1.0 / k))
        for r in (est - 1, est, est + 1):
            if r > 1 and r**k == b:
                inner, j = _perfect_root(r)
                return inner, j * k
    return b, 1


def _power(base: Power, exp: Power) -> Power | None:
    """``base ** exp`` exactly: an int when small, (root, exponent) when huge, None when undecidable."""
    if isinstance(exp, tuple):
        return None  # an exponent too large to write down: not decided here
    if isinstance(base, tuple):
        return (base[0], base[1] * exp) if exp >= 1 else 1
    if base in (0, 1) or exp in (0, 1):
        return 1 if exp == 0 else base
    if exp * base.bit_length() <= MAX_INT_BITS:
        return base**exp
    r, k = _perfect_root(base)
    return (r, k * exp)


def _parse_power(s: str, i: int, depth: int) -> tuple[Power | None, int]:
    """Parse ``atom ('^' atom)?`` (right-associative) at ``s[i]``: (value or None, index after it)."""
    if depth > 12 or i >= len(s):
        return None, i
    if s[i] in "{(":
        close = "}" if s[i] == "{" else ")"
        value, j = _parse_power(s, i + 1, depth + 1)
        if value is None or j >= len(s) or s[j] != close:
            return None, j
        base, i = value, j + 1
    else:
        m = _INT_RE.match(s, i)
        if not m:
            return None, i
        base, i = int(m.group(0)), m.end()
    if i < len(s) and s[i] == "^":
        if i + 1 < len(s) and s[i + 1].isdigit():  # "2^5": one digit, as LaTeX reads it
            exp, i = int(s[i + 1]), i + 2
        else:
            exp, i = _parse_power(s, i + 1, depth + 1)
            if exp is None:
                return None, i
        return _power(base, exp), i
    return base, i


def power_value(c: str) -> Power | None:
    """The exact value of a canonical integer power expression (``3^{3^{3}}``, ``2^{1024}``, ``81``)."""
    if len(c) > _MAX_LITERAL_DIGITS + 200:
        return None
    value, end = _parse_power(c, 0, 0)
    return value if end == len(c) else None


def compare_powers(g: str, p: str) -> bool | None:
    """Whether two canonical integer power expressions are equal (one at least has ``^``); None: not both."""
    if "^" not in g and "^" not in p:
        return None
    gv, pv = power_value(g), power_value(p)
    if gv is None or pv is None:
        return None
    if isinstance(gv, int) != isinstance(pv, int):
        return False  # one fits in MAX_INT_BITS, the other does not
    if isinstance(gv, tuple) and (gv[0] >= 2**64 or pv[0] >= 2**64) and gv != pv:
        return None  # a huge base not reduced to its root: undecided
    return gv == pv


# --------------------------------------------------------------------------------------------------
# Labels: "|PQ| = 7", "a=2, b=9", "x:y = 5:8", and the response's "p+q = 125"
# --------------------------------------------------------------------------------------------------
_LABEL_RE = re.compile(
    r"^(?:m\s*)?(?:\\angle\s*|\\overline\s*)?"
    r"(?:\|[A-Za-z\s]{1,6}\||[A-Za-z](?:_\{?\w{1,4}\}?)?(?:\s*[+:\-]\s*[A-Za-z](?:_\{?\w{1,4}\}?)?){0,3}"
    r"|\\frac\s*\{[A-Za-z]{1,3}\}\s*\{[A-Za-z]{1,3}\}|\\(?:text|mathrm|textrm)\s*\{[A-Za-z ]{1,24}\}|\{[A-Za-z]{1,4}\}|[A-Za-z\s]{1,8}(?:_\{?\w{1,4}\}?)?)$"
)


def is_label(s: str) -> bool:
    """Whether ``s`` names the asked quantity (``|PQ|``, ``p+q``, ``x:y``, ``AB``, ``\\angle ABC``)."""
    return bool(s) and len(s) <= 40 and bool(_LABEL_RE.match(s.strip()))


def _relation_split(s: str) -> list[str]:
    """``s`` split at top-level ``=`` signs (not ``<=``, ``>=``, ``!=``, ``\\neq``)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        depth += (c in "([{") - (c in ")]}")
        if c == "=" and depth == 0 and (i == 0 or s[i - 1] not in "<>!\\"):
            parts.append(s[start:i].strip())
            start = i + 1
    return parts + [s[start:].strip()]


def list_items(s: str) -> list[str]:
    """Top-level items of a list (commas that are no thousands mark, semicolons); one item if none."""
    items, depth, start, n = [], 0, 0, len(s)
    for i, c in enumerate(s):
        depth += (c in "([{") - (c in ")]}")
        if depth or c not in ",;" or (i and s[i - 1] == "\\"):
            continue
        if c == "," and re.match(r"\d{3}(?!\d)", s[i + 1 : i + 5]) and i and s[i - 1].isdigit():
            continue  # 1,000
        items.append(s[start:i].strip())
        start = i + 1
    return items + [s[start:n].strip()]


def label_value(gold: str) -> str | None:
    """The value of a labelled gold: ``|PQ| = 7`` -> ``7``, ``a=2, b=9`` -> ``(2, 9)`` (in the labels' order),
    ``a=2, a=-6`` -> ``2, -6`` (one label: alternatives); None if unlabelled."""
    if "=" not in gold or len(gold) > 400:
        return None
    labels, values = [], []
    for item in list_items(gold):
        sides = _relation_split(item)
        if (
            len(sides) != 2
            or not is_label(sides[0])
            or re.search(r"[A-Za-z]", re.sub(r"\\[a-z]+", "", sides[1]))
        ):
            return None
        labels.append(re.sub(r"\s", "", sides[0]))
        values.append(sides[1])
    if len(values) == 1:
        return values[0]
    joined = ", ".join(values)
    return "(" + joined + ")" if len(set(labels)) == len(labels) else joined


# --------------------------------------------------------------------------------------------------
# Plus-minus: "2 \pm \sqrt{3}" is the list "2 + \sqrt{3}, 2 - \sqrt{3}"
# --------------------------------------------------------------------------------------------------
_SET_RE = re.compile(r"(?:\\left)?\\\{(.*?)(?:\\right)?\\\}", re.S)
_PM_TOKEN_RE = re.compile(r"\\pm(?![a-zA-Z])|\\mp(?![a-zA-Z])|±|∓")


def expand_pm(gold: str) -> str | None:
    """``a \\pm b`` written out as both values (per list item, one or two signs); None without ``\\pm``."""
    if not _PM_TOKEN_RE.search(gold) or len(gold) > 400:
        return None
    inner = _SET_RE.fullmatch(gold.strip())
    out: list[str] = []
    for item in list_items(inner.group(1) if inner else gold):
        signs = _PM_TOKEN_RE.findall(item)
        if len(signs) > 2:
            return None
        variants = [item]
        for _ in signs:
            nxt = []
            for v in variants:
                m = _PM_TOKEN_RE.search(v)
                plus, minus = ("-", "+") if m.group(0) in ("\\mp", "∓") else ("+", "-")
                nxt += [v[: m.start()] + plus + v[m.end() :], v[: m.start()] + minus + v[m.end() :]]
            variants = nxt
        out += [re.sub(r"^\s*\+\s*", "", v).strip() for v in variants]
    return ", ".join(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------------
# Visible wrappers that do not change the value: \color{red}{58}, \textcolor{blue}{x}, \mathbf{5}
# --------------------------------------------------------------------------------------------------
_WRAPPER_RE = re.compile(
    r"\\(?:textcolor|mathcolor|colorbox)\s*(?:\[[^\]]{0,20}\])?\s*\{[^{}]{0,60}\}\s*(?=\{)"
    r"|\\fcolorbox\s*(?:\[[^\]]{0,20}\])?\s*\{[^{}]{0,60}\}\s*\{[^{}]{0,60}\}\s*(?=\{)"
    r"|\\color\s*(?:\[[^\]]{0,20}\])?\s*\{[^{}]{0,60}\}\s*"
    r"|\\(?:mathbf|textbf|boldsymbol|bm|underline|mathbold)\s*(?=\{)"
    r"|\\(?:tiny|small|normalsize|large|Large|LARGE|huge|Huge|bf)(?![a-zA-Z])\s*"
)


def unwrap_visible(s: str) -> str:
    """``s`` without colour, bold and size commands (their argument kept) and without one outer brace pair."""
    pos = 0
    while "\\" in s and len(s) <= 5000:
        m = _WRAPPER_RE.search(s, pos)
        if m is None:
            break
        if m.end() < len(s) and s[m.end()] == "{" and not m.group(0).startswith("\\color"):
            end = _group_end(s, m.end())  # \textcolor{red}{58} -> 58
            s = s[: m.start()] + s[m.end() + 1 : end - 1] + s[end:]
        else:  # \color{red} 58, \large 58: a switch, nothing to unwrap
            s = s[: m.start()] + s[m.end() :]
        pos = m.start()
    return _peel_outer_braces(s.strip())


def _peel_outer_braces(t: str) -> str:
    """``t`` without every outer ``{...}`` pair that encloses all of it (spaces between the layers dropped), in
    one pass: the matching brace of each opening one is found once (a nested box is never quadratic)."""
    match, stack = {}, []
    for j, ch in enumerate(t):
        if ch == "{":
            stack.append(j)
        elif ch == "}" and stack:
            match[stack.pop()] = j
    i, j = 0, len(t) - 1
    while i < j and t[i] == "{" and match.get(i) == j:
        i, j = i + 1, j - 1
        while i <= j and t[i].isspace():
            i += 1
        while j >= i and t[j].isspace():
            j -= 1
    return t[i : j + 1]


def _group_end(t: str, i: int) -> int:
    """Index just past the ``{...}`` group opening at ``t[i]`` (``len(t) + 1`` when it never closes)."""
    depth = 0
    for j in range(i, len(t)):
        depth += (t[j] == "{") - (t[j] == "}")
        if depth == 0:
            return j + 1
    return len(t) + 1
