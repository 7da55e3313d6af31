"""GRPO vs GSPO vs SSPO end to end on CPU, in minutes: a tiny Qwen2 learns small additions.

    python -m sspo.local_run --algo all --out runs/demo          # then: python -m sspo.report ...

verl's full trainer needs GPUs (its resource pool and vLLM/SGLang rollout), so this driver runs the
same RL step by hand, with the real pieces wherever they run on CPU:

=====================  ===========================================  =========================================
step                   here (CPU)                                   GPU recipe (``recipe/``, verl trainer)
=====================  ===========================================  =========================================
rollout                Hugging Face ``generate`` (sampling, T=1)    vLLM/SGLang server
                       on weights synced from verl's engine
                       (``engine.get_per_tensor_param``, the call
                       verl uses to push weights into vLLM)
reward                 ``sspo.reward.compute_score``                the same, as ``custom_reward_function``
advantage              verl's registered ``grpo`` estimator         the same
old log-probs/entropy  verl's actor worker ``compute_log_prob``     the same
update                 verl's actor worker ``update_actor``         the same, on many GPUs
                       (FSDP2 engine, gloo, ``sspo.cpu_platform``)
loss                   ``sspo.verl_plugin.sspo_ppo_loss`` wrapper,  the same wrapper, installed by
                       ``loss_mode`` and clip ranges read from      ``SSPOTrainer``, same ``algo/*.yaml``
                       ``recipe/config/algo/<algo>.yaml``
metrics                verl's names (``compute_data_metrics``,      verl's loggers
                       ``actor/*``) to ``metrics.jsonl`` (verl's
                       file-logger format) and TensorBoard
=====================  ===========================================  =========================================

The task: "What is a + b?" for single digits, generated from a seed, prompted with the Qwen2.5-Math
chat prompt of ``sspo.data`` and answered as ``"a + b = s, so the answer is \\boxed{s}."``. A random
model cannot produce ``\\boxed{}`` answers, so every run starts from the same SUPERVISED WARM-UP (a
300 teacher-forced steps on correct, formatted answers, plain PyTorch; built once per output folder
and shared by all algorithms): it leaves a model that writes the format but is often wrong when
sampled at temperature 1. RL is what raises the accuracy afterwards. Differences from the GPU recipe,
all for speed on 2 cores: the model (0.3M parameters, BPE vocabulary of 320 trained on the task),
the learning rate (3e-4 vs 1e-6), batch sizes (16 prompts x 8 samples, 2 optimizer steps per
batch), response length (24 tokens), one torch thread, and padded rather than packed
(remove-padding) micro-batches in verl's engine (eager attention over one packed row is quadratic
in the micro-batch's total length on CPU).

Output (``--out DIR``): ``DIR/warmup`` (the warm-up model), and per algorithm ``DIR/<algo>/`` with
``metrics.jsonl``, ``tensorboard/``, ``checkpoint/`` (verl's actor checkpoint: model, optimizer,
RNG), ``hf/`` (the latest weights as a Hugging Face model) and ``state.json``. Ctrl-C finishes the
current step, saves a checkpoint and exits (a second Ctrl-C aborts at once); ``--resume`` continues
from the checkpoint with the same results as an uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ALGOS: tuple[str, ...] = ("grpo", "gspo", "sspo")
DATA_SOURCE = "arith"
RECIPE_ALGO_DIR = Path(__file__).resolve().parents[1] / "recipe" / "config" / "algo"
ANSWER_TEMPLATE = "{a} + {b} = {s}, so the answer is \\boxed{{{s}}}."


class LocalRunError(ValueError):
    """Bad settings for a local run; the message names the option and the fix."""


@dataclass
class LocalRunConfig:
    """Everything that defines a local run (saved as ``config.json``; ``--resume`` checks it)."""

    algo: str = "sspo"
    steps: int = 60
    prompts_per_step: int = 16
    group_size: int = 8  # G responses per prompt (verl: rollout.n)
    mini_batches: int = 2  # optimizer steps per rollout batch (verl: batch / ppo_mini_batch_size)
    ppo_epochs: int = 1
    lr: float = 3e-4
    lr_warmup_steps: int = 0  # verl's linear lr warm-up (optim.lr_warmup_steps), in RL steps
    max_new_tokens: int = 24
    max_operand: int = 5  # problems "a + b" with 0 <= a, b <= max_operand
    seed: int = 0
    eval_every: int = 5  # greedy accuracy on every problem, every N steps (and at the start and end)
    save_every: int = 10
    update: bool = True  # False: everything but the optimizer step (the control for the tests)
    # the shared supervised warm-up
    warmup_steps: int = 300
    warmup_lr: float = 3e-3
    warmup_batch: int = 32
    hidden_size: int = 128
    num_layers: int = 2
    vocab_size: int = 320

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise LocalRunError(f"--algo={self.algo!r}: choose one of {', '.join(ALGOS)} or all")
        positive = (
            "steps",
            "prompts_per_step",
            "mini_batches",
            "ppo_epochs",
            "max_new_tokens",
            "max_operand",
            "eval_every",
            "save_every",
            "warmup_batch",
            "hidden_size",
            "num_layers",
        )
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise LocalRunError(
                    f"--{name.replace('_', '-')}={getattr(self, name)!r} must be an integer >= 1"
                )
        if self.group_size < 2:
            raise LocalRunError(f"--group-size={self.group_size}: GRPO needs at least 2 responses per prompt")
        if (self.prompts_per_step * self.group_size) % self.mini_batches:
            raise LocalRunError(
                f"--mini-batches={self.mini_batches} must divide prompts-per-step x group-size = "
                f"{self.prompts_per_step * self.group_size}"
            )
        if self.max_operand > 9:
            raise LocalRunError(f"--max-operand={self.max_operand}: single digits only (<= 9)")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise LocalRunError(f"--lr={self.lr!r} must be a finite number >= 0")
        if self.lr_warmup_steps < 0:
            raise LocalRunError(f"--lr-warmup-steps={self.lr_warmup_steps} must be >= 0")
        if self.warmup_steps < 0:
            raise LocalRunError(f"--warmup-steps={self.warmup_steps} must be >= 0")

    def warmup_key(self) -> dict[str, Any]:
        """The fields the shared warm-up model depends on."""
        keys = (
            "seed",
            "max_operand",
            "warmup_steps",
            "warmup_lr",
            "warmup_batch",
            "hidden_size",
            "num_layers",
            "vocab_size",
        )
        return {k: getattr(self, k) for k in keys}


# ----------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
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
    """Every problem of the task, in a fixed order (the evaluation set)."""
    return [Problem(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]


def step_problems(cfg: LocalRunConfig, step: int) -> list[Problem]:
    """The prompts of RL step ``step``: a pure function of (seed, step), so ``--resume`` replays exactly."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    return [
        Problem(rng.randint(0, cfg.max_operand), rng.randint(0, cfg.max_operand))
        for _ in range(cfg.prompts_per_step)
    ]


