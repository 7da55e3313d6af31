"""sspo.tools.report on logs written by verl's OWN loggers (file, TensorBoard, console) and on bad input."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from sspo.tools import report
from sspo.tools.report import ReportError, load_run, main, make_report

STEPS = 6


def _metrics(step: int, algo_offset: float) -> dict:
    """What verl's trainer logs per step (names from metric_utils / trainer_base), numpy scalars included."""
    return {
        "critic/score/mean": np.float64(0.1 * step + algo_offset),
        "actor/pg_clipfrac": 0.01 * (1 + algo_offset),
        "actor/entropy": np.float32(2.0 - 0.1 * step),
        "response_length/mean": 100.0 + step,
        "actor/pg_loss": -0.5,
        "timing_s/step": 3.0,
        "training/global_step": step,
        "some/list": [1, 2],  # non-scalars are ignored, as verl's own loggers do
    }


def _val(step: int) -> dict:
    return {"val-core/math500/acc/mean@1": 0.2 + 0.01 * step, "val-core/aime24/acc/mean@1": 0.1 + 0.01 * step}


def _write_with_verl_file_logger(tmp_path, monkeypatch, name: str, offset: float):
    from verl.utils.tracking import FileLogger

    path = tmp_path / f"{name}.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    logger = FileLogger(project_name="sspo", experiment_name=name)
    for step in range(1, STEPS + 1):
        logger.log(data=_metrics(step, offset), step=step)
        if step % 3 == 0:
            logger.log(data=_val(step), step=step)
    logger.finish()
    return path


def test_reads_verl_file_logger_jsonl(tmp_path, monkeypatch):
    path = _write_with_verl_file_logger(tmp_path, monkeypatch, "grpo_run", 0.0)
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"step", "data"}  # verl's format, as written by verl itself
    run = load_run(str(path))
    assert run.name == "grpo_run"
    key, steps, values = run.series("reward")
    assert key == "critic/score/mean" and steps == list(range(1, STEPS + 1))
    assert values == pytest.approx([0.1 * s for s in steps])
    # validation accuracy: the mean over the data sources' val-core acc
    key, steps, values = run.series("accuracy")
    assert steps == [3, 6] and values == pytest.approx([0.15 + 0.03, 0.15 + 0.06])
    assert "some/list" not in run.metrics


def test_reads_verl_tensorboard_and_console_logs(tmp_path, monkeypatch, capsys):
    from verl.utils.logger.aggregate_logger import LocalLogger
    from verl.utils.tracking import _TensorboardAdapter

    tb_dir = tmp_path / "tb" / "gspo"
    monkeypatch.setenv("TENSORBOARD_DIR", str(tb_dir))
    tb = _TensorboardAdapter("sspo", "gspo")
    console = LocalLogger(print_to_console=True)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print("(TaskRunner pid=123) some unrelated line: with a colon")
        for step in range(1, STEPS + 1):
            data = {k: v for k, v in _metrics(step, 0.5).items() if not isinstance(v, list)}
            tb.log(data=data, step=step)
            console.log(data=data, step=step)
    tb.finish()
    console_log = tmp_path / "console.log"
    console_log.write_text(buf.getvalue())

    for spec in (str(tb_dir), f"gspo_console={console_log}"):
        run = load_run(spec)
        _, steps, values = run.series("reward")
        assert steps == list(range(1, STEPS + 1))
        assert values == pytest.approx([0.1 * s + 0.5 for s in steps], rel=1e-6)
        _, _, entropy = run.series("entropy")
        assert entropy == pytest.approx([2.0 - 0.1 * s for s in steps], rel=1e-6)
    assert load_run(f"gspo_console={console_log}").name == "gspo_console"


