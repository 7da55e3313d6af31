"""The tools' CLIs: output paths made or refused BEFORE the work; no CLI does nothing or ignores a flag in silence.

Class by class: every flag that names an output (evaluation score --markdown/--csv and generate --out, report
--out, diagnostic_table --out, tiny_task/real_lm_assets --out) into a missing folder is made, under a file
refused in one line (exit 2, no traceback) before any input is read; data with nothing selected or a template
its kept files do not hold is refused; report says which values it left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sspo.tools.outputs import OutputPathError, output_file, output_folder


def _generations(path: Path) -> Path:
    row = {"benchmark": "my_bench", "index": 0, "response": "\\boxed{1}", "ground_truth": "1"}
    path.write_text(json.dumps(row) + "\n")
    return path


def _metrics(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"step": i + 1, "data": d}) + "\n" for i, d in enumerate(rows)))
    return path


@pytest.fixture
def blocker(tmp_path) -> Path:
    """A plain file: outputs under it cannot be made."""
    path = tmp_path / "a_file"
    path.write_text("x")
    return path


def test_output_helpers_make_parents_and_refuse_files_in_the_way(tmp_path, blocker):
    assert output_file(tmp_path / "new" / "deeper" / "t.md", "--x") == tmp_path / "new" / "deeper" / "t.md"
    assert (tmp_path / "new" / "deeper").is_dir() and not (tmp_path / "new" / "deeper" / "t.md").exists()
    assert output_folder(tmp_path / "f" / "g", "--out").is_dir()
    with pytest.raises(OutputPathError, match=f"--x {blocker}/t.md lies under the file {blocker}"):
        output_file(blocker / "t.md", "--x")
    with pytest.raises(OutputPathError, match=f"--out {blocker}/sub lies under the file {blocker}"):
        output_folder(blocker / "sub", "--out")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        output_folder(blocker, "--out")
    with pytest.raises(OutputPathError, match="is a folder: pass a file path"):
        output_file(tmp_path, "--csv")


@pytest.mark.parametrize("flag", ["--markdown", "--csv"])
def test_score_outputs_under_a_file_are_refused_before_any_run_is_read(tmp_path, blocker, capsys, flag):
    from sspo.tools.evaluation import main

    missing_run = tmp_path / "never_read.jsonl"  # the refusal must come first: this run does not exist
    assert main(["score", "--run", f"a={missing_run}", flag, str(blocker / "t")]) == 2
    err = capsys.readouterr().err
    assert f"error: {flag} {blocker}/t lies under the file {blocker}" in err and "never_read" not in err
    assert "Traceback" not in err


def test_score_outputs_into_missing_folders_are_written(tmp_path, capsys):
    from sspo.tools.evaluation import main

    md, csv = tmp_path / "new" / "table.md", tmp_path / "other" / "sub" / "table.csv"
    assert main(["score", "--run", f"a={_generations(tmp_path / 'g.jsonl')}", "--markdown", str(md), "--csv", str(csv)]) == 0
    assert "my_bench" in md.read_text() and "my_bench" in csv.read_text()


def test_generate_out_under_a_file_is_refused_before_the_plan(tmp_path, blocker, capsys):
    from sspo.tools.evaluation import main

    assert main(["generate", "--model", str(tmp_path / "no_model"), "--out", str(blocker / "g.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"--out {blocker}/g.jsonl lies under the file" in err and "Traceback" not in err


def test_report_out_under_a_file_is_refused_before_reading_and_a_missing_one_made(tmp_path, blocker, capsys):
    from sspo.tools.report import main

    assert main([str(tmp_path / "never_read"), "--out", str(blocker / "report")]) == 2
    err = capsys.readouterr().err
    assert f"--out {blocker}/report lies under the file" in err and "never_read" not in err and "Traceback" not in err
    run = _metrics(tmp_path / "m.jsonl", [{"critic/score/mean": 0.1 * i} for i in range(4)])
    out = tmp_path / "deep" / "report"
    assert main([f"r={run}", "--out", str(out)]) == 0
    assert (out / "summary.md").is_file()


def test_report_says_which_values_it_left_out(tmp_path, capsys):
    from sspo.tools.report import main

    rows = [{"critic/score/mean": 0.1}, {"critic/score/mean": "n/a"}, {"critic/score/mean": float("nan")},
            {"critic/score/mean": 0.4, "actor/entropy": [1, 2]}]  # fmt: skip
    run = tmp_path / "m.jsonl"
    run.write_text("".join(json.dumps({"step": i + 1, "data": d}) + "\n" for i, d in enumerate(rows)))
    assert main([f"r={run}", "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    assert "note: run r: 3 value(s) of 2 metric(s) are not finite numbers" in err
    assert "first: critic/score/mean at step 2 = 'n/a'" in err
    assert main([f"r={_metrics(tmp_path / 'ok.jsonl', [{'critic/score/mean': 0.5}] * 2)}", "--out", str(tmp_path / "r2")]) == 0
    assert "note:" not in capsys.readouterr().err


def test_diagnostic_table_out_under_a_file_is_refused_before_reading(tmp_path, blocker, capsys):
    from sspo.tools.diagnostic_table import main

    assert main([str(tmp_path / "never_read"), "--out", str(blocker / "d.md")]) == 2
    err = capsys.readouterr().err
    assert "lies under the file" in err and "never_read" not in err and "Traceback" not in err


@pytest.mark.parametrize("module", ["sspo.tools.tiny_task", "sspo.tools.real_lm_assets"])
def test_asset_builders_refuse_an_out_under_a_file(module, blocker, tmp_path, capsys):
    import importlib

    main = importlib.import_module(module).main
    extra = ["--gsm8k", str(_generations(tmp_path / "gsm.jsonl"))] if module.endswith("real_lm_assets") else []
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(blocker / "assets"), *extra])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "lies under the file" in err and "Traceback" not in err


def test_real_lm_assets_has_no_default_gsm8k_outside_the_repository(capsys, tmp_path):
    """Users have only the repository: the GSM8K file is theirs to name."""
    from sspo.tools.real_lm_assets import AssetsConfig, main

    with pytest.raises(ValueError, match="--gsm8k is needed: pass the GSM8K train split"):
        AssetsConfig()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "a")])
    assert "--gsm8k is needed" in capsys.readouterr().err


@pytest.mark.parametrize("benchmarks", ["none", "", " , "])
def test_data_with_nothing_selected_is_refused(tmp_path, capsys, benchmarks):
    from sspo.tools.data import main

    assert main(["--out-dir", str(tmp_path / "d"), "--train", "none", "--benchmarks", benchmarks]) == 2
    err = capsys.readouterr().err
    assert "nothing to prepare" in err and "Fix: --train" in err and "Traceback" not in err
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_data_help_sends_no_user_to_the_developers_shared_folder():
    from sspo.tools.data import build_parser

    assert "shared" not in build_parser().format_help()


def test_data_refuses_a_template_its_kept_files_do_not_hold(tmp_path, capsys):
    """--template over files kept from an earlier run used to keep them, the manifest naming the old template."""
    import pyarrow.parquet as pq

    from sspo.tools.data import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "aime24.jsonl").write_text(json.dumps({"problem": "What is 1+1?", "answer": "2"}) + "\n")
    argv = ["--out-dir", str(tmp_path / "out"), "--train", "none", "--benchmarks", "aime24", "--local-dir", str(src),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0  # the default template
    capsys.readouterr()
    assert main([*argv, "--template", "plain"]) == 2
    err = capsys.readouterr().err
    assert "--template plain: aime24.parquet" in err and "written with the template 'qwen25-math'" in err
    assert "Fix: add --overwrite" in err and "Traceback" not in err
    assert main([*argv, "--template", "plain", "--overwrite"]) == 0  # the fix works: files and manifest agree
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["template"] == "plain"
    prompt = pq.read_table(tmp_path / "out" / "aime24.parquet").to_pylist()[0]["prompt"]
    assert prompt == [{"role": "user", "content": "What is 1+1?"}]  # plain: the problem alone, no system turn
    assert main([*argv, "--template", "plain"]) == 0  # the same template again: kept, nothing to refuse
