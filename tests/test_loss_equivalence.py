"""SSPO loss exactness: token == verl vanilla, sequence == verl gspo; subsentence == a loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import ActorConfig, PolicyLossConfig

import sspo  # noqa: F401  (registers "sspo")
from sspo.verl_plugin import SSPOPolicyLossConfig, compute_policy_loss_sspo

AGG_MODES = [
    "token-mean",
    "token-sum",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
    "seq-mean-token-mean",
]
GLOBAL_INFO = {"dp_size": 2, "batch_num_tokens": 53, "global_batch_size": 11, "loss_scale_factor": 16}


def actor_config(policy_loss, mode: str = "token-mean", global_info: dict | None = None, **kw) -> ActorConfig:
    """The minimal ActorConfig for calling a loss directly (verl-0.9.1-notes.md)."""
    cfg = ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=kw.pop("clip_ratio_low", 0.2),
        clip_ratio_high=kw.pop("clip_ratio_high", 0.28),
        loss_agg_mode=mode,
        policy_loss=policy_loss,
        **kw,
    )
    if global_info:
        cfg.global_batch_info.update(global_info)
    return cfg


def make_batch(seed: int, B: int = 6, T: int = 12, dtype=torch.float32):
    """Ragged right-padded batch with finite garbage on padding, an empty row, zero and negative advantages,
    a few large log-ratios (so both PPO clip and dual clip fire) and per-token advantage noise in one row."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    log_ratio = 0.4 * torch.randn(B, T, generator=g, dtype=dtype)
    log_ratio[1, :4] = 1.6  # ratio ~5 > clip_ratio_c=3 in a negative-advantage row: dual clip
    log_ratio[2, :] += 1.3  # a whole response far off: sequence-level clipping
    log_prob = (old + log_ratio).requires_grad_()
    adv = torch.randn(B, 1, generator=g, dtype=dtype).expand(B, T).clone()
    adv[1], adv[2] = -1.5, 0.7
    adv[3] = 0.0
    adv[4] += 0.3 * torch.randn(T, generator=g, dtype=dtype)
    lengths = torch.tensor([T, 9, T, 5, 1, 0])[:B]
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    with torch.no_grad():  # finite garbage on padding: must never matter
        old[~mask] = 7.0
        log_prob[~mask] = -9.0
    weights = torch.rand(B, T, generator=g, dtype=dtype) + 0.5
    return old, log_prob, adv, mask, weights


def loss_and_grad(fn, old, log_prob, adv, mask, mode, cfg, weights=None, **kw):
    loss, metrics = fn(
        old_log_prob=old,
        log_prob=log_prob,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode=mode,
        config=cfg,
        rollout_is_weights=weights,
        **kw,
    )
    (grad,) = torch.autograd.grad(loss, log_prob)
    return loss.detach(), grad, metrics


def run_builtin(name, old, log_prob, adv, mask, mode="token-mean", weights=None, global_info=None, **clip):
    """verl's built-in loss ``name`` (vanilla | gspo) on the batch: (loss, grad, metrics)."""
    cfg = actor_config(PolicyLossConfig(loss_mode=name), mode, global_info, **clip)
    return loss_and_grad(get_policy_loss_fn(name), old, log_prob, adv, mask, mode, cfg, weights)


@pytest.mark.parametrize("use_weights", [False, True])
@pytest.mark.parametrize("global_info", [None, GLOBAL_INFO])
@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("granularity,builtin", [("token", "vanilla"), ("sequence", "gspo")])
def test_matches_verl_builtin(granularity, builtin, mode, global_info, use_weights):
    old, log_prob, adv, mask, weights = make_batch(seed=len(mode))
    w = weights if use_weights else None
    ref = run_builtin(builtin, old, log_prob, adv, mask, mode, w, global_info)
    cfg = actor_config(SSPOPolicyLossConfig(granularity=granularity, adaptive_clip=False), mode, global_info)
    ours = loss_and_grad(get_policy_loss_fn("sspo"), old, log_prob, adv, mask, mode, cfg, w)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
        assert ours[2][key] == pytest.approx(ref[2][key], abs=1e-6), key
    assert ref[1].abs().sum() > 0 and ref[2]["actor/pg_clipfrac"] > 0  # the case really clips
    if granularity == "token":
        assert ref[2]["actor/pg_clipfrac_lower"] > 0  # ... and really dual-clips


