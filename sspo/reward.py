"""Verifiable math reward for verl: last ``\\boxed{}`` answer, string match, then math-verify, hard-timed.

Use it as verl's custom reward function::

    reward.custom_reward_function.path=pkg://sspo.reward
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.timeout=5.0   # optional, seconds

How a response is scored (``compute_score``):

1. the answer is the content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``) in the response, nested
   braces handled. No box, an empty box, or a box left open (a response cut at the length limit) -> 0;
2. the answer and every gold answer (``ground_truth`` may be a string, a number or a list of alternatives;
   ``extra_info["answer_alternatives"]`` adds more) are canonicalised (spacing, ``\\left``, ``\\dfrac``,
   ``^\\circ``, ``\\%``, trailing units in ``\\text{}``, ``142.0`` -> ``142`` ...) and compared as strings;
   plain numbers and integer fractions are compared exactly (``0.5`` = ``\\frac{1}{2}`` = ``2/4``). Most
   responses are decided here, in-process, in microseconds, and never wait for a worker (all 1,560 oat
   benchmark golds boxed as themselves or in their raw form are, see ``tests/test_reward.py``);
3. otherwise math-verify decides equivalence (``verify(gold, target)``, gold first) in a persistent
   worker PROCESS. The caller waits at most ``timeout`` seconds (default 5, the whole call included);
   a worker that overruns is killed (SIGKILL) and a replacement started at once; the response scores 0.

Why a worker process: math-verify's own timeouts use ``signal.alarm``, which only works in the main
thread. verl calls reward functions from a thread pool inside Ray actors, and sympy can spin in C code
that no Python-level timeout interrupts; only killing a process is a hard bound. The worker runs this
very file as a script (``python -c`` + ``spec_from_file_location``) so it never imports torch/verl.

Concurrency: each process keeps up to ``SSPO_REWARD_WORKERS`` workers (default ``min(8, cpu_count)``,
~60 MB each) shared by its threads; a call that finds all of them busy until its own deadline scores 0
(logged as a warning naming SSPO_REWARD_WORKERS), so the bound holds under any load. Only answers that
need math-verify (symbolic forms, e.g. ``2\\sqrt{2}`` for ``\\sqrt{8}``) can be hit by this; a string or
numeric match never asks a worker. A timed-out (gold, answer) pair is remembered as 0.

Limitation: verl hands the reward the decoded text only; a response cut at the length limit after an
earlier, closed ``\\boxed{}`` is scored on that box (``extra_info["truncated"]`` forces 0 when known, and
``sspo.evaluation`` passes vLLM's finish reason).

``compute_score`` never raises (anything but ``KeyboardInterrupt``/``SystemExit`` is caught, including
math-verify's ``BaseException``-derived ``TimeoutException``) and always returns the same three keys.
This module imports only the standard library at import time.
"""

from __future__ import annotations

import ast
import atexit
import json
import logging
import math
import os
import re
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from typing import Any

logger = logging.getLogger(__name__)


def _env_number(name: str, default: float, cast: type = float) -> Any:
    """A positive number from environment variable ``name``; a bad value fails at import, naming it."""
    raw = os.environ.get(name)
    try:
        value = cast(raw) if raw is not None else cast(default)
    except ValueError:
        value = None
    if value is None or not value > 0:
        raise ValueError(
            f"environment variable {name}={raw!r}: expected a positive {cast.__name__}; "
            f"unset it for the default ({cast(default)})"
        )
    return value


DEFAULT_TIMEOUT_S = _env_number("SSPO_REWARD_TIMEOUT", 5.0)
# Concurrent math-verify workers per process (verl scores from a thread pool); ~60 MB each.
MAX_WORKERS = _env_number("SSPO_REWARD_WORKERS", min(8, os.cpu_count() or 1), int)
# Answers longer than this are only string-matched: math-verify on them is slow and never needed.
MAX_VERIFY_CHARS = 1000
WORKER_MEMORY_LIMIT_BYTES = 4 * 1024**3

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------
def last_boxed_answer(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``) in ``text``.

    Returns None when there is no box, the box is empty, or its braces never close (a truncated response).
    """
    # Not verl's last_boxed_only_string + remove_boxed: math_reward's takes any earlier "\boxed 3" over a
    # later "\boxed{5}" and raises AssertionError on "\fbox{7}"; math_dapo's ignores \fbox and "\boxed 5";
    # both return "" for an empty box instead of "no answer".
    if not isinstance(text, str):
        return None
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    i = starts[-1]
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return None
    if text[i] != "{":  # "\boxed 5": the answer runs to the next space, "$" or end
        m = re.match(r"[^\s$]+", text[i:])
        ans = m.group(0).rstrip(".") if m else ""
        return ans or None
    depth = 0
    for j in range(i, n):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                ans = text[i + 1 : j].strip()
                return ans or None
    return None  # unclosed: truncated mid-answer


# --------------------------------------------------------------------------------------------------
# Gold answers: raw dataset values -> list of answer strings (shared with sspo.data)
# --------------------------------------------------------------------------------------------------
def _number_to_str(x: float | int) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
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
    several ``$..$`` answers in one string (``"$69$,$84$"`` -> ``"69, 84"``). Returns ``[]`` when nothing
    usable is left (the caller reports it).
    """
    if raw is None:
        return []
    if isinstance(raw, bool):
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
    s = re.sub(r"^\\\$\s*", "", s)  # currency: "\$18.90" -> "18.90"
    s = re.sub(r"\s+", " ", s).strip()
    if re.fullmatch(r"[+-]?\d+\.0+", s):
        s = s.split(".")[0]
    s = s.rstrip(".").strip() if not re.fullmatch(r"[+-]?\d*\.", s) else s
    s = _strip_trailing_unit(s)
    return [s] if s else []


