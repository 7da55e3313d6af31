"""The clip monitor: the paper's clip-by-granularity diagnostic for ANY policy loss, in plain PyTorch.

In every update, for the run's own base clip range, the share of valid tokens PPO's clip would cut with the
importance ratio taken per token, per subsentence and per response (:func:`clipfracs_at_base_range`),
and the extreme unit ratios at each granularity. It reads only the update's inputs (old and current log-probs,
advantages, mask, subsentence ids), never the loss, so GRPO, GSPO, GMPO, CISPO ... runs report the same numbers
on the same footing. SSPO's actor loss (:mod:`sspo.verl_plugin.actor_loss`) logs them under
:data:`MONITOR_PREFIX` for every loss; ``sspo.monitor=false`` turns them off.

Like :mod:`sspo.loss`, this module imports nothing but torch.
"""

from __future__ import annotations

import math

import torch

from sspo.loss import GRANULARITIES, LOG_RATIO_CLAMP, unit_mean

__all__ = ["LAG_BUCKETS", "MONITOR_PREFIX", "clip_monitor", "clipfracs_at_base_range", "monitor_clip_range"]

#: every monitor metric is logged as ``actor/monitor/<name>``
MONITOR_PREFIX = "actor/monitor/"

#: policy-lag buckets of :func:`clip_monitor`'s breakdown: 0, 1, ..., LAG_BUCKETS - 1 (that many or more versions)
LAG_BUCKETS = 3

#: losses whose clip keys bound the token LOG-ratio to [-low, high] (GMPO): the ratio range is [e^-low, e^high]
_LOG_SPACE_CLIP = frozenset({"geo_mean"})


def monitor_clip_range(loss_mode: str, clip_low: float, clip_high: float) -> tuple[float, float]:
    """The base ratio range [lower, upper] at which the monitor counts clipped tokens for a run of ``loss_mode``.

    verl's PPO convention ``[1 - clip_ratio_low, 1 + clip_ratio_high]`` for every loss (for those without a
    ratio clip, e.g. sapo, gpg, kl_cov, dppo_*, the clip keys read as that range: see recipe/config/algo/), except
    ``geo_mean``, which clips the log-ratio: ``[exp(-clip_ratio_low), exp(clip_ratio_high)]``.
    """
    if loss_mode in _LOG_SPACE_CLIP:
        return math.exp(-clip_low), math.exp(clip_high)
    return 1.0 - clip_low, 1.0 + clip_high


@torch.no_grad()
def clipfracs_at_base_range(
    log_unit_ratio: dict[str, torch.Tensor],
    advantages: torch.Tensor,
    mask: torch.Tensor,
    low: float,
    high: float,
) -> dict[str, torch.Tensor]:
    """Per granularity: the share of valid tokens PPO's clip would cut at the base range [low, high] with the
    ratio taken per token, subsentence (only with ``segment_ids``) or response, whatever the loss's own.

    verl's ``pg_clipfrac`` definition: A > 0 and ratio > high, or A < 0 and ratio < low; clamps as the built-ins.
    Token and sequence equal ``vanilla``'s and ``gspo``'s ``pg_clipfrac``: the paper's diagnostic in one run.
    """
    fracs = {}
    above, below = (advantages > 0) & mask, (advantages < 0) & mask  # [B, T] valid tokens with A > 0, A < 0
    for granularity, log_ratio in log_unit_ratio.items():
        ratio = torch.exp(torch.clamp(log_ratio, *LOG_RATIO_CLAMP[granularity]))  # [B, T]
        cut = (above & (ratio > high)) | (below & (ratio < low))  # [B, T]
        fracs[granularity] = cut.sum() / mask.sum().clamp(min=1)
    return fracs