def test_dual_clip_mapping_is_what_makes_both_equalities_hold():
    """Default dual_clip=None: on for token (as vanilla), off for sequence (as gspo). Flipping it breaks equality
    on this batch, so the tests above do depend on the mapping."""
    old, log_prob, adv, mask, _ = make_batch(seed=3)
    with torch.no_grad():
        log_prob[1, :9] = old[1, :9] + 1.6  # sequence ratio ~5 with A < 0: dual clip would bind
    for granularity, builtin in (("token", "vanilla"), ("sequence", "gspo")):
        ref = run_builtin(builtin, old, log_prob, adv, mask)
        default = SSPOPolicyLossConfig(granularity=granularity, adaptive_clip=False)
        flipped = SSPOPolicyLossConfig(
            granularity=granularity, adaptive_clip=False, dual_clip=not default.use_dual_clip
        )
        ours, other = (
            loss_and_grad(compute_policy_loss_sspo, old, log_prob, adv, mask, "token-mean", actor_config(pl))
            for pl in (default, flipped)
        )
        torch.testing.assert_close(ours[0], ref[0])
        assert not torch.allclose(other[0], ref[0]), granularity
        # dual clip on at sequence granularity: row 1's 9 valid tokens (ratio ~5, A < 0), not its padding
        if granularity == "sequence":
            assert other[2]["actor/pg_clipfrac_lower"] == pytest.approx(9 / int(mask.sum()))
    assert SSPOPolicyLossConfig().use_dual_clip  # subsentence: on, like vanilla


def test_clamps_match_builtins_beyond_their_thresholds():
    """Per-granularity clamps: vanilla's [-20, 20] on the token log-ratio, gspo's max 10 on the combined one.
    A clamped log-ratio passes no gradient: where the built-in's gradient is exactly 0, ours is too (the
    tolerance of assert_close would hide a leak of size exp(-20))."""
    old, log_prob, adv, mask, _ = make_batch(seed=5)
    with torch.no_grad():
        log_prob[0, :3] = old[0, :3] + 25.0  # token log-ratio beyond 20
        log_prob[0, 3:6] = old[0, 3:6] - 25.0  # and below -20 (A > 0: the unclipped ratio term wins)
        log_prob[1, :9] = old[1, :9] + 12.0  # sequence log-ratio beyond 10 with A < 0 (gspo: no dual clip)
        log_prob[2, :] = old[2, :] + 12.0  # ... and with A > 0
    adv[0] = 1.0
    for granularity, builtin in (("token", "vanilla"), ("sequence", "gspo")):
        ref = run_builtin(builtin, old, log_prob, adv, mask)
        cfg = actor_config(SSPOPolicyLossConfig(granularity=granularity, adaptive_clip=False))
        ours = loss_and_grad(compute_policy_loss_sspo, old, log_prob, adv, mask, "token-mean", cfg)
        torch.testing.assert_close(ours[0], ref[0])
        torch.testing.assert_close(ours[1], ref[1])
        assert torch.equal(ours[1] == 0, ref[1] == 0), granularity


def test_subsentence_extremes_reduce_to_token_and_sequence():
    """One token per subsentence == token granularity; one subsentence per response == sequence granularity."""
    old, log_prob, adv, mask, _ = make_batch(seed=7)
    B, T = mask.shape
    per_token = torch.where(mask, torch.arange(T).expand(B, T), -1)
    per_response = torch.where(mask, 0, -1)
    for seg, granularity in ((per_token, "token"), (per_response, "sequence")):
        dual = granularity == "token"
        sub = actor_config(SSPOPolicyLossConfig(adaptive_clip=False, dual_clip=dual))
        ref = actor_config(SSPOPolicyLossConfig(granularity=granularity, adaptive_clip=False, dual_clip=dual))
        a = loss_and_grad(
            compute_policy_loss_sspo, old, log_prob, adv, mask, "seq-mean-token-mean", sub, segment_ids=seg
        )
        b = loss_and_grad(compute_policy_loss_sspo, old, log_prob, adv, mask, "seq-mean-token-mean", ref)
        torch.testing.assert_close(a[0], b[0])
        torch.testing.assert_close(a[1], b[1])


# ----------------------------------------------------------------------------------------------
# Brute-force reference for the subsentence case with adaptive clipping
# ----------------------------------------------------------------------------------------------