def prompt_text(tokenizer: Any, problem: Problem) -> str:
    """The chat prompt: ``sspo.data``'s Qwen2.5-Math template (the GPU recipe's) through the chat template."""
    from sspo.data import build_prompt

    return tokenizer.apply_chat_template(
        build_prompt(problem.question), add_generation_prompt=True, tokenize=False
    )


# ----------------------------------------------------------------------------------------------
# The tiny model and the shared supervised warm-up
# ----------------------------------------------------------------------------------------------
def _task_corpus(cfg: LocalRunConfig) -> list[str]:
    """Tokenizer training text: rendered prompts and answers of every problem (so the BPE merges fit)."""
    from sspo.data import build_prompt
    from sspo.tiny import CHAT_TEMPLATE

    texts = []
    for p in all_problems(cfg.max_operand) * 4:
        messages = build_prompt(p.question)
        texts.append("\n".join(m["content"] for m in messages) + "\n" + p.solution)
    return texts + [CHAT_TEMPLATE]


def _sft_batch(tokenizer: Any, problems: Sequence[Problem]) -> dict[str, torch.Tensor]:
    """Teacher-forcing batch: prompt + answer + EOS, loss on the answer tokens only (labels -100 elsewhere)."""
    rows, labels = [], []
    for p in problems:
        prompt = tokenizer(prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"]
        answer = tokenizer(p.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]),
    }


