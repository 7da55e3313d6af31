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


# ---------------------------------------------------------------- like with like, intervals, seeds (issue 32)
def _dump(folder, step: int, outcomes: dict[str, list[float]], field: str) -> None:
    """One verl dump ``<step>.jsonl`` as ``RayPPOTrainer._write_generations`` writes it: a row per sample with
    its prompt ``input``, ``output``, ``gts``, ``score``, ``step`` and the reward's extra infos (``acc``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"input": prompt, "output": "\\boxed{1}", "gts": "1", "score": float(v), "step": step,
             **({"acc": bool(v)} if field == "acc" else {"uid": f"{prompt}_{i}_0"})}
            for prompt, values in outcomes.items() for i, v in enumerate(values)]  # fmt: skip
    (folder / f"{step}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run_dir(tmp_path, name: str, acc_end: float = 0.5, with_dumps: bool = False):
    """A run folder: verl file-logger metrics (reward at steps 1-6, validation at steps 0 and 6), and with
    ``with_dumps`` verl's validation and rollout dumps beside them."""
    run = tmp_path / name
    run.mkdir()
    lines = [{"step": 0, "data": {"val-core/tiny_add/acc/mean@2": 0.3}}]
    lines += [{"step": s, "data": {"critic/score/mean": 0.1 * s}} for s in range(1, 7)]
    lines[-1]["data"]["val-core/tiny_add/acc/mean@2"] = acc_end
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if with_dumps:
        _dump(run / "validation_generations", 0, {f"q{i}": [1.0, 0.0] for i in range(4)}, "acc")
        _dump(run / "validation_generations", 6, {f"q{i}": [1.0, 1.0] for i in range(4)}, "acc")
        _dump(run / "rollouts", 1, {"q0": [0.0, 0.0], "q1": [1.0, 1.0]}, "score")
        _dump(run / "rollouts", 6, {"q2": [1.0, 1.0], "q3": [1.0, 1.0]}, "score")
    return run


def test_start_and_end_pair_by_policy_and_intervals_come_from_the_dumps(tmp_path):
    run = _run_dir(tmp_path, "sspo", with_dumps=True)
    result = make_report([f"sspo={run}"], tmp_path / "report")
    row, ends = result["rows"][0], result["ends"]["sspo"]
    # start: pi0 for both (validation at step 0, rollouts of step 1); end: the validation after step 6 (pi6),
    # the rollouts of step 6 (drawn from pi5)
    assert (row["reward policies"], row["acc policies"]) == ("pi0 -> pi5", "pi0 -> pi6")
    acc = ends["accuracy"]
    assert (acc.start.estimate, acc.start.low, acc.start.high) == pytest.approx((0.5, 0.5, 0.5))
    assert (acc.change.estimate, acc.change.low, acc.change.high) == pytest.approx((0.5, 0.5, 0.5))
    assert acc.change.note == "paired by problem"  # the same 4 problems at both ends, each up by 0.5
    reward = ends["reward"]  # step 1: problems right 0 and 1 of the time -> 0.5 [0, 1]; other problems at step 6
    assert (reward.start.estimate, reward.start.low, reward.start.high) == pytest.approx((0.5, 0.0, 1.0))
    assert reward.change.note.startswith("unpaired")
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| sspo | validation accuracy | pi0 -> pi6 | 0.50 [0.50, 0.50] | 1.00 [1.00, 1.00] | +0.50 [+0.50, +0.50] |" in summary
    screen = report.terminal_report(result, result["runs"])
    assert "pi0 -> pi5" in screen and "+0.50 [+0.50, +0.50]" in screen


def test_without_dumps_the_numbers_are_shown_without_an_interval(tmp_path):
    run = _run_dir(tmp_path, "grpo")
    result = make_report([f"grpo={run}"], tmp_path / "report")
    row, acc = result["rows"][0], result["ends"]["grpo"]["accuracy"]
    assert row["reward start"] == pytest.approx(0.1) and row["reward end"] == pytest.approx(0.6)  # steps 1 and 6
    assert row["acc start"] == pytest.approx(0.3) and row["acc end"] == pytest.approx(0.5)
    assert not acc.change.computable and "per-step means only" in acc.change.note
    assert "| grpo | validation accuracy | pi0 -> pi6 | 0.30 | 0.50 | +0.20 (no interval" in (
        tmp_path / "report" / "summary.md"
    ).read_text()


