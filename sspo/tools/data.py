"""Math data for SSPO/GRPO/GSPO runs, written in verl's RL parquet format.

Each output row is what ``verl.utils.dataset.rl_dataset.RLHFDataset`` reads::

    {"data_source": "math500",
     "prompt": [{"role": "system", "content": "Please reason step by step, ..."},
                {"role": "user", "content": "<problem>"}],
     "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": "\\frac{14}{3}"},
     "extra_info": {"split": "test", "index": 2, "problem": "<problem>",
                    "answer_alternatives": ["\\frac{14}{3}"], "raw_answer": "\"\\\\frac{14}{3}\""}}

Sources (``SOURCES``): the training sets ``math`` (MATH level 3-5 from SimpleRL-Zoo, the default), ``gsm8k``
and ``dapo`` (DAPO-Math-17k, deduplicated), and the benchmarks ``aime24``, ``amc`` (83 problems, AMC
2022+2023, as in the oat/Dr.GRPO suite), ``amc23`` (40, AMC 2023, as in the Qwen2.5-Math harness),
``math500``, ``minerva``, ``olympiadbench``. Each is read from its public hub id (``datasets``), or from
``--local-dir`` (jsonl/json/parquet/arrow files or ``save_to_disk`` folders), or from an exact file given
with ``--local-file name=path``.

Usage::

    python -m sspo.tools.data --out-dir data                        # MATH L3-5 train + all benchmarks (hub)
    python -m sspo.tools.data --out-dir data --local-dir sources --train gsm8k   # files you downloaded
    python -m sspo.tools.data --out-dir data --train dapo --benchmarks aime24,amc,math500 --overwrite

Rules: output is deterministic (same bytes on every run); existing files are kept unless ``--overwrite``;
unusable training rows are counted by reason and reported, never silently dropped; a BENCHMARK that would
lose any row fails (every dropped row and its reason listed) unless ``--allow-drops``: a 29-problem AIME24
would silently change every published comparison. Benchmarks are read before the training set, so such a
failure costs no time. Non-UTF-8 text input fails naming the file and line. Training problems that also
appear in a written benchmark (normalised text) are reported and removed (``--keep-overlap`` keeps them).
A ``manifest.json`` beside the files lists them with row counts and the ``data.train_files`` /
``data.val_files`` overrides for verl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sspo.reward.grading import gold_answers

# --------------------------------------------------------------------------------------------------
# Prompt templates
# --------------------------------------------------------------------------------------------------
QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

TEMPLATES: dict[str, dict[str, str | None]] = {
    # Qwen2.5-Math's chain-of-thought prompt (the paper's setting): system instruction, problem as user.
    "qwen25-math": {"system": QWEN_MATH_SYSTEM, "user": "{problem}"},
    # Same instruction appended to the user turn (for chat templates without a system role).
    "qwen-boxed-user": {"system": None, "user": "{problem}\n" + QWEN_MATH_SYSTEM},
    # SimpleRL-Zoo's Qwen prompt: a generic system turn, the instruction after the problem.
    "simplerl": {"system": "You are a helpful assistant.", "user": "{problem}\n" + QWEN_MATH_SYSTEM},
    # The problem alone.
    "plain": {"system": None, "user": "{problem}"},
}
DEFAULT_TEMPLATE = "qwen25-math"


def build_prompt(problem: str, template: str = DEFAULT_TEMPLATE) -> list[dict[str, str]]:
    """Chat messages for ``problem`` under the named template (see ``TEMPLATES``)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}: choose one of {sorted(TEMPLATES)}")
    t = TEMPLATES[template]
    user = t["user"].replace("{problem}", problem)  # not str.format: problems and "\\boxed{}" hold braces
    messages = [{"role": "system", "content": t["system"]}] if t["system"] else []
    return messages + [{"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Where one data set comes from and what it becomes."""

    name: str  # output file stem for benchmarks, and ``data_source``
    kind: str  # "train" | "benchmark"
    hub_id: str
    hub_kwargs: dict[str, Any] = field(default_factory=dict)  # for datasets.load_dataset
    local_files: tuple[str, ...] = ()  # tried in order under --local-dir
    dedupe: bool = False


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "math",
            "train",
            "hkust-nlp/SimpleRL-Zoo-Data",
            {"data_files": "simplelr_qwen_level3to5/train.parquet", "split": "train"},
            ("math_train.parquet", "math_train.jsonl", "simplelr_qwen_level3to5/train.parquet", "train/math_train.jsonl"),
            dedupe=True,
        ),
        Source(
            "gsm8k",
            "train",
            "openai/gsm8k",
            {"name": "main", "split": "train"},
            ("gsm8k_train.jsonl", "gsm8k_train.parquet", "train/gsm8k_train.jsonl"),
            dedupe=True,
        ),
        Source(
            "dapo",
            "train",
            "BytedTsinghua-SIA/DAPO-Math-17k",
            {"split": "train"},
            ("dapo_math_17k.parquet", "dapo_math_17k.jsonl", "train/dapo_math_17k.parquet"),
            dedupe=True,
        ),
        Source("aime24", "benchmark", "HuggingFaceH4/aime_2024", {"split": "train"},
               ("aime24.jsonl", "aime24.parquet", "benchmarks/oat/aime24.jsonl")),
        Source("amc", "benchmark", "AI-MO/aimo-validation-amc", {"split": "train"},
               ("amc.jsonl", "amc.parquet", "benchmarks/oat/amc.jsonl")),
        Source("amc23", "benchmark", "math-ai/amc23", {"split": "test"},
               ("amc23.jsonl", "amc23.parquet", "benchmarks/qwen_eval/amc23.jsonl")),
        Source("math500", "benchmark", "HuggingFaceH4/MATH-500", {"split": "test"},
               ("math500.jsonl", "math500.parquet", "benchmarks/oat/math500.jsonl")),
        Source("minerva", "benchmark", "math-ai/minervamath", {"split": "test"},
               ("minerva.jsonl", "minerva_math.jsonl", "minerva.parquet", "benchmarks/oat/minerva.jsonl")),
        Source("olympiadbench", "benchmark", "Hothan/OlympiadBench", {"name": "OE_TO_maths_en_COMP", "split": "train"},
               ("olympiadbench.jsonl", "olympiadbench.parquet", "benchmarks/oat/olympiadbench.jsonl")),
    ]
}  # fmt: skip
TRAIN_SOURCES = tuple(n for n, s in SOURCES.items() if s.kind == "train")
BENCHMARKS = tuple(n for n, s in SOURCES.items() if s.kind == "benchmark")
TRAIN_DATA_SOURCE = {"math": "math_level3to5", "gsm8k": "gsm8k", "dapo": "dapo_math_17k"}

