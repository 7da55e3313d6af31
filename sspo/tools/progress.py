"""A readable console for verl runs: one live progress line per row, the full console in a log file.

    python -m sspo.tools.progress --name sspo_cpu --log outputs/sspo/sspo_cpu/console.log -- \
        python -m sspo.launch.cli --progress off experiment=sspo_cpu

runs the command with its stdout and stderr (verl's driver and, through Ray, every worker) going to the
log file, unchanged, and shows on the terminal only:

* the start-up stages as they pass (pre-flight, Ray, trainer, data, actor, rollout server), with seconds;
* one progress line (step/total, training reward, validation accuracy, clip fraction, s/step, ETA), redrawn
  in place on a terminal, printed at each validation and every ``--every`` steps otherwise (CI logs);
* on a failure: the error, the log's last lines, the log's path and how to resume.

It reads verl's ``console`` logger lines (``step:N - key:value - ...``, ``verl.utils.logger.aggregate_logger``);
what verl writes to TensorBoard, wandb or files is not touched. ``sspo-train`` uses it by default when its
stdout is a terminal (``--progress off`` or ``VERBOSE=1`` restores verl's own console).
"""

from __future__ import annotations

import argparse
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sspo.tools import stats
from sspo.tools.report import VAL_ACC, parse_console_line

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Ray prefixes a worker's lines with "(ActorName pid=123, ip=...) "; nested for vLLM's own workers
RAY_PREFIX = re.compile(r"^(?:\((?:[\w.:-]+ )?pid=\d+(?:, ip=[\d.]+)?\) ?)+")
TOTAL_STEPS = re.compile(r"Total training steps: (\d+)")
# the line `sspo-train` prints once the config is composed (sspo.launch.cli.RUN_MARKER)
RUN_LINE = re.compile(r"^\[sspo\] run (?P<name>\S+): (?P<dir>.+?) \((?P<total>\d+|\?) steps\)$")
REWARD_KEYS = ("critic/score/mean", "critic/rewards/mean")
CLIP_KEY = "actor/pg_clipfrac"
STEP_TIME_KEY = "timing_s/step"
# start-up stages: (label, pattern of the line that marks its END), in the order they pass on a verl run
STAGES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("pre-flight", re.compile(r"^\[(?:ok  |warn|fail)\] ")),
    ("Ray", re.compile(r"Started a local Ray instance|Connected to Ray cluster")),
    ("trainer", re.compile(r"dataloader initialized")),
    ("actor", re.compile(r"actor and ref model engine initialized")),
    ("rollout server", re.compile(r"ready to fit")),
    ("validation", re.compile(r"step:\d+ - .*val-core/")),
)
ERROR_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception|Interrupt|Exit)\b.*|\d+ pre-flight check\(s\) failed.*|config error: .*)$")
RESUME_HINT = "run the same command to resume: it continues from the last checkpoint"
TESTING_TIME_KEY = "timing_s/testing"


def clean(line: str) -> str:
    """``line`` without colour codes, Ray's ``(Actor pid=N)`` prefixes and trailing whitespace."""
    return RAY_PREFIX.sub("", ANSI.sub("", line)).rstrip()


def parse_step_line(line: str) -> tuple[int, dict[str, float]] | None:
    """(step, metrics) of one verl console-logger line, Ray's prefixes and colours removed (report's parser)."""
    return parse_console_line(clean(line))


