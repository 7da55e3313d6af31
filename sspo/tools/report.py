"""Plots and a Markdown summary from verl's training logs: CPU and GPU runs alike.

    python -m sspo.tools.report grpo=outputs/sspo/grpo_cpu/tensorboard sspo=outputs/sspo/sspo_cpu/tensorboard \
        --out runs/demo/report

Each positional argument is one run (one line per run in every plot), optionally named ``NAME=PATH``.
A run may be given as any of what verl's loggers (``trainer.logger=[...]``) write:

* a JSONL file in verl's ``file`` logger format (``verl/utils/tracking.py::FileLogger``: one
  ``{"step": N, "data": {metric: value}}`` per line; ``VERL_FILE_LOGGER_PATH`` or
  ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl``); flat ``{"step": N, metric: value}`` also works;
* a folder holding TensorBoard event files (verl's ``tensorboard`` logger: ``$TENSORBOARD_DIR`` or
  ``tensorboard_log/<project>/<experiment>``), read with TensorBoard's ``EventAccumulator``;
* a text file of verl's ``console`` logger output (lines ``step:N - key:value - ...``, other lines ignored);
* a folder holding a ``metrics.jsonl`` in verl's file-logger format.

The metric names are verl's: ``critic/score/mean`` (reward), ``val-core/<source>/acc/mean@N``
(validation accuracy, averaged over sources), ``actor/pg_clipfrac``, ``actor/entropy``,
``response_length/mean``; runs that lack one simply have no line in that panel.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sspo.tools import stats
from sspo.tools.outputs import OutputPathError, output_folder

# Panel name -> (y label, metric keys tried in order; the first one a run has is plotted).
PANELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "reward": ("training reward (mean score)", ("critic/score/mean", "critic/rewards/mean")),
    "accuracy": ("validation accuracy", ("val-core/*/acc/mean@*", "train/acc")),
    "clip_fraction": ("clip fraction (token-weighted)", ("actor/pg_clipfrac",)),
    "entropy": ("policy entropy", ("actor/entropy",)),
    "response_length": ("response length (tokens)", ("response_length/mean",)),
}
# The clip monitor (``sspo.monitor``, every loss): in each update, the clip fraction the update's inputs would have
# at ONE clip range (the run's base range) with the ratio taken per token, subsentence or sequence. Unlike each
# run's own ``actor/pg_clipfrac`` (each algorithm at its own clip range), these are comparable with each other.
# Runs from before the monitor logged them for the ``sspo`` loss only, as ``actor/sspo/clipfrac_at_*``.
GRANULARITY_PANEL = "clip_by_granularity"
GRANULARITY_TITLE = "clip fraction at each run's base clip range, by granularity\n(the clip monitor)"
GRANULARITY_KEYS: dict[str, tuple[str, ...]] = {
    g: (f"actor/monitor/clipfrac_at_{g}", f"actor/sspo/clipfrac_at_{g}") for g in ("token", "subsentence", "sequence")
}
VAL_ACC = re.compile(r"^val-core/(?P<source>.+)/acc/mean@(?P<n>\d+)$")
_CONSOLE_STEP = re.compile(r"(?:^|\s)step:(\d+)((?: - [^\n]*)?)$")
_NUMPY_SCALAR = re.compile(r"^np\.\w+\((.*)\)$")


class ReportError(ValueError):
    """A run that cannot be read: the message names the path and what to pass instead."""


@dataclass
class Run:
    """One run's scalar metrics: ``metrics[key][step] = value``."""

    name: str
    source: str
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)
    #: metric -> (how many values were not finite numbers, the first of them as (step, value)): said, not hidden
    skipped: dict[str, tuple[int, tuple[int, object]]] = field(default_factory=dict)

    def add(self, step: int, key: str, value: object) -> None:
        """Record ``value`` if it is a real number (lists, strings, None are skipped). Later steps win.
        Values that are not finite numbers (skipped here, or NaN/inf left out of every mean and plot) are
        counted in :attr:`skipped`, which the CLI reports."""
        number = _as_float(value)
        if number is not None:
            self.metrics.setdefault(key, {})[int(step)] = number
        if number is None or not math.isfinite(number):
            count, first = self.skipped.get(key, (0, (int(step), value)))
            self.skipped[key] = (count + 1, first)

    def skipped_note(self) -> str | None:
        """One line on the values left out of this run's summary and plots, or None if there were none."""
        if not self.skipped:
            return None
        total = sum(count for count, _ in self.skipped.values())
        key, (_, (step, value)) = next(iter(self.skipped.items()))
        return (
            f"run {self.name}: {total} value(s) of {len(self.skipped)} metric(s) are not finite numbers and are "
            f"left out of the summary and plots (first: {key} at step {step} = {str(value)[:40]!r})"
        )

    def first_of(self, keys: Sequence[str]) -> dict[int, float]:
        """``step -> value`` of the first of ``keys`` this run logged (empty if none)."""
        return next((self.metrics[k] for k in keys if self.metrics.get(k)), {})

    @property
    def steps(self) -> list[int]:
        return sorted({s for series in self.metrics.values() for s in series})

    def series(self, panel: str) -> tuple[str, list[int], list[float]] | None:
        """(metric key, steps, values) plotted in ``panel`` for this run, or None if the run lacks it."""
        for pattern in PANELS[panel][1]:
            if pattern.startswith("val-core/"):
                found = self._mean_val_accuracy()
                if found is not None:
                    return found
            elif pattern in self.metrics and self.metrics[pattern]:
                steps = sorted(self.metrics[pattern])
                return pattern, steps, [self.metrics[pattern][s] for s in steps]
        return None

    def _mean_val_accuracy(self) -> tuple[str, list[int], list[float]] | None:
        """verl's ``val-core/<source>/acc/mean@N``, averaged over sources at steps where all are present."""
        keys = [k for k in self.metrics if VAL_ACC.match(k)]
        if not keys:
            return None
        steps = sorted(set.intersection(*(set(self.metrics[k]) for k in keys)))
        values = [sum(self.metrics[k][s] for k in keys) / len(keys) for s in steps]
        label = keys[0] if len(keys) == 1 else f"mean of {len(keys)} val-core/*/acc"
        return label, steps, values


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        match = _NUMPY_SCALAR.match(text)  # pprint of numpy scalars in verl's console log
        if match:
            text = match.group(1)
        try:
            return float(text)
        except ValueError:
            return None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _as_float(value.item())
        except (TypeError, ValueError):
            return None
    return None