# Field names seen in the wild, in order of preference.
PROBLEM_FIELDS = ("problem", "question", "prompt")
ANSWER_FIELDS = ("final_answer", "gt_answer", "answer", "ground_truth", "reward_model", "solution")

# DAPO-Math-17k wraps each problem in an instruction for its "Answer:" format; we keep the problem only.
_DAPO_PREFIX = re.compile(r"^Solve the following math problem step by step\..*?\n\n", re.S)
_DAPO_SUFFIX = re.compile(r"\n\nRemember to put your answer on its own line after \"Answer:\"\.?\s*$")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
@dataclass
class Report:
    """What happened to the rows of one source."""

    source: str
    origin: str = ""
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first example
    rows: list[tuple[str, str]] = field(default_factory=list)  # every dropped row: (reason, where + what)

    def drop(self, reason: str, example: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, example[:160])
        self.rows.append((reason, example[:160]))

    def summary(self) -> str:
        parts = [f"{self.source}: {self.kept}/{self.read} rows kept ({self.origin})"]
        for reason, n in sorted(self.dropped.items()):
            parts.append(f"  dropped {n} ({reason}), e.g. {self.examples.get(reason, '')}")
        return "\n".join(parts)


class DataError(ValueError):
    """A data problem the user must fix (message names the file/field and the fix)."""


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; bytes that are not UTF-8 fail naming file, line, column."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    "binary or another encoding: re-save it as UTF-8 JSON lines, or pass the right file"
                ) from None