def prepare_warmup_model(cfg: LocalRunConfig, out: Path, progress: bool = True) -> Path:
    """Build the tiny model + tokenizer and run the supervised warm-up once; reused while its settings match.

    The warm-up is identical for every algorithm (same seed, data and steps): plain teacher-forced
    cross-entropy with AdamW on correct formatted answers. It is kept short on purpose, so the model
    writes the answer format but still samples wrong sums often; RL does the rest.
    """
    from tqdm.auto import tqdm

    from sspo.tiny import build_model, build_tokenizer

    path = out / "warmup"
    marker = path / "warmup.json"
    if marker.is_file() and json.loads(marker.read_text()) == cfg.warmup_key():
        return path
    if path.exists():
        shutil.rmtree(path)
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer(_task_corpus(cfg), vocab_size=cfg.vocab_size)
    model = build_model(tokenizer, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, seed=cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.warmup_lr)
    rng = random.Random(cfg.seed)
    problems = all_problems(cfg.max_operand)
    model.train()
    for _ in tqdm(range(cfg.warmup_steps), desc="supervised warm-up", disable=not progress, leave=False):
        loss = model(**_sft_batch(tokenizer, [rng.choice(problems) for _ in range(cfg.warmup_batch)])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    marker.write_text(json.dumps(cfg.warmup_key()))
    return path


# ----------------------------------------------------------------------------------------------
# verl pieces: algorithm settings from the recipe, the actor, weight sync, the GRPO advantage
# ----------------------------------------------------------------------------------------------
def _override_value(value: Any) -> str:
    return (
        json.dumps(value)
        if isinstance(value, (str, list, dict))
        else ("null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value))
    )


def recipe_algo_overrides(algo: str, recipe_dir: Path = RECIPE_ALGO_DIR) -> list[str]:
    """Hydra overrides of verl's ``ppo_trainer`` equal to the GPU recipe's ``algo/<algo>.yaml``.

    Keys verl's config lacks (e.g. SSPO's ``granularity``) get Hydra's ``+`` prefix, as a user would write.
    """
    from omegaconf import OmegaConf

    from sspo.cpu_platform import compose_ppo_config

    path = recipe_dir / f"{algo}.yaml"
    if not path.is_file():
        raise LocalRunError(
            f"{path} not found: the local run reads the recipe's algorithm settings from a checkout"
        )
    flat: list[tuple[str, Any]] = []

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            full = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, full)
            else:
                flat.append((full, value))

    walk(OmegaConf.to_container(OmegaConf.load(path), resolve=True), "")
    base = compose_ppo_config()
    missing = object()
    return [
        ("" if OmegaConf.select(base, key, default=missing) is not missing else "+")
        + f"{key}={_override_value(value)}"
        for key, value in flat
    ]


def actor_overrides(cfg: LocalRunConfig) -> list[str]:
    """verl config for the local actor: the recipe's algorithm, then the CPU-sized batch and lr."""
    batch = cfg.prompts_per_step * cfg.group_size
    mini = batch // cfg.mini_batches
    return [
        *recipe_algo_overrides(cfg.algo),
        f"actor_rollout_ref.actor.optim.lr={cfg.lr}",
        f"actor_rollout_ref.actor.optim.lr_warmup_steps={cfg.lr_warmup_steps}",
        f"actor_rollout_ref.actor.optim.total_training_steps={cfg.steps}",
        "actor_rollout_ref.actor.optim.weight_decay=0.0",
        "actor_rollout_ref.actor.calculate_entropy=true",
        "actor_rollout_ref.actor.entropy_coeff=0.0",
        "actor_rollout_ref.actor.use_kl_loss=false",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
        # the model is tiny: one training micro-batch per mini-batch, one inference pass over the whole batch,
        # no activation checkpointing
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={mini}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={batch}",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        f"actor_rollout_ref.actor.data_loader_seed={cfg.seed}",
    ]


def build_actor(cfg: LocalRunConfig, model_path: Path) -> Any:
    """verl's actor worker on CPU (``sspo.cpu_platform.build_cpu_actor``) with the project's loss wrapper.

    ``use_remove_padding=False``: eager attention over one packed row of the whole micro-batch is
    quadratic in its total length; padded rows are far cheaper for short sequences on CPU.
    """
    from sspo.cpu_platform import build_cpu_actor
    from sspo.verl_plugin import assert_loss_registered, make_actor_loss_fn

    actor = build_cpu_actor(
        model_path,
        overrides=actor_overrides(cfg),
        use_remove_padding=False,
        loss_fn_factory=make_actor_loss_fn,
    )
    assert_loss_registered(actor.actor_config.policy_loss.loss_mode)
    return actor


def sync_weights(actor: Any, hf_model: torch.nn.Module) -> None:
    """Copy the engine's current weights into the HF model used for sampling.

    ``engine.get_per_tensor_param()`` is what verl's ``update_weights`` streams into vLLM on GPU.
    """
    params, _ = actor.engine.get_per_tensor_param()
    state = {name: tensor.detach().to("cpu", torch.float32) for name, tensor in params}
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if hf_model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"weight sync mismatch: missing {missing}, unexpected {unexpected}")


