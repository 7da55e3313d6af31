"""The ``sspo`` policy loss as verl registers it: verl's config class, verl's signature, verl's aggregation.

The algorithm is :mod:`sspo.loss` (plain PyTorch); this module only adapts it to verl 0.9.1:

* :class:`SSPOPolicyLossConfig` is verl's ``PolicyLossConfig`` plus :class:`sspo.loss.SSPOSettings` (the
  SSPO keys under ``actor_rollout_ref.actor.policy_loss``, validated by ``SSPOSettings`` alone);
* :func:`compute_policy_loss_sspo` has verl's policy-loss signature. verl's ``ppo_loss`` passes it seven
  arguments; the three SSPO needs besides (``segment_ids``, ``entropy``, ``entropy_ref``) come from
  :func:`policy_loss_inputs`, which SSPO's actor loss (:mod:`sspo.verl_plugin.actor_loss`) opens around
  ``ppo_loss``. The per-token losses are aggregated with verl's ``agg_loss`` and ``global_batch_info``.

Registration happens in :func:`sspo.verl_plugin.register`, nowhere else.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from verl.trainer.ppo.core_algos import agg_loss
from verl.workers.config import PolicyLossConfig

from sspo.loss import SSPOSettings, sspo_token_losses

__all__ = [
    "LOSS_MODE",
    "POLICY_LOSS_KEY",
    "SSPOPolicyLossConfig",
    "clip_range",
    "compute_policy_loss_sspo",
    "policy_loss_inputs",
    "sspo_settings",
]

LOSS_MODE = "sspo"
POLICY_LOSS_KEY = "actor_rollout_ref.actor.policy_loss"


@dataclass
class SSPOPolicyLossConfig(PolicyLossConfig, SSPOSettings):
    """verl's ``PolicyLossConfig`` plus the SSPO fields of :class:`sspo.loss.SSPOSettings`.

    Use with ``actor_rollout_ref.actor.policy_loss._target_=sspo.verl_plugin.SSPOPolicyLossConfig`` and
    ``loss_mode=sspo`` (the recipe's ``algo=sspo`` group sets both). PPO's clip range stays where verl has
    it: ``actor.clip_ratio_low``, ``actor.clip_ratio_high``, ``actor.clip_ratio_c``.
    """

    config_key: ClassVar[str] = POLICY_LOSS_KEY
    clip_key: ClassVar[str] = "actor_rollout_ref.actor.clip_ratio"
    loss_mode: str = LOSS_MODE

    def __post_init__(self) -> None:
        """``loss_mode`` must be ``sspo``; every SSPO field is checked by ``SSPOSettings``."""
        if self.loss_mode != LOSS_MODE:
            raise ValueError(
                f"{POLICY_LOSS_KEY}.loss_mode={self.loss_mode!r} with _target_=sspo.verl_plugin.SSPOPolicyLossConfig: "
                f"set it to {LOSS_MODE!r} (or use verl's PolicyLossConfig for other losses)"
            )
        SSPOSettings.__post_init__(self)


def sspo_settings(actor_config: Any) -> SSPOSettings:
    """The run's SSPO settings: ``actor_config.policy_loss``, or SSPO's defaults for a plain ``PolicyLossConfig``."""
    policy_loss = actor_config.policy_loss
    return policy_loss if isinstance(policy_loss, SSPOSettings) else SSPOPolicyLossConfig()


def clip_range(actor_config: Any) -> tuple[float, float]:
    """(clip_ratio_low, clip_ratio_high) as verl reads them: each falls back to ``clip_ratio`` when null."""
    clip_ratio = actor_config.get("clip_ratio", 0.2)
    low, high = (actor_config.get(k) for k in ("clip_ratio_low", "clip_ratio_high"))
    return (clip_ratio if low is None else low), (clip_ratio if high is None else high)


@dataclass
class _LossCall:
    """One call of verl's ``ppo_loss`` under SSPO's actor loss: the loss's extra inputs in, its min/max metrics out
    (verl averages every policy-loss metric over micro-batches; a minimum or maximum must not be averaged)."""

    inputs: dict[str, Any]
    extremes: dict[str, float] = field(default_factory=dict)


_LOSS_CALL: contextvars.ContextVar[_LossCall | None] = contextvars.ContextVar("sspo_loss_call", default=None)


@contextmanager
def policy_loss_inputs(**inputs: Any) -> Iterator[dict[str, float]]:
    """Within this block :func:`compute_policy_loss_sspo` receives ``inputs`` (``segment_ids``, ``entropy``,
    ``entropy_ref``) when its caller, verl's ``ppo_loss``, does not pass them; yields the dict into which it puts
    its ``*_min`` / ``*_max`` metrics instead of returning them to verl's averaging."""
    call = _LossCall(inputs)
    token = _LOSS_CALL.set(call)
    try:
        yield call.extremes
    finally:
        _LOSS_CALL.reset(token)


def compute_policy_loss_sspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any | None = None,
    rollout_is_weights: torch.Tensor | None = None,
    **sspo_inputs: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl's policy-loss signature around :func:`sspo.loss.sspo_token_losses`.

        loss = agg_loss(L, response_mask, loss_agg_mode, **config.global_batch_info)   (L: sspo.loss's formula)

    Args:
        old_log_prob, log_prob, advantages, response_mask, rollout_is_weights: FloatTensor[B, T] as in verl.
        loss_agg_mode: any of verl's ``agg_loss`` modes.
        config: verl's ``ActorConfig``; ``config.policy_loss`` an :class:`SSPOPolicyLossConfig` (a plain
            ``PolicyLossConfig(loss_mode="sspo")`` gets SSPO's defaults).
        sspo_inputs: ``segment_ids`` [B, T], ``entropy`` [B, T], ``entropy_ref``; missing ones come from
            :func:`policy_loss_inputs`.

    Returns:
        (loss, metrics) as every verl policy loss.
    """
    if config is None:
        raise ValueError("compute_policy_loss_sspo needs config (verl's ActorConfig)")
    unknown = set(sspo_inputs) - {"segment_ids", "entropy", "entropy_ref"}
    if unknown:
        raise TypeError(f"compute_policy_loss_sspo got unexpected inputs {sorted(unknown)}")
    call = _LOSS_CALL.get()
    inputs = {**(call.inputs if call else {}), **sspo_inputs}
    pg_losses, metrics = sspo_token_losses(
        old_log_prob, log_prob, advantages, response_mask, sspo_settings(config), *clip_range(config),
        config.get("clip_ratio_c", 3.0), rollout_is_weights=rollout_is_weights, **inputs,
    )  # fmt: skip
    if call is not None:  # under SSPO's actor loss: the extremes go out as MIN/MAX metrics (sspo_ppo_loss)
        for key in [k for k in metrics if k.endswith(("_min", "_max"))]:
            call.extremes[key] = metrics.pop(key)
        metrics = {k: v for k, v in metrics.items() if not math.isnan(v)}  # no units here: no unit means
    pg_loss = agg_loss(
        loss_mat=pg_losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info
    )
    return pg_loss, metrics