def _read_text(path: Path) -> str:
    return "".join(line for _, line in text_lines(path))


def _read_jsonl(path: Path, report: Report) -> Iterator[dict]:
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            report.read += 1
            report.drop("malformed JSON", f"{path.name}:{lineno}: {e}")
            continue
        if not isinstance(row, dict):
            report.read += 1
            report.drop("row is not a JSON object", f"{path.name}:{lineno}: {line.strip()}")
            continue
        yield row


def _read_table_file(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            return pq.read_table(path).to_pylist()
        if path.suffix == ".arrow":  # datasets' cache/save_to_disk shards are Arrow IPC streams
            with pa.memory_map(str(path)) as source:
                try:
                    return pa.ipc.open_stream(source).read_all().to_pylist()
                except pa.ArrowInvalid:
                    return pa.ipc.open_file(source).read_all().to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{path}: not a readable {path.suffix[1:]} file ({e}); re-export it or pass another"
        ) from e
    if path.suffix == ".json":
        text = _read_text(path).strip()
        if text.startswith("["):
            data = json.loads(text)
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of objects")
            return data
    raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json, .parquet or .arrow)")


def check_local_path(path: Path, source: Source) -> None:
    """Fail before reading anything when ``source``'s local file is missing or empty (0 bytes)."""
    if not path.exists():
        raise DataError(
            f"{path}: file not found for {source.name!r}. Pass --local-dir DIR holding it, "
            f"--local-file {source.name}=PATH, or drop both to download from the hub."
        )
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(
            f"{path}: empty file (0 bytes) for {source.name!r}: re-download or re-export it, "
            f"or pass another one with --local-file {source.name}=PATH."
        )


def read_rows(path: Path, report: Report) -> list[dict]:
    """Rows of a local file or ``save_to_disk`` folder; malformed JSON lines are counted, not fatal."""
    if not path.exists():
        raise DataError(
            f"{path}: file not found. Pass --local-dir DIR holding it, --local-file NAME=PATH, "
            "or drop both to download from the hub."
        )
    report.origin = str(path)
    if path.is_dir():
        arrow = sorted(path.glob("*.arrow"))
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            import datasets

            return list(datasets.load_from_disk(str(path)))
        if not arrow:
            raise DataError(f"{path}: a folder without .arrow files or a datasets save_to_disk layout")
        return [row for f in arrow for row in _read_table_file(f)]
    if path.suffix == ".jsonl" or (path.suffix == ".json" and not _read_text(path).lstrip().startswith("[")):
        return list(_read_jsonl(path, report))
    return _read_table_file(path)


def read_hub(source: Source, report: Report) -> list[dict]:
    """Rows of ``source`` from the Hugging Face hub (needs network; never used by the tests)."""
    import datasets

    report.origin = f"hub:{source.hub_id}"
    try:
        ds = datasets.load_dataset(source.hub_id, **source.hub_kwargs)
    except Exception as e:  # noqa: BLE001  name the source and the offline alternative
        raise DataError(
            f"could not load {source.name!r} from the hub ({source.hub_id}, {source.hub_kwargs}): {e}. "
            f"Offline: pass --local-dir DIR containing one of {list(source.local_files)}, "
            f"or --local-file {source.name}=PATH."
        ) from e
    return [dict(r) for r in ds]


def locate_local(source: Source, local_dir: Path | None, local_files: dict[str, Path]) -> Path | None:
    """The local file for ``source``: ``--local-file`` first, then the candidates under ``--local-dir``."""
    if source.name in local_files:
        return local_files[source.name]
    if local_dir is None:
        return None
    for rel in source.local_files:
        if (local_dir / rel).exists():
            return local_dir / rel
    raise DataError(
        f"no file for {source.name!r} under {local_dir}: looked for {list(source.local_files)}. "
        f"Add one of them, pass --local-file {source.name}=PATH, or leave out --local-dir to use the hub."
    )


