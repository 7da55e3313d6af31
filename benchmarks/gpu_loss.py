"""SSPO's loss on a GPU at the GPU row's micro-batch, in bf16: time against verl's vanilla and gspo, error vs fp64.

    python benchmarks/gpu_loss.py                  # CUDA: 4 x 4,096 tokens, 10 warm-up + 50 timed repeats
    python benchmarks/gpu_loss.py --device cpu     # smoke test of the same code at 3 x 256 tokens

Needs nothing but torch and this package's torch-only core (:mod:`sspo.loss`, :mod:`sspo.segmentation`): no verl,
Ray or vLLM, so it runs on a bare GPU machine that has only torch (the repository root is put on ``sys.path``).
Without a CUDA device (and no ``--device cpu``) it says so and exits 0.

Inputs (synthetic, seeded, realistic in scale): 4 responses x 4,096 positions (16k), an upper bound of the 7B rows'
micro-batch (``ppo_micro_batch_size_per_gpu`` 4; dynamic batching at 12,288 tokens a GPU, responses of at most
3,000 tokens), ragged lengths with one full row; token ids from a 151,665-id vocabulary
(Qwen2.5's size) where ~1 token in 18 is a delimiter (the median subsentence on MATH500 solutions is ~18 tokens)
and one 1,000-token run has none (a long formula); log_prob ~ -U(0, 3), old_log_prob = log_prob + N(0, 0.01^2),
advantages +1/-1 per response, entropy ~ U(0, 3); a few spans of 64 to 128 tokens off-policy (log-ratio shifted
by 0.1 or 1.5) so that every clip branch acts. All made in fp64, then rounded to the timed dtype (bf16).

Timed (forward + backward w.r.t. ``log_prob``, CUDA events around each call, losses interleaved round-robin with
the order rotated each repetition, after warm-up calls), each loss as its recipe row runs it:

* ``vanilla``: verl's ``compute_policy_loss_vanilla`` (GRPO row: clip 0.2/0.2, dual clip c=3, ``token-mean``);
* ``gspo``: verl's ``compute_policy_loss_gspo`` (GSPO row: clip 3e-4/4e-4, ``seq-mean-token-mean``);
* ``sspo``: subsentence segmentation + :func:`sspo.loss.sspo_token_losses` (SSPO row: subsentence, adaptive clip,
  clip 0.02/0.03, dual clip c=3) + ``seq-mean-token-mean``, input checks and all metrics included.

Both verl formulas are re-written here as plain torch, op for op as in verl 0.9.1's ``core_algos.py`` (metrics and
their ``.item()`` host syncs included); ``tests/test_loss_numerics.py`` checks they equal verl's registered
functions. Printed: median, interquartile range and min/max of each loss's time in ms; the per-repetition ratios
sspo/vanilla and sspo/gspo (median and IQR: variants of one repetition ran back to back). Then the fp64 check:
SSPO (and, for context, vanilla and gspo) on the bf16 inputs against an fp64 reference on the same values
(the error of the computation) and on the exact fp64 values (adding the rounding of the inputs to bf16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's sspo, on a machine with torch only
from sspo.loss import SSPOSettings, sspo_token_losses  # noqa: E402
from sspo.segmentation import SubsentenceSegmenter  # noqa: E402

GPU_SHAPE = (4, 4096)  # the GPU rows' micro-batch, at most: 4 responses x 4,096 tokens
CPU_SHAPE = (3, 256)  # --device cpu: a smoke test of the same code
VOCAB = 151_665  # Qwen2.5's vocabulary size
DELIMITER_RATE = 1 / 18
CLIP = {"vanilla": (0.2, 0.2), "gspo": (3e-4, 4e-4), "sspo": (0.02, 0.03)}  # the rows' (clip_low, clip_high)
CLIP_RATIO_C = 3.0  # verl's default dual-clip bound


# ----------------------------------------------------------------------------------------------
# verl's built-in formulas (verl 0.9.1, verl/trainer/ppo/core_algos.py), plain torch
# ----------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl's ``verl_F.masked_mean``: masked sum over all elements / (mask count + 1e-8)."""
    return (torch.where(mask, x, 0.0) * mask).sum() / (mask.sum() + 1e-8)