def grpo_advantages(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor, uids: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's registered ``grpo`` estimator on outcome rewards (see :func:`_last_token`), grouped by ``uids``."""
    import numpy as np
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    return get_adv_estimator_fn("grpo")(
        token_level_rewards=token_level_rewards,
        response_mask=response_mask,
        index=np.array(list(uids), dtype=object),
        norm_adv_by_std_in_grpo=True,
    )


# ----------------------------------------------------------------------------------------------
# Rollout and evaluation with Hugging Face generate
# ----------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]  # up to and including EOS (as verl's rollouts); no padding
    texts: list[str]
    truncated: list[bool]


@torch.no_grad()
def generate(
    hf_model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    n: int,
    max_new_tokens: int,
    greedy: bool,
    seed: int,
) -> Rollout:
    """``n`` responses per prompt: sampling at temperature 1 (no top-k/top-p), or greedy."""
    tokenizer.padding_side = "left"
    enc = tokenizer(
        [p for p in prompts for _ in range(n)], return_tensors="pt", padding=True, add_special_tokens=False
    )
    torch.manual_seed(seed)
    sampling = (
        {"do_sample": False} if greedy else {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    )
    out = hf_model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **sampling,
    )
    width = enc["input_ids"].shape[1]
    prompt_ids = [
        row[mask.bool()].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True)
    ]
    responses, truncated = [], []
    for row in out[:, width:].tolist():
        end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else None
        body = row[:end] if end is not None else [t for t in row if t != tokenizer.pad_token_id]
        responses.append(body or [tokenizer.eos_token_id])
        truncated.append(end is None)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return Rollout(prompt_ids, responses, texts, truncated)


def score(texts: Sequence[str], problems: Sequence[Problem], truncated: Sequence[bool]) -> list[dict]:
    """``sspo.reward.compute_score`` per response (verl's custom_reward_function call)."""
    from sspo.reward import compute_score

    return [
        compute_score(
            data_source=DATA_SOURCE, solution_str=t, ground_truth=p.answer, extra_info={"truncated": cut}
        )
        for t, p, cut in zip(texts, problems, truncated, strict=True)
    ]


def evaluate(hf_model: Any, tokenizer: Any, cfg: LocalRunConfig) -> float:
    """Greedy accuracy over every problem of the task (verl's ``val-core/<source>/acc/mean@1``)."""
    problems = all_problems(cfg.max_operand)
    rollout = generate(
        hf_model,
        tokenizer,
        [prompt_text(tokenizer, p) for p in problems],
        n=1,
        max_new_tokens=cfg.max_new_tokens,
        greedy=True,
        seed=cfg.seed,
    )
    results = score(rollout.texts, problems, rollout.truncated)
    return sum(r["acc"] for r in results) / len(results)