# --------------------------------------------------------------------------------------------------
# Row normalisation
# --------------------------------------------------------------------------------------------------
def _problem_text(row: dict) -> str | None:
    for key in PROBLEM_FIELDS:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if key == "prompt" and isinstance(value, list | tuple):  # chat messages (e.g. DAPO-Math-17k)
            users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
            if users and isinstance(users[-1], str) and users[-1].strip():
                text = _DAPO_SUFFIX.sub("", _DAPO_PREFIX.sub("", users[-1].strip()))
                return text.strip()
    return None


def _raw_answer(row: dict) -> Any:
    for key in ANSWER_FIELDS:
        value = row.get(key)
        if key == "reward_model" and isinstance(value, dict):
            value = value.get("ground_truth")
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, str) and "####" in value:  # GSM8K solutions end in "#### 72"
            value = value.rsplit("####", 1)[1].strip().replace(",", "")
        if key == "solution" and isinstance(value, str) and "\\boxed" not in value and "\\fbox" not in value:
            continue  # a worked solution without a boxed answer gives no gold
        return value
    return None


def check_columns(rows: list[dict], origin: str) -> None:
    """Fail early, listing the columns found, when no known problem or answer field is present."""
    columns = sorted({k for r in rows[:1000] for k in r})
    if not any(k in columns for k in PROBLEM_FIELDS):
        raise DataError(
            f"{origin}: no problem column; found columns {columns}, expected one of {list(PROBLEM_FIELDS)}. "
            "Rename the column holding the problem text."
        )
    if not any(k in columns for k in ANSWER_FIELDS):
        raise DataError(
            f"{origin}: no answer column; found columns {columns}, expected one of {list(ANSWER_FIELDS)}. "
            "Rename the column holding the final answer."
        )


def normalize_problem(text: str) -> str:
    """Problem text reduced for overlap/duplicate checks: case, spacing, ``$`` and punctuation ignored."""
    text = text.lower().replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac")
    return re.sub(r"[\s$.,;:!?'\"`~\\{}()\[\]]+", "", text)


def to_verl_rows(
    source: Source, rows: Iterable[dict], report: Report, template: str, progress: bool = True
) -> list[dict]:
    """Convert raw rows to verl rows; unusable rows are counted in ``report`` by reason."""
    from tqdm import tqdm

    out: list[dict] = []
    seen: set[str] = set()
    rows = list(rows)
    split = "train" if source.kind == "train" else "test"
    data_source = TRAIN_DATA_SOURCE.get(source.name, source.name)
    for position, row in enumerate(tqdm(rows, desc=f"{source.name}", unit="row", disable=not progress)):
        report.read += 1
        problem = _problem_text(row)
        if problem is None:
            report.drop("missing or empty problem", f"row {position}: {json.dumps(row, default=str)}")
            continue
        raw = _raw_answer(row)
        if raw is None:
            report.drop("missing answer", f"row {position}: {problem}")
            continue
        golds = gold_answers(raw)
        if not golds:
            report.drop("unusable answer", f"row {position}: {raw!r}")
            continue
        if source.dedupe:
            key = normalize_problem(problem)
            if key in seen:
                report.drop("duplicate problem", f"row {position}: {problem}")
                continue
            seen.add(key)
        out.append(
            {
                "data_source": data_source,
                "prompt": build_prompt(problem, template),
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": golds[0]},
                "extra_info": {
                    "split": split,
                    "index": len(out),
                    "problem": problem,
                    "answer_alternatives": golds,
                    "raw_answer": json.dumps(raw, ensure_ascii=False, default=str),
                },
            }
        )
    report.kept = len(out)
    return out