def agg_token_mean(loss_mat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl's ``agg_loss(..., "token-mean")`` on one rank (no global batch info)."""
    return (torch.where(mask, loss_mat, 0.0) * mask).sum() / mask.sum()


def agg_seq_mean_token_mean(loss_mat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl's ``agg_loss(..., "seq-mean-token-mean")`` on one rank: mean over non-empty responses of token means."""
    n_tokens = torch.sum(mask, dim=-1)
    seq_losses = torch.sum(loss_mat * mask, dim=-1) / (n_tokens + 1e-8)
    seq_mask = (n_tokens > 0).float()
    return (torch.where(seq_mask.bool(), seq_losses, 0.0) * seq_mask).sum() / seq_mask.sum()


def vanilla_loss(
    old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip_low: float = 0.2, clip_high: float = 0.2, clip_ratio_c: float = CLIP_RATIO_C,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """verl's ``compute_policy_loss_vanilla`` (token ratio, PPO clip, dual clip) with ``token-mean``."""
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    ppo_kl = masked_mean(-negative_approx_kl, mask)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses1).float(), mask)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_clipfrac_lower = masked_mean(torch.gt(clip_pg_losses1, pg_losses3) * (advantages < 0).float(), mask)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    loss = agg_token_mean(pg_losses, mask)
    return loss, {
        "actor/pg_clipfrac": pg_clipfrac.detach().item(),
        "actor/ppo_kl": ppo_kl.detach().item(),
        "actor/pg_clipfrac_lower": pg_clipfrac_lower.detach().item(),
    }


def gspo_loss(
    old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip_low: float = 3e-4, clip_high: float = 4e-4,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """verl's ``compute_policy_loss_gspo`` (sequence ratio in the GSPO-token form, no dual clip) with
    ``seq-mean-token-mean``."""
    negative_approx_kl = log_prob - old_log_prob
    seq_lengths = torch.sum(mask, dim=-1).clamp(min=1)
    negative_approx_kl_seq = torch.sum(negative_approx_kl * mask, dim=-1) / seq_lengths
    log_ratio = log_prob - log_prob.detach() + negative_approx_kl_seq.detach().unsqueeze(-1)
    ratio = torch.exp(torch.clamp(log_ratio, max=10.0))
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    pg_losses = torch.maximum(pg_losses1, pg_losses2)
    loss = agg_seq_mean_token_mean(pg_losses, mask)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses1).float(), mask)
    ppo_kl = masked_mean(-negative_approx_kl, mask)
    return loss, {
        "actor/pg_clipfrac": pg_clipfrac.detach().item(),
        "actor/ppo_kl": ppo_kl.detach().item(),
        "actor/pg_clipfrac_lower": torch.tensor(0.0, device=loss.device).item(),
    }


# ----------------------------------------------------------------------------------------------
# SSPO as its row runs it, and an fp64 reference written independently of sspo.loss
# ----------------------------------------------------------------------------------------------


