"""Text a reader cannot see: coloured like its background, or inside a phantom.

A box is an answer only if a reader sees it. Every colour syntax LaTeX (xcolor) and MathJax accept is read
into an RGB triple and text is dropped when its colour is within ``INVISIBLE_DISTANCE`` of the background
it stands on (white by default; ``\\colorbox``, ``\\fcolorbox`` and ``\\pagecolor`` set another one):

* commands: ``\\color{c}`` (a switch to the end of its group or math span), ``{\\color{c} ...}``,
  ``\\color{c}{...}``, ``\\textcolor{c}{...}``, ``\\mathcolor{c}{...}``, ``\\colorbox{c}{...}`` and
  ``\\fcolorbox{f}{c}{...}`` (a background), ``\\pagecolor{c}``, ``\\phantom``/``\\hphantom``/``\\vphantom``;
* models: ``[rgb]{1,1,1}``, ``[RGB]{255,255,255}``, ``[HTML]{FFFFFF}``, ``[gray]{1}``, ``[cmyk]{0,0,0,0}``,
  ``[cmy]``, ``[hsb]``, ``[HSB]``, ``[Hsb]``, ``[named]{white}``; MathJax's ``#fff``, ``#ffffff`` and
  ``rgb(255,255,255)``;
* names: xcolor's, dvipsnames' and the CSS names MathJax knows (near-whites included: ``snow``, ``ivory``,
  ...), colours the response defines itself (``\\definecolor``, ``\\colorlet``), and xcolor expressions
  (``white!100``, ``red!0`` = white, ``black!0!white``, ``-black`` = white).

An unknown colour counts as visible. Standard library only; linear in the text.
"""

from __future__ import annotations

import colorsys
import re
from functools import lru_cache

RGB = tuple[float, float, float]
_rx = lru_cache(maxsize=None)(re.compile)  # compiled at first use (fast import)
WHITE: RGB = (1.0, 1.0, 1.0)
BLACK: RGB = (0.0, 0.0, 0.0)
#: text this close (largest channel difference) to its background is invisible (~25 of 255)
INVISIBLE_DISTANCE = 0.1

_HEX = {
    # xcolor base and dvipsnames (the ones a reader could confuse with a background), CSS/MathJax names
    "white": "FFFFFF", "black": "000000", "red": "FF0000", "green": "00FF00", "blue": "0000FF",
    "cyan": "00FFFF", "magenta": "FF00FF", "yellow": "FFFF00", "gray": "808080", "grey": "808080",
    "darkgray": "404040", "lightgray": "BFBFBF", "brown": "BF8040", "lime": "BFFF00", "olive": "808000",
    "orange": "FF8000", "pink": "FFBFBF", "purple": "BF0040", "teal": "008080", "violet": "800080",
    "snow": "FFFAFA", "ghostwhite": "F8F8FF", "whitesmoke": "F5F5F5", "seashell": "FFF5EE",
    "floralwhite": "FFFAF0", "ivory": "FFFFF0", "mintcream": "F5FFFA", "azure": "F0FFFF",
    "aliceblue": "F0F8FF", "honeydew": "F0FFF0", "lavenderblush": "FFF0F5", "oldlace": "FDF5E6",
    "linen": "FAF0E6", "cornsilk": "FFF8DC", "lightyellow": "FFFFE0", "beige": "F5F5DC",
    "lightcyan": "E0FFFF", "navy": "000080", "maroon": "800000", "silver": "C0C0C0",
}  # fmt: skip
NAMED: dict[str, RGB] = {k: tuple(int(v[i : i + 2], 16) / 255 for i in (0, 2, 4)) for k, v in _HEX.items()}

_TOKEN_RE = r"\\[A-Za-z]+|\\[()\[\]{}$]|\$\$|[{}$]"
_HINT_RE = re.compile(
    r"\\(?:color|textcolor|mathcolor|colorbox|fcolorbox|pagecolor|[hv]?phantom|definecolor|colorlet)"
)
_ARG_RE = r"\s*(?:\[([^\]\[{}]{0,20})\])?\s*\{([^{}]{0,120})\}"
_PHANTOMS = {"\\phantom", "\\hphantom", "\\vphantom"}
_CLOSERS = {"\\)": "\\(", "\\]": "\\["}


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _numbers(spec: str) -> list[float] | None:
    try:
        return [float(x) for x in spec.replace(" ", ",").split(",") if x]
    except ValueError:
        return None