_UNIT_TAIL_RE = re.compile(r"\\(?:text|mathrm|mbox|textrm)\{\s*~?\s*[A-Za-z][A-Za-z ./^{}\-]*\}\s*$")


def _strip_trailing_unit(s: str) -> str:
    """``"10 \\text{ cm}"`` -> ``"10"``: a textual unit after a number carries no mathematical value."""
    m = _UNIT_TAIL_RE.search(s) if "\\" in s else None  # linear: anchored at the unit, not the number
    if m and m.start() > 0 and s[: m.start()].rstrip()[-1:].isdigit():
        return s[: m.start()].strip()
    return s


# --------------------------------------------------------------------------------------------------
# Canonical strings for the fast comparison
# --------------------------------------------------------------------------------------------------
_SPACES_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~|\s+")
_FRAC_SHORT_RE = re.compile(r"\\frac(\d)(\d)")
_FRAC_HALF_RE = re.compile(r"\\frac\{([^{}]+)\}(\d)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt(\d+)")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+(?:\.\d*)?|\.\d+)(e[+-]?\d+)?$")
_SCI_RE = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))\\(?:times|cdot)10\^\{?([+-]?\d+)\}?$")
_SIMPLE_LHS_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?=(.+)$")
_LATEX_FRAC_RE = re.compile(r"^([+-]?)\\frac\{([+-]?\d{1,400})\}\{([+-]?\d{1,400})\}$")
_SLASH_FRAC_RE = re.compile(r"^([+-]?\d{1,400})/(\d{1,400})$")


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
    """A canonical string that is a plain number (``12``, ``-0.5``, ``3e8``, ``8.7\\times10^{8}``)."""
    m = _SCI_RE.match(c)
    if m:
        c = f"{m.group(1)}e{m.group(2)}"
    if not _NUMBER_RE.match(c.lower()):
        return None
    try:
        d = Decimal(c.lower())
    except InvalidOperation:
        return None
    return d if d.is_finite() and abs(d.adjusted()) < 400 else None


def _as_rational(c: str) -> Fraction | None:
    """A canonical string that is a plain number or an integer fraction (``\\frac{14}{3}``, ``-14/3``).

    Exact, so "0.5" vs "\\frac{1}{2}" is decided in-process: the common numeric case never waits for a
    math-verify worker (under load a worker may not be free before the deadline, and the answer would score 0).
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


def _fast_compare(gold: str, pred: str) -> bool | None:
    """True/False when decided without math-verify, None when math-verify must decide."""
    g, p = canonical(gold), canonical(pred)
    if not p:
        return False
    if g == p:
        return True
    if "=" not in g:  # "x = 5" answers "5"
        m = _SIMPLE_LHS_RE.match(p)
        if m:
            p = m.group(1)
            if g == p:
                return True
    gn, pn = _as_rational(g), _as_rational(p)
    if gn is not None and pn is not None:
        scale = max(Fraction(1), abs(gn), abs(pn))
        # clearly different numbers are decided here; near-equal ones go to math-verify's rounding
        return True if gn == pn else (None if abs(gn - pn) <= scale * Fraction(1, 10**6) else False)
    return None


# --------------------------------------------------------------------------------------------------
# math-verify in killable worker processes
# --------------------------------------------------------------------------------------------------
def _worker_main() -> None:  # runs in the worker process
    """Worker loop: one JSON request per stdin line -> one JSON reply per stdout line."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_LIMIT_BYTES, WORKER_MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    logging.disable(logging.WARNING)  # math-verify warns on every call made without its own timeout
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    # Soft inner bound (the worker runs in its own main thread, so signal.alarm works here): it only
    # protects an orphaned worker; the parent's kill is the hard bound.
    soft = int(os.environ.get("SSPO_REWARD_WORKER_SOFT_TIMEOUT", "30"))
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            target = parse("\\boxed{" + req["pred"] + "}", configs, parsing_timeout=soft)
            equal = False
            if target:
                for gold in req["golds"]:
                    g = parse("\\boxed{" + gold + "}", configs, parsing_timeout=soft)
                    if g and verify(g, target, timeout_seconds=soft):
                        equal = True
                        break
            reply = {"eq": equal}
        except BaseException as e:  # noqa: BLE001  math-verify's TimeoutException is a BaseException
            if isinstance(e, KeyboardInterrupt):
                return
            reply = {"eq": False, "error": f"{type(e).__name__}: {e}"[:200]}
        out.write(json.dumps(reply) + "\n")
        out.flush()


