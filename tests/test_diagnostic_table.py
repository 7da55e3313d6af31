"""sspo.tools.diagnostic_table: one row per run and step, verl's metric values in their columns, gaps empty."""

from __future__ import annotations

import json
import math

from sspo.tools.diagnostic_table import diagnostic_rows, main


def write_log(path, steps):
    path.write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in steps.items()))
    return path


def test_rows_per_run_and_step_with_missing_metrics_as_nan(tmp_path, capsys):
    sspo = write_log(tmp_path / "sspo.jsonl", {
        1: {"critic/score/mean": 0.2, "actor/sspo/clipfrac_at_token": 0.3, "actor/sspo/clipfrac_at_sequence": 0.01,
            "actor/sspo/units_per_response": 9.5},
        2: {"critic/score/mean": 0.25, "actor/sspo/clipfrac_at_token": 0.4},
    })  # fmt: skip
    grpo = write_log(tmp_path / "grpo.jsonl", {1: {"critic/score/mean": 0.1, "actor/pg_clipfrac": 0.05}})
    rows = diagnostic_rows([f"sspo={sspo}", f"grpo={grpo}"])
    assert [(r["run"], r["step"]) for r in rows] == [("sspo", 1), ("sspo", 2), ("grpo", 1)]
    assert rows[0]["@token"] == 0.3 and rows[0]["@sequence"] == 0.01 and rows[0]["units/resp"] == 9.5
    assert rows[1]["@token"] == 0.4 and math.isnan(rows[1]["@sequence"])
    assert rows[2]["clipfrac (own range)"] == 0.05 and math.isnan(rows[2]["@token"])

    out = tmp_path / "table" / "diagnostic.md"
    assert main([f"sspo={sspo}", f"grpo={grpo}", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| run | step | reward |") and len(lines) == 2 + 3
    assert "| sspo | 2 | 0.25 |" in lines[3]


def test_a_run_without_training_steps_is_an_error(tmp_path, capsys):
    log = write_log(tmp_path / "val.jsonl", {0: {"val-core/gsm8k/acc/mean@1": 0.1}})
    assert main([str(log), "--out", str(tmp_path / "t.md")]) == 2
    assert "no training step" in capsys.readouterr().err


def test_varied_groups_counts_prompts_whose_samples_got_different_rewards(tmp_path):
    log = write_log(tmp_path / "run.jsonl", {1: {"critic/score/mean": 0.5}, 2: {"critic/score/mean": 0.6}})
    dumps = tmp_path / "rollouts"
    dumps.mkdir()
    samples = [
        ("p1", 0.0),
        ("p1", 0.25),
        ("p2", 1.0),
        ("p2", 1.0),
        ("p3", 0.0),
        ("p3", 0.0),
        ("p4", 0.5),
        ("p4", 0),
    ]
    (dumps / "1.jsonl").write_text(
        "".join(json.dumps({"input": p, "output": "x", "score": s}) + "\n" for p, s in samples)
    )
    rows = diagnostic_rows([f"sspo={log}"], {"sspo": dumps})
    assert rows[0]["varied groups"] == 0.5  # p1 and p4 of four prompts
    assert math.isnan(rows[1]["varied groups"])  # no dump for step 2
    assert "varied groups" not in diagnostic_rows([f"sspo={log}"])[0]


def test_by_lag_sums_each_buckets_counts_over_the_run(tmp_path, capsys):
    m = "actor/monitor/"
    log = write_log(tmp_path / "async.jsonl", {
        1: {"critic/score/mean": 0.2, f"{m}lag0/tokens": 30.0, f"{m}lag0/clipped_at_token": 3.0,
            f"{m}lag0/clipped_at_subsentence": 6.0, f"{m}lag0/clipped_at_sequence": 0.0, f"{m}lag1/tokens": 0.0},
        2: {"critic/score/mean": 0.3, f"{m}lag0/tokens": 10.0, f"{m}lag0/clipped_at_token": 1.0,
            f"{m}lag0/clipped_at_subsentence": 2.0, f"{m}lag0/clipped_at_sequence": 4.0, f"{m}lag1/tokens": 40.0,
            f"{m}lag1/clipped_at_token": 2.0, f"{m}lag1/clipped_at_subsentence": 8.0, f"{m}lag1/clipped_at_sequence": 20.0},
    })  # fmt: skip
    out = tmp_path / "lag.md"
    assert main([f"async={log}", "--by-lag", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    header = "| run | lag | token share | @token | @token se | @subsentence | @subsentence se | @sequence | @sequence se |"
    assert lines[0] == header and len(lines) == 4
    # lag 0: 40 tokens of 80, 4 / 40 cut per token, 8 / 40 per subsentence, 4 / 40 per sequence; per step the token
    # fractions are 0.1 and 0.1 (se 0), the sequence ones 0 and 0.4 (se = stdev 0.2828 / sqrt 2 = 0.2)
    assert lines[2].startswith("| async | 0 | 0.5 | 0.1 | 0 | 0.2 | 0 | 0.1 | 0.2 |"), lines[2]
    # lag 1: only step 2 had such samples: no standard error from one step (an empty cell)
    assert lines[3].startswith("| async | 1 | 0.5 | 0.05 |  | 0.2 |  | 0.5 |  |"), lines[3]  # empty: NaN
    plain = write_log(tmp_path / "old.jsonl", {1: {"critic/score/mean": 0.1}})
    assert main([str(plain), "--by-lag", "--out", str(tmp_path / "x.md")]) == 2
    assert "lag<k>/tokens" in capsys.readouterr().err
