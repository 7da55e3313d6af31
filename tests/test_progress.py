"""The demo's output layer (sspo.tools.progress, report's terminal view) on a recorded verl console.

tests/data/verl_console_sspo_cpu.log holds lines of a real `sspo_cpu` run (verl 0.9.1, vLLM-CPU, Ray's
colour codes and actor prefixes kept): the driver's pre-flight, Ray's start, the TaskRunner's stage lines,
TransferQueue's thread warnings, steps 0-5 and step 10 with their validations; the
`[sspo] run ...` line is the one sspo-train prints first (added at its place in the recording).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sspo.launch import cli
from sspo.tools import progress

FIXTURE = Path(__file__).parent / "data" / "verl_console_sspo_cpu.log"
# the device part of every CPU preset (cluster=cpu and cpu_dp2 compose it; the GPU engine row uses it alone)
CPU_PRESET = Path(__file__).resolve().parents[1] / "recipe" / "config" / "cluster" / "cpu_device.yaml"


def _lines() -> list[str]:
    return FIXTURE.read_text(encoding="utf-8").splitlines(keepends=True)


def _fed_view() -> progress.RowView:
    view = progress.RowView("sspo_cpu", started=0.0)
    for i, line in enumerate(_lines()):
        view.feed(line, now=float(i))
    return view


def test_parse_step_line_reads_verl_console_metrics_through_ray_prefix_and_colours():
    step_lines = [line for line in _lines() if "step:1 - " in line]
    assert step_lines and step_lines[0].startswith("\x1b[36m(TaskRunnerV1")
    step, metrics = progress.parse_step_line(step_lines[0])
    assert step == 1
    assert metrics["critic/score/mean"] == pytest.approx(0.3229166567325592)
    assert metrics["num_turns/min"] == 2.0  # np.int32(2)
    assert "timing_s/step" in metrics
    assert progress.parse_step_line("(TaskRunnerV1 pid=1) Total training steps: 30") is None


def test_view_names_the_startup_stages_in_order_and_tracks_the_run():
    view = _fed_view()
    assert [label for label, _ in view.stages] == [
        "pre-flight", "Ray", "trainer", "actor", "rollout server", "validation",
    ]
    assert view.total == 30 and view.run_dir == "/tmp/demo23/out/sspo/sspo_cpu"
    assert view.step == 10
    assert [s for s, _ in view.val_acc] == [0, 10]
    assert view.val_acc[-1][1] == pytest.approx(0.4166666666666667)
    assert [s for s, _ in view.reward] == [1, 2, 3, 4, 5, 10]
    line = view.render(now=100.0)
    for part in ("step 10/30", "reward 0.54 (pi9, step mean)", "val acc 0.42 (pi10)", "clip 0.", "s/step", "ETA"):
        assert part in line, (part, line)
    assert "\n" not in line and len(line) < 140


def test_view_before_the_first_step_shows_the_stages_passed_and_the_next():
    view = progress.RowView("grpo_cpu", started=0.0)
    for i, line in enumerate(_lines()):
        if "step:0 - " in line:
            break
        view.feed(line, now=float(i))
    line = view.render(now=60.0)
    assert line.startswith("grpo_cpu: starting [1m00s]")
    assert "rollout server" in line and line.endswith("validation")
    assert not view.training


def test_eta_is_the_steps_to_go_at_the_recent_pace():
    view = progress.RowView("x", total=30)
    view.step, view.step_times = 10, [100.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert view.seconds_per_step() == pytest.approx(2.0)
    assert view.eta() == pytest.approx(40.0)
    view.val_acc, view.testing_times = [(0, 0.3), (10, 0.4)], [6.0]  # validations at 20 and 30 to come
    assert view.eta() == pytest.approx(40.0 + 2 * 6.0)


def test_error_report_names_the_error_the_log_and_how_to_resume(tmp_path):
    lines = _lines() + [
        "\x1b[36m(TaskRunnerV1 pid=21860)\x1b[0m Traceback (most recent call last):\n",
        '  File "x.py", line 1, in <module>\n',
        "ray.exceptions.RayTaskError(RuntimeError): boom in the actor\n",
        "RuntimeError: boom in the actor\n",
    ]
    out = progress.error_report(lines, tmp_path / "console.log", tail=6)
    assert out[0] == "error: RuntimeError: boom in the actor"
    assert sum(line.startswith("  | ") for line in out) == 6
    assert any("step:10 - " in line for line in out)
    assert max(len(line) for line in out) < 200  # verl's 5 KB metric lines cut
    assert f"full log: {tmp_path / 'console.log'}" in out
    assert out[-1] == progress.RESUME_HINT


def _replay(tmp_path: Path, code: int, extra: str = "") -> list[str]:
    """A child that prints the fixture (run directory: tmp_path) and exits with ``code``."""
    text = FIXTURE.read_text(encoding="utf-8").replace("/tmp/demo23/out/sspo/sspo_cpu", str(tmp_path / "run"))
    (tmp_path / "replay.log").write_text(text + extra, encoding="utf-8")
    script = f"import sys; sys.stdout.write(open({str(tmp_path / 'replay.log')!r}).read()); sys.exit({code})"
    return [sys.executable, "-c", script]


def test_run_keeps_the_full_console_in_the_log_and_the_screen_short(tmp_path):
    screen = io.StringIO()
    code = progress.run_with_progress(_replay(tmp_path, 0), "sspo_cpu", live=False, stream=screen)
    assert code == 0
    log = (tmp_path / "run" / "console.log").read_text(encoding="utf-8")
    assert log.splitlines()[0].startswith("===== ")  # the header; then every line of the child, unchanged
    assert log.split("\n", 1)[1] == (tmp_path / "replay.log").read_text(encoding="utf-8")
    shown = screen.getvalue().splitlines()
    assert len(shown) <= 12, shown
    assert shown[0] == f"sspo_cpu: full console -> {tmp_path / 'run' / 'console.log'}"
    assert any("Ray done" in s for s in shown) and any("started in" in s for s in shown)
    assert any("step 10/30" in s and "val acc 0.42" in s for s in shown)  # printed at the validation
    assert shown[-1].startswith("sspo_cpu: 10/30 steps, reward 0.32 -> ")
    assert not any("target_num_threads" in s or "UserWarning" in s for s in shown)


def test_run_failure_shows_the_error_the_log_tail_and_the_resume_hint(tmp_path):
    screen = io.StringIO()
    crash = "Traceback (most recent call last):\nRuntimeError: the rollout server died\n"
    code = progress.run_with_progress(_replay(tmp_path, 3, crash), "sspo_cpu", live=False, stream=screen)
    assert code == 3
    shown = screen.getvalue()
    assert "error: RuntimeError: the rollout server died" in shown
    assert f"full log: {tmp_path / 'run' / 'console.log'}" in shown
    assert progress.RESUME_HINT in shown
    assert "RuntimeError: the rollout server died" in (tmp_path / "run" / "console.log").read_text()


def test_live_screen_redraws_one_line_in_place(tmp_path):
    screen = io.StringIO()
    progress.run_with_progress(_replay(tmp_path, 0), "sspo_cpu", live=True, stream=screen)
    text = screen.getvalue()
    assert "\r\x1b[K" in text
    permanent = text.replace("\r\x1b[K", "\n").split("\n")
    final_lines = [p for p in text.split("\n") if p]
    assert len(final_lines) <= 5, final_lines  # log path, "started in", the summary (the live line erased)
    assert any("step 10/30" in p for p in permanent)


def test_sspo_train_shows_the_view_on_a_terminal_unless_told_otherwise(monkeypatch):
    parser = cli.build_parser()
    monkeypatch.delenv("VERBOSE", raising=False)
    assert cli.wants_progress(parser.parse_args(["experiment=sspo_cpu"]), isatty=True)
    assert not cli.wants_progress(parser.parse_args(["experiment=sspo_cpu"]), isatty=False)
    assert cli.wants_progress(parser.parse_args(["--progress", "on", "experiment=sspo_cpu"]), isatty=False)
    assert not cli.wants_progress(parser.parse_args(["experiment=sspo_cpu", "--progress", "off"]), isatty=True)
    assert not cli.wants_progress(parser.parse_args(["--dry-run", "experiment=sspo_cpu"]), isatty=True)
    monkeypatch.setenv("VERBOSE", "1")
    assert not cli.wants_progress(parser.parse_args(["experiment=sspo_cpu"]), isatty=True)


def test_cpu_preset_silences_the_known_harmless_warnings_at_their_source():
    env = OmegaConf.load(CPU_PRESET).ray_kwargs.ray_init.runtime_env.env_vars
    assert env.TQ_NUM_THREADS == "1"
    probe = textwrap.dedent(
        """
        import warnings
        for name in ("torchtitan", "veomni", "automodel", "mindspeed", "megatron"):
            warnings.warn(f"{name} engine is not available: ModuleNotFoundError('x')", UserWarning)
        warnings.warn("Disabled critic as algorithm.adv_estimator != gae. If it is not intended...", UserWarning)
        warnings.warn("something else", UserWarning)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, "PYTHONWARNINGS": env.PYTHONWARNINGS},
        capture_output=True, text=True, check=True, timeout=120,
    )
    assert "engine is not available" not in result.stderr and "Disabled critic" not in result.stderr
    assert "something else" in result.stderr  # other warnings still show