_WORKER_CMD = (
    "import importlib.util, sys; "
    "s = importlib.util.spec_from_file_location('_sspo_reward_worker', sys.argv[1]); "
    "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); m._worker_main()"
)


class _Worker:
    """One math-verify process spoken to over pipes (JSON lines)."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker can never block on it
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CMD, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            close_fds=True,
        )
        self.ready = False
        self.eof = False
        self._buf = b""

    def _readline(self, deadline: float) -> str | None:
        """One line from the worker, or None when the deadline passes or the worker died."""
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:  # EOF: the worker died (e.g. memory limit)
                    self.eof = True
                    return None
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def wait_ready(self, deadline: float) -> bool:
        if not self.ready:
            self.ready = self._readline(deadline) == "ready"
            if not self.ready and self.eof:
                try:
                    self.proc.wait(timeout=1.0)  # its stdout closed: it is exiting, get its code
                except subprocess.TimeoutExpired:
                    pass
                _log_start_failure(self)
        return self.ready

    def ask(self, golds: list[str], pred: str, deadline: float) -> bool | None:
        """math-verify's verdict, or None on timeout/crash (then the worker must be killed)."""
        if not self.wait_ready(deadline):
            return None
        try:
            self.proc.stdin.write((json.dumps({"golds": golds, "pred": pred}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            return None
        line = self._readline(deadline)
        if line is None:
            return None
        try:
            return bool(json.loads(line)["eq"])
        except (ValueError, KeyError, TypeError):
            return None

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001  already gone
            pass
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass


_start_failures_logged = 0


def _log_start_failure(worker: _Worker) -> None:
    """A worker that exits before it is ready (e.g. math-verify not installed): say why, a few times."""
    global _start_failures_logged
    if _start_failures_logged >= 3:
        return
    _start_failures_logged += 1
    try:
        worker.stderr.seek(0)
        tail = worker.stderr.read()[-2000:].decode("utf-8", "replace")
    except OSError:
        tail = ""
    logger.error(
        "math-verify worker exited at start (code %s); only the string/number match is active. "
        "Install math-verify: pip install 'math-verify[antlr4_9_3]==0.9.0'. Worker stderr:\n%s",
        worker.proc.returncode,
        tail,
    )


class _WorkerPool:
    """Worker processes shared by the threads of one process, started on demand; a killed one is replaced."""

    def __init__(self, max_workers: int) -> None:
        self.pid = os.getpid()
        self.max_workers = max(1, max_workers)
        self.idle: list[_Worker] = []
        self.n_alive = 0
        self.cond = threading.Condition()
        self.timeouts = 0

    def acquire(self, deadline: float) -> _Worker | None:
        with self.cond:
            while True:
                if self.idle:
                    # prefer a worker that is already up
                    for k, w in enumerate(self.idle):
                        if w.ready:
                            return self.idle.pop(k)
                    return self.idle.pop(0)
                if self.n_alive < self.max_workers:
                    self.n_alive += 1
                    return _Worker()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self.cond:
            if healthy:
                self.idle.append(worker)
            else:
                self.timeouts += 1
                # replace at once: the replacement starts now and is ready long before the next timeout
                self.idle.append(_Worker())
            self.cond.notify()

    def shutdown(self) -> None:
        with self.cond:
            for w in self.idle:
                w.kill()
            self.idle.clear()
            self.n_alive = 0


_pool: _WorkerPool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _WorkerPool:
    global _pool
    with _pool_lock:
        # after a fork the inherited pipes belong to the parent's workers: start afresh
        if _pool is None or _pool.pid != os.getpid():
            _pool = _WorkerPool(MAX_WORKERS)
        return _pool


def warmup(n: int = 1, timeout: float = 60.0) -> bool:
    """Start ``n`` math-verify workers now and wait until they are up (optional; the first call does it)."""
    pool = _get_pool()
    deadline = time.monotonic() + timeout
    workers = [w for w in (pool.acquire(deadline) for _ in range(n)) if w is not None]
    ok = all(w.wait_ready(deadline) for w in workers)
    for w in workers:
        pool.release(w, healthy=w.ready)
    return ok


def shutdown() -> None:
    """Kill the worker processes (also done at interpreter exit)."""
    if _pool is not None and _pool.pid == os.getpid():
        _pool.shutdown()


atexit.register(shutdown)


def _ask_pool(golds: list[str], pred: str, timeout: float) -> tuple[bool | None, bool]:
    """(math-verify's verdict or None, whether a worker overran and was killed)."""
    deadline = time.monotonic() + timeout
    pool = _get_pool()
    worker = pool.acquire(deadline)
    if worker is None:  # every worker busy until the deadline
        logger.warning(
            "no free math-verify worker within %.2fs (%d busy; raise SSPO_REWARD_WORKERS): scoring 0; pred=%r",
            timeout,
            pool.max_workers,
            pred[:80],
        )
        return None, False
    verdict = None
    try:
        verdict = worker.ask(golds, pred, deadline)
    finally:
        pool.release(worker, healthy=verdict is not None)
    if verdict is None:
        logger.warning(
            "math-verify gave no verdict within %.2fs (worker killed and replaced): scoring 0; pred=%r",
            timeout,
            pred[:80],
        )
    return verdict, verdict is None


def math_verify_equal(golds: list[str], pred: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool | None:
    """math-verify's ``verify(gold, pred)`` for any gold, in a worker; None when ``timeout`` ran out."""
    return _ask_pool(golds, pred, timeout)[0]


_verdicts: dict[tuple[tuple[str, ...], str], bool] = {}
_VERDICTS_MAX = 65536


def _verify_cached(golds: tuple[str, ...], pred: str, timeout: float) -> bool:
    """math-verify's verdict, memoised: GRPO samples many responses per prompt, answers repeat."""
    key = (golds, pred)
    hit = _verdicts.get(key)
    if hit is not None:
        return hit
    verdict, overran = _ask_pool(list(golds), pred, timeout)
    # An overrun is remembered as False, so a pathological answer costs the bound once, not once per
    # sample; a deadline passed while waiting for a busy worker is not the answer's fault: not remembered.
    if verdict is not None or overran:
        if len(_verdicts) >= _VERDICTS_MAX:
            _verdicts.clear()
        _verdicts[key] = bool(verdict)
    return bool(verdict)


# --------------------------------------------------------------------------------------------------
# verl entry point
# --------------------------------------------------------------------------------------------------
def is_equivalent(golds: list[str], pred: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether ``pred`` matches any of ``golds`` (fast string/number check, then math-verify)."""
    undecided: list[str] = []
    for gold in golds:
        fast = _fast_compare(gold, pred)
        if fast is True:
            return True
        if fast is None:
            undecided.append(gold)
    if not undecided or len(pred) > MAX_VERIFY_CHARS:
        return False
    undecided = [g for g in undecided if len(g) <= MAX_VERIFY_CHARS]
    return bool(undecided) and _verify_cached(tuple(undecided), pred, float(timeout))


def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl ``custom_reward_function``: ``{"score": 1.0|0.0, "acc": bool, "pred": str}``; never raises.

    Args:
        data_source: the row's ``data_source`` (unused: every source is scored as math).
        solution_str: the decoded response.
        ground_truth: the gold answer: a string, a number, or a list of alternative answers.
        extra_info: the row's ``extra_info``; ``answer_alternatives`` (list of str) adds gold forms and
            ``truncated=True`` (or ``finish_reason == "length"``) forces 0.
        timeout: seconds for the whole call (default ``SSPO_REWARD_TIMEOUT`` or 5.0); past it -> 0.
        **kwargs: whatever else verl passes (e.g. ``reward_router_address``): ignored.
    """
    pred = ""
    try:
        info = extra_info if isinstance(extra_info, dict) else {}
        if info.get("truncated") is True or info.get("finish_reason") == "length":
            return {"score": 0.0, "acc": False, "pred": ""}
        answer = last_boxed_answer(solution_str)
        if answer is None:
            return {"score": 0.0, "acc": False, "pred": ""}
        pred = answer
        golds = gold_answers(ground_truth)
        for alt in gold_answers(info.get("answer_alternatives")):
            if alt not in golds:
                golds.append(alt)
        if not golds:
            return {"score": 0.0, "acc": False, "pred": pred}
        t = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
        ok = is_equivalent(golds, pred, timeout=t)
        return {"score": 1.0 if ok else 0.0, "acc": bool(ok), "pred": pred}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001  a reward must never kill the training step
        logger.warning("compute_score failed (%s: %s): scoring 0", type(e).__name__, e)
        return {"score": 0.0, "acc": False, "pred": pred if isinstance(pred, str) else ""}