def reference_sspo_loss(old, log_prob, adv, mask, seg, ent, mode, weights, eps_low, eps_high, clip_c, dual, alpha,
                        f_min, f_max):  # fmt: skip
    """Loops over rows and subsentences, following the docstring formula literally (no global batch info)."""
    B, T = mask.shape
    valid = [(b, t) for b in range(B) for t in range(T) if mask[b, t]]
    h_ref = sum(float(ent[b, t]) for b, t in valid) / len(valid)
    losses = {}  # (b, t) -> scalar tensor carrying the gradient
    for b in range(B):
        for k in sorted({int(s) for s in seg[b].tolist() if s >= 0}):
            idx = [t for t in range(T) if int(seg[b, t]) == k]
            mean_log_ratio = sum(float(log_prob[b, t].detach() - old[b, t]) for t in idx) / len(idx)
            h_k = sum(float(ent[b, t]) for t in idx) / len(idx)
            f = min(max((h_k / h_ref) ** alpha, f_min), f_max)
            for t in idx:
                log_s = log_prob[b, t] - log_prob[b, t].detach() + mean_log_ratio
                s = torch.exp(torch.clamp(log_s, max=10.0))
                a = float(adv[b, t])
                loss = torch.maximum(-a * s, -a * torch.clamp(s, 1 - eps_low * f, 1 + eps_high * f))
                if dual and a < 0:
                    loss = torch.minimum(loss, torch.tensor(-a * clip_c))
                if weights is not None:
                    loss = loss * float(weights[b, t])
                losses[(b, t)] = loss
    rows = [[losses[(b, t)] for t in range(T) if mask[b, t]] for b in range(B)]
    rows = [r for r in rows if r]  # fully masked responses do not count
    if mode == "token-mean":
        return sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    if mode == "token-sum":
        return sum(sum(r) for r in rows)
    if mode == "seq-mean-token-sum":
        return sum(sum(r) for r in rows) / len(rows)
    if mode == "seq-mean-token-sum-norm":
        return sum(sum(r) for r in rows) / len(rows) / T
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in rows) / len(rows)
    raise AssertionError(mode)