# ----------------------------------------------------------------------------------------------
# One RL step
# ----------------------------------------------------------------------------------------------
def _padded(rows: Sequence[Sequence[int]], value: int, *, left: bool) -> torch.Tensor:
    """Ragged token rows -> one LongTensor, padded with ``value`` on the left (prompts) or right (responses)."""
    return torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(r, dtype=torch.long) for r in rows],
        batch_first=True,
        padding_value=value,
        padding_side="left" if left else "right",
    )


def rl_step(actor: Any, hf_model: Any, tokenizer: Any, cfg: LocalRunConfig, step: int) -> dict[str, float]:
    """Rollout -> reward -> GRPO advantage -> old log-probs/entropy -> verl update. Returns the step's metrics."""
    from verl import DataProto
    from verl.trainer.ppo.core_algos import agg_loss
    from verl.trainer.ppo.metric_utils import compute_data_metrics
    from verl.utils.metric import reduce_metrics
    from verl.utils.py_functional import rename_dict

    from sspo.cpu_platform import make_actor_batch

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    problems = step_problems(cfg, step)
    rollout = generate(
        hf_model,
        tokenizer,
        [prompt_text(tokenizer, p) for p in problems],
        n=cfg.group_size,
        max_new_tokens=cfg.max_new_tokens,
        greedy=False,
        seed=cfg.seed * 1_000_003 + step,
    )
    per_response = [p for p in problems for _ in range(cfg.group_size)]
    uids = [f"{step}-{i}" for i in range(len(problems)) for _ in range(cfg.group_size)]
    timings["timing_s/gen"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    results = score(rollout.texts, per_response, rollout.truncated)
    scores = torch.tensor([r["score"] for r in results], dtype=torch.float32)
    timings["timing_s/reward"] = time.perf_counter() - t1

    prompts = _padded(rollout.prompt_ids, tokenizer.pad_token_id, left=True)
    responses = _padded(rollout.response_ids, tokenizer.pad_token_id, left=False)
    response_mask = _padded([[1] * len(r) for r in rollout.response_ids], 0, left=False)
    prompt_mask = _padded([[1] * len(p) for p in rollout.prompt_ids], 0, left=True)
    token_level_rewards = _last_token(scores, response_mask)
    advantages, returns = grpo_advantages(token_level_rewards, response_mask, uids)

    t2 = time.perf_counter()
    batch = make_actor_batch(
        rollout.prompt_ids,
        rollout.response_ids,
        advantages=[adv[: len(r)].tolist() for adv, r in zip(advantages, rollout.response_ids, strict=True)],
    )
    actor.compute_old_log_prob(batch)
    timings["timing_s/old_log_prob"] = time.perf_counter() - t2
    entropy = batch["entropy"].to_padded_tensor(0.0)
    metrics: dict[str, float] = {
        "actor/entropy": agg_loss(
            loss_mat=entropy, loss_mask=response_mask.bool(), loss_agg_mode=actor.actor_config.loss_agg_mode
        ).item(),
    }
    if cfg.update:
        t3 = time.perf_counter()
        batch_size = len(rollout.response_ids)
        update = actor.update_actor(
            batch, mini_batch_size=batch_size // cfg.mini_batches, epochs=cfg.ppo_epochs
        )
        timings["timing_s/update_actor"] = time.perf_counter() - t3
        update = rename_dict(reduce_metrics(update), "actor/")
        metrics.update(
            {k: float(v) for k, v in update.items() if not k.startswith(("actor/perf", "actor/mfu"))}
        )
        t4 = time.perf_counter()
        sync_weights(actor, hf_model)
        timings["timing_s/update_weights"] = time.perf_counter() - t4

    data = DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": responses,
            "response_mask": response_mask,
            "attention_mask": torch.cat([prompt_mask, response_mask], dim=1),
            "token_level_scores": token_level_rewards,
            "token_level_rewards": token_level_rewards,
            "advantages": advantages,
            "returns": returns,
        }
    )
    metrics.update({k: float(v) for k, v in compute_data_metrics(batch=data, use_critic=False).items()})
    metrics["train/acc"] = sum(r["acc"] for r in results) / len(results)
    metrics["train/truncated"] = sum(rollout.truncated) / len(rollout.truncated)
    metrics["timing_s/step"] = time.perf_counter() - t0
    metrics.update(timings)
    return metrics