# ----------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------
def read_jsonl(path: Path, run: Run) -> None:
    """verl ``file`` logger lines ``{"step": N, "data": {...}}`` (or flat ``{"step": N, key: value}``)."""
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReportError(
                f"{path}:{lineno}: not JSON ({e.msg}); expected verl's file-logger JSONL"
            ) from e
        if not isinstance(record, dict) or "step" not in record:
            raise ReportError(f"{path}:{lineno}: a JSON object with a 'step' is expected, got {line[:80]!r}")
        data = record.get("data", record)
        if not isinstance(data, dict):
            raise ReportError(f"{path}:{lineno}: 'data' must be an object of metrics")
        for key, value in data.items():
            if key != "step":
                run.add(record["step"], key, value)


def read_tensorboard(path: Path, run: Run) -> None:
    """Every scalar in the TensorBoard event files of folder ``path`` (``EventAccumulator``)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    folders = sorted({p.parent for p in path.rglob("events.out.tfevents.*")}) if path.is_dir() else [path]
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every point
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                run.add(event.step, tag, event.value)


def parse_console_line(line: str) -> tuple[int, dict[str, float]] | None:
    """(step, numeric metrics) of one verl ``console`` logger line (``step:N - key:value - ...``), else None."""
    match = _CONSOLE_STEP.search(line.rstrip())
    if not match:
        return None
    metrics = {}
    for item in match.group(2).split(" - ")[1:]:
        key, sep, value = item.rpartition(":")
        number = _as_float(value) if sep and key else None
        if number is not None:
            metrics[key.strip()] = number
    return int(match.group(1)), metrics


def read_console(path: Path, run: Run) -> None:
    """verl ``console`` logger lines: ``step:N - key:value - key:value`` (other lines are ignored)."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parsed = parse_console_line(line)
        if parsed:
            for key, value in parsed[1].items():
                run.add(parsed[0], key, value)


