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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from verl.trainer.ppo.core_algos import agg_loss
from verl.workers.config import PolicyLossConfig

from sspo.loss import SSPOSettings, sspo_token_losses

__all__ = ["LOSS_MODE", "POLICY_LOSS_KEY", "SSPOPolicyLossConfig", "compute_policy_loss_sspo", "policy_loss_inputs"]

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


_LOSS_INPUTS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("sspo_loss_inputs", default=None)


@contextmanager
def policy_loss_inputs(**inputs: Any) -> Iterator[None]:
    """Within this block :func:`compute_policy_loss_sspo` receives ``inputs`` (``segment_ids``, ``entropy``,
    ``entropy_ref``) when its caller, verl's ``ppo_loss``, does not pass them."""
    token = _LOSS_INPUTS.set(inputs)
    try:
        yield
    finally:
        _LOSS_INPUTS.reset(token)


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
    inputs = {**(_LOSS_INPUTS.get() or {}), **sspo_inputs}
    settings = config.policy_loss if isinstance(config.policy_loss, SSPOSettings) else SSPOPolicyLossConfig()
    clip_ratio = config.get("clip_ratio", 0.2)
    low, high = (config.get(k) for k in ("clip_ratio_low", "clip_ratio_high"))
    pg_losses, metrics = sspo_token_losses(
        old_log_prob, log_prob, advantages, response_mask, settings,
        clip_ratio if low is None else low, clip_ratio if high is None else high, config.get("clip_ratio_c", 3.0),
        rollout_is_weights=rollout_is_weights, **inputs,
    )  # fmt: skip
    pg_loss = agg_loss(
        loss_mat=pg_losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info
    )
    return pg_loss, metrics