def _duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; under a minute: ``42s``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class RowView:
    """What the terminal shows of one run: fed verl's console lines, renders one progress line."""

    name: str
    total: int | None = None
    started: float = field(default_factory=time.monotonic)
    stages: list[tuple[str, float]] = field(default_factory=list)  # (label, seconds since start) as passed
    step: int = 0
    first_step: int | None = None
    reward: list[tuple[int, float]] = field(default_factory=list)
    val_acc: list[tuple[int, float]] = field(default_factory=list)
    clip: float | None = None
    step_times: list[float] = field(default_factory=list)
    testing_times: list[float] = field(default_factory=list)
    run_dir: str | None = None

    def feed(self, line: str, now: float | None = None) -> str | None:
        """Take one raw console line; returns the label of a start-up stage it completes, else None."""
        now = time.monotonic() if now is None else now
        text = clean(line)
        marker = RUN_LINE.match(text)
        if marker:
            self.run_dir = marker.group("dir")
            if marker.group("total") != "?" and self.total is None:
                self.total = int(marker.group("total"))
            return None
        total = TOTAL_STEPS.search(text)
        if total and self.total is None:
            self.total = int(total.group(1))
        stage = None if self.training else self._stage(clean(line), now)
        parsed = parse_step_line(line)
        if parsed:
            self._record(*parsed)
        return stage

    def _stage(self, text: str, now: float) -> str | None:
        """The next start-up stage, if ``text`` marks its end (stages pass in order; one may be skipped)."""
        done = len(self.stages)
        for i, (label, pattern) in enumerate(STAGES[done:], start=done):
            if pattern.search(text):
                for skipped, _ in STAGES[done:i]:
                    self.stages.append((skipped, now - self.started))
                self.stages.append((label, now - self.started))
                return label
        return None

    def _record(self, step: int, metrics: dict[str, float]) -> None:
        """Store the metrics of one logged step."""
        self.step = max(self.step, step)
        accs = [v for k, v in metrics.items() if VAL_ACC.match(k)]
        if accs:
            self.val_acc.append((step, sum(accs) / len(accs)))
        reward = next((metrics[k] for k in REWARD_KEYS if k in metrics), None)
        if reward is not None:
            self.reward.append((step, reward))
            if self.first_step is None:
                self.first_step = step
        if CLIP_KEY in metrics:
            self.clip = metrics[CLIP_KEY]
        if STEP_TIME_KEY in metrics:
            self.step_times.append(metrics[STEP_TIME_KEY])
        if TESTING_TIME_KEY in metrics:
            self.testing_times.append(metrics[TESTING_TIME_KEY])

    @property
    def training(self) -> bool:
        """A training step has been logged."""
        return bool(self.reward)

    def seconds_per_step(self, window: int = 5) -> float | None:
        """Mean of verl's ``timing_s/step`` over the last ``window`` steps."""
        recent = self.step_times[-window:]
        return sum(recent) / len(recent) if recent else None

    def eta(self) -> float | None:
        """Seconds left: the steps to go at the recent pace, plus the validations to come (every as many
        steps as between the last two, at the last one's time; verl's step time leaves them out)."""
        pace = self.seconds_per_step()
        if pace is None or self.total is None:
            return None
        left = max(0, self.total - self.step) * pace
        if len(self.val_acc) >= 2 and self.testing_times:
            every = self.val_acc[-1][0] - self.val_acc[-2][0]
            if every > 0:
                left += (self.total // every - self.step // every) * self.testing_times[-1]
        return left

    def startup_line(self) -> str:
        """The stages passed so far with the seconds each took, e.g. ``Ray 3s · trainer 14s``."""
        parts, before = [], 0.0
        for label, at in self.stages:
            parts.append(f"{label} {_duration(at - before)}")
            before = at
        return " · ".join(parts)

    def render(self, now: float | None = None) -> str:
        """The one progress line of this row."""
        now = time.monotonic() if now is None else now
        elapsed = _duration(now - self.started)
        if not self.training:
            nxt = STAGES[len(self.stages)][0] if len(self.stages) < len(STAGES) else "first step"
            return f"{self.name}: starting [{elapsed}] {self.startup_line()} … {nxt}".replace("  ", " ")
        total = self.total if self.total is not None else "?"
        # each figure names the policy it measured (stats.policy_version): a step's reward is one step's mean
        reward_step = self.reward[-1][0]
        parts = [f"{self.name}: step {self.step}/{total}",
                 f"reward {self.reward[-1][1]:.2f} (pi{stats.policy_version(reward_step, False)}, step mean)"]
        if self.val_acc:
            val_step = self.val_acc[-1][0]
            parts.append(f"val acc {self.val_acc[-1][1]:.2f} (pi{stats.policy_version(val_step, True)})")
        if self.clip is not None:
            parts.append(f"clip {self.clip:.3f}")
        pace, eta = self.seconds_per_step(), self.eta()
        if pace is not None:
            parts.append(f"{pace:.1f} s/step")
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        parts.append(f"[{elapsed}]")
        return "  ".join(parts)

    def summary(self, now: float | None = None) -> str:
        """The row's last line: steps done, training reward and validation accuracy at the first and last
        policy each saw (``sspo.tools.stats``: like with like), with 95% intervals over problems where the
        run directory holds verl's per-sample dumps, wall time."""
        now = time.monotonic() if now is None else now
        parts = [f"{self.name}: {self.step}/{self.total if self.total is not None else '?'} steps"]
        dirs = stats.find_dump_dirs(Path(self.run_dir)) if self.run_dir else {}
        for label, series, validation, kind, field_name in (
            ("reward", self.reward, False, "rollouts", "score"), ("val acc", self.val_acc, True, "validation", "acc")
        ):
            if len(series) < 2:
                continue
            files = stats.dump_files(dirs.get(kind))
            try:
                ends = stats.endpoints(label, dict(series), validation,
                                       lambda s, f=files, k=field_name: stats.read_dump(f[s], k) if s in f else None,
                                       dump_steps=list(files))  # the same steps as the report (report.run_endpoints)
            except stats.StatsError:  # an unreadable dump: the numbers without intervals
                ends = stats.endpoints(label, dict(series), validation)
            if ends is not None:
                note = "" if ends.change.computable else "; no interval: per-step means"
                parts.append(f"{label} {ends.start.text()} -> {ends.end.text()} "
                             f"({ends.change.text(signed=True)}; {ends.versions}{note})")
        parts.append(f"in {_duration(now - self.started)}")
        return ", ".join(parts)


def error_report(lines: Sequence[str], log_path: Path | None, tail: int = 15, width: int = 160) -> list[str]:
    """What to show when a run fails: its error line, the log's last lines, the log's path, how to resume."""
    cleaned = [clean(line) for line in lines if clean(line)]
    errors = [line for line in cleaned if ERROR_LINE.match(line.strip())]
    out = [f"error: {errors[-1].strip()}" if errors else "error: the run stopped with no error line (see the log)"]
    out.append(f"last lines of the log{f' ({log_path})' if log_path else ''}:")
    out += [f"  | {line[:width]}{' …' if len(line) > width else ''}" for line in cleaned[-tail:]]
    if log_path:
        out.append(f"full log: {log_path}")
    out.append(RESUME_HINT)
    return out


class Screen:
    """Where the rows' views are drawn: on a terminal, one line per running row redrawn in place below the
    permanent lines; otherwise plain lines (at validations, every ``every`` steps and the last)."""

    def __init__(self, stream: IO[str], live: bool, every: int = 10) -> None:
        self.stream, self.live, self.every = stream, live, every
        self.views: list[RowView] = []  # the running rows, one live line each
        self._drawn = 0  # live lines now on the screen
        self._printed: dict[int, int] = {}  # id(view) -> last step printed (no terminal)

    def line(self, text: str) -> None:
        """A permanent line (above the live ones, if any)."""
        self._erase()
        self.stream.write(text + "\n")
        self._draw()
        self.stream.flush()

    def update(self, view: RowView | None = None, new_validation: bool = False) -> None:
        """Redraw the live lines; without a terminal, print ``view``'s line when it is due."""
        if self.live:
            self._erase()
            self._draw()
            self.stream.flush()
            return
        if view is None or not view.training or view.step == self._printed.get(id(view)):
            return
        if new_validation or view.step % self.every == 0 or view.step == view.total:
            self._printed[id(view)] = view.step
            self.line("  " + view.render())

    def finish(self, view: RowView) -> None:
        """``view``'s row has ended: its live line goes."""
        if view in self.views:
            self._erase()
            self.views.remove(view)
            self._draw()
            self.stream.flush()

    def _erase(self) -> None:
        """Clear the live lines (the cursor ends where the first one was)."""
        if self.live and self._drawn:
            self.stream.write("\r\x1b[K" + "\x1b[1A\x1b[K" * (self._drawn - 1))
            self._drawn = 0

    def _draw(self) -> None:
        """Write one live line per running row, each cut to the terminal's width."""
        if not self.live or not self.views:
            return
        width = _terminal_width()
        texts = [text if len(text) < width else text[: width - 2] + "…" for text in (v.render() for v in self.views)]
        self.stream.write("\n".join(texts))
        self._drawn = len(texts)


def _terminal_width() -> int:
    """Columns of the terminal ($COLUMNS, else the terminal's, else 100 when it reports none)."""
    return shutil.get_terminal_size(fallback=(100, 24)).columns


def _pump(stream: IO[bytes], lines: queue.Queue[tuple[int, str | None]], key: int) -> None:
    """Read a child's output line by line into ``lines`` as (key, line); (key, None) at its end."""
    for raw in iter(stream.readline, b""):
        lines.put((key, raw.decode("utf-8", errors="replace")))
    lines.put((key, None))


def _open_log(path: Path, held: Sequence[str], cmd: Sequence[str]) -> IO[str]:
    """Open ``path`` for appending (a resumed run adds to its log), write a header and the lines held so far."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.open("a", encoding="utf-8")
    log.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
    log.writelines(held)
    log.flush()
    return log


class _Row:
    """One child run: its log file, its view, its screen, and the last lines for an error report."""

    def __init__(
        self, name: str, cmd: Sequence[str], log_path: Path | None, total: int | None, screen: Screen
    ) -> None:
        self.cmd, self.log_path, self.screen = list(cmd), log_path, screen
        self.view = RowView(name, total=total)
        screen.views.append(self.view)
        self.held: list[str] = []  # lines before the log's path is known
        self.tail: list[str] = []
        self.log = _open_log(log_path, [], cmd) if log_path else None
        self.announced = False
        if log_path:
            screen.line(f"{name}: full console -> {log_path}")

    def handle(self, line: str) -> None:
        """Log one line of the child's console and update the screen."""
        self._write(line)
        self.tail = (self.tail + [line])[-200:]
        validations = len(self.view.val_acc)
        stage = self.view.feed(line)
        if stage and not self.screen.live:
            self.screen.line(f"  {self.view.name}: {stage} done [{_duration(self.view.stages[-1][1])}]")
        if self.view.training and not self.announced:
            self.announced = True
            self.screen.line(f"  {self.view.name}: started in {_duration(time.monotonic() - self.view.started)}"
                             f" ({self.view.startup_line()})")
        self.screen.update(self.view, new_validation=len(self.view.val_acc) > validations)

    def _write(self, line: str) -> None:
        """Append to the log; before it is open, hold the line until ``sspo-train`` names the run directory."""
        if self.log is None:
            marker = RUN_LINE.match(clean(line))
            if not marker:
                self.held.append(line)
                return
            self.log_path = Path(marker.group("dir")) / "console.log"
            self.log = _open_log(self.log_path, self.held, self.cmd)
            self.held.clear()
            self.screen.line(f"{self.view.name}: full console -> {self.log_path}")
        self.log.write(line)
        self.log.flush()

    def close(self, code: int) -> None:
        """Close the log; print the row's summary, or the error report on a failure."""
        if self.log:
            self.log.close()
        self.screen.finish(self.view)
        if code == 0:
            self.screen.line(self.view.summary())
            return
        for text in error_report(self.tail, self.log_path):
            self.screen.line(text)


@dataclass
class RowSpec:
    """One command to run under the view: its name on the screen, its log (default: from its first line)."""

    name: str
    cmd: list[str]
    log_path: Path | None = None
    total: int | None = None


def run_rows(
    rows: Sequence[RowSpec],
    jobs: int = 1,
    live: bool | None = None,
    every: int = 10,
    stream: IO[str] | None = None,
    env: dict[str, str] | None = None,
    stagger: bool = False,
) -> dict[str, int]:
    """Run the rows, ``jobs`` at a time, each under a :class:`RowView` (one live line each on a terminal);
    returns each row's exit code. A row that fails prints :func:`error_report`; the others go on.

    ``stagger``: a row starts only once every running row has logged a training step, so start-ups (mostly
    one core: process starts and imports) overlap other rows' training rather than each other."""
    stream = stream or sys.stdout
    screen = Screen(stream, stream.isatty() if live is None else live, every)
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
    pending, running, codes = list(enumerate(rows)), {}, {}
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs) and not (
                stagger and any(not row.view.training for row, _ in running.values())
            ):
                key, spec = pending.pop(0)
                running[key] = _start(spec, screen, lines, key, env)
            try:
                key, line = lines.get(timeout=1.0)
            except queue.Empty:
                screen.update()
                continue
            row, child = running[key]
            if line is None:
                codes[row.view.name] = child.wait()
                row.close(codes[row.view.name])
                del running[key]
            else:
                row.handle(line)
    except KeyboardInterrupt:
        for row, child in running.values():
            row.tail.append("KeyboardInterrupt: stopped by Ctrl-C\n")
            codes[row.view.name] = _stop(child) or 130
            row.close(codes[row.view.name])
    return codes