def _last_token(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Outcome rewards as verl stores them: each response's score on its last token, zeros elsewhere."""
    out = torch.zeros_like(response_mask, dtype=torch.float32)
    out[torch.arange(len(scores)), (response_mask.sum(-1) - 1).clamp(min=0)] = scores
    return out


# ----------------------------------------------------------------------------------------------
# Logging, checkpoints, Ctrl-C
# ----------------------------------------------------------------------------------------------
class MetricsLog:
    """``metrics.jsonl`` in verl's file-logger format (``{"step", "data"}``) plus TensorBoard scalars."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():  # resume: drop what was logged after the checkpoint (it is redone)
            kept = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln)["step"] <= start_step
            ]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.fp = self.path.open("a", encoding="utf-8")
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.fp.write(json.dumps({"step": step, "data": metrics}) + "\n")
        self.fp.flush()  # a killed run still leaves every finished step on disk
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.fp.close()
        self.writer.close()


class GracefulInterrupt:
    """First Ctrl-C (SIGINT): finish the current step, save, stop. Second: abort now (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl-C: finishing this step, then saving a checkpoint (Ctrl-C again aborts without saving)",
            file=sys.stderr,
        )

    @contextlib.contextmanager
    def installed(self) -> Iterator[GracefulInterrupt]:
        self._previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, self._previous)


def save_checkpoint(actor: Any, hf_model: Any, tokenizer: Any, run_dir: Path, step: int) -> None:
    """verl's actor checkpoint (model, optimizer, lr scheduler, RNG) + HF weights + ``state.json``, atomically enough.

    ``state.json`` is written last: a run killed mid-save resumes from the previous complete checkpoint.
    """
    ckpt = run_dir / "checkpoint" / f"global_step_{step}"
    actor.training_worker.save_checkpoint(str(ckpt), global_step=step, max_ckpt_to_keep=None)
    hf_dir = run_dir / "hf"
    hf_model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    state = {"step": step, "checkpoint": str(ckpt.relative_to(run_dir))}
    tmp = run_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(run_dir / "state.json")
    for old in (run_dir / "checkpoint").glob("global_step_*"):
        if old != ckpt:
            shutil.rmtree(old, ignore_errors=True)


@dataclass
class RunResult:
    run_dir: Path
    last_step: int
    interrupted: bool


