"""sspo.tools.evaluation: the five-benchmark table from recorded generations (ours and verl's dump), CLI checks."""

from __future__ import annotations

import json
import uuid
from math import comb

import pyarrow.parquet as pq
import pytest

from sspo.tools.data import BENCHMARKS, prepare
from sspo.tools.evaluation import (
    EvalError,
    build_generation_plan,
    build_parser,
    main,
    pass_at_k,
    read_generations,
    score_runs,
    to_csv,
    to_markdown,
)

K = 4


@pytest.fixture(scope="module")
def bench_dir(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    prepare(out, train=None, benchmarks=BENCHMARKS, local_dir=shared_data, progress=False)
    return out


def _problems(bench_dir, bench):
    return pq.read_table(bench_dir / f"{bench}.parquet").to_pylist()


def _n_correct(index: int, shift: int) -> int:
    """The designed number of correct samples (of K) for problem ``index``."""
    return (index + shift) % (K + 1)


def _responses(row, c: int, i: int) -> list[tuple[str, str]]:
    """K (response, finish_reason) pairs, ``c`` of them correct; the wrong ones vary in kind."""
    gold = row["reward_model"]["ground_truth"]
    right = f"We compute carefully.\nThus the answer is $\\boxed{{{gold}}}$."
    wrong = [
        ("I am not sure what the answer is.", "stop"),  # no answer
        (right, "length"),  # right answer, but cut at the length limit
        ("Thus the answer is $\\boxed{" + gold + "} and then \\boxed{", "length"),  # truncated mid-box
        # a wrong number (numeric golds only: math-verify would spend ~10 ms on each LaTeX gold)
        ("So the answer is $\\boxed{-987654321}$." if gold.isdigit() else "Answer: $\\boxed{}$", "stop"),
    ]
    return [(right, "stop") if j < c else wrong[(i + j) % len(wrong)] for j in range(K)]


def _expected(bench_dir, shift: int, benches):
    """pass@1 and pass@K per benchmark, from the designed counts (independent of the scorer)."""
    exp = {}
    for b in benches:
        cs = [_n_correct(r["extra_info"]["index"], shift) for r in _problems(bench_dir, b)]
        exp[b] = (
            sum(c / K for c in cs) / len(cs),
            sum(1 - comb(K - c, K) / comb(K, K) for c in cs) / len(cs),
        )
    return exp


def _write_ours(path, bench_dir, shift, benches=BENCHMARKS):
    with open(path, "w") as f:
        for b in benches:
            for row in _problems(bench_dir, b):
                i = row["extra_info"]["index"]
                for j, (resp, fin) in enumerate(_responses(row, _n_correct(i, shift), i)):
                    rec = {"benchmark": b, "index": i, "sample": j, "response": resp, "finish_reason": fin,
                           "ground_truth": row["reward_model"]["ground_truth"],
                           "answer_alternatives": row["extra_info"]["answer_alternatives"]}  # fmt: skip
                    f.write(json.dumps(rec) + "\n")
    return path


def _write_verl_dump(folder, bench_dir, tokenizer, shift, benches, step):
    """Rows exactly as verl's trainer._write_generations writes them (no benchmark names)."""
    folder.mkdir(exist_ok=True)
    with open(folder / f"{step}.jsonl", "w") as f:
        for b in benches:
            for row in _problems(bench_dir, b):
                i = row["extra_info"]["index"]
                # as verl: tokenizer.decode(prompt_ids, skip_special_tokens=True): no <|im_start|> markers
                enc = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
                text = tokenizer.decode(enc["input_ids"], skip_special_tokens=True)
                assert "<|im_start|>" not in text and row["extra_info"]["problem"] in text
                uid = str(uuid.uuid4())
                for j, (resp, _fin) in enumerate(_responses(row, _n_correct(i, shift), i)):
                    if _fin == "length":  # verl records no finish reason: cut the text inside the box
                        resp = resp[: resp.rfind("}")]
                    rec = {"input": text, "output": resp, "gts": row["reward_model"]["ground_truth"],
                           "score": 0.0, "step": step, "reward": 0.0, "acc": False, "pred": "",
                           "uid": f"{uid}_{j}_0"}  # fmt: skip
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def test_pass_at_k_estimator():
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 4, 1) == 1.0 and pass_at_k(4, 1, 4) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_table_from_our_generations_matches_designed_counts(bench_dir, tmp_path, capsys):
    runs = {
        "base": _write_ours(tmp_path / "a.jsonl", bench_dir, 0),
        "sspo": _write_ours(tmp_path / "b.jsonl", bench_dir, 2),
    }
    table, notes = score_runs({k: str(v) for k, v in runs.items()}, str(bench_dir))
    assert notes == []
    for name, shift in (("base", 0), ("sspo", 2)):
        exp = _expected(bench_dir, shift, BENCHMARKS)
        assert sorted(table[name]) == sorted(BENCHMARKS)
        for b, (p1, pk) in exp.items():
            s = table[name][b]
            assert (s.n_samples, s.k) == (K, K)
            assert s.pass1 == pytest.approx(p1, abs=1e-12), (name, b)
            assert s.passk == pytest.approx(pk, abs=1e-12), (name, b)
    md = to_markdown(table)
    exp0 = _expected(bench_dir, 0, BENCHMARKS)
    avg = sum(exp0[b][0] for b in ("aime24", "amc", "math500", "minerva", "olympiadbench")) / 5
    assert f"| base | pass@1 (avg@k) | {100 * exp0['aime24'][0]:.1f} |" in md
    assert md.splitlines()[2].endswith(f"| {100 * avg:.1f} |")
    assert "| sspo | pass@4 |" in md and "AMC23" in md.splitlines()[0]
    csv_lines = to_csv(table).splitlines()
    assert csv_lines[0] == "run,benchmark,n_problems,n_samples,k,pass@1,pass@k"
    assert f"base,average5,,,,{avg:.6f}," in "\n".join(csv_lines)
    amc23 = to_csv(table, amc="amc23")
    avg23 = sum(exp0[b][0] for b in ("aime24", "amc23", "math500", "minerva", "olympiadbench")) / 5
    assert f"base,average5,,,,{avg23:.6f}," in amc23
    # the CLI writes the same files
    md_path, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
    assert (
        main(["score", "--run", f"base={runs['base']}", "--markdown", str(md_path), "--csv", str(csv_path)])
        == 0
    )
    assert "| base | pass@1 (avg@k) |" in capsys.readouterr().out
    assert csv_path.read_text().startswith("run,benchmark") and md_path.read_text().startswith("| run |")