def random_segments(mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    ends = torch.rand(mask.shape, generator=g) < 0.3
    ends_long = (ends & mask).long()
    seg = ends_long.cumsum(1) - ends_long
    return torch.where(mask, seg, -1)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", AGG_MODES)
def test_subsentence_adaptive_matches_loop_reference(seed, mode):
    g = torch.Generator().manual_seed(100 + seed)
    old, log_prob, adv, mask, weights = make_batch(seed=seed)
    seg = random_segments(mask, g)
    ent = torch.rand(mask.shape, generator=g) * 2
    ent[0, :4] = 0.0  # zero-entropy subsentence: f hits f_min
    use_weights = seed == 1
    dual = seed != 2
    alpha, f_min, f_max = (1.0, 0.5, 2.0) if seed != 1 else (0.7, 0.3, 3.0)
    pl = SSPOPolicyLossConfig(adaptive_alpha=alpha, adaptive_min=f_min, adaptive_max=f_max, dual_clip=dual)
    cfg = actor_config(pl, mode, clip_ratio_c=3.0)
    w = weights if use_weights else None
    loss, grad, metrics = loss_and_grad(
        compute_policy_loss_sspo, old, log_prob, adv, mask, mode, cfg, w, segment_ids=seg, entropy=ent
    )
    ref_loss = reference_sspo_loss(old, log_prob, adv, mask, seg, ent, mode, w, 0.2, 0.28, 3.0, dual, alpha, f_min,
                                   f_max)  # fmt: skip
    (ref_grad,) = torch.autograd.grad(ref_loss, log_prob)
    torch.testing.assert_close(loss, ref_loss.detach())
    torch.testing.assert_close(grad, ref_grad)
    assert metrics["actor/sspo/adaptive_scale_min"] == pytest.approx(f_min)
    assert metrics["actor/sspo/clipfrac_token"] > 0 and grad.abs().sum() > 0  # clipping is exercised
    assert (
        f_min
        <= metrics["actor/sspo/adaptive_scale_mean"]
        <= metrics["actor/sspo/adaptive_scale_max"]
        <= f_max
    )


def test_adaptive_clip_widens_high_entropy_subsentences_and_carries_no_gradient():
    """Two subsentences with the same ratio 1.35: the high-entropy one (f=1.94, bound 1.54) is not clipped, the
    low-entropy one (f=0.5, bound 1.14) is."""
    T = 4
    old = torch.zeros(1, T)
    log_prob = torch.full((1, T), math.log(1.35)).requires_grad_()
    adv = torch.ones(1, T)
    mask = torch.ones(1, T, dtype=torch.bool)
    seg = torch.tensor([[0, 0, 1, 1]])
    ent = torch.tensor([[3.0, 3.0, 0.1, 0.1]], requires_grad=True)
    cfg = actor_config(SSPOPolicyLossConfig())
    loss, metrics = compute_policy_loss_sspo(
        old, log_prob, adv, mask, "token-mean", cfg, segment_ids=seg, entropy=ent
    )
    loss.backward()
    assert ent.grad is None  # entropy is detached
    assert log_prob.grad[0, :2].abs().min() > 0  # unclipped: gradient flows
    assert torch.equal(log_prob.grad[0, 2:], torch.zeros(2))  # clipped: no gradient
    assert metrics["actor/sspo/clipfrac_token"] == pytest.approx(0.5)
    assert metrics["actor/sspo/clipfrac_high_unit"] == pytest.approx(0.5)
    assert metrics["actor/sspo/clipfrac_low_unit"] == 0.0
    assert metrics["actor/sspo/adaptive_scale_max"] == pytest.approx(3.0 / 1.55)  # H_ref = 1.55
    assert metrics["actor/sspo/entropy_ref"] == pytest.approx(1.55)
    assert metrics["actor/sspo/adaptive_scale_min"] == pytest.approx(0.5)
    # Off: f = 1, both clipped at 1.28.
    off = actor_config(SSPOPolicyLossConfig(adaptive_clip=False))
    _, m_off = compute_policy_loss_sspo(old, log_prob, adv, mask, "token-mean", off, segment_ids=seg)
    assert m_off["actor/sspo/clipfrac_token"] == pytest.approx(1.0)
    assert m_off["actor/sspo/adaptive_scale_mean"] == 1.0


def test_all_zero_entropy_means_no_scaling():
    """H_ref = 0 (every valid token certain): f = 1, the loss is the one without adaptive clipping."""
    old, log_prob, adv, mask, _ = make_batch(seed=4)
    seg = random_segments(mask, torch.Generator().manual_seed(4))
    ent = torch.where(mask, 0.0, 5.0)  # non-zero on padding only: ignored
    on = actor_config(SSPOPolicyLossConfig())
    off = actor_config(SSPOPolicyLossConfig(adaptive_clip=False))
    a = loss_and_grad(
        compute_policy_loss_sspo, old, log_prob, adv, mask, "token-mean", on, segment_ids=seg, entropy=ent
    )
    b = loss_and_grad(compute_policy_loss_sspo, old, log_prob, adv, mask, "token-mean", off, segment_ids=seg)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    assert a[2]["actor/sspo/adaptive_scale_min"] == a[2]["actor/sspo/adaptive_scale_max"] == 1.0
    assert a[2]["actor/sspo/entropy_ref"] == 0.0


def test_linear_map_option():
    T = 4
    old = torch.zeros(1, T)
    log_prob = torch.zeros(1, T, requires_grad=True)
    mask = torch.ones(1, T, dtype=torch.bool)
    seg = torch.tensor([[0, 0, 1, 1]])
    ent = torch.tensor([[1.5, 1.5, 0.5, 0.5]])  # H_ref = 1: r = 1.5 and 0.5
    cfg = actor_config(SSPOPolicyLossConfig(adaptive_map="linear", adaptive_alpha=0.5, adaptive_min=0.1))
    _, m = compute_policy_loss_sspo(
        old, log_prob, torch.ones(1, T), mask, "token-mean", cfg, segment_ids=seg, entropy=ent
    )
    assert m["actor/sspo/adaptive_scale_max"] == pytest.approx(1.25)
    assert m["actor/sspo/adaptive_scale_min"] == pytest.approx(0.75)


def test_metrics_unit_counts_and_ratios():
    old, log_prob, adv, mask, _ = make_batch(seed=11)
    seg = random_segments(mask, torch.Generator().manual_seed(0))
    cfg = actor_config(SSPOPolicyLossConfig(adaptive_clip=False))
    _, m = compute_policy_loss_sspo(old, log_prob, adv, mask, "token-mean", cfg, segment_ids=seg)
    n_units = sum(int(seg[b].max()) + 1 for b in range(mask.shape[0]) if mask[b].any())
    n_resp = int(mask.any(1).sum())
    assert m["actor/sspo/units_per_response"] == pytest.approx(n_units / n_resp)
    assert m["actor/sspo/tokens_per_unit"] == pytest.approx(int(mask.sum()) / n_units)
    unit_ratios = [
        math.exp(float((log_prob.detach() - old)[b][seg[b] == k].mean()))
        for b in range(mask.shape[0])
        for k in range(int(seg[b].max()) + 1)
    ]
    assert m["actor/sspo/ratio_min"] == pytest.approx(min(unit_ratios), rel=1e-5)
    assert m["actor/sspo/ratio_max"] == pytest.approx(max(unit_ratios), rel=1e-5)
    assert m["actor/sspo/ratio_mean"] == pytest.approx(sum(unit_ratios) / len(unit_ratios), rel=1e-5)
    assert m["actor/sspo/clipfrac_token"] == pytest.approx(
        m["actor/sspo/clipfrac_high_token"] + m["actor/sspo/clipfrac_low_token"]
    )
    assert all(isinstance(v, float) and k.startswith("actor/") for k, v in m.items())


def test_units_per_response_counts_responses_with_leading_padding():
    """Token granularity with holes: a response whose first position is padding still counts as a response."""
    old, log_prob, adv, mask, _ = make_batch(seed=2)
    mask = mask.clone()
    mask[0, :3] = False  # row 0 starts with padding (tool output, left padding)
    cfg = actor_config(SSPOPolicyLossConfig(granularity="token", adaptive_clip=False))
    _, m = compute_policy_loss_sspo(old, log_prob, adv, mask, "token-mean", cfg)
    assert m["actor/sspo/units_per_response"] == pytest.approx(int(mask.sum()) / int(mask.any(1).sum()))
    assert m["actor/sspo/tokens_per_unit"] == 1.0


# ----------------------------------------------------------------------------------------------
# Same-range clip fractions by granularity (the paper's diagnostic inside one run)
# ----------------------------------------------------------------------------------------------


def subsentence_clipfrac_loop(old, log_prob, adv, mask, seg, eps_low, eps_high):
    """verl's pg_clipfrac definition with the ratio of each token's subsentence, by loops over rows and ids."""
    clipped = valid = 0
    for b in range(mask.shape[0]):
        for k in sorted({int(s) for s in seg[b].tolist() if s >= 0}):
            idx = [t for t in range(mask.shape[1]) if int(seg[b, t]) == k]
            s_k = math.exp(min(sum(float(log_prob[b, t] - old[b, t]) for t in idx) / len(idx), 10.0))
            for t in idx:
                a = float(adv[b, t])
                clipped += (a > 0 and s_k > 1 + eps_high) or (a < 0 and s_k < 1 - eps_low)
        valid += int(mask[b].sum())
    return clipped / valid


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("granularity", ["token", "sequence"])
def test_same_range_clipfracs_match_vanilla_gspo_and_loop(seed, granularity):
    """The clip monitor's figures on the same inputs at the base clip range: clipfrac_at_token == vanilla's
    pg_clipfrac, clipfrac_at_sequence == gspo's, clipfrac_at_subsentence == a loop; and the sspo loss's own
    pg_clipfrac at that granularity without adaptive scaling."""
    from sspo.monitor import clip_monitor

    g = torch.Generator().manual_seed(200 + seed)
    old, log_prob, adv, mask, _ = make_batch(seed=seed, T=16)
    with torch.no_grad():  # more spread: every granularity clips something
        log_prob.add_(0.3 * torch.randn(mask.shape, generator=g) * mask)
    seg = random_segments(mask, g)
    clip = {"clip_ratio_low": 0.1, "clip_ratio_high": 0.15}
    ref = {
        name: run_builtin(name, old, log_prob, adv, mask, **clip)[2]["actor/pg_clipfrac"]
        for name in ("vanilla", "gspo")
    }
    sub_ref = subsentence_clipfrac_loop(old, log_prob.detach(), adv, mask, seg, 0.1, 0.15)
    assert min(ref["vanilla"], ref["gspo"], sub_ref) > 0 and len({ref["vanilla"], ref["gspo"], sub_ref}) == 3
    m = clip_monitor(old, log_prob, adv, mask, seg, 1 - 0.1, 1 + 0.15)
    assert m["clipfrac_at_token"] == pytest.approx(ref["vanilla"], abs=1e-6)
    assert m["clipfrac_at_sequence"] == pytest.approx(ref["gspo"], abs=1e-6)
    assert m["clipfrac_at_subsentence"] == pytest.approx(sub_ref, abs=1e-6)
    cfg = actor_config(SSPOPolicyLossConfig(granularity=granularity, adaptive_clip=False), **clip)
    _, own = compute_policy_loss_sspo(old, log_prob, adv, mask, "token-mean", cfg, segment_ids=seg)
    assert m[f"clipfrac_at_{granularity}"] == pytest.approx(own["actor/pg_clipfrac"], abs=1e-6)


def test_adaptive_scaling_moves_the_losss_own_clip_fraction():
    """Two subsentences with ratio 1.35 at the base range 0.2: without adaptive scaling both are clipped; with it
    the high-entropy one's range widens past 1.35 and only the low-entropy one is."""
    T = 4
    old = torch.zeros(1, T)
    log_prob = torch.full((1, T), math.log(1.35)).requires_grad_()
    adv, mask = torch.ones(1, T), torch.ones(1, T, dtype=torch.bool)
    seg, ent = torch.tensor([[0, 0, 1, 1]]), torch.tensor([[3.0, 3.0, 0.1, 0.1]])
    metrics = {
        adaptive: compute_policy_loss_sspo(
            old, log_prob, adv, mask, "token-mean", actor_config(SSPOPolicyLossConfig(adaptive_clip=adaptive)),
            segment_ids=seg, entropy=ent,
        )[1]
        for adaptive in (False, True)
    }  # fmt: skip
    assert metrics[True]["actor/pg_clipfrac"] == pytest.approx(0.5)
    assert metrics[False]["actor/pg_clipfrac"] == pytest.approx(1.0)


def test_bad_segment_ids_rejected_at_token_granularity_too():
    """Given segment ids feed the subsentence diagnostic at every granularity: they are checked alike."""
    old, log_prob, adv, mask, _ = make_batch(seed=1)
    seg = random_segments(mask, torch.Generator().manual_seed(1))
    seg[0, 0] = 1  # does not start at 0
    cfg = actor_config(SSPOPolicyLossConfig(granularity="token", adaptive_clip=False))
    with pytest.raises(ValueError, match="contiguous"):
        compute_policy_loss_sspo(old, log_prob, adv, mask, "token-mean", cfg, segment_ids=seg)


@pytest.mark.parametrize("granularity", ["subsentence", "sequence"])
def test_bf16_inputs_average_in_float32(granularity):
    """Long units in bf16: the unit mean is summed and counted in float32 (a bf16 sum of 1000 terms, or a bf16 count
    past 256, is far off), so s_k matches the float32 computation to bf16 input precision."""
    B, T = 2, 1000
    g = torch.Generator().manual_seed(0)
    old32 = -torch.rand(B, T, generator=g)
    log_ratio = 0.05 + 0.01 * torch.randn(B, T, generator=g)
    seg = torch.zeros(B, T, dtype=torch.long)  # one subsentence per row
    metrics = {}
    for dtype in (torch.float32, torch.bfloat16):
        old = old32.to(dtype)
        log_prob = (old32 + log_ratio).to(dtype).requires_grad_()
        cfg = actor_config(SSPOPolicyLossConfig(granularity=granularity, adaptive_clip=False))
        _, metrics[dtype] = compute_policy_loss_sspo(old, log_prob, torch.ones(B, T, dtype=dtype),
                                                     torch.ones(B, T, dtype=torch.bool), "token-mean", cfg,
                                                     segment_ids=seg)  # fmt: skip
    assert metrics[torch.bfloat16]["actor/sspo/ratio_mean"] == pytest.approx(
        metrics[torch.float32]["actor/sspo/ratio_mean"], rel=2e-3
    )


@pytest.mark.parametrize("units_per_row", ["one", "one_per_token"])
def test_peak_memory_is_linear_in_batch_times_length(units_per_row):
    """Memory O(B x T) whatever the number of subsentences (no [B, T, units] tensor): the peak bytes allocated by
    forward + backward, as the benchmark measures them, stay under 256 bytes per position (about 90 measured)."""
    B, T = 6, 2048  # make_batch's row count
    old, log_prob, adv, _, _ = make_batch(seed=0, B=B, T=T)
    mask = torch.ones(B, T, dtype=torch.bool)
    seg = torch.zeros(B, T, dtype=torch.long) if units_per_row == "one" else torch.arange(T).expand(B, T)
    ent = torch.rand(B, T, generator=torch.Generator().manual_seed(0))
    cfg = actor_config(SSPOPolicyLossConfig())
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=cpu, profile_memory=True) as prof:
        loss_and_grad(compute_policy_loss_sspo, old, log_prob, adv, mask, "token-mean", cfg, segment_ids=seg,
                      entropy=ent)  # fmt: skip
    live = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    assert 0 < peak / (B * T) < 256, peak / (B * T)