def load_run(spec: str) -> Run:
    """Read one run from ``PATH`` or ``NAME=PATH`` (see the module docstring for what PATH may be)."""
    name, sep, raw = spec.partition("=")
    if not sep or not name or "/" in name:
        name, raw = "", spec
    path = Path(raw)
    if not path.exists():
        raise ReportError(
            f"run {raw!r} does not exist: pass a run folder, a verl JSONL/console log or a TensorBoard folder"
        )
    run = Run(name=name or (path.stem if path.is_file() else path.name), source=str(path))
    if path.is_dir():
        if (path / "metrics.jsonl").is_file():
            read_jsonl(path / "metrics.jsonl", run)
        elif any(path.rglob("events.out.tfevents.*")):
            read_tensorboard(path, run)
        else:
            jsonl = sorted(path.glob("*.jsonl"))
            if len(jsonl) != 1:
                raise ReportError(
                    f"{path}: no metrics.jsonl, no TensorBoard event files and {len(jsonl)} *.jsonl files; "
                    "pass the metrics file itself"
                )
            read_jsonl(jsonl[0], run)
    elif path.name.startswith("events.out.tfevents."):
        read_tensorboard(path.parent, run)
    elif path.suffix == ".jsonl":
        read_jsonl(path, run)
    else:
        read_console(path, run)
    if not any(run.series(panel) for panel in PANELS):
        known = sorted({k for _, keys in PANELS.values() for k in keys})
        raise ReportError(f"{path}: no known metric found (looked for {known}); is this a training log?")
    return run


# ----------------------------------------------------------------------------------------------
# Summary and plots
# ----------------------------------------------------------------------------------------------
def is_validation(key: str) -> bool:
    """A series measured on the validation set (logged at step s for the policy pi_s), not on the rollouts."""
    return key.startswith(("val-core/", "val-aux/", "mean of "))


def versions(key: str, steps: Sequence[int]) -> list[int]:
    """The policy versions behind a series' steps (:func:`sspo.tools.stats.policy_version`): the x of every plot."""
    return [stats.policy_version(s, is_validation(key)) for s in steps]


def run_endpoints(run: Run) -> dict[str, stats.Endpoints]:
    """Start/end of the training reward, the validation accuracy and the entropy by policy version, with
    95% intervals where the run's per-sample dumps are found beside its logs (``stats.find_dump_dirs``)."""
    dirs = stats.find_dump_dirs(Path(run.source))
    out = {}
    for panel, measure, kind, field_name in (("reward", "training reward", "rollouts", "score"),
                                             ("accuracy", "validation accuracy", "validation", "acc"),
                                             ("entropy", "entropy", None, None)):  # fmt: skip
        series = run.series(panel)
        validation = bool(series) and is_validation(series[0])
        files = stats.dump_files(dirs.get(kind)) if kind and (validation or kind == "rollouts") else {}
        per_step = dict(zip(series[1], series[2], strict=True)) if series else {}
        found = stats.endpoints(
            measure, per_step, validation,
            (lambda step, f=files, k=field_name: stats.read_dump(f[step], k) if step in f else None),
            dump_steps=sorted(files),
        )  # fmt: skip
        if found is not None:
            out[panel] = found
    return out


def summarize(run: Run, ends: dict[str, stats.Endpoints] | None = None) -> dict[str, float | int | str]:
    """One table row: reward, accuracy and entropy at the first and last policy each measured (like with
    like: ``sspo.tools.stats``), mean clip fraction, length, the same-range clip fractions."""
    ends = run_endpoints(run) if ends is None else ends
    row: dict[str, float | int | str] = {"run": run.name, "last step": max(run.steps, default=0)}
    for panel, column in (("reward", "reward"), ("accuracy", "acc"), ("entropy", "entropy")):
        found = ends.get(panel)
        row[f"{column} start"] = found.start.estimate if found else float("nan")
        row[f"{column} end"] = found.end.estimate if found else float("nan")
        if panel != "entropy":
            row[f"{column} policies"] = found.versions if found else ""
    for panel, column in (("clip_fraction", "clip frac (mean)"), ("response_length", "resp len (mean)")):
        series = run.series(panel)
        finite = [v for v in series[2] if math.isfinite(v)] if series else []
        row[column] = sum(finite) / len(finite) if finite else float("nan")
    unit = run.metrics.get("actor/sspo/clipfrac_unit")
    row["unit clip frac (sspo)"] = sum(unit.values()) / len(unit) if unit else float("nan")
    for granularity, keys in GRANULARITY_KEYS.items():
        finite = [v for v in run.first_of(keys).values() if math.isfinite(v)]
        row[f"same-range clip @{granularity}"] = sum(finite) / len(finite) if finite else float("nan")
    return row


