"""math-verify in killable worker processes: pre-screening, a pool that cannot be starved, a guarded verdict.

Why processes: math-verify's own timeouts use ``signal.alarm``, which only works in the main thread, and
verl calls reward functions from a thread pool inside Ray actors; sympy can spin in C code that no
Python-level timeout interrupts. Only killing a process is a hard bound. A worker runs this very file as a
script (``python -c`` + ``spec_from_file_location``), so it imports the standard library and math-verify
only, never sspo, torch or verl.

Load independence: a response's verdict must not depend on what else is being scored.

1. ``screen`` rejects pathological answers before any worker (deterministic, microseconds): too long,
   too deeply nested, power towers, huge exponents/factorials/literals -- each only beyond what the gold
   itself has (towers of 3 or more always). They score 0 alone and under load alike.
2. The pool cannot be starved: while requests wait, it starts more workers (up to
   ``SSPO_REWARD_MAX_WORKERS``, default 64), so a request waits at most for a quick neighbour or one
   worker start-up, never for a slow answer. ``SSPO_REWARD_WORKERS`` (default ``min(8, cpu_count)``,
   ~60 MB each) are kept warm; a worker that overruns its request's deadline is killed (SIGKILL).
   A request that has used ``SLOW_CPU_S`` (1 s) of CPU time -- common answers take milliseconds; CPU time,
   not wall time, so a busy machine does not make normal requests look slow -- has its worker reniced
   to the lowest priority, so it cannot slow the others' requests or worker start-ups either.
3. The guard: math-verify's "equal" counts only when neither parse lost a variable of its LaTeX (it reads
   ``\\hbar \\omega(v+1/2)-\\frac{E_0^2 e^2}{2 m \\omega^2}`` as ``2``); ``guard=False`` is plain math-verify.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

logger = logging.getLogger("sspo.reward")


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
WARM_WORKERS = _env_number("SSPO_REWARD_WORKERS", min(8, os.cpu_count() or 1), int)
MAX_WORKERS = max(WARM_WORKERS, _env_number("SSPO_REWARD_MAX_WORKERS", 64, int))
WORKER_MEMORY_LIMIT_BYTES = 4 * 1024**3
IDLE_RETIRE_S = 600.0  # a worker beyond the warm ones retires after this long unused (no churn between steps)
SLOW_CPU_S = 1.0  # a request that used this much worker CPU time gets the worker's priority lowered
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
START_RETRY_S = 30.0  # after a worker died at start-up, the next start is tried this much later  # a worker beyond the warm ones retires after this long unused (no start-up churn)

# --------------------------------------------------------------------------------------------------
# Pre-screening (in the caller, before any worker)
# --------------------------------------------------------------------------------------------------
MAX_VERIFY_CHARS = 1000  # longer answers are only string-matched: math-verify on them is slow, never needed
# A power tower of 3 or more (a^{b^{c}}) is never sent: sympy cannot compare towers in bounded time even when
# the gold is one (the string match still can); every other limit applies beyond what the gold has.
MAX_TOWER = 2
SCREEN_LIMITS = {
    "nesting": 12,
    "tower": 1,
    "exponent_digits": 4,
    "factorial_digits": 3,
    "literal_digits": 400,
}
_EXP_LITERAL_RE = re.compile(r"\^\s*\{?\s*[+-]?(\d+)")
_FACTORIAL_RE = re.compile(r"(?<!\d)(\d+)\s*\}?\s*!")  # only from a digit run's start: linear
_DIGITS_RE = re.compile(r"\d+")


def complexity(s: str) -> dict[str, int]:
    """Cost indicators of a LaTeX answer: bracket nesting, power-tower height, largest exponent/factorial."""
    depth = nesting = tower = 0
    exp_depth: list[int] = []  # bracket depths at which an exponent group opened
    pending_exp = False
    for c in s:
        if c in "{([":
            depth += 1
            nesting = max(nesting, depth)
            if pending_exp:
                exp_depth.append(depth)
                tower = max(tower, len(exp_depth))
            pending_exp = False
        elif c in "})]":
            if exp_depth and exp_depth[-1] == depth:
                exp_depth.pop()
            depth -= 1
        elif c == "^":
            pending_exp = True
            tower = max(tower, len(exp_depth) + 1)
        elif not c.isspace():
            pending_exp = False

    def longest(rx: re.Pattern) -> int:
        return max((len(m.group(1) if m.groups() else m.group(0)) for m in rx.finditer(s)), default=0)

    return {
        "nesting": nesting,
        "tower": tower,
        "exponent_digits": longest(_EXP_LITERAL_RE),
        "factorial_digits": longest(_FACTORIAL_RE),
        "literal_digits": longest(_DIGITS_RE),
    }


def screen(pred: str, golds: list[str]) -> str | None:
    """Why ``pred`` is too costly to verify (and scores 0 without a worker), or None when it may go."""
    if len(pred) > MAX_VERIFY_CHARS:
        return f"answer longer than {MAX_VERIFY_CHARS} characters"
    cost = complexity(pred)
    if cost["tower"] > MAX_TOWER:
        return f"power tower of height {cost['tower'] + 1}"
    gold_cost = [complexity(g) for g in golds if len(g) <= MAX_VERIFY_CHARS]  # longer golds are never sent
    if not gold_cost:
        return f"every gold is longer than {MAX_VERIFY_CHARS} characters"
    for key, limit in SCREEN_LIMITS.items():
        allowed = max([limit] + [c[key] for c in gold_cost])
        if cost[key] > allowed:
            return f"{key} {cost[key]} > {allowed}"
    return None


# --------------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------------
_GREEK = (
    "alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|xi|rho|"
    "sigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Sigma|Phi|Psi|Omega|hbar"
)
_TEXTLIKE_RE = re.compile(
    r"\\(?:text\w*|math(?:rm|bf|it|sf|cal|bb)|mbox|operatorname|bold\w*|begin|end)\s*\{[^{}]*\}"
)
_GREEK_RE = re.compile(r"\\(" + _GREEK + r")(?![a-zA-Z])")
_COMMAND_RE = re.compile(r"\\[a-zA-Z]+")


def latex_variables(latex: str) -> set[str]:
    """Variable names written in ``latex``: single letters and Greek commands (not e, i, text, commands)."""
    s = _TEXTLIKE_RE.sub(" ", latex)
    greek = set(_GREEK_RE.findall(s))
    return (set(re.findall(r"[A-Za-z]", _COMMAND_RE.sub(" ", s))) - {"e", "i"}) | greek


def parsed_variables(expr: Any) -> set[str]:
    """Variable names a sympy parse kept: letters / Greek names of its free symbols and functions."""
    names: set[str] = set()
    try:
        from sympy.core.function import AppliedUndef

        symbols = {str(x) for x in getattr(expr, "free_symbols", ())}
        symbols |= {str(f.func) for f in getattr(expr, "atoms", lambda *_: ())(AppliedUndef)}
    except Exception:  # noqa: BLE001  a parse that is not a sympy object keeps nothing we can check
        return names
    for name in symbols:
        names |= set(re.findall(_GREEK, name))
        names |= set(re.findall(r"[A-Za-z]", re.sub(_GREEK, " ", name)))
    return names


def parse_keeps_variables(latex: str, parsed: list) -> bool:
    """Whether math-verify's parse of ``latex`` kept every variable written in it (the guard)."""
    if not parsed:
        return False
    return latex_variables(latex) <= parsed_variables(parsed[0]) | {"e", "i"}


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
    verify(parse("\\boxed{x^2+1}", configs), parse("\\boxed{1+x^2}", configs))  # lazy imports done now
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            target = parse("\\boxed{" + req["pred"] + "}", configs, parsing_timeout=soft)
            equal = False
            if target and (not req["guard"] or parse_keeps_variables(req["pred"], target)):
                for gold in req["golds"]:
                    g = parse("\\boxed{" + gold + "}", configs, parsing_timeout=soft)
                    if req["guard"] and not parse_keeps_variables(gold, g):
                        continue
                    rounding = 12 if req.get("exact") else 6  # exact: a decimal approximation is no match
                    if g and verify(g, target, float_rounding=rounding, timeout_seconds=soft):
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
    "s = importlib.util.spec_from_file_location('_sspo_math_verify_worker', sys.argv[1]); "
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
        self.idle_since = time.monotonic()
        self.niced = False  # lowered priority while slow: retired after its request (cannot be raised back)

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
        """Wait (until ``deadline``) for the worker's "ready" line; False if it died or is still starting."""
        if not self.ready:
            self.ready = self._readline(deadline) == "ready"
            if not self.ready and self.eof:
                try:
                    self.proc.wait(timeout=1.0)  # its stdout closed: it is exiting, get its code
                except subprocess.TimeoutExpired:
                    pass
                _log_start_failure(self)
        return self.ready

    def ask(
        self, golds: list[str], pred: str, guard: bool, deadline: float, exact: bool = False
    ) -> bool | None:
        """math-verify's verdict, or None on timeout/crash (then the worker must be killed)."""
        if not self.wait_ready(deadline):
            return None
        try:
            self.proc.stdin.write(
                (json.dumps({"golds": golds, "pred": pred, "guard": guard, "exact": exact}) + "\n").encode()
            )
            self.proc.stdin.flush()
        except OSError:
            return None
        cpu0 = self.cpu_seconds()
        while True:
            line = self._readline(min(deadline, time.monotonic() + 0.25))
            if line is not None or self.eof or time.monotonic() >= deadline:
                break
            if not self.niced and self.cpu_seconds() - cpu0 > SLOW_CPU_S:
                # slow: lowest CPU priority from now on, so it cannot slow other requests or start-ups
                try:
                    os.setpriority(os.PRIO_PROCESS, self.proc.pid, 19)
                    self.niced = True
                except (AttributeError, OSError):
                    pass
        if line is None:
            return None
        try:
            return bool(json.loads(line)["eq"])
        except (ValueError, KeyError, TypeError):
            return None

    def cpu_seconds(self) -> float:
        """CPU time the worker has used (Linux ``/proc``; 0 elsewhere, where nothing is reniced)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        except (OSError, ValueError, IndexError):
            return 0.0

    def kill(self) -> None:
        """SIGKILL the process and close its pipes (idempotent)."""
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


class WorkerPool:
    """Worker processes shared by the threads of one process; a slow request never starves the others.

    A request takes an idle, started worker. When there is none, it waits for the first of: a worker
    released by another request (most take milliseconds), or a new worker that the pool starts for it
    (one start per waiting request, up to ``limit`` workers). So requests held by slow answers cost the
    others at most one worker start-up, never their deadline. ``warm`` workers are started with the pool
    and kept; the others retire after ``IDLE_RETIRE_S`` unused; a worker that overran is killed.
    """

    def __init__(self, warm: int, limit: int | None = None) -> None:
        self.pid = os.getpid()
        self.warm = max(1, warm)
        self.limit = max(self.warm, limit if limit is not None else MAX_WORKERS)
        self.idle: list[_Worker] = []  # started and ready
        self.n_alive = 0  # idle + busy + starting
        self.starting = 0
        self.waiting = 0
        self.cond = threading.Condition()
        self.timeouts = 0
        self.started = 0
        self.closed = False
        self.failed_starts = 0  # consecutive workers that died before "ready" (math-verify missing?)
        self.retry_at = 0.0

    def _start_locked(self) -> None:
        """Start a worker in the background; it joins ``idle`` once ready (caller holds ``cond``)."""
        self.n_alive += 1
        self.starting += 1
        self.started += 1
        threading.Thread(target=self._bring_up, daemon=True).start()

    def _bring_up(self) -> None:
        """(background thread) Spawn a worker -- callers never pay for the fork -- and wait until it is up."""
        try:
            worker = _Worker()
        except OSError as e:
            logger.error("could not start a math-verify worker: %s", e)
            worker = None
        ok = worker is not None and worker.wait_ready(time.monotonic() + 120.0)
        with self.cond:
            self.starting -= 1
            if ok and not self.closed:
                self.idle.append(worker)
                self.failed_starts = 0
            else:
                self.n_alive -= 1
                if not ok:  # no restart loop: wait before trying again
                    self.failed_starts += 1
                    self.retry_at = time.monotonic() + START_RETRY_S
            self.cond.notify_all()
        if worker is not None and (not ok or self.closed):
            worker.kill()

    def _grow_locked(self) -> None:
        """Start workers up to ``warm``, and one for each waiting request that no start is under way for."""
        if self.failed_starts and time.monotonic() < self.retry_at:
            return
        while self.n_alive < self.warm or (self.waiting > self.starting and self.n_alive < self.limit):
            self._start_locked()

    def acquire(self, deadline: float) -> _Worker | None:
        """A started worker for one request, or None when none came free before ``deadline``."""
        with self.cond:
            self.waiting += 1
            try:
                while True:
                    if self.idle:
                        return self.idle.pop()
                    self._grow_locked()
                    left = deadline - time.monotonic()
                    if left <= 0 or (self.n_alive == 0 and self.failed_starts):
                        return None  # deadline, or no worker can start (logged): string match only
                    self.cond.wait(left)
            finally:
                self.waiting -= 1

    def release(self, worker: _Worker, healthy: bool) -> None:
        """Return a worker; an unhealthy (overran, crashed) or niced one is killed and replaced if needed.

        Kills happen in a background thread: the caller returns at its deadline, not after the kill.
        """
        now = time.monotonic()
        keep = healthy and not worker.niced
        with self.cond:
            stale = [w for w in self.idle[self.warm :] if now - w.idle_since > IDLE_RETIRE_S]
            self.idle = [w for w in self.idle if w not in stale]
            self.n_alive -= len(stale) + (not keep)
            if keep:
                worker.idle_since = now
                self.idle.append(worker)
            elif not healthy:
                self.timeouts += 1
            self._grow_locked()
            self.cond.notify_all()
        doomed = stale + ([] if keep else [worker])
        if doomed:
            threading.Thread(target=lambda: [w.kill() for w in doomed], daemon=True).start()

    def shutdown(self) -> None:
        """Kill the idle workers; busy ones are killed by their callers' deadlines, starting ones when up."""
        with self.cond:
            self.closed = True
            for w in self.idle:
                w.kill()
            self.n_alive -= len(self.idle)
            self.idle.clear()


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> WorkerPool:
    """This process's pool (a fresh one after a fork: inherited pipes belong to the parent's workers)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = WorkerPool(WARM_WORKERS, MAX_WORKERS)
        return _pool


def warmup(n: int = 1, timeout: float = 60.0) -> bool:
    """Start ``n`` math-verify workers now and wait until they are up (optional; the first call does it)."""
    pool = get_pool()
    deadline = time.monotonic() + timeout
    workers = [w for w in (pool.acquire(deadline) for _ in range(n)) if w is not None]
    for w in workers:
        pool.release(w, healthy=True)
    return len(workers) == n


def shutdown() -> None:
    """Kill the worker processes (also done at interpreter exit); the next request starts a new pool."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool.pid == os.getpid():
            _pool.shutdown()
        _pool = None


atexit.register(shutdown)


def ask(
    golds: list[str], pred: str, guard: bool, timeout: float, exact: bool = False
) -> tuple[bool | None, bool]:
    """(math-verify's verdict or None, whether a worker overran and was killed); at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    pool = get_pool()
    worker = pool.acquire(deadline)
    if worker is None:  # every worker busy until the deadline
        logger.warning(
            "no free math-verify worker within %.2fs (%d alive, %d starting, limit %d: raise "
            "SSPO_REWARD_MAX_WORKERS, or SSPO_REWARD_WORKERS to keep more started): scoring 0; pred=%r",
            timeout,
            pool.n_alive,
            pool.starting,
            pool.limit,
            pred[:80],
        )
        return None, False
    verdict = None
    try:
        verdict = worker.ask(golds, pred, guard, deadline, exact)
    finally:
        pool.release(worker, healthy=verdict is not None)
    if verdict is None:
        logger.warning(
            "math-verify gave no verdict within %.2fs (worker killed and replaced): scoring 0; pred=%r",
            timeout,
            pred[:80],
        )
    return verdict, verdict is None