def sspo_loss(
    batch: dict[str, torch.Tensor], log_prob: torch.Tensor, segmenter: SubsentenceSegmenter,
    settings: SSPOSettings | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """The SSPO row's loss: segmentation of ``batch["ids"]``, per-token losses, ``seq-mean-token-mean``."""
    mask = batch["mask"]
    segment_ids = segmenter(batch["ids"], mask)
    pg_losses, metrics = sspo_token_losses(
        batch["old_log_prob"], log_prob, batch["advantages"], mask, settings or SSPOSettings(), *CLIP["sspo"],
        CLIP_RATIO_C, segment_ids=segment_ids, entropy=batch["entropy"],
    )  # fmt: skip
    return agg_seq_mean_token_mean(pg_losses, mask), metrics


def _units(segment_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One-hot unit membership, DoubleTensor[B, T, K] (K = most subsentences in a row; 0 on padding)."""
    k = int(segment_ids.max()) + 1
    return ((segment_ids.unsqueeze(-1) == torch.arange(k, device=mask.device)) & mask.unsqueeze(-1)).double()


def sspo_reference(
    batch: dict[str, torch.Tensor], log_prob: torch.Tensor, segment_ids: torch.Tensor,
    clip_low: float = CLIP["sspo"][0], clip_high: float = CLIP["sspo"][1], clip_ratio_c: float = CLIP_RATIO_C,
    alpha: float = 1.0, f_min: float = 0.5, f_max: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """SSPO's row loss (power map, dual clip, ``seq-mean-token-mean``) and metrics in fp64, by dense per-unit sums
    (one-hot [B, T, K] products, not the scatter sums of :mod:`sspo.loss`). ``log_prob``: fp64, carries the grad."""
    mask = batch["mask"]
    old, adv, ent = (batch[k].double() for k in ("old_log_prob", "advantages", "entropy"))
    units = _units(segment_ids, mask)  # [B, T, K]
    size = units.sum(1)  # [B, K] tokens per unit (0: no such unit in the row)
    real = size > 0
    lp = torch.where(mask, log_prob, 0.0)
    log_ratio = torch.where(mask, lp.detach() - old, 0.0)
    unit_log_ratio = torch.einsum("btk,bt->bk", units, log_ratio) / size.clamp(min=1)  # [B, K]
    h_ref = torch.where(mask, ent, 0.0).sum() / mask.sum()
    f_unit = ((torch.einsum("btk,bt->bk", units, torch.where(mask, ent, 0.0)) / size.clamp(min=1)) / h_ref)
    f_unit = f_unit.pow(alpha).clamp(f_min, f_max)  # [B, K]
    s = torch.exp(torch.clamp(lp - lp.detach() + torch.einsum("btk,bk->bt", units, unit_log_ratio), max=10.0))
    f = torch.einsum("btk,bk->bt", units, f_unit)
    unclipped, clipped_loss = -adv * s, -adv * torch.clamp(s, 1 - clip_low * f, 1 + clip_high * f)
    loss_t = torch.maximum(unclipped, clipped_loss)
    dual = (adv < 0) & (loss_t > -adv * clip_ratio_c) & mask
    loss_t = torch.where(dual, -adv * clip_ratio_c, loss_t)
    seq_means = torch.where(mask, loss_t, 0.0).sum(1) / mask.sum(1).clamp(min=1)
    loss = seq_means[mask.any(1)].mean()
    clipped = (clipped_loss > unclipped) & mask
    n, n_units, unit_s = mask.sum().double(), real.sum().double(), torch.exp(unit_log_ratio.clamp(max=10.0))
    clip_share = torch.einsum("btk,bt->bk", units, clipped.double()) / size.clamp(min=1)  # [B, K]
    metrics = {
        "actor/pg_clipfrac": clipped.sum() / n, "actor/ppo_kl": -log_ratio.sum() / n,
        "actor/pg_clipfrac_lower": dual.sum() / n,
        "actor/sspo/clipfrac_high_token": (clipped & (adv > 0)).sum() / n,
        "actor/sspo/clipfrac_low_token": (clipped & (adv < 0)).sum() / n,
        "actor/sspo/clipfrac_unit": clip_share[real].mean(),
        "actor/sspo/units_per_response": n_units / mask.any(1).sum(), "actor/sspo/tokens_per_unit": n / n_units,
        "actor/sspo/ratio_min": unit_s[real].min(), "actor/sspo/ratio_mean": unit_s[real].mean(),
        "actor/sspo/ratio_max": unit_s[real].max(), "actor/sspo/adaptive_scale_min": f_unit[real].min(),
        "actor/sspo/adaptive_scale_mean": f_unit[real].mean(), "actor/sspo/adaptive_scale_max": f_unit[real].max(),
        "actor/sspo/entropy_ref": h_ref,
    }  # fmt: skip
    return loss, {k: float(v) for k, v in metrics.items()}


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def synthetic_segmenter(vocab: int = VOCAB, n_delimiters: int = 60) -> SubsentenceSegmenter:
    """A segmenter over ``vocab`` ids whose first ``n_delimiters`` ids are delimiters (no tokenizer needed).

    Ids 0 and 1 play ``.`` and ``,`` (number punctuation), ids ``n_delimiters .. + 9`` the ten digits, so the
    number rule runs on real flags."""
    table = torch.zeros(vocab + 1, dtype=torch.bool)
    delimiter, number_punct, digit = table.clone(), table.clone(), table.clone()
    delimiter[:n_delimiters] = True
    number_punct[:2] = True
    digit[n_delimiters : n_delimiters + 10] = True
    return SubsentenceSegmenter(delimiter, number_punct, table.clone(), digit, digit.clone())


def make_batch(
    shape: tuple[int, int], device: torch.device | str = "cpu", seed: int = 0, n_delimiters: int = 60
) -> dict[str, torch.Tensor]:
    """The realistic inputs of the module docstring, fp64 (``ids`` int64, ``mask`` bool), on ``device``."""
    b, t = shape
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(t // 4, t + 1, (b,), generator=g)
    lengths[0] = t  # one full row
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    is_delim = torch.rand(b, t, generator=g) < DELIMITER_RATE
    ids = torch.where(
        is_delim,
        torch.randint(0, n_delimiters, (b, t), generator=g),
        torch.randint(n_delimiters, VOCAB, (b, t), generator=g),
    )
    run = min(1000, t // 4)  # a long subsentence: a formula without punctuation
    ids[0, t // 4 : t // 4 + run] = torch.randint(n_delimiters, VOCAB, (run,), generator=g)
    log_prob = -3 * torch.rand(b, t, generator=g, dtype=torch.float64)
    old_log_prob = log_prob + 0.01 * torch.randn(b, t, generator=g, dtype=torch.float64)
    span = min(64, t // 8)  # off-policy spans (log-ratio shifted) where every clip branch acts:
    old_log_prob[0, :span] -= 0.1  # A > 0, ratio ~1.1: clipped above
    if b > 1:  # A < 0: ratio ~0.9, clipped below; ratio ~4.5 > clip_ratio_c, dual-clipped
        old_log_prob[1, :span] += 0.1
        old_log_prob[1, span : 3 * span] -= 1.5
    signs = torch.where(torch.arange(b) % 4 == 1, -1.0, 1.0).double()  # +1, -1, +1, +1, ...
    batch = {
        "ids": torch.where(mask, ids, 0), "mask": mask, "log_prob": log_prob, "old_log_prob": old_log_prob,
        "advantages": signs.unsqueeze(1).expand(b, t).contiguous(),
        "entropy": 3 * torch.rand(b, t, generator=g, dtype=torch.float64),
    }  # fmt: skip
    return {k: v.to(device) for k, v in batch.items()}


def cast(batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The batch with its float tensors rounded to ``dtype`` (ids and mask unchanged)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}


def loss_and_grad(fn: Callable, log_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(loss, d loss / d log_prob, metrics) of ``fn(log_prob)`` for a fresh leaf copy of ``log_prob``."""
    leaf = log_prob.detach().clone().requires_grad_()
    loss, metrics = fn(leaf)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad, metrics


# ----------------------------------------------------------------------------------------------
# Errors against fp64
# ----------------------------------------------------------------------------------------------


def errors(
    got: tuple[torch.Tensor, torch.Tensor, dict[str, float]], ref: tuple[torch.Tensor, torch.Tensor, dict[str, float]]
) -> dict[str, float]:
    """Relative errors of (loss, grad, metrics) against a reference: ``loss``; ``grad`` (2-norm of the difference /
    2-norm of the reference) and ``grad_max`` (largest difference / largest reference entry); ``metrics`` (largest
    relative error over the reference's metrics but two); ``ppo_kl`` (absolute: a mean log-ratio near 0) and
    ``clipfrac`` (largest absolute error of the clip fractions, which count tokens or units)."""
    (loss, grad, m), (r_loss, r_grad, r_m) = got, ref
    diff = grad.double() - r_grad.double()
    fractions = [k for k in r_m if "clipfrac" in k]
    others = [k for k in r_m if k not in fractions and k != "actor/ppo_kl"]
    return {
        "loss": abs(float(loss) - float(r_loss)) / abs(float(r_loss)),
        "grad": float(diff.norm() / r_grad.double().norm()),
        "grad_max": float(diff.abs().max() / r_grad.double().abs().max()),
        "metrics": max(abs(m[k] - r_m[k]) / abs(r_m[k]) for k in others),
        "ppo_kl": abs(m["actor/ppo_kl"] - r_m["actor/ppo_kl"]),
        "clipfrac": max(abs(m[k] - r_m[k]) for k in fractions),
    }


def fp64_check(batch: dict[str, torch.Tensor], dtype: torch.dtype, segmenter: SubsentenceSegmenter) -> dict:
    """SSPO from ``dtype`` inputs against :func:`sspo_reference` on the same (rounded) values, ``computation``,
    and on the exact fp64 values, ``end_to_end``; ``fp64``: SSPO itself in fp64 against the reference."""
    low = cast(batch, dtype)
    seg = segmenter(batch["ids"], batch["mask"])
    rounded = cast(low, torch.float64)
    ours = loss_and_grad(lambda lp: sspo_loss(low, lp, segmenter), low["log_prob"])
    return {
        "computation": errors(ours, loss_and_grad(lambda lp: sspo_reference(rounded, lp, seg), rounded["log_prob"])),
        "end_to_end": errors(ours, loss_and_grad(lambda lp: sspo_reference(batch, lp, seg), batch["log_prob"])),
        "fp64": errors(
            loss_and_grad(lambda lp: sspo_loss(batch, lp, segmenter), batch["log_prob"]),
            loss_and_grad(lambda lp: sspo_reference(batch, lp, seg), batch["log_prob"]),
        ),
    }


def builtin_errors(batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, dict[str, float]]:
    """For context: relative loss and gradient errors of the vanilla and gspo formulas from ``dtype`` inputs
    against the same formulas in fp64 on the exact values."""
    low = cast(batch, dtype)
    out = {}
    for name, fn in (("vanilla", vanilla_loss), ("gspo", gspo_loss)):
        def run(b: dict[str, torch.Tensor], fn=fn) -> tuple:
            return loss_and_grad(lambda lp: fn(b["old_log_prob"], lp, b["advantages"], b["mask"]), b["log_prob"])

        (loss, grad, _), (r_loss, r_grad, _) = run(low), run(batch)
        out[name] = {
            "loss": abs(float(loss) - float(r_loss)) / abs(float(r_loss)),
            "grad": float((grad.double() - r_grad).norm() / r_grad.norm()),
        }
    return out


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int, device: torch.device) -> dict:
    """Milliseconds of each call of each function: ``warmup`` untimed rounds, then ``repeats`` rounds, the order
    rotated each round; CUDA events on a GPU (each call synchronised before the next), ``perf_counter`` on CPU."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fns[name]()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fns[name]()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, med, q3


def print_times(times: dict[str, list[float]]) -> None:
    """Median, IQR and range of each loss; paired per-repetition ratios of sspo to vanilla and gspo."""
    for name, ts in times.items():
        q1, med, q3 = quartiles(ts)
        print(f"{name:14s} median {med:8.3f} ms   IQR [{q1:.3f}, {q3:.3f}]   min {min(ts):.3f}   max {max(ts):.3f}")
    for base in ("vanilla", "gspo"):
        q1, med, q3 = quartiles([s / b for s, b in zip(times["sspo"], times[base], strict=True)])
        print(f"sspo / {base:8s} x{med:.2f}   IQR [x{q1:.2f}, x{q3:.2f}]   (paired per repetition)")


def timed_calls(batch: dict[str, torch.Tensor], segmenter: SubsentenceSegmenter) -> dict[str, Callable[[], object]]:
    """Forward + backward of each loss on ``batch`` (bf16), and the segmentation alone, as zero-argument calls."""
    old, adv, mask = batch["old_log_prob"], batch["advantages"], batch["mask"]
    log_prob = batch["log_prob"].detach().clone().requires_grad_()

    def fwd_bwd(fn: Callable[[torch.Tensor], tuple]) -> Callable[[], object]:
        return lambda: torch.autograd.grad(fn(log_prob)[0], log_prob)

    return {
        "vanilla": fwd_bwd(lambda lp: vanilla_loss(old, lp, adv, mask, *CLIP["vanilla"])),
        "gspo": fwd_bwd(lambda lp: gspo_loss(old, lp, adv, mask, *CLIP["gspo"])),
        "sspo": fwd_bwd(lambda lp: sspo_loss(batch, lp, segmenter)),
        "segmentation": lambda: segmenter(batch["ids"], mask),
    }


def main(argv: list[str] | None = None) -> int:
    """Time the three losses at the GPU row's shape in bf16, then check SSPO against fp64 (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test at small shapes)")
    parser.add_argument("--shape", default=None, help="BxT, e.g. 4x4096 (default: 4x4096 on CUDA, 3x256 on CPU)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds (default 10)")
    parser.add_argument("--repeats", type=int, default=50, help="timed rounds (default 50)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device found (torch {torch.__version__}, CUDA build {torch.version.cuda}): nothing to time; "
              "`--device cpu` runs the same code at small shapes")  # fmt: skip
        return 0
    if args.repeats < 2 or args.warmup < 0:
        parser.error(f"--repeats must be >= 2 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    try:
        shape = tuple(int(x) for x in args.shape.lower().split("x")) if args.shape else None
    except ValueError:
        shape = ()
    if shape is not None and (len(shape) != 2 or shape[0] < 1 or shape[1] < 16):
        parser.error(f"--shape must be BxT with B >= 1 and T >= 16 (e.g. 4x4096), got {args.shape!r}")
    shape = shape or (GPU_SHAPE if device.type == "cuda" else CPU_SHAPE)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}, shape {shape[0]} x {shape[1]}, bf16, "
          f"{args.warmup} warm-up + {args.repeats} timed rounds")  # fmt: skip
    batch, segmenter = make_batch(shape, device), synthetic_segmenter()
    seg = segmenter(batch["ids"], batch["mask"])
    print(f"{int(batch['mask'].sum())} valid tokens, {int((seg.amax(1) + 1).sum())} subsentences")
    print_times(time_interleaved(timed_calls(cast(batch, torch.bfloat16), segmenter), args.warmup, args.repeats,
                                 device))  # fmt: skip
    print("\nfp64 check, relative errors (grad: 2-norm; ppo_kl and clipfrac: absolute)")
    for dtype in (torch.bfloat16, torch.float16):
        for kind, errs in fp64_check(batch, dtype, segmenter).items():
            if kind != "fp64" or dtype == torch.bfloat16:
                label = "fp64 sspo vs reference" if kind == "fp64" else f"{str(dtype)[6:]} {kind}"
                print(f"{label:28s}" + "  ".join(f"{k} {v:.2e}" for k, v in errs.items()))
        for name, errs in builtin_errors(batch, dtype).items():  # for scale: verl's formulas, input dtype
            label = f"{str(dtype)[6:]} {name} end_to_end"
            print(f"{label:28s}" + "  ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