def test_table_from_verl_validation_dump(bench_dir, tiny_tokenizer, tmp_path):
    benches = ["aime24", "amc"]
    folder = tmp_path / "val_generations"
    _write_verl_dump(folder, bench_dir, tiny_tokenizer, shift=3, benches=benches, step=10)
    _write_verl_dump(folder, bench_dir, tiny_tokenizer, shift=1, benches=benches, step=20)  # latest
    table, notes = score_runs({"run": str(folder)}, str(bench_dir))
    assert notes == []
    for b, (p1, pk) in _expected(bench_dir, 1, benches).items():
        assert table["run"][b].pass1 == pytest.approx(p1, abs=1e-12)
        assert table["run"][b].passk == pytest.approx(pk, abs=1e-12)
    assert "—" in to_markdown(table)  # three benchmarks missing: no five-benchmark average
    step10, _ = score_runs({"old": str(folder / "10.jsonl")}, str(bench_dir))
    assert step10["old"]["aime24"].pass1 == pytest.approx(_expected(bench_dir, 3, ["aime24"])["aime24"][0])
    # the 40 AMC 2023 problems are all in the 83-problem AMC set: --amc picks the variant rows match to
    amc_dir = tmp_path / "amc23_dump"
    _write_verl_dump(amc_dir, bench_dir, tiny_tokenizer, shift=0, benches=["amc23"], step=1)
    t23, _ = score_runs({"r": str(amc_dir)}, str(bench_dir), amc="amc23")
    assert list(t23["r"]) == ["amc23"] and t23["r"]["amc23"].n_problems == 40
    assert t23["r"]["amc23"].pass1 == pytest.approx(_expected(bench_dir, 0, ["amc23"])["amc23"][0])
    t83, _ = score_runs({"r": str(amc_dir)}, str(bench_dir))
    assert list(t83["r"]) == ["amc"] and t83["r"]["amc"].n_problems == 40
    with pytest.raises(EvalError, match="verl validation dump .*--data-dir"):
        read_generations(folder / "20.jsonl", None)