def _from_model(model: str, spec: str) -> RGB | None:
    """An RGB triple from an xcolor model and its numbers (``rgb``, ``RGB``, ``HTML``, ``gray``, ``cmyk`` ...)."""
    spec = spec.strip()
    if model == "HTML":
        return _from_hex(spec)
    if model == "named":
        return NAMED.get(spec.lower())
    nums = _numbers(spec)
    if nums is None:
        return None
    if model == "rgb" and len(nums) == 3:
        return tuple(_clip(x) for x in nums)
    if model == "RGB" and len(nums) == 3:
        return tuple(_clip(x / 255) for x in nums)
    if model in ("gray", "Gray") and len(nums) == 1:
        g = _clip(nums[0] / (15 if model == "Gray" else 1))
        return (g, g, g)
    if model == "cmyk" and len(nums) == 4:
        c, m, y, k = (_clip(x) for x in nums)
        return ((1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k))
    if model == "cmy" and len(nums) == 3:
        return tuple(1 - _clip(x) for x in nums)
    if model in ("hsb", "Hsb", "HSB") and len(nums) == 3:
        h, s, b = nums
        h, s, b = (
            (h / 360, s, b) if model == "Hsb" else (h / 240, s / 240, b / 240) if model == "HSB" else nums
        )
        return colorsys.hsv_to_rgb(_clip(h), _clip(s), _clip(b))
    return None


def _from_hex(spec: str) -> RGB | None:
    h = spec.strip().lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    if not re.fullmatch(r"[0-9A-Fa-f]{6}", h):
        return None
    return tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4))


def _from_expression(expr: str, colours: dict[str, RGB]) -> RGB | None:
    """An xcolor expression: a name, ``-name`` (complement), ``c1!p!c2!q!c3`` mixes (a missing last colour
    is white); MathJax's ``#hex`` and ``rgb(r,g,b)``."""
    e = expr.strip()
    if e.startswith("#"):
        return _from_hex(e)
    m = re.fullmatch(r"rgb\s*\(([^()]*)\)", e, re.I)
    if m:
        nums = _numbers(m.group(1))
        return tuple(_clip(x / 255) for x in nums) if nums and len(nums) == 3 else None
    complement = e.startswith("-")
    parts = e.lstrip("-").split("!")
    colour = colours.get(parts[0].strip()) or colours.get(parts[0].strip().lower())
    if colour is None:
        return None
    i = 1
    while i < len(parts):
        try:
            p = _clip(float(parts[i]) / 100)
        except ValueError:
            return None
        other = WHITE
        if i + 1 < len(parts):
            other = colours.get(parts[i + 1].strip()) or colours.get(parts[i + 1].strip().lower())
            if other is None:
                return None
        colour = tuple(p * a + (1 - p) * b for a, b in zip(colour, other, strict=True))
        i += 2
    return tuple(1 - x for x in colour) if complement else colour


def _colour_arg(text: str, pos: int, colours: dict[str, RGB]) -> tuple[RGB | None, int]:
    """The colour given at ``text[pos:]`` as ``[model]{spec}`` or ``{expression}``: (RGB or None, end)."""
    m = _rx(_ARG_RE).match(text, pos)
    if m is None:
        return None, pos
    model, spec = m.group(1), m.group(2)
    rgb = _from_model(model.strip(), spec) if model else _from_expression(spec, colours)
    return rgb, m.end()


def _invisible(fg: RGB, bg: RGB) -> bool:
    return max(abs(a - b) for a, b in zip(fg, bg, strict=True)) < INVISIBLE_DISTANCE


def _skip_group(s: str, i: int) -> int:
    """Index just past the balanced ``{...}`` starting at ``s[i] == "{"`` (or ``len(s)``)."""
    depth = 0
    for m in _rx(r"[{}]").finditer(s, i):
        depth += 1 if m.group(0) == "{" else -1
        if depth == 0:
            return m.end()
    return len(s)


