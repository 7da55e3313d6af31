"""SSPO's numerics at the GPU row's micro-batch (4 x 4,096 tokens) from bf16 and fp16 inputs against fp64, the
fp32 accumulation of unit means, and ``benchmarks/gpu_loss.py`` (its verl formulas equal verl's, it runs on CPU
without verl, Ray or vLLM). Figures: docs/sspo.md, "Numerics"; ``tests/test_loss_equivalence.py`` has the
small-shape bf16 check of the loss wrapper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_benchmark

from sspo.loss import SSPOSettings, sspo_token_losses, unit_mean

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "gpu_loss.py"
LOW = [torch.bfloat16, torch.float16]

# Bounds: 3x-10x the largest error measured over seeds 0-9 (docs/sspo.md, "Numerics"). Computation: against fp64 on the
# same rounded inputs (what the loss controls); end to end: against fp64 on the exact inputs (adds input rounding).
COMPUTATION = {"loss": 1e-6, "metrics": 2e-6, "ppo_kl": 1e-8, "clipfrac": 2e-8}
END_TO_END = {
    torch.bfloat16: {"loss": 1e-3, "grad": 5e-2, "metrics": 3e-2, "ppo_kl": 5e-4, "clipfrac": 2e-2},
    torch.float16: {"loss": 2e-4, "grad": 3e-3, "metrics": 1e-2, "ppo_kl": 1e-4, "clipfrac": 1e-3},
}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("gpu_loss")


@pytest.fixture(scope="module")
def gpu_batch(bench):
    """The benchmark's realistic inputs at the GPU row's shape (fp64) and its segmenter."""
    return bench.make_batch(bench.GPU_SHAPE, seed=0), bench.synthetic_segmenter()


def test_gpu_batch_is_realistic_and_exercises_every_clip_branch(bench, gpu_batch):
    """The inputs the bounds below are measured on: ragged, ~18 tokens a subsentence, one long one, every branch."""
    batch, segmenter = gpu_batch
    seg = segmenter(batch["ids"], batch["mask"])
    lengths = batch["mask"].sum(1)
    assert tuple(batch["mask"].shape) == (4, 4096) and lengths.max() == 4096 and len(set(lengths.tolist())) == 4
    _, _, m = bench.loss_and_grad(lambda lp: bench.sspo_reference(batch, lp, seg), batch["log_prob"])
    assert 14 < m["actor/sspo/tokens_per_unit"] < 24
    assert max(int(torch.bincount(row[row >= 0]).max()) for row in seg) >= 1000  # a long subsentence
    for key in ("clipfrac_high_token", "clipfrac_low_token"):
        assert m[f"actor/sspo/{key}"] > 0, key
    assert m["actor/pg_clipfrac_lower"] > 0  # dual clip
    assert m["actor/sspo/adaptive_scale_min"] == 0.5 and m["actor/sspo/adaptive_scale_max"] > 1.5


def test_fp64_reference_agrees_with_sspo_in_fp64(bench, gpu_batch):
    """The dense one-hot reference and sspo.loss's scatter sums, both in fp64: the same loss, gradient and metrics."""
    batch, segmenter = gpu_batch
    errors = bench.fp64_check(batch, torch.bfloat16, segmenter)["fp64"]
    assert max(errors.values()) < 1e-12, errors


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_inputs_against_fp64(bench, gpu_batch, dtype):
    """From bf16/fp16 inputs the loss and its metrics carry fp32 error only, and the gradient (in the input dtype,
    as ``log_prob``) is the fp64 one correctly rounded to that dtype; against the exact inputs, the rounding of the
    inputs themselves adds the (measured) end-to-end errors."""
    batch, segmenter = gpu_batch
    errors = bench.fp64_check(batch, dtype, segmenter)
    for key, bound in COMPUTATION.items():
        assert errors["computation"][key] < bound, (key, errors["computation"])
    for key, bound in END_TO_END[dtype].items():
        assert errors["end_to_end"][key] < bound, (key, errors["end_to_end"])

    low = bench.cast(batch, dtype)
    rounded = bench.cast(low, torch.float64)
    seg = segmenter(batch["ids"], batch["mask"])
    _, grad, _ = bench.loss_and_grad(lambda lp: bench.sspo_loss(low, lp, segmenter), low["log_prob"])
    _, ref, _ = bench.loss_and_grad(lambda lp: bench.sspo_reference(rounded, lp, seg), rounded["log_prob"])
    assert grad.dtype == dtype
    info = torch.finfo(dtype)
    rounding = (info.eps / 2 + 1e-6) * ref.abs() + info.smallest_normal * info.eps / 2  # + subnormal spacing / 2
    assert bool(((grad.double() - ref).abs() <= rounding).all())
    assert bool(((ref == 0) == (grad == 0)).all()) and bool((ref == 0).any())  # clipped tokens: exactly no gradient


