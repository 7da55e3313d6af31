"""SSPO policy loss: PPO-clip on importance ratios of one *unit* (token | subsentence | sequence).

Registered in verl's policy-loss registry as ``sspo`` (``import sspo`` is enough). Plain PyTorch,
no Ray; the verl glue that feeds ``segment_ids`` and the old-policy ``entropy`` lives in
``sspo.verl_plugin``. Spec and our reading of the paper: ``../shared/docs/SSPO.md``.

One knob, three algorithms (``adaptive_clip=False``):

* ``granularity=token``       reproduces verl's ``vanilla`` (GRPO) loss, dual-clip included;
* ``granularity=sequence``    reproduces verl's ``gspo`` loss (``dual_clip`` off by default there);
* ``granularity=subsentence`` is SSPO.

Choices of ours (not from the paper, whose text we do not have) are marked OUR CHOICE below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss
from verl.workers.config import PolicyLossConfig

from sspo.segmentation import validate_delimiters

__all__ = ["GRANULARITIES", "ADAPTIVE_MAPS", "SSPOPolicyLossConfig", "compute_policy_loss_sspo"]

GRANULARITIES = ("token", "subsentence", "sequence")
ADAPTIVE_MAPS = ("power", "linear")
KEY = "actor_rollout_ref.actor.policy_loss"  # Hydra path of this config, for error messages

# Clamp of the combined log-ratio, per granularity, copied from the built-in each one reproduces:
# vanilla clamps the token log-ratio to [-20, 20]; gspo clamps the combined log-ratio at max 10.
# OUR CHOICE: subsentence uses gspo's (it is the same GSPO-token form).
_LOG_RATIO_CLAMP = {"token": (-20.0, 20.0), "subsentence": (None, 10.0), "sequence": (None, 10.0)}


@dataclass
class SSPOPolicyLossConfig(PolicyLossConfig):
    """verl ``PolicyLossConfig`` plus the SSPO knobs (``actor_rollout_ref.actor.policy_loss.*``).

    Use with ``actor_rollout_ref.actor.policy_loss._target_=sspo.loss.SSPOPolicyLossConfig``
    (new keys then need Hydra's ``+`` prefix, e.g. ``+actor_rollout_ref.actor.policy_loss.granularity=token``).
    The clip ratios stay where verl has them: ``actor.clip_ratio_low``, ``actor.clip_ratio_high``,
    ``actor.clip_ratio_c``.

    Args:
        loss_mode: must be ``"sspo"``.
        granularity: unit carrying one importance ratio: ``token`` | ``subsentence`` | ``sequence``.
        adaptive_clip: scale each unit's clip range by f(entropy) (needs ``entropy``); False: f = 1.
        adaptive_map: OUR CHOICE of monotone map, with r = H_unit / H_ref:
            ``power``:  f = clamp(r ** adaptive_alpha, adaptive_min, adaptive_max)   (default)
            ``linear``: f = clamp(1 + adaptive_alpha * (r - 1), adaptive_min, adaptive_max)
            H_unit: mean old-policy entropy over the unit; H_ref: token-mean entropy of the micro-batch's valid
            tokens (per micro-batch, hence per data-parallel rank).
        adaptive_alpha: steepness (>= 0; 0 gives f = 1).
        adaptive_min, adaptive_max: bounds of f (0 < min <= 1 <= max).
            OUR CHOICE of defaults (alpha = 1, f in [0.5, 2]); the paper's values are not public to us.
        delimiters: subsentence delimiters; None = ``sspo.segmentation.DEFAULT_DELIMITERS``.
            Read by the verl glue that builds ``segment_ids``, not by the loss itself.
        max_subsentence_len: optional cap on tokens per subsentence (read by the glue, like delimiters).
        dual_clip: dual-clip PPO (loss of a negative-advantage token bounded by -A * clip_ratio_c).
            None (default) = as the built-in each granularity reproduces: on for ``token`` (vanilla always
            applies it) and ``subsentence``, off for ``sequence`` (gspo never does).
    """

    loss_mode: str = "sspo"
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
        """Validate every SSPO field; errors name the full Hydra key."""
        if self.loss_mode != "sspo":
            raise ValueError(
                f"{KEY}.loss_mode={self.loss_mode!r} with _target_=sspo.loss.SSPOPolicyLossConfig: set it to 'sspo' "
                "(or use verl's PolicyLossConfig for other losses)"
            )
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"{KEY}.granularity={self.granularity!r} is unknown: use one of {list(GRANULARITIES)}"
            )
        for name in ("adaptive_clip",):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{KEY}.{name} must be true or false, got {getattr(self, name)!r}")
        if self.dual_clip is not None and not isinstance(self.dual_clip, bool):
            raise ValueError(f"{KEY}.dual_clip must be true, false or null (auto), got {self.dual_clip!r}")
        if self.adaptive_map not in ADAPTIVE_MAPS:
            raise ValueError(
                f"{KEY}.adaptive_map={self.adaptive_map!r} is unknown: use one of {list(ADAPTIVE_MAPS)}"
            )
        if not _is_number(self.adaptive_alpha) or self.adaptive_alpha < 0:
            raise ValueError(f"{KEY}.adaptive_alpha must be a number >= 0, got {self.adaptive_alpha!r}")
        if not _is_number(self.adaptive_min) or not 0 < self.adaptive_min <= 1:
            raise ValueError(f"{KEY}.adaptive_min must be in (0, 1], got {self.adaptive_min!r}")
        if not _is_number(self.adaptive_max) or self.adaptive_max < 1:
            raise ValueError(f"{KEY}.adaptive_max must be >= 1, got {self.adaptive_max!r}")
        validate_delimiters(self.delimiters, key=f"{KEY}.delimiters")
        m = self.max_subsentence_len
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"{KEY}.max_subsentence_len must be a positive integer or null, got {m!r}")

    @property
    def use_dual_clip(self) -> bool:
        """``dual_clip`` with the granularity default resolved (see the class docstring)."""
        return self.granularity != "sequence" if self.dual_clip is None else self.dual_clip


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


# ----------------------------------------------------------------------------------------------
# Input checks. Presence and shapes: Python only. Values: a few reductions fetched with ONE host sync
# (the exact per-tensor diagnosis below runs only when a cheap check fails).
# ----------------------------------------------------------------------------------------------

_SEG_PADDING = "segment_ids must be -1 exactly on padding (response_mask False) and >= 0 on valid tokens"
_SEG_CONTIGUOUS = "segment_ids must be contiguous from 0 and non-decreasing in each row (steps of 0 or 1)"


def _check_arguments(granularity: str, adaptive: bool, mask: torch.Tensor, tensors: dict[str, Any]) -> None:
    """Missing inputs, dtypes and shapes (no device work)."""
    if mask.dim() != 2:
        raise ValueError(f"response_mask must be (batch, response_len), got shape {tuple(mask.shape)}")
    if granularity == "subsentence" and tensors["segment_ids"] is None:
        raise ValueError(
            "segment_ids is required for granularity='subsentence' (LongTensor[batch, response_len], -1 on "
            "padding): build them with sspo.segmentation.SubsentenceSegmenter, or use the sspo.verl_plugin loss "
            "wrapper that does it"
        )
    if adaptive and tensors["entropy"] is None:
        raise ValueError(
            f"entropy (old-policy per-token entropy, FloatTensor[batch, response_len]) is required when "
            f"{KEY}.adaptive_clip=true: pass it, or set adaptive_clip=false"
        )
    seg = tensors["segment_ids"]
    if seg is not None and (seg.dtype.is_floating_point or seg.dtype == torch.bool):
        raise ValueError(f"segment_ids must be an integer tensor, got dtype {seg.dtype}")
    for name, t in tensors.items():
        if t is not None and t.shape != mask.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but response_mask has {tuple(mask.shape)}")


def _segment_flags(
    seg: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(padding/validity mismatch, not contiguous, largest id on a valid token) as 0-dim tensors.

    ``valid``: ``mask`` as float32/float64 if the caller has it. The ids are checked as floats: float ops and
    min/max reductions are several times cheaper on CPU than int64 or boolean ones and ``any``; exact for
    responses shorter than 2**24 tokens (a contiguous id is below the response length).
    """
    if valid is None or valid.dtype not in (torch.float32, torch.float64):
        valid = mask.to(torch.float32)  # [B, T]
    ids = seg.to(valid.dtype)  # [B, T]
    # Contiguous from 0: each valid id is the largest id before it (-1 if none), or that plus one.
    step = (ids[:, 1:] - ids.cummax(1).values[:, :-1]).mul_(valid[:, 1:])  # [B, T-1], 0 on padding
    step_min, step_max = step.aminmax()  # a valid token's step must be 0 or 1
    first = (ids[:, 0] * valid[:, 0]).abs_().amax()  # a valid first token must have id 0
    on_valid = ids * valid  # [B, T] the id on valid tokens, 0 on padding
    valid_min, valid_max = on_valid.aminmax()  # valid ids must be >= 0
    padding_min, padding_max = on_valid.neg_().add_(ids).sub_(valid).aminmax()  # id on padding, -1 on valid
    bad_padding = (valid_min < 0) | (padding_min != -1) | (padding_max != -1)  # padding ids must all be -1
    return bad_padding, (step_min < 0) | (step_max > 1) | (first > 0), valid_max


def _diagnose(mask: torch.Tensor, tensors: dict[str, Any]) -> list[str]:
    """Exact per-tensor problems on valid tokens (slow path, run only when a cheap check failed)."""
    problems = []
    for name in ("old_log_prob", "log_prob", "entropy"):  # ignored on padding
        t = tensors.get(name)
        if t is not None and (~torch.isfinite(t.detach()) & mask).any():
            problems.append(f"{name} has NaN/inf on valid tokens")
    for name in ("advantages", "rollout_is_weights"):  # multiply the loss: NaN * 0 on padding is still NaN
        t = tensors.get(name)
        if t is not None and not torch.isfinite(t.detach()).all():
            problems.append(f"{name} has NaN/inf (must be finite everywhere, padding included, as in verl)")
    if tensors.get("entropy") is not None and ((tensors["entropy"].detach() < 0) & mask).any():
        problems.append("entropy is negative on valid tokens")
    if tensors.get("segment_ids") is not None:
        bad_padding, bad_contiguous, _ = _segment_flags(tensors["segment_ids"], mask)
        problems += [
            msg for msg, bad in ((_SEG_PADDING, bad_padding), (_SEG_CONTIGUOUS, bad_contiguous)) if bad
        ]
    return problems


# ----------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------


class _Units:
    """Flat unit slot of each token, and the two vectorised primitives on it: sum per unit, gather per token.

    Row b owns slots [b * (U + 1), (b + 1) * (U + 1)), U = ``units_per_row`` (the most units in any row):
    its slot 0 collects the row's padding, slots 1..U its units. Per-unit arrays ([S], S = B * (U + 1))
    therefore view as [B, U + 1] with column 0 to drop. Memory stays O(B * T) (U <= T), never B * T * U.
    """

    def __init__(
        self, granularity: str, mask: torch.Tensor, segment_ids: torch.Tensor | None, units_per_row: int
    ) -> None:
        B, T = mask.shape
        self.per_row = units_per_row + 1
        self.num_slots = B * self.per_row
        row_start = torch.arange(B, device=mask.device).unsqueeze(1) * self.per_row  # [B, 1] padding slots
        if granularity == "subsentence":  # validated: -1 exactly on padding -> slot 0 (one pass over [B, T])
            self.index = segment_ids + (row_start + 1)  # [B, T]
        elif granularity == "sequence":
            self.index = mask.long() + row_start  # valid -> slot 1, padding -> slot 0
        else:  # token
            self.index = torch.where(mask, torch.arange(1, T + 1, device=mask.device), 0) + row_start
        # Column-major copy for the scatter: consecutive adds then hit different rows, hence different slots,
        # with no serial dependency between them (~2x faster on CPU, less atomic contention on GPU); each slot
        # still receives its values in token order, so the sums are the same.
        self._index_by_column = self.index.t().reshape(-1)  # [T * B]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """FloatTensor[S]: sum of ``values[B, T]`` over the tokens of each slot."""
        return values.new_zeros(self.num_slots).scatter_add_(0, self._index_by_column, values.t().reshape(-1))

    def gather(self, unit_values: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, T]: each token's slot value (``index_select`` is the fastest gather on CPU)."""
        return unit_values.index_select(0, self.index.reshape(-1)).view(self.index.shape)

    def real(self, unit_values: torch.Tensor) -> torch.Tensor:
        """[S] -> [B, U]: the values of real units (drops each row's padding slot)."""
        return unit_values.view(-1, self.per_row)[:, 1:]


@register_policy_loss("sspo")  # type: ignore[arg-type]
def compute_policy_loss_sspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any | None = None,
    rollout_is_weights: torch.Tensor | None = None,
    *,
    segment_ids: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """SSPO clipped policy loss (verl policy-loss signature + ``segment_ids`` and ``entropy``).

    For token t of unit k (a token, a subsentence, or the whole response; ``granularity``):

        log w_t  = log_prob_t - old_log_prob_t
        log s_k  = mean_{u in k} log w_u                                    (unit ratio, geometric mean)
        log s_t  = log_prob_t - sg(log_prob_t) + sg(log s_k)                (GSPO-token form; value s_k,
                                                                              gradient through every token)
        f_k      = clamp((H_k / H_ref) ** alpha, f_min, f_max)   if adaptive_clip else 1
                   H_k = mean old-policy entropy over k, H_ref = token-mean entropy of the micro-batch
        L_t      = max(-A_t * s_t, -A_t * clip(s_t, 1 - eps_low * f_k, 1 + eps_high * f_k))
        L_t      = min(L_t, -A_t * clip_ratio_c)  where A_t < 0             (dual clip, if on)
        loss     = agg_loss(L * rollout_is_weights, response_mask, loss_agg_mode, **config.global_batch_info)

    ``log s_t`` is clamped as the built-in of the same granularity does (token: [-20, 20] like
    ``vanilla``; subsentence/sequence: max 10 like ``gspo``).

    Implementation (gradient by hand, for speed): s_t has the value s_k on every token of unit k, so the ratio,
    both clamps and the clip bounds are computed once per unit, without autograd. Then, per token, the value of
    L_t and the derivative autograd would give through the formula above (``torch.clamp`` passes the gradient
    iff it returned its input unchanged; ``torch.maximum``/``minimum`` split it in half on a tie):

        dL_t/dlog_prob_t = slope_t * s_t,     slope_t = dL_t/ds_t = -A_t * c_k * m_t * d_t
        c_k = 0 if log s_k was clamped, else 1
        m_t = 1 within the clip range, bounds included (both terms of the max are equal and the clip passes),
              else the share of -A_t * s_t in the max: 1 if it is the larger, 1/2 on a tie, 0 if it is the smaller
        d_t = 1 without dual clip or where it does not bind, 1/2 on a tie with -A_t * clip_ratio_c, 0 where it binds

    The graph is then just ``L + (log_prob - sg(log_prob)) * s_t * slope`` (``L``, ``s_t``, ``slope`` detached):
    the same value and, multiplication for multiplication, the same gradient as autograd through the formula
    (``tests/test_loss_equivalence.py`` checks both bit for bit, ties included). The gradient flows to
    ``log_prob`` only (and to ``rollout_is_weights`` if it requires one), as in training.

    Args:
        old_log_prob, log_prob, advantages: FloatTensor[B, T]; ``log_prob`` carries the gradient.
        response_mask: BoolTensor[B, T]. ``log_prob``, ``old_log_prob`` and ``entropy`` at padding are ignored
            (even NaN/inf); ``advantages`` and ``rollout_is_weights`` must be finite everywhere.
        loss_agg_mode: any of verl's ``agg_loss`` modes.
        config: verl ``ActorConfig``; ``config.policy_loss`` an :class:`SSPOPolicyLossConfig` (a plain
            ``PolicyLossConfig`` means SSPO defaults). Clip ratios: ``clip_ratio_low/high``, ``clip_ratio_c``.
        rollout_is_weights: optional FloatTensor[B, T], multiplies the per-token loss (as verl's built-ins).
        segment_ids: LongTensor[B, T], subsentence ids contiguous from 0 per row, -1 on padding;
            required for ``granularity=subsentence``; at the other granularities, optional and used only for
            the ``clipfrac_at_subsentence`` diagnostic (checked the same way when given).
        entropy: FloatTensor[B, T], old-policy per-token entropy (detached here); required iff adaptive_clip.

    Returns:
        (loss scalar, metrics dict of floats under ``actor/`` and ``actor/sspo/``). Besides the loss's own clip
        fractions, ``actor/sspo/clipfrac_at_{token,subsentence,sequence}`` measure, on the same inputs and at ONE
        clip range (the base ``[1 - clip_ratio_low, 1 + clip_ratio_high]``, no adaptive scaling), how many
        tokens PPO's clip would cut if the ratio were taken per token (w_t), per subsentence (s_k; only when
        ``segment_ids`` are given) or per response (s_i): verl's ``pg_clipfrac`` definition, i.e. the
        token-weighted share of valid tokens with A > 0 and ratio > 1 + eps_high, or A < 0 and ratio < 1 - eps_low.
        They equal ``vanilla``'s and ``gspo``'s ``pg_clipfrac`` for token and sequence, whatever granularity
        the loss itself runs at: the paper's diagnostic (GSPO clips ~0, SSPO in between) within one run.

    Raises:
        ValueError naming the problem: missing ``segment_ids``/``entropy``, shape mismatch, NaN/inf on valid
        tokens (in which tensor), negative entropy, segment ids not contiguous or not -1 exactly on padding,
        negative clip ratios, ``clip_ratio_c <= 1`` with dual clip.
    """
    # --- configuration ---------------------------------------------------------------------------
    if config is None:
        raise ValueError("compute_policy_loss_sspo needs config (verl's ActorConfig)")
    sspo_cfg = getattr(config, "policy_loss", None)
    if not isinstance(sspo_cfg, SSPOPolicyLossConfig):
        sspo_cfg = SSPOPolicyLossConfig()  # plain PolicyLossConfig(loss_mode="sspo"): SSPO defaults
    granularity, adaptive = sspo_cfg.granularity, sspo_cfg.adaptive_clip
    clip_ratio = config.get("clip_ratio", 0.2)
    eps_low = config.get("clip_ratio_low", None)
    eps_high = config.get("clip_ratio_high", None)
    eps_low = clip_ratio if eps_low is None else eps_low
    eps_high = clip_ratio if eps_high is None else eps_high
    clip_ratio_c = config.get("clip_ratio_c", 3.0)
    for name, value in (("clip_ratio_low", eps_low), ("clip_ratio_high", eps_high)):
        if value < 0:
            raise ValueError(f"actor_rollout_ref.actor.{name}={value} is negative: clip ratios must be >= 0")
    dual_clip = sspo_cfg.use_dual_clip
    if dual_clip and not clip_ratio_c > 1.0:
        raise ValueError(f"actor_rollout_ref.actor.clip_ratio_c={clip_ratio_c} must be > 1 for dual-clip PPO")

    mask = response_mask.bool()  # [B, T]
    tensors = {
        "old_log_prob": old_log_prob,
        "log_prob": log_prob,
        "advantages": advantages,
        "rollout_is_weights": rollout_is_weights,
        "segment_ids": segment_ids,  # checked whenever given: the subsentence clip diagnostic uses them too
        "entropy": entropy if adaptive else None,
    }
    _check_arguments(granularity, adaptive, mask, tensors)

    # --- per-token log-ratios, 0 on padding ----------------------------------------------------------
    mask_f = mask.to(log_prob.dtype)  # [B, T] float ops are much cheaper than boolean ones on CPU
    log_ratio = torch.sub(log_prob.detach(), old_log_prob.detach()).mul_(mask_f)  # [B, T]
    ent = entropy.detach() * mask_f if adaptive else None  # [B, T], no gradient

    # --- cheap value checks, one host sync (also fetches the number of units per row) ---------------
    def sums() -> tuple[torch.Tensor, torch.Tensor | None]:
        return log_ratio.sum(), (ent.sum() if adaptive else None)

    log_ratio_sum, ent_sum = sums()  # log_ratio_sum is also the ppo_kl metric
    flags = [~torch.isfinite(log_ratio_sum), ~torch.isfinite(advantages.sum())]
    if rollout_is_weights is not None:
        flags.append(~torch.isfinite(rollout_is_weights.sum()))
    if adaptive:
        flags += [~torch.isfinite(ent_sum), ent.amin() < 0]
    units_per_row = torch.zeros((), dtype=torch.long, device=mask.device)
    if segment_ids is not None:
        bad_padding, bad_contiguous, max_id = _segment_flags(segment_ids, mask, mask_f)
        flags += [bad_padding, bad_contiguous]
        units_per_row = max_id.long() + 1
    fetched = torch.stack([*(f.long() for f in flags), units_per_row.long()]).tolist()
    if any(fetched[:-1]):  # something is wrong, or NaN/inf sit on padding (they trip the cheap sums too)
        problems = _diagnose(mask, tensors)
        if problems:
            raise ValueError("sspo loss: bad input: " + "; ".join(problems))
        # Only padding holds NaN/inf: zero it (rare path) so that it cannot leak into sums or gradients.
        log_prob = torch.where(mask, log_prob, 0.0)
        log_ratio = torch.where(mask, log_prob.detach() - old_log_prob.detach(), 0.0)
        ent = torch.where(mask, entropy.detach(), 0.0) if adaptive else None
        log_ratio_sum, ent_sum = sums()
    sub_units_per_row = max(fetched[-1], 0)  # subsentences in the longest row (0 without segment_ids)
    units_per_row = {"token": mask.shape[1], "sequence": 1}.get(granularity, sub_units_per_row)

    # --- per-unit quantities ([S] slot arrays, S = B * (units_per_row + 1)); no autograd needed ----------
    # The value of s_t is the same on every token of a unit (log_prob - sg(log_prob) is exactly 0), so the
    # ratio, its clamps and the clip bounds are computed once per unit and gathered per token.
    with torch.no_grad():
        units = _Units(granularity, mask, segment_ids, units_per_row)  # slot of each token
        acc = torch.promote_types(log_ratio.dtype, torch.float32)  # exact counts and sums: never bf16
        unit_tokens = units.sum(mask_f.to(acc))  # [S] tokens per slot
        unit_log_ratio = units.sum(log_ratio.to(acc)) / unit_tokens.clamp(min=1)  # [S]
        unit_log_ratio = unit_log_ratio.to(log_ratio.dtype)  # 0 in the padding slots

        clamp_min, clamp_max = _LOG_RATIO_CLAMP[granularity]
        unit_log_s = torch.clamp(unit_log_ratio, min=clamp_min, max=clamp_max)  # [S]
        unit_ratio = torch.exp(unit_log_s)  # [S] s_k (exactly 1 in the padding slots)

        # entropy-adaptive clip range, per unit
        if adaptive:
            h_ref = ent_sum / mask_f.sum().clamp(min=1)  # token-mean over the micro-batch
            h_unit = units.sum(ent.to(acc)) / unit_tokens.clamp(min=1)  # [S]
            rel = h_unit / h_ref.clamp(min=1e-8)
            if sspo_cfg.adaptive_map == "power":
                f_unit = rel.pow(sspo_cfg.adaptive_alpha)
            else:  # "linear"
                f_unit = 1.0 + sspo_cfg.adaptive_alpha * (rel - 1.0)
            f_unit = f_unit.clamp(sspo_cfg.adaptive_min, sspo_cfg.adaptive_max)
            f_unit = torch.where(h_ref > 1e-8, f_unit, 1.0)  # all-zero entropy: no scaling  [S]
            low = (1.0 - eps_low * f_unit).to(unit_ratio.dtype)  # [S] per-unit bounds
            high = (1.0 + eps_high * f_unit).to(unit_ratio.dtype)
        else:
            f_unit = None
            low, high = 1.0 - eps_low, 1.0 + eps_high  # python floats: bit-identical to the built-ins
        unit_clipped_ratio = torch.clamp(unit_ratio, low, high)  # [S] clip(s_k, low_k, high_k)
        # d(loss)/d(log_prob) as autograd would give it through the formula: torch.clamp passes the gradient iff
        # its input lies within [min, max] (bounds included), i.e. iff it returned its input unchanged. The gain
        # gathers both clamps: 0 (log s clamped), 1 (ratio clipped), 2 (ratio within the clip range).
        unit_gain = (unit_log_s == unit_log_ratio).to(unit_ratio.dtype)  # [S]
        unit_gain *= (unit_clipped_ratio == unit_ratio).to(unit_ratio.dtype) + 1.0

        # --- PPO clip (+ dual clip), values as verl's vanilla, per token ------------------------------
        # On padding the ratio is exactly 1 (log-ratios zeroed), inside every clip range: no flag is set there.
        ratio = units.gather(unit_ratio)  # [B, T] s_t
        neg_adv = -advantages.detach()  # [B, T]
        pg_losses1 = neg_adv * ratio  # [B, T]
        pg_losses2 = neg_adv * units.gather(unit_clipped_ratio)  # [B, T]
        side = torch.sub(pg_losses1, pg_losses2).sign_()  # [B, T] +1: ratio term won, -1: clip active, 0: tie
        pg_losses = torch.maximum(pg_losses1, pg_losses2)  # [B, T]
        # Clipped tokens of one unit all have the same advantage sign (A > 0 above the range, A < 0 below it):
        # +1 clipped high, -1 clipped low. Summed per unit, it gives both clip fractions with ONE scatter.
        clip_sign = side.clamp(max=0.0).mul_(neg_adv).sign_()  # [B, T]
        # d L / d s as autograd computes it: torch.maximum's backward sends (1 + side) / 2 of the gradient to the
        # ratio term (all if it won, half on a tie) and the rest to the clip term, which passes its clamp only
        # within the range, where both terms are equal (side = 0). Hence gain * (1 + side) / 2 * (-A), with
        # gain 2 within the range, 1 outside, 0 where log s is clamped. The factors 1/2 (and the dual clip's,
        # below) are exact: they are folded into the per-unit gain.
        unit_gain *= 0.25 if dual_clip else 0.5
        slope = side.add_(1.0).mul_(units.gather(unit_gain)).mul_(neg_adv)  # [B, T] d L / d s = -A * c * m
        dual_count = torch.zeros((), device=mask.device)
        if dual_clip:
            # -A * clip_ratio_c where A < 0; where A >= 0 this cap is >= 0 >= the loss, so min() keeps the loss
            # unchanged there (as verl's where(A < 0, ...), without a boolean mask).
            cap = advantages.detach().abs().mul_(clip_ratio_c)  # [B, T]
            dual_side = torch.sub(cap, pg_losses).sign_()  # [B, T] -1: dual clip active, 0: tie
            pg_losses = torch.minimum(pg_losses, cap)
            dual_count = -dual_side.clamp(max=0.0).sum()
            slope.mul_(dual_side.add_(1.0))  # x d (x 1/2 in the gain): torch.minimum's backward, ties split

    # --- the loss: exact value, gradient slope * s_t w.r.t. log_prob (the GSPO-token form) ----------------
    # log_prob - sg(log_prob) is 0 in value; backward multiplies by slope then ratio, in the order autograd
    # would through the formula, so the gradient is the same bit for bit.
    pg_losses = pg_losses + (log_prob - log_prob.detach()).mul(ratio).mul(slope)  # [B, T]
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights

    pg_loss = agg_loss(
        loss_mat=pg_losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info
    )

    with torch.no_grad():
        at_base_range = _clip_counts_at_base_range(
            granularity, ratio, log_ratio, mask, mask_f, advantages, segment_ids, sub_units_per_row,
            1.0 - eps_low, 1.0 + eps_high,
        )  # fmt: skip
    metrics = _metrics(log_ratio_sum, clip_sign, dual_count, units, unit_tokens, unit_ratio, f_unit,
                       h_ref if adaptive else None, at_base_range)  # fmt: skip
    return pg_loss, metrics


@torch.no_grad()
def _clip_counts_at_base_range(
    granularity: str,
    ratio: torch.Tensor,
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    mask_f: torch.Tensor,
    advantages: torch.Tensor,
    segment_ids: torch.Tensor | None,
    sub_units_per_row: int,
    low: float,
    high: float,
) -> dict[str, torch.Tensor]:
    """Tokens PPO's clip would cut at the base range [low, high] with the ratio taken per token, subsentence and
    sequence (0-dim counts, keys ``token``/``subsentence``/``sequence``; no ``subsentence`` without segment ids).

    A token counts iff A > 0 and r > high, or A < 0 and r < low (verl's ``pg_clipfrac``), i.e. iff
    sign(A) * (r - clip(r, low, high)) > 0: the difference is exactly 0 within the range and has the sign of the
    side it leaves by. Clamps as the built-ins: token log-ratio in [-20, 20] (vanilla), subsentence/response mean
    log-ratio at most 10 (gspo). ``ratio`` [B, T] is the loss's own s_t (1 on padding), reused at its
    granularity. The token ratio is compared in log space (log w_t against log(1 -/+ eps), bounds moved to
    +-inf where the [-20, 20] clamp makes them unreachable): one exp over [B, T] less, same count except for a
    log-ratio within float rounding of a bound (coarse in bf16). The sequence count is per row (tokens with A > 0
    and A < 0).
    """
    acc = torch.promote_types(mask_f.dtype, torch.float32)  # exact token counts in the row sums: never bf16
    sign = torch.sign(advantages.detach()).to(acc).mul_(mask_f)  # [B, T] +1, -1, 0 (A = 0, padding)
    buffer = torch.empty_like(log_ratio)  # one scratch [B, T] for every count: no allocation per granularity

    def count(x: torch.Tensor, low: float = low, high: float = high) -> torch.Tensor:
        """Tokens with sign(A) * (x - clip(x, low, high)) > 0 (in place, in ``buffer``)."""
        clipped = torch.clamp(x, low, high, out=buffer)
        diff = torch.sub(x, clipped, out=buffer)  # > 0 above the range, < 0 below, 0 within
        # summed in float32 at least (never bf16): an exact count below 2**24 tokens per micro-batch
        return diff.mul_(sign).clamp_(min=0.0).sign_().sum(dtype=acc)

    counts = {}
    if granularity == "token":
        counts["token"] = count(ratio)
    else:  # log space, see above; log_ratio is 0 (within the range) on padding
        log_low = math.log(low) if low > math.exp(-20.0) else -math.inf
        log_high = math.log(high) if high < math.exp(20.0) else math.inf
        counts["token"] = count(log_ratio, log_low, log_high)
    if granularity == "subsentence":
        counts["subsentence"] = count(ratio)
    elif segment_ids is not None:
        sub = _Units("subsentence", mask, segment_ids, sub_units_per_row)
        sub_log = sub.sum(log_ratio.to(acc)) / sub.sum(mask_f.to(acc)).clamp(min=1)  # [S] log s_k
        r_sub = sub.gather(sub_log.to(log_ratio.dtype).clamp(max=10.0).exp_())  # [B, T], 1 on padding
        counts["subsentence"] = count(r_sub)
    # sequence: one ratio per row, so count per row: tokens with A > 0 if s_i > high, with A < 0 if s_i < low
    seq_log = log_ratio.sum(-1) / mask_f.sum(-1).clamp(min=1)  # [B] as gspo: row sum, then / length
    seq_ratio = seq_log.clamp(max=10.0).exp_()  # [B] s_i
    seq_side = torch.sub(seq_ratio, seq_ratio.clamp(low, high)).sign_()  # [B] +1 above, -1 below, 0 within
    n_signed = sign.sum(-1)  # [B] #(A > 0) - #(A < 0) on valid tokens
    n_nonzero = sign.abs_().sum(-1)  # [B] #(A != 0) (sign is not needed any more: in place)
    counts["sequence"] = (n_nonzero * seq_side.abs() + n_signed * seq_side).sum() / 2  # exact: small integers
    return counts


@torch.no_grad()
def _metrics(
    log_ratio_sum: torch.Tensor,
    clip_sign: torch.Tensor,
    dual_count: torch.Tensor,
    units: _Units,
    unit_tokens: torch.Tensor,
    unit_ratio: torch.Tensor,
    f_unit: torch.Tensor | None,
    h_ref: torch.Tensor | None,
    at_base_range: dict[str, torch.Tensor],
) -> dict[str, float]:
    """verl's three usual metrics plus ``actor/sspo/*`` diagnostics; one host sync for all of them.

    Token-weighted fractions are over valid tokens; unit-weighted ones are the mean over units of the share of
    the unit's tokens concerned (0 or 1 when the advantage is constant over the unit, as in GRPO). "high" =
    clipped at 1 + eps_high * f (A > 0), "low" = clipped at 1 - eps_low * f (A < 0). ``pg_clipfrac_lower`` is
    verl's dual-clip fraction (0 when dual clip is off, as in gspo). Ratio and scale statistics are over units.
    ``clip_sign`` [B, T]: +1 clipped high, -1 clipped low, 0 otherwise (one sign per unit, see the loss).
    ``at_base_range``: counts of :func:`_clip_counts_at_base_range`, reported as ``clipfrac_at_<granularity>``
    (token-weighted, like ``pg_clipfrac``).
    """
    acc = unit_tokens.dtype
    tokens = units.real(unit_tokens)  # [B, U]
    is_unit = tokens > 0  # [B, U] (the padding slots are dropped)
    n_tok_raw, n_units_raw = tokens.sum(), is_unit.sum().to(acc)
    n_tok, n_units = n_tok_raw.clamp(min=1), n_units_raw.clamp(min=1)  # denominators
    n_resp = (tokens.sum(1) > 0).sum().clamp(min=1).to(acc)
    unit_sign = units.real(units.sum(clip_sign.to(acc)))  # [B, U] (+/-) clipped tokens of the unit
    unit_clipped, unit_high = unit_sign.abs(), unit_sign.relu()  # [B, U] clipped, clipped-high token counts
    n_clipped, n_high = unit_clipped.sum(), unit_high.sum()
    unit_tokens_1 = tokens.clamp(min=1)  # [B, U]
    unit_clipped = (unit_clipped / unit_tokens_1).sum() / n_units  # mean over units of the clipped share
    unit_high = (unit_high / unit_tokens_1).sum() / n_units

    # Ratio and scale statistics over the [S] slot arrays (never empty, unlike [B, U] when U = 0).
    is_slot_unit = unit_tokens > 0  # [S]
    is_slot_unit.view(-1, units.per_row)[:, 0] = False  # padding slots
    nan = torch.where(n_units_raw > 0, 0.0, float("nan"))

    def unit_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(min, mean, max) over units; NaN when there is none."""
        return (
            torch.where(is_slot_unit, x, float("inf")).amin() + nan,
            torch.where(is_slot_unit, x, 0.0).sum() / n_units + nan,
            torch.where(is_slot_unit, x, float("-inf")).amax() + nan,
        )

    r_min, r_mean, r_max = unit_stats(unit_ratio)
    f_min, f_mean, f_max = unit_stats(f_unit) if f_unit is not None else (1.0 + nan,) * 3
    values = {
        "actor/pg_clipfrac": n_clipped / n_tok,
        "actor/ppo_kl": -log_ratio_sum / n_tok,
        "actor/pg_clipfrac_lower": dual_count / n_tok,
        "actor/sspo/clipfrac_token": n_clipped / n_tok,
        "actor/sspo/clipfrac_high_token": n_high / n_tok,
        "actor/sspo/clipfrac_low_token": (n_clipped - n_high) / n_tok,
        "actor/sspo/clipfrac_unit": unit_clipped,
        "actor/sspo/clipfrac_high_unit": unit_high,
        "actor/sspo/clipfrac_low_unit": unit_clipped - unit_high,
        "actor/sspo/units_per_response": n_units_raw / n_resp,
        "actor/sspo/tokens_per_unit": n_tok_raw / n_units,
        "actor/sspo/ratio_min": r_min,
        "actor/sspo/ratio_mean": r_mean,
        "actor/sspo/ratio_max": r_max,
        "actor/sspo/adaptive_scale_mean": f_mean,
        "actor/sspo/adaptive_scale_min": f_min,
        "actor/sspo/adaptive_scale_max": f_max,
    }
    for name, count in at_base_range.items():
        values[f"actor/sspo/clipfrac_at_{name}"] = count / n_tok
    if h_ref is not None:
        values["actor/sspo/entropy_ref"] = h_ref  # H_ref: token-mean old-policy entropy of the micro-batch
    floats = torch.stack([v if v.dtype == torch.float32 else v.float() for v in values.values()]).tolist()
    return dict(zip(values, floats, strict=True))