def test_runs_over_seeds_are_aggregated_and_rows_compared_seed_by_seed(tmp_path):
    ends = {"grpo": (0.4, 0.5, 0.6), "sspo": (0.5, 0.7, 0.6)}  # validation accuracy after step 6, seeds 1-3
    specs = [f"{row}__seed-{seed}={_run_dir(tmp_path, f'{row}{seed}', acc_end=value)}"
             for row, values in ends.items() for seed, value in zip((1, 2, 3), values, strict=True)]  # fmt: skip
    result = make_report(specs, tmp_path / "report")
    table = {(r[0], r[2]): r for r in result["seeds"]}
    grpo = table[("grpo", "validation accuracy end")]
    assert grpo[1] == "1,2,3" and grpo[3].startswith("0.50 [0.40, ") and grpo[4].startswith("0.50 [")
    # sspo - grpo on each seed: +0.1, +0.2, 0.0 -> mean +0.10
    diff = table[("sspo - grpo", "validation accuracy end")]
    assert diff[1] == "3 common seed(s)" and diff[3].startswith("+0.10 [")
    change = table[("sspo - grpo", "validation accuracy change")]  # the start is 0.3 in every run
    assert change[3].startswith("+0.10 [")
    assert "## Across seeds" in (tmp_path / "report" / "summary.md").read_text()


def test_a_seed_run_without_a_measure_is_left_out_of_that_measure_not_an_error():
    # seed 1 never validated (e.g. it stopped before its first validation); seeds 2 and 3 did
    def ends(measure: str, start: float, end: float) -> report.stats.Endpoints:
        interval = report.stats.Interval
        return report.stats.Endpoints(measure, 0, 6, interval(start), interval(end), interval(end - start))

    reward = ends("training reward", 0.1, 0.3)
    runs = {"sspo__seed-1": {"reward": reward}}
    for seed, value in ((2, 0.4), (3, 0.6)):
        runs[f"sspo__seed-{seed}"] = {"reward": reward, "accuracy": ends("validation accuracy", 0.2, value)}
    table = {(r[0], r[2]): r for r in report.seed_comparison(runs)}
    assert table[("sspo", "validation accuracy end")][1] == "2,3"
    assert table[("sspo", "validation accuracy end")][3].startswith("0.50 [0.40, ")
    assert table[("sspo", "training reward end")][1] == "1,2,3"


def test_the_seeds_table_counts_the_seeds_that_rose_beyond_their_own_interval():
    interval = report.stats.Interval

    def ends(low: float, high: float, computable: bool = True) -> dict[str, report.stats.Endpoints]:
        change = interval((low + high) / 2, low, high) if computable else interval(0.1, note="per-step means only")
        return {"accuracy": report.stats.Endpoints("validation accuracy", 0, 18, interval(0.3), interval(0.4), change)}

    # seed 1 rose beyond its interval, seed 2's touches 0 (not beyond), seed 3's lies above 0, seed 4 fell
    runs = {"sspo__seed-1": ends(0.02, 0.2), "sspo__seed-2": ends(0.0, 0.2), "sspo__seed-3": ends(0.05, 0.15),
            "sspo__seed-4": ends(-0.2, -0.01), "grpo__seed-1": ends(0.01, 0.1), "grpo__seed-2": ends(0, 0, False),
            "grpo__seed-3": {}}  # seed 3 never validated: left out of the count  # fmt: skip
    table = {(r[0], r[2]): r for r in report.seed_comparison(runs)}
    assert table[("sspo", "validation accuracy change")][5] == "2/4"
    assert table[("grpo", "validation accuracy change")][5] == "1/1 (1 seed(s) without an interval: per-step means only)"
    assert table[("grpo", "validation accuracy change")][1] == "1,2"
    assert table[("sspo", "validation accuracy end")][5] == ""  # an end value has no "rose"
    assert "| seeds above 0 (own CI) |" in report.seed_markdown(list(table.values()))


def test_the_demo_screens_row_summary_pairs_by_policy_with_intervals_from_the_run_directory(tmp_path):
    from sspo.tools.progress import RowView

    run = _run_dir(tmp_path, "sspo_cpu", with_dumps=True)
    view = RowView("sspo_cpu", total=6, started=0.0)
    view.feed(f"[sspo] run sspo_cpu: {run} (6 steps)\n")
    view.feed("step:0 - val-core/tiny_add/acc/mean@2:0.5\n")
    for step in range(1, 7):
        view.feed(f"step:{step} - critic/score/mean:{0.1 * step}" + (" - val-core/tiny_add/acc/mean@2:1.0" if step == 6 else "") + "\n")
    line = view.summary(now=75.0)
    # the same numbers and intervals as the report's (the dumps: 0.5 [0, 1] at step 1, 1.0 at step 6)
    assert line == ("sspo_cpu: 6/6 steps, reward 0.50 [0.00, 1.00] -> 1.00 [1.00, 1.00] (+0.50 [+0.00, +1.00]; "
                    "pi0 -> pi5), val acc 0.50 [0.50, 0.50] -> 1.00 [1.00, 1.00] (+0.50 [+0.50, +0.50]; pi0 -> pi6), "
                    "in 1m15s")
    bare = RowView("grpo_cpu", total=6, started=0.0)  # no run directory: the console's per-step means alone
    for step in range(1, 7):
        bare.feed(f"step:{step} - critic/score/mean:{0.1 * step}\n")
    assert bare.summary(now=5.0) == (
        "grpo_cpu: 6/6 steps, reward 0.10 -> 0.60 (+0.50; pi0 -> pi5; no interval: per-step means), in 5s"
    )