def _start(
    spec: RowSpec, screen: Screen, lines: queue.Queue[tuple[int, str | None]], key: int, env: dict[str, str] | None
) -> tuple[_Row, subprocess.Popen[bytes]]:
    """Start one row's command, its output read into ``lines`` under ``key``."""
    row = _Row(spec.name, spec.cmd, spec.log_path, spec.total, screen)
    child = subprocess.Popen(spec.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    threading.Thread(target=_pump, args=(child.stdout, lines, key), daemon=True).start()
    return row, child


def run_with_progress(
    cmd: Sequence[str],
    name: str,
    log_path: Path | None = None,
    total: int | None = None,
    live: bool | None = None,
    every: int = 10,
    stream: IO[str] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``cmd`` with its whole console going to ``log_path`` and a :class:`RowView` on ``stream``.

    Without ``log_path``, the log goes to the run directory that ``sspo-train`` names in its first line
    (``<trainer.default_local_dir>/console.log``), the lines before it held until then. Returns the exit
    code of ``cmd``; on a failure, prints :func:`error_report`.
    """
    codes = run_rows([RowSpec(name, list(cmd), log_path, total)], 1, live, every, stream, env)
    return codes.get(name, 130)


def _stop(child: subprocess.Popen[bytes], grace_s: float = 30.0) -> int:
    """After Ctrl-C (which the child got too): give it ``grace_s`` to shut Ray down, then terminate it."""
    try:
        return child.wait(timeout=grace_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        child.send_signal(signal.SIGTERM)
        try:
            return child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sspo.tools.progress [--name N | --row A --row B --jobs 2] [--log PATH] -- command...``

    With ``--row``, the command is a template run once per row, ``{row}`` replaced by the row's name.
    Exit code: the command's, or with rows the first failed row's (0 when all succeed)."""
    parser = argparse.ArgumentParser(prog="python -m sspo.tools.progress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="run", help="the run's name on the screen (one command)")
    parser.add_argument("--row", action="append", default=[], help="a row: the command with {row} = this name")
    parser.add_argument("--jobs", type=int, default=1, help="rows at a time (default 1: one after another)")
    parser.add_argument("--stagger", action="store_true",
                        help="start a row only once the running ones have logged a training step (start-ups one "
                        "at a time; a row that never logs one holds the rest until it ends)")
    parser.add_argument("--log", type=Path, default=None,
                        help="the console log (default: console.log in the run directory sspo-train names)")
    parser.add_argument("--total", type=int, default=None, help="training steps (default: from the log)")
    parser.add_argument("--live", choices=("auto", "on", "off"), default="auto",
                        help="redraw the progress lines in place (default: when stdout is a terminal)")
    parser.add_argument("--every", type=int, default=10, help="without a terminal: a progress line every N steps")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (after --)")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given (put it after --)")
    live = None if args.live == "auto" else args.live == "on"
    if not args.row:
        return run_with_progress(cmd, args.name, args.log, args.total, live, args.every)
    if args.log:
        parser.error("--log names one run's log: with --row each row logs into its run directory")
    specs = [RowSpec(row, [part.replace("{row}", row) for part in cmd], None, args.total) for row in args.row]
    codes = run_rows(specs, args.jobs, live, args.every, stagger=args.stagger)
    return next((codes.get(row, 130) for row in args.row if codes.get(row, 130)), 0)


if __name__ == "__main__":
    sys.exit(main())
