"""Losses side by side: `make ablate` over an `algo=` list, and the report and the five-benchmark table with any
number of runs (the clip monitor's curves included)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, printed_config, recipe_data_dir

from sspo.launch import cli

ALGOS = ["grpo", "dapo", "gspo", "geo_mean", "cispo", "sapo", "sspo"]
LOSS = {"grpo": "vanilla", "dapo": "vanilla"}


def test_make_ablate_runs_an_algo_list(tmp_path_factory, shared_data, monkeypatch, capsys):
    """The command `make ablate ABLATION_GRID=algo=...` runs (as make prints it), dry-run: one run per loss."""
    make = subprocess.run(
        ["make", "-n", "-C", str(REPO), "ablate", f"ABLATION_GRID=algo={','.join(ALGOS)}", "ARGS=--dry-run"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    command = shlex.split(next(line for line in make.stdout.splitlines() if "sspo.launch.cli" in line))
    args = command[command.index("sspo.launch.cli") + 1 :]
    experiment = next(a.split("=", 1)[1] for a in args if a.startswith("experiment="))
    monkeypatch.setenv("SSPO_DATA_DIR", str(recipe_data_dir(tmp_path_factory, shared_data)))
    monkeypatch.setenv("SSPO_OUTPUT_DIR", str(tmp_path_factory.mktemp("outputs")))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert cli.main(args) == 0
    out = capsys.readouterr().out
    configs = [printed_config(run) for run in out.split("----- run ")[1:]]
    assert [c["trainer"]["experiment_name"] for c in configs] == [f"{experiment}__algo-{a}" for a in ALGOS]
    assert [c["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] for c in configs] == [
        LOSS.get(a, a) for a in ALGOS
    ]
    assert f"multirun: {len(ALGOS)}/{len(ALGOS)} run(s) succeeded" in out


def _write_run(path: Path, steps: int, monitor_prefix: str | None, offset: float) -> None:
    """A verl file-logger JSONL; ``monitor_prefix``: where the same-range clip fractions are logged (or none)."""
    with path.open("w") as f:
        for step in range(1, steps + 1):
            data = {"critic/score/mean": 0.1 * step + offset, "actor/pg_clipfrac": 0.02 + offset,
                    "actor/entropy": 1.0, "response_length/mean": 50.0}  # fmt: skip
            if monitor_prefix:
                data |= {f"{monitor_prefix}clipfrac_at_{g}": offset * k for k, g in
                         enumerate(("token", "subsentence", "sequence"), start=1)}  # fmt: skip
            f.write(json.dumps({"step": step, "data": data}) + "\n")


def test_report_puts_any_number_of_runs_side_by_side(tmp_path):
    """Eight runs: seven losses with the monitor, one older sspo run that logged the fractions itself, one
    run with no monitor; every run a table row, the monitor's curves in one panel."""
    from sspo.tools.report import make_report

    specs = []
    for i, algo in enumerate([*ALGOS, "old_sspo", "no_monitor"]):
        prefix = {"old_sspo": "actor/sspo/", "no_monitor": None}.get(algo, "actor/monitor/")
        _write_run(tmp_path / f"{algo}.jsonl", steps=4, monitor_prefix=prefix, offset=0.01 * (i + 1))
        specs.append(f"{algo}={tmp_path / f'{algo}.jsonl'}")
    result = make_report(specs, tmp_path / "report")

    rows = {r["run"]: r for r in result["rows"]}
    assert list(rows) == [*ALGOS, "old_sspo", "no_monitor"]
    assert rows["geo_mean"]["same-range clip @sequence"] == pytest.approx(0.04 * 3)
    assert rows["old_sspo"]["same-range clip @token"] == pytest.approx(0.08)
    assert all(v != v for k, v in rows["no_monitor"].items() if k.startswith("same-range"))  # NaN: not logged
    assert (tmp_path / "report" / "clip_by_granularity.png").stat().st_size > 0


def test_five_benchmark_table_puts_any_number_of_runs_side_by_side():
    from sspo.tools.evaluation import FIVE, score_groups, to_markdown

    runs = {
        algo: {b: score_groups({p: [p < i + 1, True] for p in range(10)}, b) for b in FIVE}
        for i, algo in enumerate(ALGOS)
    }
    table = to_markdown(runs)
    rows = [line for line in table.splitlines() if "pass@1 (avg@k)" in line]
    assert [r.split("|")[1].strip() for r in rows] == ALGOS
    assert rows[2].split("|")[-2].strip() == "65.0"  # gspo: (3/10 + 10/10) / 2 on each benchmark