def test_rows_side_by_side_each_log_their_own_console_and_end_with_their_summary(tmp_path):
    screen = io.StringIO()
    rows = []
    for name in ("grpo_cpu", "gspo_cpu"):
        (tmp_path / name).mkdir()
        rows.append(progress.RowSpec(name, _replay(tmp_path / name, 0 if name == "grpo_cpu" else 2)))
    codes = progress.run_rows(rows, jobs=2, live=True, stream=screen)
    assert codes == {"grpo_cpu": 0, "gspo_cpu": 2}
    for name in ("grpo_cpu", "gspo_cpu"):
        assert "step:10 - " in (tmp_path / name / "run" / "console.log").read_text(encoding="utf-8")
    text = screen.getvalue()
    assert "\x1b[1A\x1b[K" in text  # two live lines redrawn together
    assert "grpo_cpu: 10/30 steps" in text and "error: " in text and progress.RESUME_HINT in text


def test_main_runs_a_command_template_once_per_row(tmp_path, capsys):
    script = "import sys; print('[sspo] run ' + sys.argv[1] + ': ' + sys.argv[2] + ' (3 steps)')"
    cmd = [sys.executable, "-c", script, "{row}", str(tmp_path / "{row}")]
    code = progress.main(["--jobs", "2", "--row", "a", "--row", "b", "--live", "off", "--", *cmd])
    assert code == 0
    assert (tmp_path / "a" / "console.log").read_text().endswith(f"[sspo] run a: {tmp_path / 'a'} (3 steps)\n")
    assert (tmp_path / "b" / "console.log").is_file()
    assert "a: 0/3 steps" in capsys.readouterr().out