@torch.no_grad()
def clip_monitor(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    segment_ids: torch.Tensor,
    lower: float,
    upper: float,
    lag: torch.Tensor | None = None,
) -> dict[str, float]:
    """The monitor's metrics for one micro-batch, fetched with one host sync.

    Args:
        old_log_prob, log_prob, advantages: FloatTensor[B, T] (``log_prob`` may carry a graph: it is not used).
        response_mask: BoolTensor[B, T]; values at padding are ignored.
        segment_ids: LongTensor[B, T] subsentence ids (:class:`sspo.segmentation.SubsentenceSegmenter`), -1 on padding.
        lower, upper: the base ratio range (:func:`monitor_clip_range`).
        lag: LongTensor[B], optional: how many policy versions older than pi_old each sample's rollout is (-1: not
            counted); adds the breakdown by lag (:func:`_counts_by_lag`).

    Returns:
        Keys without :data:`MONITOR_PREFIX`: ``clipfrac_at_{token,subsentence,sequence}`` (share of valid tokens
        whose unit's ratio is cut: A > 0 and ratio > upper, or A < 0 and ratio < lower), ``ratio_min_<g>`` and
        ``ratio_max_<g>`` (the extreme unit ratio s_k at granularity g, clamped as the built-in of g; NaN with no
        valid token), ``subsentences_per_response``, ``tokens_per_subsentence``, ``clip_lower``, ``clip_upper``;
        with ``lag``: ``lag<k>/tokens`` and ``lag<k>/clipped_at_<g>`` (token counts; their means over micro-batches
        divide into the clip fraction of the samples ``k`` versions old).
    """
    mask = response_mask.bool()  # [B, T]
    log_ratio = torch.where(
        mask, log_prob.detach() - old_log_prob.detach(), 0.0
    )  # [B, T] log w_t, 0 on padding
    log_unit_ratio = {g: unit_mean(log_ratio, mask, g, segment_ids) for g in GRANULARITIES}  # [B, T] log s_k
    values = {f"clipfrac_at_{g}": frac for g, frac in
              clipfracs_at_base_range(log_unit_ratio, advantages, mask, lower, upper).items()}  # fmt: skip
    if lag is not None:
        values.update(_counts_by_lag(log_unit_ratio, advantages, mask, lower, upper, lag))
    for g, x in log_unit_ratio.items():  # exp and the clamp are monotone: take the extremes in log space
        values[f"ratio_min_{g}"] = torch.where(mask, x, torch.inf).amin()
        values[f"ratio_max_{g}"] = torch.where(mask, x, -torch.inf).amax()
    n_tokens, n_responses = mask.sum(), mask.any(1).sum()
    n_subsentences = (segment_ids.amax(1) + 1).clamp(min=0).sum()  # ids contiguous from 0, -1 on padding
    values["subsentences_per_response"] = n_subsentences / n_responses.clamp(min=1)
    values["tokens_per_subsentence"] = n_tokens / n_subsentences.clamp(min=1)
    fetched = dict(zip(values, torch.stack([v.double() for v in values.values()]).tolist(), strict=True))
    for g in GRANULARITIES:
        for stat in ("min", "max"):
            fetched[f"ratio_{stat}_{g}"] = _clamped_exp(fetched[f"ratio_{stat}_{g}"], g)
    return {**fetched, "clip_lower": float(lower), "clip_upper": float(upper)}


def _counts_by_lag(
    log_unit_ratio: dict[str, torch.Tensor],
    advantages: torch.Tensor,
    mask: torch.Tensor,
    low: float,
    high: float,
    lag: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Valid tokens and clipped tokens (as :func:`clipfracs_at_base_range` counts them) per lag bucket."""
    bucket = lag.to(mask.device).clamp(max=LAG_BUCKETS - 1)  # [B]
    counted = mask & (bucket >= 0).unsqueeze(1)  # [B, T]
    onehot = torch.nn.functional.one_hot(bucket.clamp(min=0), LAG_BUCKETS).to(torch.float64)  # [B, K]
    out = {}
    tokens = onehot.T @ counted.sum(1).to(torch.float64)  # [K]
    above, below = (advantages > 0) & counted, (advantages < 0) & counted
    per_granularity = {}
    for g, log_ratio in log_unit_ratio.items():
        ratio = torch.exp(torch.clamp(log_ratio, *LOG_RATIO_CLAMP[g]))  # [B, T]
        cut = (above & (ratio > high)) | (below & (ratio < low))  # [B, T]
        per_granularity[g] = onehot.T @ cut.sum(1).to(torch.float64)  # [K]
    for k in range(LAG_BUCKETS):
        out[f"lag{k}/tokens"] = tokens[k]
        for g, counts in per_granularity.items():
            out[f"lag{k}/clipped_at_{g}"] = counts[k]
    return out


def _clamped_exp(log_value: float, granularity: str) -> float:
    """exp of a log-ratio clamped as the built-in of ``granularity`` does (:data:`sspo.loss.LOG_RATIO_CLAMP`);
    NaN for the +/-inf of an empty batch."""
    if math.isinf(log_value):
        return math.nan
    low, high = LOG_RATIO_CLAMP[granularity]
    return math.exp(
        min(max(log_value, -math.inf if low is None else low), math.inf if high is None else high)
    )