def markdown_table(rows: Sequence[dict[str, float | int | str]]) -> str:
    """Rows as a Markdown table (NaN shown as an empty cell)."""
    columns = list(rows[0])

    def cell(v: float | int | str) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


CHART_MARKS = "ox^*#"


def text_chart(
    series: dict[str, tuple[Sequence[int], Sequence[float]]], width: int = 60, height: int = 10, smooth: int = 1,
    xlabel: str = "step",
) -> str:
    """A terminal chart of several step series: one mark per run (``+`` where runs overlap), y axis labelled.

    ``smooth`` > 1 plots the moving mean over that many steps (the direction of a noisy per-step reward).
    """
    series = {name: (list(steps), _moving_mean(list(values), smooth)) for name, (steps, values) in series.items()}
    points = [(s, v) for steps, values in series.values() for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
    if not points:
        return "(no data to chart)"
    lo_s, hi_s = min(p[0] for p in points), max(p[0] for p in points)
    lo_v, hi_v = min(p[1] for p in points), max(p[1] for p in points)
    if hi_v - lo_v < 1e-9:
        lo_v, hi_v = lo_v - 0.5, hi_v + 0.5
    grid = [[" "] * width for _ in range(height)]
    for mark, (steps, values) in zip(CHART_MARKS * 10, series.values(), strict=False):
        for s, v in zip(steps, values, strict=True):
            if not math.isfinite(v):
                continue
            col = round((s - lo_s) / max(1, hi_s - lo_s) * (width - 1))
            row = height - 1 - round((v - lo_v) / (hi_v - lo_v) * (height - 1))
            grid[row][col] = mark if grid[row][col] in (" ", mark) else "+"
    labels = {0: f"{hi_v:.2f}", height - 1: f"{lo_v:.2f}", (height - 1) // 2: f"{(hi_v + lo_v) / 2:.2f}"}
    lines = [f"{labels.get(i, ''):>6} |{''.join(row)}" for i, row in enumerate(grid)]
    lines.append(" " * 7 + "+" + "-" * width)
    lines.append(" " * 8 + f"{xlabel} {lo_s}" + f"{xlabel} {hi_s}".rjust(width - len(f"{xlabel} {lo_s}")))
    legend = "   ".join(f"{m} {name}" for m, name in zip(CHART_MARKS * 10, series, strict=False))
    lines.append(" " * 8 + legend + ("   + overlap" if any("+" in "".join(r) for r in grid) else ""))
    return "\n".join(lines)


def _moving_mean(values: list[float], k: int) -> list[float]:
    """Trailing mean over ``k`` values (fewer at the start); ``k`` <= 1 returns the values."""
    if k <= 1:
        return values
    return [sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1]) for i in range(len(values))]


def terminal_table(rows: Sequence[dict[str, float | int | str]]) -> str:
    """The summary rows that fit a terminal: steps, reward and validation accuracy start -> end, clip fraction."""

    def arrow(row: dict[str, float | int | str], column: str) -> str:
        start, end = row[f"{column} start"], row[f"{column} end"]
        if isinstance(start, float) and math.isnan(start):
            return "-"
        return f"{start:.2f} -> {end:.2f}"

    name = max([10, *(len(str(row["run"])) for row in rows)])  # seed runs' names: <row>__seed-N
    header = f"{'run':<{name}} {'steps':>5}  {'training reward':<16} {'validation acc':<16} {'clip frac':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        clip = row["clip frac (mean)"]
        clip_text = "-" if isinstance(clip, float) and math.isnan(clip) else f"{clip:.3f}"
        lines.append(f"{str(row['run']):<{name}} {row['last step']:>5}  {arrow(row, 'reward'):<16} "
                     f"{arrow(row, 'acc'):<16} {clip_text:>9}")
    return "\n".join(lines)


