"""The clipping diagnostic, step by step: one Markdown table row per run and training step, from verl's logs.

    python -m sspo.tools.diagnostic_table grpo=outputs/sspo/diagnose_grpo/tensorboard \
        sspo=outputs/sspo/diagnose_sspo/tensorboard --out runs/diagnose/diagnostic.md

Runs are read by :func:`sspo.tools.report.load_run` (TensorBoard folder, verl file-logger JSONL or console log).
Columns: the run's own clip fraction (``actor/pg_clipfrac``, each algorithm at its own clip range), SSPO's
same-range clip fractions by granularity (the clip monitor's ``actor/monitor/clipfrac_at_*``, every loss; older
``sspo`` runs: ``actor/sspo/clipfrac_at_*``),
subsentences per response and tokens per subsentence (at the loss's granularity: subsentences for SSPO), the
spread of the importance ratio, the adaptive clip scale, entropy, reward and response length. A run without
a metric has an empty cell. With ``--rollouts NAME=DIR`` (verl's ``trainer.rollout_data_dir``: ``<step>.jsonl``
with ``input`` and ``score`` per response), the column ``varied groups`` is the share of the step's prompts
whose samples got different rewards: the prompts with a non-zero GRPO advantage, the only ones clipping can touch.

``--by-lag`` writes instead one row per (run, policy lag): the clip monitor's same-range clip fractions of the
samples generated that many policy versions before pi_old (0, 1, 2 or more; verl's trajectory staleness), over
the whole run, from the monitor's ``actor/monitor/lag<k>/*`` token counts, each with its standard error over the
run's steps (``se``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from sspo.tools.report import GRANULARITY_KEYS, ReportError, load_run, markdown_table

#: column -> verl metric key (or the keys tried in order: the clip monitor's, then the ``sspo`` loss's own)
COLUMNS: dict[str, str | tuple[str, ...]] = {
    "reward": "critic/score/mean",
    "clipfrac (own range)": "actor/pg_clipfrac",
    **{f"@{g}": GRANULARITY_KEYS[g] for g in ("token", "subsentence", "sequence")},
    "units/resp": "actor/sspo/units_per_response",
    "tokens/unit": "actor/sspo/tokens_per_unit",
    "ratio min": "actor/sspo/ratio_min",
    "ratio max": "actor/sspo/ratio_max",
    "adaptive scale mean": "actor/sspo/adaptive_scale_mean",
    "entropy": "actor/entropy",
    "resp len": "response_length/mean",
}

__all__ = ["COLUMNS", "diagnostic_rows", "lag_rows", "main"]


def varied_group_share(dump: Path) -> float:
    """Share of the prompts in one verl rollout dump (JSONL, ``input`` and ``score`` per response) whose
    responses did not all get the same reward."""
    scores: dict[str, set[float]] = {}
    for line in dump.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            scores.setdefault(row["input"], set()).add(float(row["score"]))
    if not scores:
        raise ReportError(f"{dump}: no rollout in the dump")
    return sum(len(s) > 1 for s in scores.values()) / len(scores)


def diagnostic_rows(
    specs: Sequence[str], rollouts: dict[str, Path] | None = None
) -> list[dict[str, float | int | str]]:
    """One row per (run, training step), runs in the given order; NaN where a run lacks a metric.
    ``rollouts`` maps a run's name to its rollout dump folder (adds ``varied groups``)."""
    rows: list[dict[str, float | int | str]] = []
    for spec in specs:
        run = load_run(spec)
        dumps = (rollouts or {}).get(run.name)
        steps = sorted(run.metrics.get(COLUMNS["reward"], {}))
        if not steps:
            raise ReportError(f"{run.source}: no training step logged ({COLUMNS['reward']} missing)")
        for step in steps:
            row: dict[str, float | int | str] = {"run": run.name, "step": step}
            row.update({c: run.first_of((k,) if isinstance(k, str) else k).get(step, float("nan"))
                        for c, k in COLUMNS.items()})  # fmt: skip
            if rollouts is not None:
                dump = dumps / f"{step}.jsonl" if dumps is not None else None
                row["varied groups"] = varied_group_share(dump) if dump and dump.is_file() else float("nan")
            rows.append(row)
    return rows