def long_units(dtype: torch.dtype, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x in ``dtype``, x in fp64, mask, segment ids): row 0 one 4,096-token subsentence, row 1 one of 3,000 tokens
    then padding. ``entropy``: U(0, 3) (sums ~6,000); ``log_ratio``: 0.05 + N(0, 0.01^2) (sums ~200)."""
    g = torch.Generator().manual_seed(1)
    shape = (2, 4096)
    exact = (3 * torch.rand(shape, generator=g, dtype=torch.float64) if kind == "entropy"
             else 0.05 + 0.01 * torch.randn(shape, generator=g, dtype=torch.float64))  # fmt: skip
    mask = torch.ones(shape, dtype=torch.bool)
    mask[1, 3000:] = False
    low = torch.where(mask, exact, 0.0).to(dtype)
    return low, low.double(), mask, torch.where(mask, 0, -1)


def running_sum_in(dtype: torch.dtype, x: torch.Tensor) -> torch.Tensor:
    """The deliberately wrong accumulation: a running sum along each row in which every partial sum is rounded to
    ``dtype`` (what an atomic or sequential scatter-add in that dtype does; torch's CPU kernels add in fp32)."""
    total = torch.zeros(x.shape[0], dtype=dtype)
    for t in range(x.shape[1]):
        total = (total + x[:, t].to(dtype)).to(dtype)
    return total


@pytest.mark.parametrize("kind", ["entropy", "log_ratio"])
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_unit_means_accumulate_in_fp32_whatever_the_input_dtype(dtype, kind):
    """``unit_mean`` of bf16/fp16 values over 3,000-4,096-token units is within fp32 error of the exact mean of the
    same values, and comes out in fp32. Summed and counted in the input dtype instead, the same means are off by far
    more than the bound: these inputs would expose an accumulation in the input dtype."""
    low, values, mask, seg = long_units(dtype, kind)
    lengths = torch.tensor([4096.0, 3000.0], dtype=torch.float64)
    exact = values.sum(1) / lengths  # by hand, fp64 (padding holds 0)
    bound = 5e-6  # measured <= 5.3e-7 (fp32 sums of up to 4,096 terms); input-dtype sums: 0.46 to 1.7
    for granularity in ("subsentence", "sequence"):
        got = unit_mean(low, mask, granularity, seg)
        assert got.dtype == torch.float32, granularity
        rel = ((got[:, 0].double() - exact) / exact).abs().max()
        assert rel < bound, (granularity, float(rel))
        assert torch.equal(got[1, :3000], got[1, :1].expand(3000))  # one value per unit
    wrong = running_sum_in(dtype, low) / running_sum_in(dtype, mask.to(dtype))
    rel_wrong = ((wrong.double() - exact) / exact).abs().max()
    assert rel_wrong > 100 * bound, float(rel_wrong)


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_loss_averages_long_units_in_fp32(dtype):
    """Through ``sspo_token_losses`` itself: the ratio and the adaptive scale of two long subsentences from bf16/fp16
    log-ratios and entropies match the values computed by hand in fp64 from the same inputs."""
    log_ratio, lr64, mask, seg = long_units(dtype, "log_ratio")
    entropy, ent64, _, _ = long_units(dtype, "entropy")
    old = torch.zeros_like(log_ratio)
    _, m = sspo_token_losses(old, log_ratio.clone().requires_grad_(), torch.ones_like(log_ratio), mask,
                             SSPOSettings(), 0.2, 0.2, segment_ids=seg, entropy=entropy)  # fmt: skip
    lengths = torch.tensor([4096, 3000], dtype=torch.float64)
    ratios = torch.exp(lr64.sum(1) / lengths)
    h_ref = ent64.sum() / lengths.sum()
    scales = (ent64.sum(1) / lengths) / h_ref  # alpha 1, inside [0.5, 2]
    assert m["actor/sspo/ratio_mean"] == pytest.approx(float(ratios.mean()), rel=1e-6)
    assert m["actor/sspo/ratio_max"] == pytest.approx(float(ratios.max()), rel=1e-6)
    assert m["actor/sspo/entropy_ref"] == pytest.approx(float(h_ref), rel=1e-6)
    assert m["actor/sspo/adaptive_scale_min"] == pytest.approx(float(scales.min()), rel=1e-5)
    assert m["actor/sspo/adaptive_scale_max"] == pytest.approx(float(scales.max()), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# benchmarks/gpu_loss.py: its verl formulas are verl's, and it runs with torch only
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_plain_vanilla_and_gspo_equal_verls_registered_functions(bench, dtype):
    """The script's plain-torch formulas against verl's ``vanilla`` and ``gspo`` with the GRPO and GSPO rows'
    clip ranges and aggregations: the same loss, gradient and metrics (clipping and dual clip firing)."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.config import ActorConfig, PolicyLossConfig

    batch = bench.make_batch((4, 64), seed=3)
    noise = 0.3 * torch.randn(4, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    batch["log_prob"] += noise + torch.tensor([[0.05], [-0.05], [0.0], [0.0]], dtype=torch.float64)
    batch = bench.cast(batch, dtype)  # log-ratios ~N(0, 0.3^2): PPO's 0.2 range clips; rows 0-1: gspo's clips
    rows = {"vanilla": ((0.2, 0.2), "token-mean", bench.vanilla_loss),
            "gspo": ((3e-4, 4e-4), "seq-mean-token-mean", bench.gspo_loss)}  # fmt: skip
    old, adv, mask = batch["old_log_prob"], batch["advantages"], batch["mask"]
    metrics = {}
    for name, ((low, high), mode, plain) in rows.items():
        cfg = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio_low=low,
                          clip_ratio_high=high, loss_agg_mode=mode, policy_loss=PolicyLossConfig(loss_mode=name))
        verl_fn = get_policy_loss_fn(name)
        ref = bench.loss_and_grad(lambda lp, f=verl_fn, m=mode, c=cfg: f(old, lp, adv, mask, m, c), batch["log_prob"])
        ours = bench.loss_and_grad(lambda lp, f=plain, lo=low, hi=high: f(old, lp, adv, mask, lo, hi),
                                   batch["log_prob"])  # fmt: skip
        torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=0)
        torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=0)
        assert ours[2] == ref[2], name
        assert ref[1].abs().sum() > 0, name
        metrics[name] = ref[2]
    assert metrics["vanilla"]["actor/pg_clipfrac"] > 0 and metrics["vanilla"]["actor/pg_clipfrac_lower"] > 0
    assert metrics["gspo"]["actor/pg_clipfrac"] > 0


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -X importtime benchmarks/gpu_loss.py ARGS`` from a neutral folder (stderr: every module imported)."""
    return subprocess.run([sys.executable, "-X", "importtime", str(BENCH), *args], capture_output=True, text=True,
                          timeout=120, cwd=BENCH.parent, env={**os.environ, **(env or {})})  # fmt: skip


def imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_script_runs_on_cpu_with_torch_and_sspos_core_only():
    """``--device cpu`` times the three losses and checks SSPO against fp64; verl, Ray and vLLM are never imported."""
    result = run_script("--device", "cpu", "--shape", "3x64", "--warmup", "1", "--repeats", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("sspo / vanilla", "sspo / gspo", "fp64 sspo vs reference", "bfloat16 computation", "float16 end_to_end"):
        assert line in result.stdout, line
    modules = imported(result.stderr)
    assert {"torch", "sspo.loss", "sspo.segmentation"} <= modules  # the check sees the imports
    assert not {m for m in modules if m.split(".")[0] in {"verl", "ray", "vllm"}}


def test_script_without_cuda_says_so_and_exits_0():
    """No CUDA device visible (any machine): one line saying so, exit status 0, nothing timed."""
    result = run_script(env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("no CUDA device found") and "median" not in result.stdout