def test_report_renders_pngs_and_summary(tmp_path, monkeypatch):
    a = _write_with_verl_file_logger(tmp_path, monkeypatch, "grpo", 0.0)
    b = _write_with_verl_file_logger(tmp_path, monkeypatch, "sspo", 0.2)
    out = tmp_path / "report"
    assert main([str(a), f"SSPO={b}", "--out", str(out)]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(
        [
            "overview.png",
            "reward.png",
            "accuracy.png",
            "clip_fraction.png",
            "entropy.png",
            "response_length.png",
        ]
    )
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    summary = (out / "summary.md").read_text()
    assert "| grpo |" in summary and "| SSPO |" in summary
    rows = make_report([str(a), f"SSPO={b}"], out)["rows"]
    # start/end = mean of the first/last step (6 steps -> window of 1)
    assert rows[0]["reward start"] == pytest.approx(0.1) and rows[0]["reward end"] == pytest.approx(0.6)
    assert rows[1]["clip frac (mean)"] == pytest.approx(0.012)
    assert math.isnan(rows[0]["unit clip frac (sspo)"])


def test_same_range_clip_fractions_by_granularity_panel_and_means(tmp_path):
    """SSPO's actor/sspo/clipfrac_at_* metrics: their own panel (6th slot of the overview) and summary columns;
    runs without them (here verl's gspo) get empty cells."""
    at = {"token": 0.03, "subsentence": 0.02, "sequence": 0.0}
    sspo_log, gspo_log = tmp_path / "sspo.jsonl", tmp_path / "gspo.jsonl"
    with sspo_log.open("w") as f:
        for step in range(1, STEPS + 1):
            data = {**_metrics(step, 0.0), **{f"actor/sspo/clipfrac_at_{g}": v * step for g, v in at.items()}}
            f.write(
                json.dumps({"step": step, "data": {k: float(v) for k, v in data.items() if k != "some/list"}})
            )
            f.write("\n")
    gspo_log.write_text(
        "".join(json.dumps({"step": s, "data": {"critic/score/mean": 0.1 * s}}) + "\n" for s in range(1, 4))
    )
    out = tmp_path / "report"
    result = make_report([str(sspo_log), str(gspo_log)], out)
    assert (out / "clip_by_granularity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["run"]: r for r in result["rows"]}
    mean_step = sum(range(1, STEPS + 1)) / STEPS
    for g, v in at.items():
        assert rows["sspo"][f"same-range clip @{g}"] == pytest.approx(v * mean_step)
        assert math.isnan(rows["gspo"][f"same-range clip @{g}"])
    summary = (out / "summary.md").read_text()
    assert "same-range clip @subsentence" in summary and "ONE clip range" in summary


def test_bad_input_is_named(tmp_path, monkeypatch, capsys):
    with pytest.raises(ReportError, match="does not exist"):
        load_run(str(tmp_path / "missing"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "data": {"critic/score/mean": 1}}\nnot json\n')
    with pytest.raises(ReportError, match=r"bad.jsonl:2: not JSON"):
        load_run(str(bad))
    nostep = tmp_path / "nostep.jsonl"
    nostep.write_text('{"data": {}}\n')
    with pytest.raises(ReportError, match="with a 'step'"):
        load_run(str(nostep))
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("hello\nstep:1 - foo:1\n")
    with pytest.raises(ReportError, match="no known metric"):
        load_run(str(unrelated))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(ReportError, match="pass the metrics file itself"):
        load_run(str(empty_dir))
    a = _write_with_verl_file_logger(tmp_path, monkeypatch, "same", 0.0)
    with pytest.raises(ReportError, match="share a name"):
        make_report([str(a), str(a)], tmp_path / "out")
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_text_chart_places_each_run_and_marks_overlaps():
    chart = report.text_chart({"up": ([1, 2, 3], [0.0, 0.5, 1.0]), "down": ([1, 2, 3], [1.0, 0.5, 0.0])},
                              width=21, height=5)
    rows = chart.splitlines()
    assert rows[0].startswith("  1.00 |x") and rows[0].endswith("o")  # down starts high, up ends high
    assert rows[4].startswith("  0.00 |o") and rows[4].endswith("x")
    assert rows[2][8 + 10] == "+"  # both at 0.5 at step 2 (after the 8-character axis)
    assert "o up" in rows[-1] and "x down" in rows[-1] and "+ overlap" in rows[-1]
    assert report.text_chart({"empty": ([], [])}) == "(no data to chart)"
    assert report._moving_mean([0.0, 1.0, 2.0, 3.0], 2) == [0.0, 0.5, 1.5, 2.5]


def test_terminal_table_shows_start_to_end():
    nan = float("nan")
    rows = [
        {"run": "sspo", "last step": 30, "reward start": 0.3, "reward end": 0.6, "acc start": 0.1, "acc end": 0.25,
         "clip frac (mean)": 0.0412},
        {"run": "grpo", "last step": 12, "reward start": 0.3, "reward end": 0.45, "acc start": nan, "acc end": nan,
         "clip frac (mean)": nan},  # no validation, no clip fraction logged: "-" cells
    ]  # fmt: skip
    assert report.terminal_table(rows).splitlines() == [
        "run        steps  training reward  validation acc   clip frac",
        "-" * 61,
        "sspo          30  0.30 -> 0.60     0.10 -> 0.25         0.041",
        "grpo          12  0.30 -> 0.45     -                        -",
    ]
