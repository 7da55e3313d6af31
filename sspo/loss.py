"""SSPO's policy loss in plain PyTorch: PPO-clip on the importance ratio of one *unit* per token.

This module is the paper (``docs/sspo.md``) and imports nothing but torch and :mod:`sspo.segmentation`:
no verl, Ray or vLLM, so it can be benchmarked on a bare GPU machine or reused by another trainer.
:mod:`sspo.verl_plugin.policy_loss` registers it in verl as loss mode ``sspo`` and aggregates the
per-token losses with verl's own ``agg_loss``.

One knob, three algorithms (``adaptive_clip=False``):

* ``granularity=token``       reproduces verl's ``vanilla`` (GRPO) loss, dual-clip included;
* ``granularity=sequence``    reproduces verl's ``gspo`` loss (``dual_clip`` off by default there);
* ``granularity=subsentence`` is SSPO.

Choices of ours, where the paper's public abstract is silent, are marked OUR CHOICE (listed in ``docs/sspo.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sspo.segmentation import check_max_subsentence_len, validate_delimiters

__all__ = [
    "GRANULARITIES",
    "ADAPTIVE_MAPS",
    "SSPOSettings",
    "check_clip_range",
    "entropy_reference",
    "entropy_reference_per_group",
    "is_real_number",
    "sspo_token_losses",
]

GRANULARITIES = ("token", "subsentence", "sequence")
ADAPTIVE_MAPS = ("power", "linear")

# Clamp of the combined log-ratio, per granularity, as in the built-in each one reproduces:
# vanilla clamps the token log-ratio to [-20, 20]; gspo clamps the combined log-ratio at max 10.
# OUR CHOICE: subsentence uses gspo's (it is the same GSPO-token form).
LOG_RATIO_CLAMP = {"token": (-20.0, 20.0), "subsentence": (None, 10.0), "sequence": (None, 10.0)}


def is_real_number(x: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class SSPOSettings:
    """The SSPO knobs; each field is validated here and nowhere else.

    Args:
        granularity: unit carrying one importance ratio: ``token`` | ``subsentence`` | ``sequence``.
        adaptive_clip: scale each unit's clip range by f(entropy) (needs ``entropy``); False: f = 1.
        adaptive_map: OUR CHOICE of monotone map, with r = H_unit / H_ref:
            ``power``:  f = clamp(r ** adaptive_alpha, adaptive_min, adaptive_max)   (default)
            ``linear``: f = clamp(1 + adaptive_alpha * (r - 1), adaptive_min, adaptive_max)
            H_unit: mean old-policy entropy over the unit; H_ref: :func:`entropy_reference`.
        adaptive_alpha: steepness (>= 0; 0 gives f = 1).
        adaptive_min, adaptive_max: bounds of f (0 < min <= 1 <= max).
            OUR CHOICE of defaults (alpha = 1, f in [0.5, 2]); the paper's values are not public.
        delimiters: subsentence delimiters; None = ``sspo.segmentation.DEFAULT_DELIMITERS``.
        max_subsentence_len: optional cap on tokens per subsentence.
        dual_clip: dual-clip PPO (loss of a negative-advantage token bounded by -A * clip_ratio_c).
            None (default) = as the built-in each granularity reproduces: on for ``token`` (vanilla always
            applies it) and ``subsentence``, off for ``sequence`` (gspo never does).
    """

    #: prefixes of the keys named in error messages (verl's config class sets its Hydra paths)
    config_key: ClassVar[str] = "sspo"
    clip_key: ClassVar[str] = "clip_ratio"

    granularity: str = "subsentence"
    adaptive_clip: bool = True
    adaptive_map: str = "power"
    adaptive_alpha: float = 1.0
    adaptive_min: float = 0.5
    adaptive_max: float = 2.0
    delimiters: list[str] | None = None
    max_subsentence_len: int | None = None
    dual_clip: bool | None = None

    def __post_init__(self) -> None:
        """Validate every field; errors name the full key and the fix."""
        key = self.config_key
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"{key}.granularity={self.granularity!r} is unknown: use one of {list(GRANULARITIES)}"
            )
        if not isinstance(self.adaptive_clip, bool):
            raise ValueError(f"{key}.adaptive_clip must be true or false, got {self.adaptive_clip!r}")
        if self.dual_clip is not None and not isinstance(self.dual_clip, bool):
            raise ValueError(f"{key}.dual_clip must be true, false or null (auto), got {self.dual_clip!r}")
        if self.adaptive_map not in ADAPTIVE_MAPS:
            raise ValueError(
                f"{key}.adaptive_map={self.adaptive_map!r} is unknown: use one of {list(ADAPTIVE_MAPS)}"
            )
        if not is_real_number(self.adaptive_alpha) or self.adaptive_alpha < 0:
            raise ValueError(f"{key}.adaptive_alpha must be a number >= 0, got {self.adaptive_alpha!r}")
        if not is_real_number(self.adaptive_min) or not 0 < self.adaptive_min <= 1:
            raise ValueError(f"{key}.adaptive_min must be in (0, 1], got {self.adaptive_min!r}")
        if not is_real_number(self.adaptive_max) or self.adaptive_max < 1:
            raise ValueError(f"{key}.adaptive_max must be a finite number >= 1, got {self.adaptive_max!r}")
        validate_delimiters(self.delimiters, key=f"{key}.delimiters")
        check_max_subsentence_len(self.max_subsentence_len, key=f"{key}.max_subsentence_len")

    @property
    def use_dual_clip(self) -> bool:
        """``dual_clip`` with the granularity default resolved (see the class docstring)."""
        return self.granularity != "sequence" if self.dual_clip is None else self.dual_clip


def check_clip_range(
    low: Any, high: Any, clip_ratio_c: Any, dual_clip: bool, key: str = "clip_ratio"
) -> None:
    """PPO's clip range ``[1 - low, 1 + high]`` and the dual-clip bound: ValueError naming the key and the fix."""
    if not is_real_number(low) or not 0 <= low < 1:
        raise ValueError(f"{key}_low={low!r} is out of range: need 0 <= {key}_low < 1")
    if not is_real_number(high) or high < 0:
        raise ValueError(f"{key}_high={high!r} is out of range: need a finite number >= 0")
    if dual_clip and (not is_real_number(clip_ratio_c) or clip_ratio_c <= 1):
        raise ValueError(f"{key}_c={clip_ratio_c!r} must be > 1 for dual-clip PPO (or turn dual_clip off)")


