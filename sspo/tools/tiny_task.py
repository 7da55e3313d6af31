"""The CPU demo's task: a tiny Qwen2 learns single-digit additions, through verl's own trainer.

    python -m sspo.tools.tiny_task --out runs/tiny      # model/, train.parquet, tiny_add.parquet (about 20 s)

"What is a + b?" for 0 <= a, b <= ``max_operand``, prompted with the recipe's Qwen2.5-Math template
(:func:`sspo.tools.data.build_prompt`) and scored by :mod:`sspo.reward` like the GPU rows. A random model
never writes ``\\boxed{}``, so the model gets a short SUPERVISED WARM-UP first (plain PyTorch,
teacher-forced on correct formatted answers, the same for every algorithm): it then writes the
format but samples wrong sums often at temperature 1, and RL (``experiment=<algo>_cpu``) raises the
accuracy. The training file holds ``passes`` passes over all problems, each pass in its own random
order and read in file order (``dataset/tiny_add.yaml``: no shuffle, 12 prompts per step): every 3
consecutive steps see each of the 36 problems once, so training rewards of such windows compare, and
resuming a run shows whether the data order continued. The assets are rebuilt only when their settings
change (``assets.json``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DATA_SOURCE = "tiny_add"
ANSWER_TEMPLATE = "{a} + {b} = {s}, so the answer is \\boxed{{{s}}}."

__all__ = ["TinyTaskConfig", "Problem", "all_problems", "prepare_assets", "main"]


@dataclass(frozen=True)
class TinyTaskConfig:
    """Everything the assets depend on (saved as ``assets.json``)."""

    max_operand: int = 5
    # the train file: this many passes over all problems, each in its own random order
    passes: int = 30
    seed: int = 0
    warmup_steps: int = 300
    warmup_lr: float = 3e-3
    warmup_batch: int = 32
    hidden_size: int = 128
    num_layers: int = 2
    vocab_size: int = 320

    def __post_init__(self) -> None:
        for name in ("max_operand", "passes", "warmup_batch", "hidden_size", "num_layers", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')}={value!r} must be an integer >= 1")
        if self.max_operand > 9:
            raise ValueError(f"--max-operand={self.max_operand}: single digits only (<= 9)")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps={self.warmup_steps!r} must be an integer >= 0")
        if not self.warmup_lr > 0:
            raise ValueError(f"--warmup-lr={self.warmup_lr!r} must be > 0")


@dataclass(frozen=True)
class Problem:
    """One addition ``a + b``."""

    a: int
    b: int

    @property
    def question(self) -> str:
        return f"What is {self.a} + {self.b}?"

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def solution(self) -> str:
        return ANSWER_TEMPLATE.format(a=self.a, b=self.b, s=self.a + self.b)


def all_problems(max_operand: int) -> list[Problem]:
    """Every problem of the task in a fixed order (the validation set)."""
    return [Problem(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]


def _rows(problems: Sequence[Problem], split: str) -> list[dict[str, Any]]:
    from sspo.tools.data import build_prompt

    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": build_prompt(p.question),
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": p.answer},
            "extra_info": {
                "split": split,
                "index": i,
                "problem": p.question,
                "answer_alternatives": [p.answer],
                "raw_answer": p.answer,
            },
        }
        for i, p in enumerate(problems)
    ]


def _warmup_model(cfg: TinyTaskConfig, path: Path) -> None:
    """Tokenizer + tiny Qwen2, then ``warmup_steps`` of teacher-forced cross-entropy (AdamW); saved to ``path``."""
    import torch

    from sspo.tools.data import build_prompt
    from sspo.tools.tiny import CHAT_TEMPLATE, build_model, build_tokenizer

    problems = all_problems(cfg.max_operand)
    corpus = ["\n".join(m["content"] for m in build_prompt(p.question)) + "\n" + p.solution for p in problems * 4]
    tokenizer = build_tokenizer(corpus + [CHAT_TEMPLATE], vocab_size=cfg.vocab_size)
    model = build_model(tokenizer, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, seed=cfg.seed)

    def encode(p: Problem) -> tuple[list[int], list[int]]:
        prompt = tokenizer.apply_chat_template(build_prompt(p.question), add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(p.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids  # loss on the answer only

    encoded = {p: encode(p) for p in problems}
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.warmup_lr)
    rng = random.Random(cfg.seed)
    model.train()
    for _ in range(cfg.warmup_steps):
        ids, labels = zip(*(encoded[rng.choice(problems)] for _ in range(cfg.warmup_batch)), strict=True)
        pad = torch.nn.utils.rnn.pad_sequence
        input_ids = pad([torch.tensor(x) for x in ids], batch_first=True, padding_value=tokenizer.pad_token_id)
        batch = {
            "input_ids": input_ids,
            "attention_mask": pad([torch.ones(len(x), dtype=torch.long) for x in ids], batch_first=True),
            "labels": pad([torch.tensor(x) for x in labels], batch_first=True, padding_value=-100),
        }
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" for one tiny shard: noise on the demo's screen
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)


def prepare_assets(out: str | Path, cfg: TinyTaskConfig | None = None) -> Path:
    """Write ``out/model`` (the warmed-up model), ``out/train.parquet`` and ``out/tiny_add.parquet``.

    Idempotent: kept as they are while ``out/assets.json`` matches ``cfg``. Returns ``out``.
    """
    import torch

    from sspo.tools.data import write_parquet

    cfg = cfg or TinyTaskConfig()
    out = Path(out)
    marker = out / "assets.json"
    outputs = (out / "model" / "config.json", out / "train.parquet", out / f"{DATA_SOURCE}.parquet")
    if marker.is_file() and json.loads(marker.read_text()) == asdict(cfg) and all(p.is_file() for p in outputs):
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(cfg.seed)
    _warmup_model(cfg, out / "model")
    rng = random.Random(cfg.seed)
    problems = all_problems(cfg.max_operand)
    train = [p for _ in range(cfg.passes) for p in rng.sample(problems, len(problems))]
    write_parquet(_rows(train, "train"), out / "train.parquet")
    write_parquet(_rows(problems, "test"), out / f"{DATA_SOURCE}.parquet")
    marker.write_text(json.dumps(asdict(cfg)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sspo.tools.tiny_task --out DIR [--warmup-steps N ...]``."""
    defaults = TinyTaskConfig()
    parser = argparse.ArgumentParser(prog="python -m sspo.tools.tiny_task", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="assets folder (model/, train.parquet, tiny_add.parquet)")
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    try:
        cfg = TinyTaskConfig(**args)
    except ValueError as error:
        parser.error(str(error))
    from sspo.tools.outputs import OutputPathError, output_folder

    try:
        output_folder(out, "--out")  # a file there or above it: refused now, not after the model's warm-up
    except OutputPathError as error:
        parser.error(str(error))
    prepare_assets(out, cfg)
    print(f"tiny task assets in {out}: model/, train.parquet, tiny_add.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