def remove_overlap(
    train: list[dict], benchmarks: dict[str, list[dict]], report: Report, remove: bool
) -> dict[str, int]:
    """Training rows whose normalised problem appears in a benchmark: counted per benchmark, removed if asked."""
    bench_keys = {
        name: {normalize_problem(r["extra_info"]["problem"]) for r in rows}
        for name, rows in benchmarks.items()
    }
    counts: Counter = Counter()
    kept = []
    for row in train:
        key = normalize_problem(row["extra_info"]["problem"])
        hits = [name for name, keys in bench_keys.items() if key in keys]
        for name in hits:
            counts[name] += 1
        if hits and remove:
            report.drop(f"overlaps benchmark {'+'.join(hits)}", row["extra_info"]["problem"])
            continue
        kept.append(row)
    if remove:
        for i, row in enumerate(kept):
            row["extra_info"]["index"] = i
        train[:] = kept
        report.kept = len(kept)
    return dict(counts)


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(message)),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            (
                "extra_info",
                pa.struct(
                    [
                        ("split", pa.string()),
                        ("index", pa.int64()),
                        ("problem", pa.string()),
                        ("answer_alternatives", pa.list_(pa.string())),
                        ("raw_answer", pa.string()),
                    ]
                ),
            ),
        ]
    )


def write_parquet(rows: list[dict], path: Path) -> str:
    """Write ``rows`` with one fixed schema (so verl can concatenate files); atomic; returns sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=_schema())
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Result:
    """What ``prepare`` did: files (name -> path), reports, overlap counts."""

    files: dict[str, Path]
    written: list[Path]
    skipped: list[Path]
    reports: list[Report]
    overlap: dict[str, int]
    manifest: Path

    @property
    def train_files(self) -> list[str]:
        return [str(p) for n, p in self.files.items() if n == "train"]

    @property
    def val_files(self) -> list[str]:
        return [str(p) for n, p in self.files.items() if n != "train"]


def prepare(
    out_dir: str | Path,
    train: str | None = "math",
    benchmarks: Iterable[str] = BENCHMARKS,
    local_dir: str | Path | None = None,
    local_files: dict[str, str | Path] | None = None,
    template: str = DEFAULT_TEMPLATE,
    overwrite: bool = False,
    remove_overlaps: bool = True,
    progress: bool = True,
    allow_drops: bool = False,
) -> Result:
    """Prepare ``out_dir/train.parquet`` and ``out_dir/<benchmark>.parquet`` (see module docstring).

    A benchmark row that cannot be used fails the preparation (DataError listing every such row and why)
    unless ``allow_drops``; training rows are dropped and reported.
    """
    benchmarks = list(benchmarks)
    out_dir, local_dir, pinned = _check_arguments(train, benchmarks, template, out_dir, local_dir, local_files)
    targets = ([("train", SOURCES[train])] if train else []) + [(b, SOURCES[b]) for b in benchmarks]
    files = {name: out_dir / f"{name}.parquet" for name, _ in targets}
    _check_kept_template(out_dir, files, template, overwrite)
    # Everything is recomputed when anything is written: the overlap check needs the benchmarks.
    todo = overwrite or any(not p.exists() for p in files.values())
    by_name: dict[str, Report] = {}
    produced: dict[str, list[dict]] = {}
    if todo:
        # Every local file is found and checked before any is read (or anything downloaded): a missing or
        # empty benchmark file fails now, not after minutes spent on the training set.
        paths = {name: locate_local(source, local_dir, pinned) for name, source in targets}
        for name, source in targets:
            if paths[name] is not None:
                check_local_path(paths[name], source)
        # benchmarks first: one that would lose a row fails before the (large) training set is read
        for name, source in sorted(targets, key=lambda t: t[1].kind == "train"):
            report = by_name[name] = Report(source.name)
            path = paths[name]
            raw = read_rows(path, report) if path is not None else read_hub(source, report)
            if raw:
                check_columns(raw, report.origin)
            elif report.read == 0:
                raise DataError(f"{report.origin}: no rows (empty file?): check the file or its download")
            produced[name] = to_verl_rows(source, raw, report, template, progress)
            if source.kind == "benchmark" and report.dropped and not allow_drops:
                raise DataError(_benchmark_drops_message(report))
    reports = [by_name[name] for name, _ in targets if name in by_name]
    overlap: dict[str, int] = {}
    if todo and "train" in produced:
        bench_rows = {n: r for n, r in produced.items() if n != "train"}
        overlap = remove_overlap(produced["train"], bench_rows, by_name["train"], remove_overlaps)
    written, skipped = [], []
    for name, path in files.items():
        if path.exists() and not overwrite:
            skipped.append(path)
            continue
        if not produced[name]:
            raise DataError(f"{name}: no usable rows left, nothing written:\n{by_name[name].summary()}")
        write_parquet(produced[name], path)
        written.append(path)
    manifest = out_dir / "manifest.json"
    if written or not manifest.exists():
        _write_manifest(manifest, files, reports, overlap, template)
    return Result(files, written, skipped, reports, overlap, manifest)


def _check_arguments(
    train: str | None,
    benchmarks: list[str],
    template: str,
    out_dir: str | Path,
    local_dir: str | Path | None,
    local_files: dict[str, str | Path] | None,
) -> tuple[Path, Path | None, dict[str, Path]]:
    """:func:`prepare`'s arguments checked before any work: (out_dir, local_dir, pinned local files)."""
    if train is not None and train not in TRAIN_SOURCES:
        raise DataError(f"unknown training set {train!r}: choose one of {list(TRAIN_SOURCES)} or 'none'")
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise DataError(f"unknown benchmark(s) {unknown}: choose from {list(BENCHMARKS)} (or 'all'/'none')")
    if not train and not benchmarks:
        raise DataError(
            "nothing to prepare: no training set (--train none) and no benchmark (--benchmarks none or empty). "
            f"Fix: --train {'/'.join(TRAIN_SOURCES)} and/or --benchmarks all (or a comma list of {', '.join(BENCHMARKS)})"
        )
    if template not in TEMPLATES:
        raise DataError(f"unknown prompt template {template!r}: choose one of {sorted(TEMPLATES)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out-dir {out_dir} is a file: pass a folder (created if missing)")
    check_writable(out_dir)
    local_dir = Path(local_dir) if local_dir is not None else None
    if local_dir is not None and not local_dir.is_dir():
        raise DataError(f"--local-dir {local_dir} is not a directory: pass the folder holding the data files")
    pinned = {k: Path(v) for k, v in (local_files or {}).items()}
    bad = [k for k in pinned if k not in SOURCES]
    if bad:
        raise DataError(f"--local-file names {bad} are not sources: use one of {list(SOURCES)}")
    return out_dir, local_dir, pinned