INTERVAL_NOTE = (
    "95% intervals: percentile bootstrap (scipy.stats.bootstrap, 9999 resamples, seeded) over PROBLEMS, each with "
    "all its samples; a change is paired by problem when both ends saw the same problems. Policies: pi_s = after "
    "s updates; the validation at step s measures pi_s, the training samples of step s come from pi_(s-1) "
    "(docs/statistics.md)."
)
MEASURE_ORDER = ("reward", "accuracy")


def interval_rows(ends: dict[str, dict[str, stats.Endpoints]]) -> list[list[str]]:
    """[run, measure, policies, start, end, change] per run and measure, each number with its interval."""
    rows = []
    for name, found in ends.items():
        for panel in MEASURE_ORDER:
            e = found.get(panel)
            if e is None:
                continue
            change = e.change.text(signed=True) + ("" if e.change.computable else f" ({e.change.note})")
            rows.append([name, e.measure, e.versions, e.start.text(), e.end.text(), change])
    return rows


def interval_markdown(ends: dict[str, dict[str, stats.Endpoints]]) -> str:
    """The start -> end table with 95% intervals, as Markdown ("" when no run has a measure)."""
    rows = interval_rows(ends)
    if not rows:
        return ""
    head = ["run", "measure", "policies", "start [95% CI]", "end [95% CI]", "change [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def aligned(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells in left-aligned columns (the last column unpadded), for the terminal."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip() for r in rows)


def interval_terminal(ends: dict[str, dict[str, stats.Endpoints]]) -> str:
    """The start -> end table with 95% intervals, in aligned columns for the terminal."""
    return aligned([["run", "measure", "policies", "start", "end", "change"], *interval_rows(ends)])


def seed_comparison(ends: dict[str, dict[str, stats.Endpoints]]) -> list[list[str]]:
    """Runs of one row over seeds (names ``<row>__seed-N``): per row and measure the mean and IQM over seeds
    of the end value and of the start -> end change, each with a bootstrap interval over the seeds, and for a
    change how many seeds rose beyond their own interval (its lower bound above 0: ``4/5``, over the seeds that
    have one); then each row minus the FIRST row (pass the baseline first), seed by seed on the seeds both ran."""
    by_row: dict[str, dict[int, dict[str, stats.Endpoints]]] = {}
    for name, found in ends.items():
        row, seed = stats.split_seed(name)
        if seed is not None:
            by_row.setdefault(row, {})[seed] = found
    if not by_row or max(len(v) for v in by_row.values()) < 2:
        return []
    out = []
    baseline = next(iter(by_row))
    for panel in MEASURE_ORDER:
        for what in ("end", "change"):
            values = {row: {seed: getattr(found[panel], what).estimate for seed, found in runs.items() if panel in found}
                      for row, runs in by_row.items()}  # fmt: skip
            for row, per_seed in values.items():
                if not per_seed:
                    continue
                # named from a run that measured it: a seed's run may lack the measure (e.g. it never validated)
                measure = f"{next(f[panel] for f in by_row[row].values() if panel in f).measure} {what}"
                seeds = ",".join(map(str, sorted(per_seed)))
                mean = stats.across_seeds(list(per_seed.values()), "mean")
                iqm = stats.across_seeds(list(per_seed.values()), "iqm")
                rose = ""
                if what == "change":  # the seeds whose own change interval (problems resampled) excludes 0 upward
                    changes = [f[panel].change for f in by_row[row].values() if panel in f]
                    with_interval = [c for c in changes if c.computable]
                    rose = f"{sum(c.low > 0 for c in with_interval)}/{len(with_interval)}"
                    if len(with_interval) < len(changes):  # counted over the seeds that have an interval
                        notes = sorted({c.note for c in changes if not c.computable})
                        rose += f" ({len(changes) - len(with_interval)} seed(s) without an interval: {'; '.join(notes)})"
                out.append([row, seeds, measure, mean.text(signed=what == "change"), iqm.text(signed=what == "change"), rose])
                if row != baseline and values[baseline]:
                    diff = stats.paired_difference(per_seed, values[baseline])
                    out.append([f"{row} - {baseline}", diff.note, measure, diff.text(signed=True), "", ""])
    return out