ROW_SCRIPT = """
import json, pathlib, sys, time
name, run, mode, peers = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], [pathlib.Path(p) for p in sys.argv[4:]]
run.mkdir(parents=True, exist_ok=True)
# what the other rows had done when this one started (each marker is written before the line that shows it)
seen = sorted(f"{p.name}/{m}" for p in peers for m in ("started", "training", "ended") if (p / m).exists())
(run / "seen_at_start").write_text(json.dumps(seen))
(run / "started").touch()
print(f"[sspo] run {name}: {run} (2 steps)", flush=True)
if mode == "fail":
    (run / "ended").touch()
    sys.exit("RuntimeError: start-up failed")
if mode.startswith("wait:"):  # the start-up lasts until that row has started too (bounded: a hang fails the row)
    other, deadline = pathlib.Path(mode[5:]) / "started", time.monotonic() + 120
    while not other.exists():
        if time.monotonic() > deadline:
            sys.exit(f"RuntimeError: {other} never appeared: the rows did not run at the same time")
        time.sleep(0.05)
(run / "training").touch()
print("step:1 - critic/score/mean:0.5 - timing_s/step:0.6", flush=True)
print("step:2 - critic/score/mean:0.6 - timing_s/step:0.6", flush=True)
(run / "ended").touch()
"""


def _row(tmp_path: Path, name: str, mode: str = "ok") -> progress.RowSpec:
    peers = [str(tmp_path / n) for n in "abc" if n != name]
    return progress.RowSpec(name, [sys.executable, "-c", ROW_SCRIPT, name, str(tmp_path / name), mode, *peers])


def _seen(tmp_path: Path, name: str) -> set[str]:
    import json

    return set(json.loads((tmp_path / name / "seen_at_start").read_text()))


def test_staggered_rows_start_once_the_running_ones_train(tmp_path):
    """--stagger: a row's start-up waits until every running row has logged a training step (the start-ups,
    mostly one core, then overlap other rows' steps). Judged by what each row saw of the others when it
    started (markers written before the lines that show them), not by clocks."""
    rows = [_row(tmp_path, n) for n in "abc"]
    codes = progress.run_rows(rows, jobs=2, live=False, stream=io.StringIO(), stagger=True)
    assert codes == {"a": 0, "b": 0, "c": 0}
    assert _seen(tmp_path, "a") == set()
    assert "a/training" in _seen(tmp_path, "b")
    assert "b/training" in _seen(tmp_path, "c")
    assert {"a/ended", "b/ended"} & _seen(tmp_path, "c")  # at most 2 at once


def test_without_stagger_jobs_rows_start_at_once(tmp_path):
    """Without --stagger, ``jobs`` rows start together: a and b each hold their start-up until the other has
    started (they finish only if both run at once), and c waits for a free slot."""
    rows = [_row(tmp_path, "a", f"wait:{tmp_path / 'b'}"), _row(tmp_path, "b", f"wait:{tmp_path / 'a'}"),
            _row(tmp_path, "c")]  # fmt: skip
    codes = progress.run_rows(rows, jobs=2, live=False, stream=io.StringIO(), stagger=False)
    assert codes == {"a": 0, "b": 0, "c": 0}  # one at a time, the first would give up waiting (exit 1)
    assert {"a/ended", "b/ended"} & _seen(tmp_path, "c")  # at most 2 at once


def test_a_row_failing_in_its_startup_does_not_hold_back_the_staggered_rows(tmp_path):
    rows = [_row(tmp_path, "a", "fail"), _row(tmp_path, "b")]
    screen = io.StringIO()
    codes = progress.run_rows(rows, jobs=2, live=False, stream=screen, stagger=True)
    assert codes == {"a": 1, "b": 0}
    assert "RuntimeError: start-up failed" in screen.getvalue() and "b: 2/2 steps" in screen.getvalue()