def entropy_reference(entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """H_ref: token-mean old-policy entropy over the valid tokens of ``entropy`` [B, T] (0-dim, at least fp32).

    OUR CHOICE: H_ref is taken over the samples of one optimizer step (a mini-batch), in every trainer mode;
    SSPO's trainers compute it on the driver (:func:`entropy_reference_per_group`) and hand it to the loss as
    ``entropy_ref``; called directly without one, the loss uses the batch it is given.
    """
    ent = torch.where(
        mask.bool(), entropy.detach().to(torch.promote_types(entropy.dtype, torch.float32)), 0.0
    )
    return ent.sum() / mask.sum().clamp(min=1)


def entropy_reference_per_group(
    entropy: torch.Tensor, mask: torch.Tensor, group: torch.Tensor
) -> torch.Tensor:
    """Each row's H_ref: :func:`entropy_reference` over the rows of its group (``group`` [B], ids 0..G-1) -> [B].

    The trainer's groups are the mini-batches of an update batch, so each optimizer step clips against its own
    samples' mean entropy, whether the step's batch came alone (separate_async) or with others (sync).
    """
    ent = torch.where(
        mask.bool(), entropy.detach().to(torch.promote_types(entropy.dtype, torch.float32)), 0.0
    )
    groups = int(group.max()) + 1 if group.numel() else 0
    sums = ent.new_zeros(groups).index_add_(0, group, ent.sum(-1))  # [G]
    tokens = ent.new_zeros(groups).index_add_(0, group, mask.to(ent.dtype).sum(-1))  # [G]
    return (sums / tokens.clamp(min=1))[group]


def sspo_token_losses(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    settings: SSPOSettings,
    clip_low: float,
    clip_high: float,
    clip_ratio_c: float = 3.0,
    *,
    segment_ids: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    entropy_ref: torch.Tensor | float | None = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token SSPO losses (before aggregation) and the update's metrics.

    For token t of unit k (a token, a subsentence or the whole response, per ``settings.granularity``):

        log w_t = log_prob_t - old_log_prob_t
        log s_k = mean_{u in k} log w_u                       (geometric-mean ratio of the unit)
        log s_t = log_prob_t - sg(log_prob_t) + sg(log s_k)   (GSPO-token form: value s_k, gradient on every
                                                               token; clamped as the built-in of the granularity)
        f_k     = clamp((H_k / H_ref) ** alpha, f_min, f_max) if adaptive_clip else 1
        L_t     = max(-A_t * s_t, -A_t * clip(s_t, 1 - clip_low * f_k, 1 + clip_high * f_k))
        L_t     = min(L_t, -A_t * clip_ratio_c) where A_t < 0  (dual clip, if on)
        L_t     = L_t * rollout_is_weights_t                   (if given)

    Args:
        old_log_prob, log_prob, advantages: FloatTensor[B, T]; ``log_prob`` carries the gradient.
        response_mask: BoolTensor[B, T]. Log-probs and entropy at padding are ignored (even NaN/inf);
            ``advantages`` and ``rollout_is_weights`` must be finite everywhere, as in verl.
        settings: the SSPO knobs; clip_low, clip_high, clip_ratio_c: PPO's clip range and dual-clip bound.
        segment_ids: LongTensor[B, T], subsentence ids contiguous from 0 per row, -1 on padding; required at
            ``subsentence`` granularity, else optional (feeds ``clipfrac_at_subsentence``).
        entropy: FloatTensor[B, T], old-policy per-token entropy (no gradient); required iff ``adaptive_clip``.
        entropy_ref: H_ref (a number or 0-dim tensor; :func:`entropy_reference` of the optimizer step's samples); None:
            over this batch (layout-dependent: SSPO's trainers always pass it).

    Returns:
        (FloatTensor[B, T] per-token loss, 0 on padding; metrics: verl's ``actor/pg_clipfrac``, ``ppo_kl``,
        ``pg_clipfrac_lower`` and ``actor/sspo/*``, see :func:`_metrics`).

    Raises:
        ValueError naming the bad value and the fix, before anything is computed.
    """
    check_clip_range(clip_low, clip_high, clip_ratio_c, settings.use_dual_clip, key=settings.clip_key)
    mask = response_mask.bool()  # [B, T]
    inputs = {"old_log_prob": old_log_prob, "log_prob": log_prob, "advantages": advantages,
              "rollout_is_weights": rollout_is_weights, "segment_ids": segment_ids,
              "entropy": entropy if settings.adaptive_clip else None}  # fmt: skip
    _check_inputs(settings, mask, inputs)

    log_prob = torch.where(mask, log_prob, 0.0)  # [B, T] padding ignored, even NaN/inf
    # log w_t in fp32 or better: in bf16 the difference of two far-apart log-probs is rounded (docs/sspo.md, Numerics)
    wide = torch.promote_types(log_prob.dtype, torch.float32)
    log_ratio = torch.where(mask, log_prob.detach().to(wide) - old_log_prob.detach().to(wide), 0.0)  # [B, T]
    log_unit_ratio = unit_mean(log_ratio, mask, settings.granularity, segment_ids)  # [B, T] log s_k

    log_s = log_prob - log_prob.detach() + log_unit_ratio  # [B, T] GSPO-token form
    ratio = torch.exp(torch.clamp(log_s, *LOG_RATIO_CLAMP[settings.granularity]))  # [B, T] s_t
    f, h_ref = 1.0, None  # f_k [B, T] and H_ref, with the adaptive clip
    if settings.adaptive_clip:
        f, h_ref = _adaptive_scale(settings, entropy, mask, segment_ids, entropy_ref)

    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - clip_low * f, 1 + clip_high * f)
    pg_losses = torch.maximum(pg_losses1, pg_losses2)  # [B, T]
    dual_clipped = torch.zeros_like(mask)  # [B, T]
    if settings.use_dual_clip:
        pg_losses3 = -advantages * clip_ratio_c
        dual_clipped = (pg_losses > pg_losses3) & (advantages < 0) & mask
        pg_losses = torch.where(advantages < 0, torch.minimum(pg_losses, pg_losses3), pg_losses)
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights

    clipped = (pg_losses2 > pg_losses1) & mask  # [B, T] as verl's pg_clipfrac
    metrics = _metrics(settings.granularity, mask, segment_ids, advantages, log_ratio, ratio, f, h_ref, clipped,
                       dual_clipped)  # fmt: skip
    return pg_losses, metrics


def unit_sum(x: torch.Tensor, granularity: str, segment_ids: torch.Tensor | None) -> torch.Tensor:
    """FloatTensor[B, T]: for each token, the sum of ``x`` [B, T] (0 on padding) over the token's unit."""
    if granularity == "token":
        return x
    if granularity == "sequence":
        return x.sum(-1, keepdim=True).expand_as(x)  # as verl's gspo
    # Subsentence: per-row sums into [B, T + 1] (ids are < T; padding, id -1, goes to column 0): memory O(B x T).
    index = segment_ids.long() + 1  # [B, T]
    return x.new_zeros(x.shape[0], x.shape[1] + 1).scatter_add_(1, index, x).gather(1, index)


def unit_mean(
    x: torch.Tensor, mask: torch.Tensor, granularity: str, segment_ids: torch.Tensor | None
) -> torch.Tensor:
    """FloatTensor[B, T]: for each token, the mean of ``x`` [B, T] (0 on padding) over the token's unit."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))  # never sum or count in bf16
    n_unit = unit_sum(mask.to(x.dtype), granularity, segment_ids)  # [B, T] tokens in the unit
    return unit_sum(x, granularity, segment_ids) / n_unit.clamp(min=1)


def _adaptive_scale(
    settings: SSPOSettings,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    segment_ids: torch.Tensor | None,
    entropy_ref: torch.Tensor | float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_k of each token [B, T], H_ref as a 0-dim tensor for the metrics): the entropy-adaptive clip scale."""
    ent = torch.where(mask, entropy.detach(), 0.0)  # [B, T]
    if entropy_ref is None:
        h_ref = entropy_reference(ent, mask)  # [] this batch only: depends on how the batch was split
    else:
        h_ref = torch.as_tensor(
            float(entropy_ref), dtype=torch.promote_types(ent.dtype, torch.float32), device=mask.device
        )
    rel = unit_mean(ent, mask, settings.granularity, segment_ids) / h_ref.clamp(
        min=1e-8
    )  # [B, T] H_k / H_ref
    a = settings.adaptive_alpha
    f = rel.pow(a) if settings.adaptive_map == "power" else 1.0 + a * (rel - 1.0)
    f = torch.where(
        h_ref > 1e-8, f.clamp(settings.adaptive_min, settings.adaptive_max), 1.0
    )  # H_ref 0: f = 1
    return f, h_ref


# ----------------------------------------------------------------------------------------------
# Input checks: errors name the bad value and the fix, before the loss is computed
# ----------------------------------------------------------------------------------------------

_SEG_PADDING = "segment_ids must be -1 exactly on padding (response_mask False) and >= 0 on valid tokens"
_SEG_CONTIGUOUS = "segment_ids must be contiguous from 0 and non-decreasing in each row (steps of 0 or 1)"


def _check_inputs(settings: SSPOSettings, mask: torch.Tensor, inputs: dict[str, torch.Tensor | None]) -> None:
    """Missing inputs, dtypes and shapes (no device work), then values (one host sync)."""
    if mask.dim() != 2:
        raise ValueError(f"response_mask must be (batch, response_len), got shape {tuple(mask.shape)}")
    seg, ent = inputs["segment_ids"], inputs["entropy"]
    if settings.granularity == "subsentence" and seg is None:
        raise ValueError(
            "segment_ids is required for granularity='subsentence' (LongTensor[batch, response_len], -1 on "
            "padding): build them with sspo.segmentation.SubsentenceSegmenter (the verl plugin does it)"
        )
    if settings.adaptive_clip and ent is None:
        raise ValueError(
            f"entropy (old-policy per-token entropy, FloatTensor[batch, response_len]) is required when "
            f"{settings.config_key}.adaptive_clip=true: pass it, or set adaptive_clip=false"
        )
    if seg is not None and (seg.dtype.is_floating_point or seg.dtype == torch.bool):
        raise ValueError(f"segment_ids must be an integer tensor, got dtype {seg.dtype}")
    for name, t in inputs.items():
        if t is not None and t.shape != mask.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but response_mask has {tuple(mask.shape)}")

    problems = {}  # message -> 0-dim bool tensor, True if the problem is there
    for name in ("old_log_prob", "log_prob", "entropy"):  # ignored on padding
        if (t := inputs[name]) is not None:
            problems[f"{name} has NaN/inf on valid tokens"] = (~torch.isfinite(t.detach()) & mask).any()
    everywhere = "must be finite everywhere, padding included, as in verl"  # NaN * 0 on padding is still NaN
    for name in ("advantages", "rollout_is_weights"):
        if (t := inputs[name]) is not None:
            problems[f"{name} has NaN/inf ({everywhere})"] = ~torch.isfinite(t.detach()).all()
    if ent is not None:
        problems["entropy is negative on valid tokens"] = ((ent.detach() < 0) & mask).any()
    if seg is not None:
        problems[_SEG_PADDING] = torch.where(mask, seg < 0, seg != -1).any()
        # Contiguous from 0: each valid id is the largest id before it (-1 if none), or that plus one.
        previous = torch.nn.functional.pad(seg.cummax(1).values[:, :-1], (1, 0), value=-1)  # [B, T]
        step = seg - previous
        problems[_SEG_CONTIGUOUS] = (((step < 0) | (step > 1)) & mask).any()
    flags = torch.stack(list(problems.values())).tolist()
    found = [msg for msg, bad in zip(problems, flags, strict=True) if bad]
    if found:
        raise ValueError("sspo loss: bad input: " + "; ".join(found))


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _metrics(
    granularity: str,
    mask: torch.Tensor,
    segment_ids: torch.Tensor | None,
    advantages: torch.Tensor,
    log_ratio: torch.Tensor,
    ratio: torch.Tensor,
    f: torch.Tensor | float,
    h_ref: torch.Tensor | None,
    clipped: torch.Tensor,
    dual_clipped: torch.Tensor,
) -> dict[str, float]:
    """verl's three policy-loss metrics plus the ``actor/sspo/*`` diagnostics, fetched with one host sync.

    ``*_token`` fractions are over valid tokens (``clipfrac_token`` is ``pg_clipfrac``); ``*_unit`` ones are the
    mean over units of the share of the unit's tokens concerned. high: clipped at 1 + eps_high * f (A > 0); low: at
    1 - eps_low * f (A < 0). ``pg_clipfrac_lower``: verl's dual-clip fraction. Ratio s_k and scale f_k: min, mean,
    max over units (NaN when there is none); ``entropy_ref``: H_ref (adaptive clip only). The same-range clip
    fractions at every granularity are the clip monitor's (:mod:`sspo.monitor`), for every loss.
    """
    valid = mask.to(torch.promote_types(ratio.dtype, torch.float32))  # [B, T]
    n_tokens, n_responses = valid.sum(), mask.any(1).sum()
    n_units = {"token": n_tokens, "sequence": n_responses}.get(granularity)
    if n_units is None:  # subsentence: ids are contiguous from 0, -1 on padding
        n_units = (segment_ids.amax(1) + 1).sum()
    per_unit = valid / unit_sum(valid, granularity, segment_ids).clamp(min=1)  # [B, T] 1/|k| on valid tokens
    high, low = clipped & (advantages > 0), clipped & (advantages < 0)  # [B, T]
    scale = torch.as_tensor(f, dtype=valid.dtype, device=mask.device).expand(mask.shape)  # [B, T]

    def token_share(x: torch.Tensor) -> torch.Tensor:
        return x.sum() / n_tokens.clamp(min=1)

    def mean_over_units(x: torch.Tensor) -> torch.Tensor:
        return (x * per_unit).sum() / n_units.clamp(min=1)

    values = {
        "actor/pg_clipfrac": token_share(clipped),
        "actor/ppo_kl": token_share(-log_ratio),
        "actor/pg_clipfrac_lower": token_share(dual_clipped),
        "actor/sspo/clipfrac_token": token_share(clipped),
        "actor/sspo/clipfrac_high_token": token_share(high),
        "actor/sspo/clipfrac_low_token": token_share(low),
        "actor/sspo/clipfrac_unit": mean_over_units(clipped),
        "actor/sspo/clipfrac_high_unit": mean_over_units(high),
        "actor/sspo/clipfrac_low_unit": mean_over_units(low),
        "actor/sspo/units_per_response": n_units / n_responses.clamp(min=1),
        "actor/sspo/tokens_per_unit": n_tokens / n_units.clamp(min=1),
    }
    unit_stats = []  # NaN below when there is no unit
    for name, x in (("ratio", ratio.detach()), ("adaptive_scale", scale)):
        values[f"actor/sspo/{name}_min"] = torch.where(mask, x, torch.inf).amin()
        values[f"actor/sspo/{name}_mean"] = mean_over_units(x)
        values[f"actor/sspo/{name}_max"] = torch.where(mask, x, -torch.inf).amax()
        unit_stats += [f"actor/sspo/{name}_{stat}" for stat in ("min", "mean", "max")]
    if h_ref is not None:
        values["actor/sspo/entropy_ref"] = h_ref
    metrics = dict(zip(values, torch.stack([v.double() for v in values.values()]).tolist(), strict=True))
    if metrics["actor/sspo/units_per_response"] == 0:
        metrics.update(dict.fromkeys(unit_stats, math.nan))
    return metrics
