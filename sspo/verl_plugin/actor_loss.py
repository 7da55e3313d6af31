"""SSPO's actor loss: verl's ``ppo_loss`` plus the inputs the ``sspo`` policy loss needs.

SSPO's trainers install :func:`sspo_ppo_loss` on every actor worker with verl's ``set_loss_fn`` (verl
installs ``partial(ppo_loss, config=...)`` by default). For ``loss_mode=sspo`` it computes, per micro-batch,
the subsentence ids (from ``responses``), the old policy's ``entropy`` and the entropy reference
``sspo_entropy_ref`` (set per row by the trainer: its mini-batch's, so the clip does not depend on how the batch
was split, nor on the trainer mode), and calls ``ppo_loss`` unchanged inside :func:`policy_loss_inputs`. For EVERY loss mode it then adds
the clip monitor (:mod:`sspo.monitor`) to the metrics, under ``actor/monitor/``, unless ``sspo.monitor=false``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from sspo.monitor import MONITOR_PREFIX, clip_monitor, monitor_clip_range
from sspo.segmentation import SubsentenceSegmenter
from sspo.verl_plugin.policy_loss import (
    LOSS_MODE,
    POLICY_LOSS_KEY,
    clip_range,
    policy_loss_inputs,
    sspo_settings,
)

__all__ = [
    "ENTROPY_REF_KEY",
    "POLICY_LAG_KEY",
    "build_actor_config",
    "make_actor_loss_fn",
    "monitor_metrics",
    "sspo_loss_inputs",
    "sspo_ppo_loss",
]

#: non-tensor key of the update batch that carries H_ref (written by SSPO's trainers before the update)
ENTROPY_REF_KEY = "sspo_entropy_ref"
#: per row: policy versions between the sample's rollout and pi_old (verl's trajectory staleness), for the monitor
POLICY_LAG_KEY = "sspo_policy_lag"


@functools.lru_cache(maxsize=4)
def _segmenter(tokenizer: Any, delimiters: tuple[str, ...] | None, max_subsentence_len: int | None) -> Any:
    """One segmenter per (worker tokenizer, delimiters, cap): the vocabulary table is built once per process."""
    return SubsentenceSegmenter.from_tokenizer(
        tokenizer, delimiters=delimiters, max_subsentence_len=max_subsentence_len
    )


def sspo_loss_inputs(config: Any, data: Any) -> dict[str, Any]:
    """``segment_ids``, and with the adaptive clip the old-policy ``entropy`` and ``entropy_ref``, for one
    micro-batch, padded exactly as ``ppo_loss`` pads ``response_mask`` (same ``select().to_padded_tensor()``).

    Args:
        config: verl ``ActorConfig`` (``config.model_config.tokenizer`` is the worker's tokenizer).
        data: the micro-batch TensorDict the engine hands to the loss (nested or padded fields).

    Returns:
        ``{"segment_ids": LongTensor[B, T], "entropy": FloatTensor[B, T], "entropy_ref": float}`` (those needed).
    """
    from verl.utils import tensordict_utils as tu

    settings = sspo_settings(config)
    # Segment ids at EVERY granularity: the token/sequence losses ignore them, the clip monitor reads them.
    fields = ["response_mask", "responses"] + (["entropy"] if settings.adaptive_clip else [])
    if settings.adaptive_clip and "entropy" not in data.keys():
        raise ValueError(
            f"{POLICY_LOSS_KEY}.adaptive_clip=true needs the old policy's per-token entropy in the batch (key "
            "'entropy', written by verl's _compute_old_log_prob, which bypass mode skips): set "
            "algorithm.rollout_correction.bypass_mode=false or adaptive_clip=false"
        )
    padded = data.select(*fields).to_padded_tensor()
    inputs: dict[str, Any] = {
        "segment_ids": _segment_ids(config, padded["responses"], padded["response_mask"].bool())
    }
    if settings.adaptive_clip:
        entropy_ref = tu.get(data, ENTROPY_REF_KEY, default=None)
        if entropy_ref is None:  # a micro-batch's own mean would make the clip depend on the layout: refuse
            raise ValueError(
                f"{POLICY_LOSS_KEY}.adaptive_clip=true: the micro-batch carries no {ENTROPY_REF_KEY!r} (the update "
                "batch's reference entropy, set by SSPO's trainers in _update_actor); run one of SSPO's trainers "
                "(trainer.v1.trainer_mode=sspo_sync | sspo_colocate_async | sspo_separate_async)"
            )
        inputs["entropy"] = padded["entropy"].detach()
        inputs["entropy_ref"] = _one_entropy_ref(entropy_ref)
    return inputs


def _one_entropy_ref(entropy_ref: Any) -> float:
    """The micro-batch's H_ref: a number, or the per-row values SSPO's trainer stored, which must all be one (a
    micro-batch lies inside one mini-batch; two values mean verl split the batch otherwise than the trainer assumed)."""
    if not isinstance(entropy_ref, torch.Tensor) or entropy_ref.numel() == 1:
        return float(entropy_ref)
    values = entropy_ref.detach().flatten()
    if not bool((values == values[0]).all()):
        raise ValueError(
            f"one micro-batch carries {values.unique().numel()} different {ENTROPY_REF_KEY!r} values: it spans two "
            "mini-batches of SSPO's trainer (sspo.verl_plugin.trainers.mini_batch_ids), so verl cut the update "
            "batch otherwise; with the adaptive clip keep actor_rollout_ref.actor.shuffle=false"
        )
    return float(values[0])


def _segment_ids(config: Any, responses: Any, response_mask: Any) -> Any:
    """Subsentence ids [B, T] of padded ``responses`` with the run's delimiters and cap (-1 on padding)."""
    settings = sspo_settings(config)
    delimiters = tuple(settings.delimiters) if settings.delimiters is not None else None
    return _segmenter(config.model_config.tokenizer, delimiters, settings.max_subsentence_len)(
        responses, response_mask
    )


def monitor_metrics(config: Any, model_output: Any, data: Any, segment_ids: Any = None) -> dict[str, Any]:
    """The clip monitor (:func:`sspo.monitor.clip_monitor`) of one micro-batch as verl ``Metric`` objects.

    Reads the micro-batch padded as ``ppo_loss`` pads it (zeros to the longest response), at the run's base clip range
    (:func:`sspo.monitor.monitor_clip_range`); ``segment_ids`` are reused when the loss already built them.
    ``*_min`` / ``*_max`` aggregate over micro-batches and ranks by min / max, the rest by mean (as verl's
    ``pg_clipfrac``).
    """
    from verl.utils.metric import AggregationType, Metric

    fields = ["response_mask", "old_log_probs", "advantages"] + (["responses"] if segment_ids is None else [])
    padded = {k: torch.nested.to_padded_tensor(data[k], 0) if data[k].is_nested else data[k] for k in fields}
    mask = padded["response_mask"].bool()
    if segment_ids is None:
        segment_ids = _segment_ids(config, padded["responses"], mask)
    lower, upper = monitor_clip_range(config.policy_loss.get("loss_mode", "vanilla"), *clip_range(config))
    log_prob = _response_log_probs(model_output["log_probs"], data, mask.shape[1])
    lag = data[POLICY_LAG_KEY] if POLICY_LAG_KEY in data.keys() else None  # [B], set by SSPO's trainers
    values = clip_monitor(
        padded["old_log_probs"], log_prob, padded["advantages"], mask, segment_ids, lower, upper, lag=lag
    )

    def aggregation(name: str) -> AggregationType:
        if name.startswith("ratio_min_"):
            return AggregationType.MIN
        return AggregationType.MAX if name.startswith("ratio_max_") else AggregationType.MEAN

    return {
        f"{MONITOR_PREFIX}{name}": Metric(aggregation(name), value)
        for name, value in values.items()
        if not math.isnan(value)
    }  # a micro-batch without valid tokens has no extremes: it reports none


def _response_log_probs(log_probs: Any, data: Any, width: int) -> Any:
    """The response tokens' log-probs [B, width] from the model's output in verl's no-padding layout (per sample:
    prompt then response, each token's log-prob stored one position early), 0 on padding: what verl's
    ``no_padding_2_padding`` returns, gathered with one index instead of its loop over samples. Layouts other
    than v1's nested prompts/responses go through ``no_padding_2_padding`` itself."""
    from verl.workers.utils.padding import no_padding_2_padding

    if not data["prompts"].is_nested:
        return no_padding_2_padding(log_probs, data)
    values = log_probs.values() if log_probs.is_nested else log_probs  # [sum of sample lengths]
    response_lens = data["responses"].offsets().diff()  # [B]
    ends = (data["prompts"].offsets().diff() + response_lens).cumsum(
        0
    )  # [B] end of each sample in ``values``
    position = torch.arange(width, device=values.device)  # [T]
    index = (ends - response_lens - 1).unsqueeze(1) + position  # [B, T]
    valid = position < response_lens.unsqueeze(1)  # [B, T]
    return torch.where(valid, values[index.clamp(max=values.numel() - 1)], 0.0)


def sspo_ppo_loss(
    config: Any, model_output: Any, data: Any, dp_group: Any = None, monitor: bool = True
) -> tuple[Any, dict]:
    """Drop-in for verl's ``ppo_loss`` (same signature): for ``loss_mode=sspo`` it feeds SSPO's inputs; for every
    loss mode it adds the clip monitor (:func:`monitor_metrics`) unless ``monitor`` is False. The loss and its
    gradient are ``ppo_loss``'s."""
    from verl.workers.utils.losses import ppo_loss

    inputs = (
        sspo_loss_inputs(config, data) if config.policy_loss.get("loss_mode", "vanilla") == LOSS_MODE else {}
    )
    with policy_loss_inputs(**inputs) as extremes:
        loss, metrics = ppo_loss(config, model_output, data, dp_group)
    metrics.update(_extreme_metrics(extremes))
    if monitor:
        metrics.update(monitor_metrics(config, model_output, data, inputs.get("segment_ids")))
    return loss, metrics


def _extreme_metrics(extremes: dict[str, float]) -> dict[str, Any]:
    """The loss's ``*_min`` / ``*_max`` metrics as verl ``Metric`` objects reduced by min / max over micro-batches and
    ranks (verl would average them); NaN (a micro-batch without units) reports nothing."""
    from verl.utils.metric import AggregationType, Metric

    return {key: Metric(AggregationType.MIN if key.endswith("_min") else AggregationType.MAX, value)
            for key, value in extremes.items() if not math.isnan(value)}  # fmt: skip


def make_actor_loss_fn(actor_config: Any, monitor: bool = True) -> Callable[..., Any]:
    """``partial(sspo_ppo_loss, config=actor_config, monitor=monitor)``: what SSPO's trainers install with
    ``set_loss_fn`` (``monitor``: the config's ``sspo.monitor``)."""
    return functools.partial(sspo_ppo_loss, config=actor_config, monitor=monitor)


def build_actor_config(cfg: Any) -> Any:
    """The ``ActorConfig`` the actor worker builds (same two calls as ``ActorRolloutRefWorker.init_model``)."""
    from verl.utils.config import omega_conf_to_dataclass

    actor_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    actor_config.model_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
    return actor_config
