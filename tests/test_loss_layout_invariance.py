"""The same mini-batch gives the same SSPO update however it is split: one pass, micro-batches, token-budget
(dynamic) micro-batches, two data-parallel ranks -- exactly as verl's ``vanilla`` and ``gspo`` do.

A split is modelled as verl runs it: each micro-batch's loss is aggregated with ``global_batch_info`` of the
whole mini-batch (``ppo_loss`` sets it), a rank's gradient is the sum over its micro-batches, and data
parallelism averages the ranks' gradients. The adaptive clip's H_ref is the one thing SSPO normalises by;
the trainer computes it over the mini-batch (``entropy_ref``; ``tests/test_entropy_ref_modes.py``), and the last
test shows that the micro-batch's own mean (the loss's fallback when none is given) breaks the invariance.
"""

from __future__ import annotations

import pytest
import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import ActorConfig, PolicyLossConfig

from sspo.loss import entropy_reference
from sspo.verl_plugin import SSPOPolicyLossConfig

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
B, T = 12, 20


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Responses of uneven length with ratios far enough from 1 that both clips and the adaptive scale act."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    ends = (torch.rand(B, T, generator=g) < 0.25) & mask  # subsentence ends
    seg = torch.where(mask, torch.cumsum(ends.long(), 1) - ends.long(), -1)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3  # fp64: sums in any order agree
    return {
        "old_log_prob": old,
        "log_prob": old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3,
        "advantages": torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).contiguous(),
        "response_mask": mask,
        "segment_ids": seg,
        "entropy": torch.rand(B, T, generator=g, dtype=torch.float64) * (1 + torch.arange(B)[:, None] // 4),  # blocks of rows differ
    }


def _config(loss: str, agg: str, granularity: str = "subsentence", adaptive: bool = True) -> ActorConfig:
    if loss == "sspo":
        policy_loss = SSPOPolicyLossConfig(granularity=granularity, adaptive_clip=adaptive)
    else:
        policy_loss = PolicyLossConfig(loss_mode=loss)
    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio_low=0.05,
                       clip_ratio_high=0.08, loss_agg_mode=agg, policy_loss=policy_loss)  # fmt: skip


def _layouts() -> dict[str, list[list[list[int]]]]:
    """layout -> ranks -> micro-batches -> row indices (every row exactly once)."""
    rows = list(range(B))
    return {
        "one pass": [[rows]],
        "3 micro-batches": [[rows[0:4], rows[4:8], rows[8:12]]],
        "token budget": [[rows[0:1], rows[1:6], rows[6:7], rows[7:12]]],  # uneven, as dynamic batches are
        "2 ranks x 2 micro": [[rows[0:3], rows[3:6]], [rows[6:9], rows[9:12]]],
    }


def _update(
    loss: str, cfg: ActorConfig, batch: dict, ranks: list[list[list[int]]], entropy_ref, scale_factor: int | None = T
) -> tuple:
    """(loss, gradient on log_prob, H_ref metric) of one mini-batch run in the given layout."""
    fn = get_policy_loss_fn(loss)
    mask = batch["response_mask"]
    log_prob = batch["log_prob"].clone().requires_grad_(True)
    cfg.global_batch_info.update(dp_size=len(ranks), batch_num_tokens=int(mask.sum()), global_batch_size=B,
                                 loss_scale_factor=scale_factor)  # fmt: skip
    total, h_refs = 0.0, []
    for micro_batches in ranks:
        for rows in micro_batches:
            width = int(mask[rows].sum(1).max())  # each micro-batch padded to its own longest response, as in verl
            cut = {k: v[rows, :width] for k, v in batch.items()}
            extra = {}
            if loss == "sspo":
                extra = {"segment_ids": cut["segment_ids"], "entropy": cut["entropy"], "entropy_ref": entropy_ref}
            value, metrics = fn(cut["old_log_prob"], log_prob[rows, :width], cut["advantages"], cut["response_mask"],
                                cfg.loss_agg_mode, cfg, None, **extra)  # fmt: skip
            (value / len(ranks)).backward()  # data parallelism averages the ranks' gradients
            total = total + value.detach() / len(ranks)
            h_refs.append(metrics.get("actor/sspo/entropy_ref"))
    return total, log_prob.grad, h_refs


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("builtin", ["vanilla", "gspo"])
def test_verls_builtins_are_layout_invariant(builtin, agg):
    """The reference: verl's own losses under the same splits (why the model of a split above is right)."""
    batch = _batch()
    full = _update(builtin, _config(builtin, agg), batch, _layouts()["one pass"], None)
    for name, ranks in _layouts().items():
        split = _update(builtin, _config(builtin, agg), batch, ranks, None)
        torch.testing.assert_close(split[0], full[0], rtol=1e-9, atol=1e-12, msg=name)
        torch.testing.assert_close(split[1], full[1], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("granularity", ["token", "subsentence", "sequence"])
def test_sspo_is_layout_invariant(granularity, adaptive, agg):
    batch = _batch()
    h_ref = float(entropy_reference(batch["entropy"], batch["response_mask"]))  # what the trainer computes
    cfg = _config("sspo", agg, granularity, adaptive)
    full = _update("sspo", cfg, batch, _layouts()["one pass"], h_ref)
    assert full[1].abs().sum() > 0
    for name, ranks in _layouts().items():
        split = _update("sspo", _config("sspo", agg, granularity, adaptive), batch, ranks, h_ref)
        torch.testing.assert_close(split[0], full[0], rtol=1e-9, atol=1e-12, msg=name)
        torch.testing.assert_close(split[1], full[1], rtol=1e-9, atol=1e-12, msg=name)
        if adaptive:
            assert all(h == pytest.approx(h_ref) for h in split[2]), name  # every micro-batch saw the step's H_ref


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_a_micro_batch_h_ref_would_depend_on_the_split(agg):
    """Without the step's H_ref (``entropy_ref=None``) the loss falls back to the micro-batch's own mean entropy:
    the same rows then clip differently when split -- the flaw the trainer-side H_ref removes."""
    batch = _batch()
    full = _update("sspo", _config("sspo", agg), batch, _layouts()["one pass"], None)
    split = _update("sspo", _config("sspo", agg), batch, _layouts()["3 micro-batches"], None)
    assert not torch.allclose(split[0], full[0], rtol=1e-3)  # clipped tokens' values move with f_k
    assert not torch.allclose(split[1], full[1], rtol=1e-4, atol=1e-6)  # and which tokens are clipped
    assert len({round(h, 6) for h in split[2]}) == 3  # each micro-batch its own H_ref


def test_seq_mean_token_sum_norm_needs_a_fixed_horizon():
    """verl's "-norm" mode divides by ``loss_scale_factor``, or, when it is null, by each micro-batch's padded width:
    then even verl's ``vanilla`` changes with the split (why the config checks refuse a null factor with it)."""
    batch, agg = _batch(), "seq-mean-token-sum-norm"
    full = _update("vanilla", _config("vanilla", agg), batch, _layouts()["one pass"], None, scale_factor=None)
    split = _update("vanilla", _config("vanilla", agg), batch, _layouts()["token budget"], None, scale_factor=None)
    assert not torch.allclose(split[1], full[1])