def test_bad_generation_files(bench_dir, tmp_path):
    good = {"benchmark": "aime24", "index": 0, "response": "\\boxed{204}", "ground_truth": 204}
    rows = [
        json.dumps(good),
        json.dumps(dict(good, index=1, ground_truth=25.0, response="\\boxed{25}")),  # float gold
        json.dumps(dict(good, index=2, ground_truth=["9.6\n"], response="\\boxed{9.6}")),  # list gold
        json.dumps(dict(good, index=3, response="no answer at all")),
        '{"benchmark": "aime24", "index": 4, "resp',  # malformed
        json.dumps({"benchmark": "aime24", "response": "\\boxed{1}"}),  # missing index
        json.dumps(dict(good, index=5, response=None)),  # not a string
        json.dumps({"text": "neither format"}),
        json.dumps(dict(good, index=6, ground_truth=None, answer_alternatives=None)),  # no gold, no data dir
    ]
    f = tmp_path / "g.jsonl"
    f.write_text("\n".join(rows) + "\n")
    samples, report = read_generations(f)
    assert [(s.problem_key, s.golds) for s in samples] == [
        (0, ["204"]),
        (1, ["25"]),
        (2, ["9.6"]),
        (3, ["204"]),
    ]
    assert report.rows == 9
    assert {r: len(v) for r, v in report.skipped.items()} == {
        "malformed JSON": 1,
        "missing field(s) ['index']": 1,
        "response is not a string": 1,
        "neither our format (benchmark/index/response) nor verl's (input/output)": 1,
        "no usable gold answer (ground_truth missing)": 1,
    }
    table, notes = score_runs({"r": str(f)}, None)
    assert table["r"]["aime24"].pass1 == 0.75 and any("line 5" in n for n in notes)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(EvalError, match="empty file"):
        read_generations(empty)
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(EvalError, match=f"{missing}: no such file.*sspo.tools.evaluation generate"):
        read_generations(missing)
    with pytest.raises(EvalError, match="folder without <step>.jsonl"):
        read_generations(tmp_path / "..")
    two = tmp_path / "two.jsonl"
    two.write_text(json.dumps(good) + "\n" + json.dumps(dict(good, index=1)) + "\n")
    with pytest.raises(EvalError, match="--k 2 but some problems have only 1 samples"):
        score_runs({"r": str(two)}, None, k=2)


def test_score_cli_errors(tmp_path, capsys):
    assert main(["score", "--run", "nopath"]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"benchmark": "aime24", "index": 0, "response": "x", "ground_truth": "1"}) + "\n")
    assert main(["score", "--run", f"a={f}", "--run", f"a={f}"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["score", "--run", f"a={tmp_path / 'none.jsonl'}"]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err
    for extra, message in (
        (["--k", "0"], "--k 0: pass@k needs k >= 1"),
        (["--timeout", "0"], "--timeout 0.0: must be > 0"),
    ):
        assert main(["score", "--run", f"a={f}", *extra]) == 2
        assert message in capsys.readouterr().err


def test_score_finds_every_run_before_scoring_any(tmp_path, monkeypatch):
    """A missing file in the last --run fails before the first run is scored (no scoring time lost)."""
    from sspo.tools import evaluation

    scored = []
    monkeypatch.setattr(evaluation, "score_samples", lambda samples, **kw: scored.append(samples) or {})
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"benchmark": "aime24", "index": 0, "response": "x", "ground_truth": "1"}) + "\n")
    with pytest.raises(EvalError, match="typo.jsonl: no such file"):
        score_runs({"a": str(f), "b": str(tmp_path / "typo.jsonl")}, None)
    assert scored == []