def _check_kept_template(out_dir: Path, files: dict[str, Path], template: str, overwrite: bool) -> None:
    """Refuse a ``--template`` that files kept from an earlier run (no ``--overwrite``) were not written with:
    they would stay as they are, and the manifest would name a template they do not hold."""
    kept = [p.name for p in files.values() if p.exists()] if not overwrite else []
    manifest = out_dir / "manifest.json"
    if not kept or not manifest.is_file():
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8")).get("template")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return  # an unreadable manifest is rewritten by this run
    if old is not None and old != template:
        raise DataError(
            f"--template {template}: {', '.join(kept)} in {out_dir} were written with the template {old!r} "
            f"({manifest}) and would be kept as they are. Fix: add --overwrite to rebuild them with {template!r}, "
            f"or pass --template {old} (or another --out-dir)"
        )


def _benchmark_drops_message(report: Report) -> str:
    """Every row a benchmark would lose, with its reason, and the two ways out."""
    n = sum(report.dropped.values())
    lines = [f"  {reason}: {where}" for reason, where in report.rows]
    return (
        f"benchmark {report.source!r} ({report.origin}): {n} of {report.read} rows would be dropped, which "
        f"would silently change every comparison on it:\n" + "\n".join(lines) + "\n"
        "Fix (or re-download) the file, or pass --allow-drops to write the smaller benchmark anyway."
    )


