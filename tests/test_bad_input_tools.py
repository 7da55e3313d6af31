"""Issue 21 item 12 (the parts in sspo.tools): a misspelled benchmark name and an unwritable --out-dir fail
early with one clear line naming the fix, no traceback."""

from __future__ import annotations

import json

import pytest


def _generations(path, benchmark: str):
    row = {"benchmark": benchmark, "index": 0, "response": "\\boxed{1}", "ground_truth": "1"}
    path.write_text(json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize("with_data_dir", [False, True])
def test_misspelled_benchmark_is_an_early_error_not_a_new_column(tmp_path, capsys, with_data_dir):
    from sspo.tools.evaluation import main

    gen = _generations(tmp_path / "gen.jsonl", "math5000")
    argv = ["score", "--run", f"a={gen}"] + (["--data-dir", str(tmp_path)] if with_data_dir else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'math5000' (did you mean 'math500'?)" in err and '"benchmark" field' in err
    assert "Traceback" not in err


def test_a_new_benchmark_name_without_data_dir_is_still_a_column(tmp_path, capsys):
    from sspo.tools.evaluation import main

    assert main(["score", "--run", f"a={_generations(tmp_path / 'g.jsonl', 'my_bench')}"]) == 0
    assert "my_bench" in capsys.readouterr().out


def test_unwritable_out_dir_is_an_early_error(tmp_path, capsys):
    from sspo.tools.data import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker / "data", "/proc/sspo-data"):
        argv = [
            "--out-dir",
            str(out),
            "--train",
            "none",
            "--benchmarks",
            "aime24",
            "--local-dir",
            str(tmp_path),
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"--out-dir {out}: cannot write there" in err and "--out-dir data" in err
        assert "Traceback" not in err