def test_generate_arguments_and_plan_on_cpu(bench_dir, tiny_model_dir, tmp_path, capsys):
    """Argument handling and the vLLM call it builds; the generation itself needs a GPU (not run here)."""
    parser = build_parser()
    args = parser.parse_args(["generate", "--model", str(tiny_model_dir), "--data-dir", str(bench_dir),
                              "--k", "16", "--benchmarks", "aime24,amc", "--out", str(tmp_path / "g.jsonl")])  # fmt: skip
    plan = build_generation_plan(args)
    assert plan["llm"]["model"] == str(tiny_model_dir) and plan["llm"]["tensor_parallel_size"] == 1
    assert plan["sampling"] == {"n": 16, "temperature": 0.6, "top_p": 0.95, "max_tokens": 3000, "seed": 0}
    assert len(plan["problems"]) == 30 + 83
    p0 = plan["problems"][0]
    assert p0["benchmark"] == "aime24" and p0["ground_truth"] == "204" and p0["messages"][1]["role"] == "user"
    hub = build_generation_plan(parser.parse_args(["generate", "--model", "Qwen/Qwen2.5-Math-7B", "--data-dir",
                                                   str(bench_dir), "--out", "x.jsonl"]))  # fmt: skip
    assert hub["llm"]["model"] == "Qwen/Qwen2.5-Math-7B" and len(hub["problems"]) == 30 + 83 + 500 + 272 + 675
    assert main(["generate", "--model", str(tiny_model_dir), "--data-dir", str(bench_dir), "--benchmarks",
                 "aime24", "--out", "x.jsonl", "--dry-run"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["n_problems"] == 30

    def bad(*extra):
        a = ["generate", "--model", str(tiny_model_dir), "--data-dir", str(bench_dir), "--out", "x", *extra]
        with pytest.raises(EvalError) as e:
            build_generation_plan(parser.parse_args(a))
        return str(e.value)

    assert "at least 1 sample" in bad("--k", "0")
    assert "identical samples" in bad("--temperature", "0")
    assert "--top-p 1.5" in bad("--top-p", "1.5")
    assert "unknown ['aime25']; choose from" in bad("--benchmarks", "aime24,aime25")
    assert f"{tmp_path}/amc.parquet: not found; prepare it" in bad(
        "--benchmarks", "amc", "--data-dir", str(tmp_path)
    )
    assert "no config.json" in bad("--model", str(tmp_path))
    # --device cpu: vLLM-CPU's settings (the generation itself runs in tests/test_main_ppo_cpu.py)
    cpu = build_generation_plan(parser.parse_args(["generate", "--model", str(tiny_model_dir), "--data-dir",
                                                   str(bench_dir), "--out", "x", "--device", "cpu"]))  # fmt: skip
    assert cpu["llm"]["dtype"] == "float32" and cpu["llm"]["enforce_eager"] is True
    assert "gpu_memory_utilization" not in cpu["llm"] and plan["llm"]["gpu_memory_utilization"] == 0.9


def test_non_utf8_generations_fail_naming_file_and_line(tmp_path, capsys):
    f = tmp_path / "g.jsonl"
    good = json.dumps({"benchmark": "aime24", "index": 0, "response": "\\boxed{204}", "ground_truth": 204})
    f.write_bytes((good + "\n" + good + "\n").encode() + b'{"response": "\xff\xfe"}\n')
    assert main(["score", "--run", f"a={f}"]) == 2
    err = capsys.readouterr().err
    assert f"{f}:3: not UTF-8 text (byte 0xff at column 15)" in err


def test_score_uses_the_evaluation_policy_unless_told(tmp_path):
    """The table grades as published tables do (last box); --policy training applies the strict reward."""
    f = tmp_path / "g.jsonl"
    rows = [
        {
            "benchmark": "aime24",
            "index": 0,
            "response": "\\boxed{203} or \\boxed{204}",
            "ground_truth": "204",
        },
        {"benchmark": "aime24", "index": 1, "response": "\\boxed{25}", "ground_truth": "25"},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score_runs({"a": str(f)}, None)[0]["a"]["aime24"].pass1 == 1.0
    assert score_runs({"a": str(f)}, None, policy="training")[0]["a"]["aime24"].pass1 == 0.5
    assert build_parser().parse_args(["score", "--run", f"a={f}"]).policy == "evaluation"


def test_table_of_runs_without_any_of_the_five_benchmarks_shows_only_what_they_have():
    """The CPU demo's table: its task alone, no empty paper columns and no five-benchmark average."""
    from sspo.tools.evaluation import score_groups

    table = {"grpo": {"tiny_add": score_groups({0: [True, False], 1: [True, True]}, "tiny_add")}}
    header, rule, pass1, passk, *_ = to_markdown(table).splitlines()
    assert header == "| run | metric | tiny_add |" and rule == "|---|---|---|"
    assert pass1 == "| grpo | pass@1 (avg@k) | 75.0 |" and passk == "| grpo | pass@2 | 100.0 |"
    table["grpo"]["aime24"] = score_groups({0: [False, False]}, "aime24")
    assert "Avg (5)" in to_markdown(table) and "AMC" in to_markdown(table)  # one of the five: all five shown


def test_markdown_table_has_a_95_percent_interval_row_over_problems():
    """Per-problem pass@1 0.5 and 1.0: a resample of the 2 problems averages 0.5, 0.75 or 1 -> [50.0, 100.0];
    pass@2 is 1 for both problems -> [100.0, 100.0]; one problem: nothing to resample -> n/a."""
    from sspo.tools.evaluation import score_groups

    table = {"grpo": {"tiny_add": score_groups({0: [True, False], 1: [True, True]}, "tiny_add")}}
    lines = to_markdown(table).splitlines()
    assert lines[4:6] == ["| grpo | pass@1 95% CI | [50.0, 100.0] |", "| grpo | pass@2 95% CI | [100.0, 100.0] |"]
    one = {"grpo": {"tiny_add": score_groups({0: [True, False]}, "tiny_add")}}
    assert "| grpo | pass@1 95% CI | n/a |" in to_markdown(one)
