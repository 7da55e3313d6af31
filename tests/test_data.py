"""sspo.tools.data: preparation from ../shared/data to verl's RL parquet, read back by verl's RLHFDataset."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from sspo.tools import data
from sspo.tools.data import QWEN_MATH_SYSTEM, DataError, main, prepare

EXPECTED_ROWS = {"aime24": 30, "amc": 83, "amc23": 40, "math500": 500, "minerva": 272, "olympiadbench": 675}


def _rows(path):
    return pq.read_table(path).to_pylist()


def _write_jsonl(path, rows, extra_lines=()):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    """GSM8K train + all six benchmark files from ../shared/data, prepared once for this module."""
    out = tmp_path_factory.mktemp("prepared")
    result = prepare(out, train="gsm8k", local_dir=shared_data, progress=False)
    return out, result


def test_prepares_all_benchmarks_and_train_in_verl_format(prepared):
    out, result = prepared
    assert sorted(p.name for p in result.written) == sorted(
        [f"{b}.parquet" for b in EXPECTED_ROWS] + ["train.parquet"]
    )
    for bench, n in EXPECTED_ROWS.items():
        rows = _rows(out / f"{bench}.parquet")
        assert len(rows) == n, bench
        r = rows[0]
        assert r["data_source"] == bench and r["ability"] == "math"
        assert r["prompt"][0] == {"role": "system", "content": QWEN_MATH_SYSTEM}
        assert r["prompt"][1]["role"] == "user" and r["prompt"][1]["content"] == r["extra_info"]["problem"]
        assert r["reward_model"]["style"] == "rule"
        assert r["extra_info"]["split"] == "test"
        assert [x["extra_info"]["index"] for x in rows] == list(range(n))
    train = _rows(out / "train.parquet")
    assert (
        len(train) == 8792
        and train[0]["data_source"] == "gsm8k"
        and train[0]["extra_info"]["split"] == "train"
    )
    manifest = json.loads(result.manifest.read_text())
    assert manifest["files"]["math500"]["rows"] == 500 and manifest["train_benchmark_overlap"] == {}
    assert result.train_files == [str(out / "train.parquet")]
    assert len(result.val_files) == 6


def test_answers_are_normalised(prepared):
    out, _ = prepared
    gt = {b: [r["reward_model"]["ground_truth"] for r in _rows(out / f"{b}.parquet")] for b in EXPECTED_ROWS}
    assert gt["amc"][0] == "142"  # stored as the float 142.0
    assert gt["aime24"][1] == "025"  # AIME answers keep their text
    assert gt["minerva"][0] == "9.6"  # stored as ["9.6\n"]
    assert gt["olympiadbench"][1] == "\\frac{1}{2 n+2}"  # stored as ["$\\frac{1}{2 n+2}$"]
    assert gt["math500"][0] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert (
        all(  # math-mode dollars gone; a currency "\\$" is kept, as are units (the strict grader checks them)
            g and not re.search(r"(?<!\\)\$", g) and "\\boxed" not in g and not g.endswith("\n")
            for v in gt.values()
            for g in v
        )
    )
    assert "5.4 \\text{ cents}" in gt["math500"] and "\\$18.90" in gt["math500"]
    alt = _rows(out / "minerva.parquet")
    assert any(len(r["extra_info"]["answer_alternatives"]) > 1 for r in alt)  # Minerva lists alternatives


def test_qwen_eval_field_names_give_the_same_golds(shared_data, prepared, tmp_path):
    """qwen_eval files name fields differently (question/final_answer; a boxed solution only for Minerva)."""
    out, _ = prepared
    q = shared_data / "benchmarks" / "qwen_eval"
    res = prepare(
        tmp_path,
        train=None,
        benchmarks=["minerva", "olympiadbench", "math500"],
        local_files={"minerva": q / "minerva_math.jsonl", "olympiadbench": q / "olympiadbench.jsonl", "math500": q / "math500.jsonl"},
        progress=False,
    )  # fmt: skip
    assert all(r.kept == r.read for r in res.reports)
    for bench in ("olympiadbench", "math500"):
        ours = [r["reward_model"]["ground_truth"] for r in _rows(tmp_path / f"{bench}.parquet")]
        oat = [r["reward_model"]["ground_truth"] for r in _rows(out / f"{bench}.parquet")]
        assert ours == oat, bench
    minerva = _rows(tmp_path / "minerva.parquet")
    assert (
        len(minerva) == 272 and minerva[0]["reward_model"]["ground_truth"] == "1.6"
    )  # from \boxed{1.6} \mathrm{~cm}


def test_rerun_is_idempotent_and_deterministic(shared_data, tmp_path):
    kw = dict(train=None, benchmarks=["aime24", "amc"], local_dir=shared_data, progress=False)
    first = prepare(tmp_path, **kw)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = prepare(tmp_path, **kw)
    assert again.written == [] and len(again.skipped) == 2  # existing files kept
    rebuilt = prepare(tmp_path, overwrite=True, **kw)
    assert len(rebuilt.written) == 2 and len(first.written) == 2
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # same bytes, manifest included


def test_overlap_with_math500_is_reported_and_removed(shared_data, tmp_path):
    """MATH500 rows (which carry `level`) stand in for the MATH-train schema."""
    math500 = [json.loads(x) for x in open(shared_data / "benchmarks" / "qwen_eval" / "math500.jsonl")]
    gsm = [json.loads(x) for x in open(shared_data / "train" / "gsm8k_train.jsonl")][:20]
    # 50 benchmark problems, re-spaced/re-cased so only the normalised text matches
    leaked = [dict(r, problem="  " + r["problem"].replace(" ", "  ").upper()) for r in math500[:50]]
    train_file = _write_jsonl(tmp_path / "math_train.jsonl", leaked + gsm)
    kw = dict(
        train="math",
        benchmarks=["math500"],
        local_files={"math": train_file},
        local_dir=shared_data,
        progress=False,
    )
    res = prepare(tmp_path / "out", **kw)
    assert res.overlap == {"math500": 50}
    train = _rows(tmp_path / "out" / "train.parquet")
    assert len(train) == 20 and train[0]["data_source"] == "math_level3to5"
    assert [r["extra_info"]["index"] for r in train] == list(range(20))
    assert res.reports[0].dropped == {"overlaps benchmark math500": 50}
    kept = prepare(tmp_path / "kept", remove_overlaps=False, **kw)
    assert kept.overlap == {"math500": 50} and len(_rows(tmp_path / "kept" / "train.parquet")) == 70


def test_bad_rows_are_counted_by_reason_never_silently_dropped(shared_data, tmp_path):
    rows = [
        {"problem": "What is 1+1?", "answer": 2},  # int answer
        {"problem": "Half of 1?", "answer": 0.5},  # float answer
        {"problem": "Roots of x^2=1?", "answer": ["-1, 1"]},  # list answer
        {"problem": "What is 2+2?", "answer": "['4\\n']"},  # Python-list string
        {"problem": "No answer here"},  # missing answer
        {"problem": "", "answer": "3"},  # empty problem
        {"problem": "Empty answer", "answer": ""},
        {"problem": "What is 1+1?", "answer": "2"},  # duplicate problem
        {"problem": "Bad answer", "answer": True},
    ]
    f = _write_jsonl(tmp_path / "t.jsonl", rows, extra_lines=['{"problem": "cut', "[1, 2]"])
    res = prepare(tmp_path / "o", train="gsm8k", benchmarks=[], local_files={"gsm8k": f}, progress=False)
    rep = res.reports[0]
    assert rep.read == 11 and rep.kept == 4
    assert dict(rep.dropped) == {
        "malformed JSON": 1,
        "row is not a JSON object": 1,
        "missing answer": 2,  # no field / empty string
        "missing or empty problem": 1,
        "duplicate problem": 1,
        "unusable answer": 1,
    }
    assert [r["reward_model"]["ground_truth"] for r in _rows(tmp_path / "o" / "train.parquet")] == [
        "2",
        "0.5",
        "-1, 1",
        "4",
    ]
    manifest = json.loads(res.manifest.read_text())
    assert manifest["dropped"]["gsm8k"]["malformed JSON"] == 1


def test_clear_errors_for_unusable_inputs(shared_data, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(
        DataError, match=r"empty\.jsonl: empty file \(0 bytes\) for 'gsm8k'.*--local-file gsm8k="
    ):
        prepare(tmp_path / "o", train="gsm8k", benchmarks=[], local_files={"gsm8k": empty}, progress=False)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        prepare(tmp_path / "o", train="gsm8k", benchmarks=[], local_files={"gsm8k": blank}, progress=False)
    cols = _write_jsonl(tmp_path / "cols.jsonl", [{"text": "x", "label": "1"}])
    with pytest.raises(DataError, match=r"no problem column; found columns \['label', 'text'\]"):
        prepare(tmp_path / "o", train="gsm8k", benchmarks=[], local_files={"gsm8k": cols}, progress=False)
    noans = _write_jsonl(tmp_path / "noans.jsonl", [{"problem": "x", "label": "1"}])
    with pytest.raises(DataError, match=r"no answer column; found columns \['label', 'problem'\]"):
        prepare(tmp_path / "o", train="gsm8k", benchmarks=[], local_files={"gsm8k": noans}, progress=False)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=f"{missing}: file not found.*--local-dir"):
        prepare(tmp_path / "o", train="gsm8k", benchmarks=[], local_files={"gsm8k": missing}, progress=False)
    with pytest.raises(DataError, match="no file for 'aime24' under .*looked for"):
        prepare(tmp_path / "o", train=None, benchmarks=["aime24"], local_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match="unknown training set 'gsm9k'"):
        prepare(tmp_path / "o", train="gsm9k", progress=False)
    with pytest.raises(DataError, match="unknown benchmark"):
        prepare(tmp_path / "o", benchmarks=["aime25"], progress=False)
    with pytest.raises(DataError, match="unknown prompt template 'qwen3'"):
        prepare(tmp_path / "o", template="qwen3", progress=False)
    with pytest.raises(DataError, match=f"--out-dir {empty} is a file: pass a folder"):
        prepare(empty, train="gsm8k", benchmarks=[], local_dir=shared_data, progress=False)


def test_cli_help_errors_and_files_list(shared_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--local-dir" in capsys.readouterr().out
    assert main(["--out-dir", str(tmp_path), "--train", "gsm8k", "--local-dir", str(tmp_path)]) == 2
    assert "no file for 'gsm8k'" in capsys.readouterr().err
    assert (
        main(["--out-dir", str(tmp_path), "--train", "none", "--benchmarks", "amc", "--local-file", "amc"])
        == 2
    )
    assert "expected NAME=PATH" in capsys.readouterr().err
    code = main(["--out-dir", str(tmp_path), "--train", "none", "--benchmarks", "aime24,amc23",
                 "--local-dir", str(shared_data), "--template", "qwen-boxed-user", "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "overlap" not in out  # no training set in this run
    assert f"\"data.val_files=['{tmp_path}/aime24.parquet','{tmp_path}/amc23.parquet']\"" in out
    small = _write_jsonl(tmp_path / "small.jsonl", [{"problem": "1+1?", "answer": "2"}])
    assert (
        main(["--out-dir", str(tmp_path / "t"), "--benchmarks", "none", "--local-file", f"math={small}"]) == 0
    )
    out = capsys.readouterr().out
    assert "overlap: not checked" in out and "math: 1/1 rows kept" in out
    row = _rows(tmp_path / "amc23.parquet")[0]
    assert len(row["prompt"]) == 1 and row["prompt"][0]["content"].endswith(QWEN_MATH_SYSTEM)


def test_cli_bad_arguments_fail_before_any_file_is_read(shared_data, tmp_path, capsys, monkeypatch):
    """Missing --local-dir, unknown benchmark, empty or missing benchmark file: exit 2 naming the value and
    the fix, before the (large) training set is read, and nothing written."""
    read = []
    real_read_rows = data.read_rows
    monkeypatch.setattr(
        data, "read_rows", lambda path, report: read.append(path) or real_read_rows(path, report)
    )
    (tmp_path / "amc.jsonl").write_text("")
    out = tmp_path / "out"
    base = ["--out-dir", str(out), "--train", "gsm8k", "--no-progress"]
    cases = [
        (
            ["--local-dir", str(tmp_path / "nope")],
            f"--local-dir {tmp_path / 'nope'} is not a directory: pass",
        ),
        (
            ["--benchmarks", "aime24,aime25", "--local-dir", str(shared_data)],
            "unknown benchmark(s) ['aime25']: choose",
        ),
        (
            [
                "--benchmarks",
                "aime24,amc",
                "--local-dir",
                str(shared_data),
                "--local-file",
                f"amc={tmp_path}/amc.jsonl",
            ],
            f"{tmp_path}/amc.jsonl: empty file (0 bytes) for 'amc': re-download or re-export it, or pass another one "
            "with --local-file amc=PATH",
        ),
        (
            [
                "--benchmarks",
                "amc",
                "--local-dir",
                str(shared_data),
                "--local-file",
                f"amc={tmp_path}/x.jsonl",
            ],
            f"{tmp_path}/x.jsonl: file not found for 'amc'. Pass --local-dir",
        ),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert read == [] and not out.exists()


def test_hub_path_loads_by_public_id_without_network(monkeypatch, tmp_path):
    """The default path calls datasets.load_dataset with the public id (faked here: tests stay offline)."""
    import datasets

    calls = []
    dapo_prompt = (
        "Solve the following math problem step by step. The last line of your response should be of the "
        "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{p}\n\nRemember "
        'to put your answer on its own line after "Answer:".'
    )

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        rows = [
            {"prompt": [{"role": "user", "content": dapo_prompt.format(p=f"Compute {i % 3} + 1.")}],
             "reward_model": {"ground_truth": str(i % 3 + 1), "style": "rule-lighteval/MATH_v2"}}
            for i in range(9)
        ]  # fmt: skip
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    res = prepare(tmp_path, train="dapo", benchmarks=[], progress=False)
    assert calls == [("BytedTsinghua-SIA/DAPO-Math-17k", {"split": "train"})]
    train = _rows(tmp_path / "train.parquet")
    assert [r["extra_info"]["problem"] for r in train] == [
        "Compute 0 + 1.",
        "Compute 1 + 1.",
        "Compute 2 + 1.",
    ]
    assert res.reports[0].dropped == {"duplicate problem": 6}
    assert data.SOURCES["math"].hub_id == "hkust-nlp/SimpleRL-Zoo-Data"
    assert data.SOURCES["math"].hub_kwargs["data_files"] == "simplelr_qwen_level3to5/train.parquet"


def test_verl_rlhf_dataset_reads_what_we_write(prepared, tiny_tokenizer, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    out, result = prepared
    config = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": 100_000,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "truncation": "error",
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    val = RLHFDataset(result.val_files, tiny_tokenizer, config)  # six files concatenated: one schema
    assert len(val) == sum(EXPECTED_ROWS.values())
    item = val[0]
    assert item["raw_prompt"][0]["content"] == QWEN_MATH_SYSTEM
    assert item["reward_model"]["ground_truth"] == "204" and item["data_source"] == "aime24"
    assert item["index"] == 0 and item["extra_info"]["split"] == "test"
    train = RLHFDataset(result.train_files, tiny_tokenizer, config)
    assert len(train) == 8792


def test_local_parquet_arrow_json_and_save_to_disk_inputs(tmp_path):
    import datasets

    rows = [{"question": f"What is {i} + {i}?", "final_answer": [f"${2 * i}$"]} for i in range(5)]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "a.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "a.json").write_text(json.dumps(rows))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    expected = ["0", "2", "4", "6", "8"]
    for i, path in enumerate([tmp_path / "a.parquet", tmp_path / "saved", arrow, tmp_path / "a.json"]):
        out = tmp_path / f"out{i}"
        prepare(out, train="gsm8k", benchmarks=[], local_files={"gsm8k": path}, progress=False)
        assert [r["reward_model"]["ground_truth"] for r in _rows(out / "train.parquet")] == expected, path
    gsm = tmp_path / "gsm8k_hub_format.jsonl"  # openai/gsm8k rows: a worked solution ending in "#### 1,234"
    _write_jsonl(
        gsm, [{"question": "How many?", "answer": "Add: 1000 + 234 = <<1000+234=1234>>1234.\n#### 1,234"}]
    )
    prepare(tmp_path / "g", train="gsm8k", benchmarks=[], local_files={"gsm8k": gsm}, progress=False)
    assert _rows(tmp_path / "g" / "train.parquet")[0]["reward_model"]["ground_truth"] == "1234"
    (tmp_path / "a.csv").write_text("question,answer\n")
    with pytest.raises(DataError, match=r"unsupported file type '.csv'"):
        prepare(
            tmp_path / "o",
            train="gsm8k",
            benchmarks=[],
            local_files={"gsm8k": tmp_path / "a.csv"},
            progress=False,
        )


def test_non_utf8_or_binary_input_fails_naming_file_and_line(tmp_path, capsys):
    good = json.dumps({"problem": "1+1?", "answer": "2"})
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes((good + "\n" + '{"problem": "caf\xe9?", "answer": "3"}\n').encode("latin-1"))
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"PAR1\x15\x04\x15\xff\xfe\x00\x00" * 10)
    for f, line in ((latin1, 2), (binary, 1)):
        for source in ("gsm8k", "aime24"):  # training set and benchmark alike
            train, benches = (source, "none") if source == "gsm8k" else ("none", source)
            code = main(["--out-dir", str(tmp_path / "o"), "--train", train, "--benchmarks", benches,
                         "--local-file", f"{source}={f}", "--no-progress"])  # fmt: skip
            err = capsys.readouterr().err
            assert code == 2 and f"{f}:{line}: not UTF-8 text" in err and "re-save it as UTF-8" in err
    assert not (tmp_path / "o").exists()


def test_benchmark_that_would_lose_rows_fails_unless_allowed(shared_data, tmp_path, capsys, monkeypatch):
    """A benchmark row without an answer or with broken JSON fails the run (rows and reasons listed), before
    the training set is read; --allow-drops writes the smaller benchmark; training drops stay allowed."""
    rows = [json.loads(x) for x in open(shared_data / "benchmarks" / "oat" / "aime24.jsonl")]
    bench = _write_jsonl(tmp_path / "aime24.jsonl", [rows[0], {"problem": rows[1]["problem"]}, rows[2]],
                         extra_lines=['{"problem": "cut'])  # fmt: skip
    read = []
    real_read_rows = data.read_rows
    monkeypatch.setattr(data, "read_rows", lambda p, r: read.append(p.name) or real_read_rows(p, r))
    args = ["--out-dir", str(tmp_path / "o"), "--train", "gsm8k", "--benchmarks", "aime24", "--local-dir",
            str(shared_data), "--local-file", f"aime24={bench}", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "benchmark 'aime24'" in err and "2 of 4 rows would be dropped" in err
    assert "missing answer: row 1:" in err and "malformed JSON: aime24.jsonl:4:" in err
    assert "--allow-drops" in err and read == ["aime24.jsonl"] and not (tmp_path / "o").exists()
    assert main([*args, "--allow-drops"]) == 0
    assert (
        len(_rows(tmp_path / "o" / "aime24.parquet")) == 2
        and len(_rows(tmp_path / "o" / "train.parquet")) > 0
    )
    assert "aime24: 2/4 rows kept" in capsys.readouterr().out