def lag_rows(specs: Sequence[str]) -> list[dict[str, float | int | str]]:
    """One row per (run, lag bucket with tokens): share of the run's tokens and clip fraction per granularity.

    Each step logs the mean over micro-batches of the bucket's token and clipped-token counts; their sums over
    steps divide into the bucket's fraction (exact when a step's micro-batches are equally many, as they are at
    a fixed micro-batch size)."""
    from sspo.monitor import LAG_BUCKETS, MONITOR_PREFIX

    rows: list[dict[str, float | int | str]] = []
    for spec in specs:
        run = load_run(spec)
        total = functools.partial(_run_total, run.metrics, MONITOR_PREFIX)
        tokens = [total(f"lag{k}/tokens") for k in range(LAG_BUCKETS)]
        if not sum(tokens):
            raise ReportError(
                f"{run.source}: no {MONITOR_PREFIX}lag<k>/tokens logged (a run before 6 Dec 2026?)"
            )
        for k, n in enumerate(tokens):
            if n:
                label = f"{k}+" if k == LAG_BUCKETS - 1 else str(k)
                row: dict[str, float | int | str] = {
                    "run": run.name,
                    "lag": label,
                    "token share": n / sum(tokens),
                }
                for g in ("token", "subsentence", "sequence"):
                    row[f"@{g}"] = total(f"lag{k}/clipped_at_{g}") / n
                    row[f"@{g} se"] = _step_se(run.metrics, MONITOR_PREFIX, k, g)
                rows.append(row)
    return rows


def _step_se(metrics: dict[str, dict[int, float]], prefix: str, k: int, granularity: str) -> float:
    """Standard error of a bucket's clip fraction over the run's steps (the steps that had its samples): the
    spread one run's figure carries; NaN with fewer than two such steps."""
    tokens = metrics.get(f"{prefix}lag{k}/tokens", {})
    clipped = metrics.get(f"{prefix}lag{k}/clipped_at_{granularity}", {})
    fractions = [clipped.get(step, 0.0) / n for step, n in tokens.items() if n]
    if len(fractions) < 2:
        return float("nan")
    return statistics.stdev(fractions) / math.sqrt(len(fractions))


def _run_total(metrics: dict[str, dict[int, float]], prefix: str, key: str) -> float:
    """A metric summed over a run's steps (0 when never logged)."""
    return float(sum(metrics.get(f"{prefix}{key}", {}).values()))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sspo.tools.diagnostic_table RUN [RUN ...] --out FILE.md``; prints the table too."""
    parser = argparse.ArgumentParser(
        prog="python -m sspo.tools.diagnostic_table", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="+", help="run folders or log files, optionally NAME=PATH")
    parser.add_argument("--out", required=True, type=Path, help="Markdown file to write")
    parser.add_argument(
        "--rollouts", action="append", default=[], metavar="NAME=DIR",
        help="a run's rollout dump folder (verl's trainer.rollout_data_dir): adds the 'varied groups' column",
    )  # fmt: skip
    parser.add_argument(
        "--by-lag", action="store_true", help="one row per run and policy lag, over the whole run"
    )
    args = parser.parse_args(argv)
    from sspo.tools.outputs import OutputPathError, output_file

    try:
        output_file(args.out, "--out")  # made (or refused) before any run is read
        rollouts = {}
        for item in args.rollouts:
            name, sep, folder = item.partition("=")
            if not sep or not Path(folder).is_dir():
                raise ReportError(f"--rollouts {item!r}: expected NAME=DIR with an existing folder")
            rollouts[name] = Path(folder)
        if args.by_lag:
            table = markdown_table(lag_rows(args.runs))
        else:
            table = markdown_table(diagnostic_rows(args.runs, rollouts if args.rollouts else None))
    except (ReportError, OutputPathError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