def seed_markdown(table: list[list[str]]) -> str:
    """:func:`seed_comparison` as Markdown ("" without runs over several seeds)."""
    if not table:
        return ""
    head = ["row", "seeds", "measure", "mean [95% CI over seeds]", "IQM [95% CI]", "seeds above 0 (own CI)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in table]) + "\n"


def terminal_report(result: dict[str, object], runs: Sequence[Run]) -> str:
    """What the demo shows at its end: the table, the intervals, the seeds' comparison, the reward chart,
    the PNG paths."""
    chart = text_chart(
        {r.name: (versions(s[0], s[1]), s[2]) for r in runs if (s := r.series("reward"))}, smooth=3,
        xlabel="policy",
    )  # fmt: skip
    seeds = result.get("seeds") or []
    lines = [
        "training summary (start: the policy before any update, pi0; end: the last policy each measure saw; "
        "clip frac: mean per step, no interval: per-step means)",
        terminal_table(result["rows"]),  # type: ignore[arg-type]
        "",
        "start -> end with 95% intervals (problems resampled; docs/statistics.md)",
        interval_terminal(result["ends"]),  # type: ignore[arg-type]
    ]
    if seeds:
        lines += ["", "across seeds (mean, IQM; rose: seeds whose own change interval lies above 0; "
                  "each row - the first row on common seeds)"]
        lines.append(aligned([["row", "seeds", "measure", "mean [95% CI]", "IQM [95% CI]", "rose"], *seeds]))  # type: ignore[list-item]
    lines += [
        "",
        "training reward by the policy that drew the samples (step - 1; 3-point moving mean)",
        chart,
        "",
        "plots: " + str(Path(result["summary"]).parent),  # type: ignore[arg-type]
    ]
    lines += [f"  {p}" for p in result["pngs"]]  # type: ignore[attr-defined]
    return "\n".join(lines)


# every plot's x: the policy a point measured (validation at step s: pi_s; training metrics of step s: pi_(s-1))
POLICY_AXIS = "policy (updates applied; training metrics: step - 1)"


def plot(runs: Sequence[Run], out: Path) -> list[Path]:
    """One PNG per panel plus ``overview.png`` (all panels), one line per run. Returns the files."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    written = []
    fig_all, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax_all, (panel, (ylabel, _)) in zip(axes.flat, PANELS.items(), strict=False):
        fig, ax = plt.subplots(figsize=(6, 4))
        for run in runs:
            series = run.series(panel)
            if series is None:
                continue
            key, steps, values = series
            for a in (ax, ax_all):
                a.plot(versions(key, steps), values, marker="." if len(steps) < 40 else None, label=run.name)
        for a in (ax, ax_all):
            a.set_xlabel(POLICY_AXIS)
            a.set_ylabel(ylabel)
            a.set_title(panel.replace("_", " "))
            a.grid(alpha=0.3)
            if a.lines:
                a.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{panel}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if any(run.first_of(keys) for run in runs for keys in GRANULARITY_KEYS.values()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for a in (ax, axes.flat[-1]):
            _plot_granularities(a, runs)
        fig.tight_layout()
        path = out / f"{GRANULARITY_PANEL}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    else:
        axes.flat[-1].axis("off")
    fig_all.tight_layout()
    overview = out / "overview.png"
    fig_all.savefig(overview, dpi=100)
    plt.close(fig_all)
    return [overview, *written]


def _plot_granularities(ax: object, runs: Sequence[Run]) -> None:
    """The same-range clip fractions: one colour per granularity, one line style per run that logged them."""
    styles = itertools.cycle(["-", "--", ":", "-."])
    colors = {"token": "tab:red", "subsentence": "tab:green", "sequence": "tab:blue"}
    logged = [r for r in runs if any(r.first_of(keys) for keys in GRANULARITY_KEYS.values())]
    for run in logged:
        style = next(styles)
        for granularity, keys in GRANULARITY_KEYS.items():
            series = run.first_of(keys)
            if not series:
                continue
            steps = sorted(series)
            label = granularity if len(logged) == 1 else f"{run.name}: {granularity}"
            ax.plot(versions("", steps), [series[s] for s in steps], style, color=colors[granularity], label=label)
    ax.set_xlabel(POLICY_AXIS)
    ax.set_ylabel("clip fraction (token-weighted)")
    ax.set_title(GRANULARITY_TITLE, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def make_report(specs: Sequence[str], out: str | Path) -> dict[str, object]:
    """Read every run, write the PNGs and ``summary.md`` into ``out``; returns paths and table rows."""
    if not specs:
        raise ReportError("no run given: pass one or more run folders or log files")
    runs = [load_run(spec) for spec in specs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ReportError(f"two runs share a name in {names}: name them with NAME=PATH")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        ends = {r.name: run_endpoints(r) for r in runs}
    except stats.StatsError as e:
        raise ReportError(str(e)) from None
    pngs = plot(runs, out)
    rows = [summarize(r, ends[r.name]) for r in runs]
    seeds = seed_comparison(ends)
    summary = out / "summary.md"
    summary.write_text(
        "# Training summary\n\n"
        "Start/end: the first and the last policy each measure saw (policies: `pi_s` = after s updates; the "
        "validation at step s measures `pi_s`, the training samples of step s come from `pi_(s-1)`, so the start "
        "is `pi0` for both and the training reward's end is one update before the validation's; "
        "docs/statistics.md). "
        "Clip fraction: verl's token-weighted `actor/pg_clipfrac`, averaged over steps; each algorithm has its "
        "own clip range, so these are not comparable across algorithms. Same-range clip @token/@subsentence/"
        "@sequence (the clip monitor, every loss; `sspo.monitor`): the clip fraction the same updates would have "
        "at ONE clip range (the run's base `[1 - clip_ratio_low, 1 + clip_ratio_high]`; GMPO's `[e^-low, e^high]`) "
        "with the importance ratio taken per token, per subsentence or per response (`actor/monitor/clipfrac_at_*`; "
        "`actor/sspo/clipfrac_at_*` in older `sspo` runs), averaged over steps: the granularities compared on "
        "equal terms.\n\n"
        + markdown_table(rows)
        + ("\n## Start -> end with 95% intervals\n\n" + INTERVAL_NOTE + " A number without an interval: the run "
           "has per-step means only (no per-sample dumps beside its logs).\n\n" + interval_markdown(ends))
        + ("\n## Across seeds\n\nRuns named `<row>__seed-N` grouped by row: mean and IQM over seeds with "
           "95% percentile-bootstrap intervals over the seeds (too narrow with few seeds); `A - B`: the mean of "
           "the seed-by-seed differences on the seeds both ran; `seeds above 0`: the seeds whose own start -> end "
           "interval (problems resampled) lies above 0.\n\n" + seed_markdown(seeds) if seeds else "")
        + "\nRuns: "
        + ", ".join(f"`{r.name}` = `{r.source}`" for r in runs)
        + "\n\n"
        + "".join(f"![{p.stem}]({p.name})\n" for p in pngs[:1]),
        encoding="utf-8",
    )
    return {"pngs": pngs, "summary": summary, "rows": rows, "runs": runs, "ends": ends, "seeds": seeds}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sspo.tools.report RUN [RUN ...]``: plots and a markdown summary of the runs side by side."""
    parser = argparse.ArgumentParser(prog="python -m sspo.tools.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders or log files, optionally NAME=PATH")
    parser.add_argument("--out", required=True, help="folder for the PNGs and summary.md")
    parser.add_argument("--terminal", action="store_true",
                        help="print a terminal-sized table, a text chart of the reward and the PNG paths "
                        "(default: summary.md as written)")
    args = parser.parse_args(argv)
    try:
        output_folder(args.out, "--out")  # made (or refused) before any run is read
        result = make_report(args.runs, args.out)
    except (ReportError, OutputPathError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in filter(None, (run.skipped_note() for run in result["runs"])):
        print(f"note: {note}", file=sys.stderr)
    if args.terminal:
        print(terminal_report(result, result["runs"]))
        return 0
    print(Path(result["summary"]).read_text(encoding="utf-8"))
    print("plots:", ", ".join(str(p) for p in result["pngs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