def train(
    cfg: LocalRunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    allow_fresh: bool = False,
    progress: bool = True,
    threads: int = 1,
    on_step_end: Callable[[int, dict[str, float]], None] | None = None,
) -> RunResult:
    """Train ``cfg.algo`` into ``out/<algo>`` (warm-up model shared in ``out/warmup``). See the module docstring.

    ``threads``: torch CPU threads while training (restored after). One is fastest for this tiny model:
    its kernels are too small to split, and on a shared machine extra OpenMP threads mostly spin-wait.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(
            cfg, Path(out), resume=resume, allow_fresh=allow_fresh, progress=progress, on_step_end=on_step_end
        )
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    cfg: LocalRunConfig,
    out: Path,
    *,
    resume: bool,
    allow_fresh: bool,
    progress: bool,
    on_step_end: Callable[[int, dict[str, float]], None] | None,
) -> RunResult:
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = out / cfg.algo
    config_path = run_dir / "config.json"
    state_path = run_dir / "state.json"
    start = 0
    if resume and allow_fresh and not state_path.is_file():
        print(
            f"--resume: no checkpoint in {run_dir}, starting {cfg.algo} from the warm-up model",
            file=sys.stderr,
        )
        resume = False
    if resume:
        if not state_path.is_file():
            raise LocalRunError(
                f"--resume: no checkpoint in {run_dir} (state.json missing); run without --resume"
            )
        saved = LocalRunConfig(**json.loads(config_path.read_text()))
        changed = {
            k for k in dataclasses.asdict(cfg) if k != "steps" and getattr(cfg, k) != getattr(saved, k)
        }
        if changed:
            raise LocalRunError(
                f"--resume with settings that differ from the checkpoint's ({sorted(changed)}): "
                f"use the same options (only --steps may change) or a new --out"
            )
        start = json.loads(state_path.read_text())["step"]
    elif run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)  # a fresh run replaces an old one: never mix two runs' metrics
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(dataclasses.asdict(cfg), indent=1))

    model_path = prepare_warmup_model(cfg, out, progress=progress)
    actor = build_actor(cfg, model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    hf_model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="eager").float().eval()
    if start:
        state = json.loads(state_path.read_text())
        actor.training_worker.load_checkpoint(str(run_dir / state["checkpoint"]))
        sync_weights(actor, hf_model)
    log = MetricsLog(run_dir, start)
    step = start
    interrupt = GracefulInterrupt()
    try:
        with interrupt.installed():
            if start == 0:
                log.log({f"val-core/{DATA_SOURCE}/acc/mean@1": evaluate(hf_model, tokenizer, cfg)}, step=0)
            bar = tqdm(
                range(start + 1, cfg.steps + 1),
                desc=cfg.algo,
                initial=start,
                total=cfg.steps,
                disable=not progress,
            )
            for step in bar:
                metrics = rl_step(actor, hf_model, tokenizer, cfg, step)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    metrics[f"val-core/{DATA_SOURCE}/acc/mean@1"] = evaluate(hf_model, tokenizer, cfg)
                metrics["training/global_step"] = step
                log.log(metrics, step)
                bar.set_postfix(
                    reward=f"{metrics['critic/score/mean']:.2f}",
                    clip=f"{metrics.get('actor/pg_clipfrac', float('nan')):.3f}",
                    ent=f"{metrics['actor/entropy']:.2f}",
                )
                if on_step_end is not None:
                    on_step_end(step, metrics)
                if interrupt.requested or step % cfg.save_every == 0 or step == cfg.steps:
                    save_checkpoint(actor, hf_model, tokenizer, run_dir, step)
                if interrupt.requested:
                    break
    finally:
        log.close()
    return RunResult(run_dir=run_dir, last_step=step, interrupted=interrupt.requested)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sspo.local_run",
        description="GRPO vs GSPO vs SSPO on CPU with verl's engine: a tiny Qwen2 learns small additions.",
    )
    parser.add_argument(
        "--algo", default="all", help="grpo | gspo | sspo | all (default: all, one after another)"
    )
    parser.add_argument("--out", default="runs/local", help="output folder (default: runs/local)")
    parser.add_argument(
        "--resume", action="store_true", help="continue each algorithm from its checkpoint in --out"
    )
    parser.add_argument(
        "--no-update", dest="update", action="store_false", help="skip the optimizer step (control)"
    )
    parser.add_argument(
        "--no-report", dest="report", action="store_false", help="do not write OUT/report at the end"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for the tiny model)"
    )
    defaults = LocalRunConfig()
    for f in dataclasses.fields(LocalRunConfig):
        if f.name in ("algo", "update"):
            continue
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(getattr(defaults, f.name)),
            default=getattr(defaults, f.name),
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    algos = list(ALGOS) if args.algo == "all" else [args.algo]
    fields = {f.name for f in dataclasses.fields(LocalRunConfig)}
    try:
        configs = [
            LocalRunConfig(**{k: v for k, v in vars(args).items() if k in fields and k != "algo"}, algo=a)
            for a in algos
        ]
    except LocalRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dirs = []
    for cfg in configs:
        try:
            result = train(
                cfg,
                args.out,
                resume=args.resume,
                allow_fresh=len(configs) > 1,
                progress=not args.quiet,
                threads=args.threads,
            )
        except LocalRunError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        run_dirs.append(result.run_dir)
        if result.interrupted:
            print(
                f"interrupted: {cfg.algo} saved at step {result.last_step}; continue with --resume",
                file=sys.stderr,
            )
            return 130
    if args.report:
        from sspo.report import make_report

        report = make_report([str(d) for d in run_dirs], Path(args.out) / "report")
        print(Path(report["summary"]).read_text())
        print("plots:", ", ".join(str(p) for p in report["pngs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