def _write_manifest(
    path: Path, files: dict[str, Path], reports: list[Report], overlap: dict[str, int], template: str
) -> None:
    """Deterministic summary (no timestamps, no absolute paths) beside the parquet files."""
    import pyarrow.parquet as pq

    entries = {}
    for name, p in files.items():
        if p.exists():
            entries[name] = {
                "file": p.name,
                "rows": pq.ParquetFile(p).metadata.num_rows,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            }
    data = {
        "template": template,
        "files": entries,
        "dropped": {r.source: dict(sorted(r.dropped.items())) for r in reports},
        "train_benchmark_overlap": overlap,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def _parse_local_files(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DataError(f"--local-file {item!r}: expected NAME=PATH, e.g. math500=data/math500.jsonl")
        out[name] = path
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sspo.tools.data`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m sspo.tools.data",
        description="Prepare math training data and the evaluation benchmarks as verl RL parquet files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Writes OUT_DIR/train.parquet, OUT_DIR/<benchmark>.parquet and OUT_DIR/manifest.json, then prints\n"
        "the data.train_files / data.val_files overrides to pass to verl.",
    )
    p.add_argument("--out-dir", required=True, help="output folder (created)")
    p.add_argument(
        "--train", default="math", help=f"training set: {', '.join(TRAIN_SOURCES)} or none (default: math)"
    )
    p.add_argument(
        "--benchmarks", default="all", help=f"comma list of {', '.join(BENCHMARKS)}; 'all' or 'none'"
    )
    p.add_argument(
        "--local-dir",
        help="read sources from this folder of files you downloaded instead of the hub (names such as "
        "gsm8k_train.jsonl, aime24.jsonl: SOURCES in sspo/tools/data.py)",
    )
    p.add_argument(
        "--local-file", action="append", default=[], metavar="NAME=PATH", help="exact file for one source"
    )
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help=f"prompt template: {', '.join(TEMPLATES)}")
    p.add_argument("--overwrite", action="store_true", help="rewrite existing files (default: keep them)")
    p.add_argument("--keep-overlap", action="store_true", help="keep training problems found in a benchmark")
    p.add_argument(
        "--allow-drops", action="store_true", help="write a benchmark even if some of its rows are unusable"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def check_writable(out_dir: Path) -> None:
    """Fail now, naming the fix, when ``out_dir`` cannot be created or written: a probe file is written (and
    removed) in its nearest existing folder, so nothing is left behind when a later check fails."""
    import tempfile

    existing = out_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".sspo-write-check-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise DataError(
            f"--out-dir {out_dir}: cannot write there ({reason}). Pass a folder you can write to, e.g. "
            "--out-dir data (created if missing), or fix its permissions (ls -ld the folder and its parents)."
        ) from None


def hydra_list_override(key: str, paths: list[str]) -> str:
    """A shell-ready Hydra override, e.g. ``"data.val_files=['data/aime24.parquet','data/amc.parquet']"``."""
    return '"' + key + "=[" + ",".join("'" + p + "'" for p in paths) + ']"'


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 on a data/usage error, with the message on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        train = None if args.train == "none" else args.train
        if args.benchmarks == "all":
            benchmarks = list(BENCHMARKS)
        elif args.benchmarks == "none":
            benchmarks = []
        else:
            benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
        result = prepare(
            args.out_dir,
            train=train,
            benchmarks=benchmarks,
            local_dir=args.local_dir,
            local_files=_parse_local_files(args.local_file),
            template=args.template,
            overwrite=args.overwrite,
            remove_overlaps=not args.keep_overlap,
            progress=not args.no_progress,
            allow_drops=args.allow_drops,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in result.reports:
        print(r.summary())
    if result.overlap:
        action = "kept (--keep-overlap)" if args.keep_overlap else "removed from train"
        print(f"train/benchmark overlap: {result.overlap} — {action}")
    elif "train" in result.files and result.reports:
        if len(result.files) == 1:
            print("train/benchmark overlap: not checked (no benchmark in this run; add --benchmarks)")
        else:
            print(f"train/benchmark overlap: none found (checked against {', '.join(result.val_files)})")
    for p in result.written:
        print(f"wrote {p}")
    for p in result.skipped:
        print(f"kept existing {p} (use --overwrite to rebuild)")
    print(f"manifest: {result.manifest}")
    for key, paths in (("data.train_files", result.train_files), ("data.val_files", result.val_files)):
        if paths:
            print(hydra_list_override(key, paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