def _define(name: str, text: str, pos: int, colours: dict[str, RGB]) -> int:
    """``\\definecolor{name}{model}{spec}`` / ``\\colorlet{name}{expr}``: record the colour; the end."""
    m = _rx(r"\s*(?:\[[^\]]{0,20}\])?\s*\{([^{}]{1,40})\}").match(text, pos)
    if m is None:
        return pos
    if name == "\\definecolor":
        rgb, end = _colour_arg(text, m.end(), colours)
        if rgb is None:
            m2 = _rx(r"\s*\{([^{}]{0,20})\}\s*\{([^{}]{0,120})\}").match(text, m.end())
            if m2 is None:
                return m.end()
            rgb, end = _from_model(m2.group(1).strip(), m2.group(2)), m2.end()
    else:
        rgb, end = _colour_arg(text, m.end(), colours)
    if rgb is not None:
        colours[m.group(1).strip()] = rgb
    return end


def hide_invisible(text: str) -> str:
    """``text`` with what a reader cannot see replaced by spaces (braces kept, so boxes keep their shape)."""
    if not _HINT_RE.search(text):
        return text
    colours = dict(NAMED)
    stack: list[list] = [[BLACK, WHITE, ""]]  # per group: text colour, background, what opened it
    pending: tuple[int, RGB] | None = None  # (0: text colour / 1: background, colour) for the next group
    out: list[str] = []
    pos = 0

    def emit(s: str) -> None:
        if s:
            out.append(" " if _invisible(stack[-1][0], stack[-1][1]) and not s.isspace() else s)

    for m in _rx(_TOKEN_RE).finditer(text):
        if m.start() < pos:
            continue
        emit(text[pos : m.start()])
        tok, pos = m.group(0), m.end()
        if tok == "{":
            frame = [stack[-1][0], stack[-1][1], "{"]
            if pending is not None:
                frame[pending[0]], pending = pending[1], None
            stack.append(frame)
            out.append("{")
        elif tok == "}":
            if len(stack) > 1 and stack[-1][2] == "{":
                stack.pop()
            out.append("}")
        elif tok in ("$", "$$", "\\(", "\\["):
            if tok in ("$", "$$") and stack[-1][2] == tok:
                stack.pop()
            else:
                stack.append([stack[-1][0], stack[-1][1], tok])
            out.append(tok)
        elif tok in _CLOSERS:
            while len(stack) > 1 and stack[-1][2] == "{":
                stack.pop()
            if len(stack) > 1 and stack[-1][2] == _CLOSERS[tok]:
                stack.pop()
            out.append(tok)
        elif tok in _PHANTOMS:
            j = pos
            while j < len(text) and text[j].isspace():
                j += 1
            pos = _skip_group(text, j) if j < len(text) and text[j] == "{" else pos
            out.append(" ")
        elif tok in ("\\definecolor", "\\colorlet"):
            pos = _define(tok, text, pos, colours)
        elif tok in ("\\color", "\\textcolor", "\\mathcolor", "\\colorbox", "\\fcolorbox", "\\pagecolor"):
            if tok == "\\fcolorbox":
                _, pos = _colour_arg(text, pos, colours)  # the frame's colour
            rgb, pos = _colour_arg(text, pos, colours)
            out.append(text[m.start() : pos])  # the command stays (a visible wrapper is unwrapped later)
            if rgb is None:
                continue  # unknown colour: visible
            if tok == "\\color":
                stack[-1][0] = rgb  # a switch: to the end of this group (or its own group, if one follows)
            elif tok == "\\pagecolor":
                for frame in stack:
                    frame[1] = rgb if frame[1] == stack[0][1] else frame[1]
            else:
                pending = (1 if tok in ("\\colorbox", "\\fcolorbox") else 0, rgb)
                j = pos
                while j < len(text) and text[j].isspace():
                    j += 1
                if j < len(text) and text[j] not in "{\\":  # "\\textcolor{white} 5": one character
                    frame = [stack[-1][0], stack[-1][1], ""]
                    frame[pending[0]], pending = pending[1], None
                    stack.append(frame)
                    emit(text[pos : j + 1])
                    stack.pop()
                    pos = j + 1
        else:
            emit(tok)
    emit(text[pos:])
    return "".join(out)
