"""Test helpers for verl's config and batches: verl's real ``ppo_trainer`` config composed by Hydra, and
a batch in the layout verl's v1 trainer hands to the actor (for calling the loss wrapper directly)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

#: Overrides that make verl's default ``ppo_trainer`` actor runnable on CPU. Everything else keeps
#: verl's defaults (loss_agg_mode, clip ratios, optimizer, ...).
ACTOR_OVERRIDES: tuple[str, ...] = (
    "trainer.device=cpu",
    "trainer.n_gpus_per_node=1",
    "actor_rollout_ref.actor.strategy=fsdp2",
    # eager attention: flash-attn is GPU-only
    "+actor_rollout_ref.model.override_config.attn_implementation=eager",
    # fp32 compute: bf16 autocast on CPU is slow and makes tiny-model tests noisy
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.reduce_dtype=fp32",
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.buffer_dtype=fp32",
    "actor_rollout_ref.actor.use_torch_compile=false",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
    "actor_rollout_ref.rollout.n=1",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.actor.optim.lr=1e-3",
)


def verl_config_dir() -> str:
    """Folder of verl's Hydra configs (``ppo_trainer.yaml`` etc.) in the installed verl."""
    import verl

    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def compose_ppo_config(overrides: Sequence[str] = ()) -> Any:
    """verl's real ``ppo_trainer`` config composed with Hydra's compose API plus ``overrides``.

    Overrides use Hydra's command-line syntax (``key=value``, ``+key=value``), exactly as a user
    would pass them to ``python -m verl.trainer.main_ppo``.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def make_actor_batch(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    advantages: Sequence[float] | Sequence[Sequence[float]],
    old_log_probs: Sequence[Sequence[float]] | None = None,
    entropy: Sequence[Sequence[float]] | None = None,
    response_masks: Sequence[Sequence[int]] | None = None,
    temperature: float = 1.0,
) -> Any:
    """A batch in the layout verl's v1 trainer hands to ``update_actor``/``compute_log_prob``.

    verl builds it per sample in ``AgentLoopWorkerTQ`` (no padding: jagged nested tensors for
    ``prompts``, ``responses``, ``response_mask``, ``loss_mask``, ``input_ids``, ``position_ids``)
    and adds ``old_log_probs``/``entropy`` (``_compute_old_log_prob``) and ``advantages``
    (``_compute_advantage``) as nested tensors. verl has no public helper for this outside its
    TransferQueue path, hence this one.

    Args:
        prompts, responses: token ids per sample (ragged).
        advantages: one scalar per sample (broadcast over its response, as GRPO does) or per token.
        old_log_probs, entropy: per-token values per sample; omit them and call
            :meth:`CPUActor.compute_old_log_prob` to have the actor compute them, as the trainer does.
        response_masks: per-token 0/1 (default all ones).
        temperature: sampling temperature (verl divides logits by it).
    """
    from verl.utils import tensordict_utils as tu

    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses differ in length: {len(prompts)} vs {len(responses)}")
    if any(len(p) == 0 for p in prompts) or any(len(r) == 0 for r in responses):
        raise ValueError("every prompt and every response needs at least one token")

    def nested(rows: Sequence[Any], dtype: torch.dtype) -> torch.Tensor:
        return torch.nested.as_nested_tensor(
            [torch.as_tensor(r, dtype=dtype) for r in rows], layout=torch.jagged
        )

    lengths = [len(r) for r in responses]
    masks = response_masks if response_masks is not None else [[1] * n for n in lengths]
    per_token_adv = [
        [float(a)] * n if torch.as_tensor(a).dim() == 0 else torch.as_tensor(a, dtype=torch.float32).tolist()
        for a, n in zip(advantages, lengths, strict=True)
    ]
    input_ids = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    fields: dict[str, Any] = {
        "prompts": nested(prompts, torch.long),
        "responses": nested(responses, torch.long),
        "response_mask": nested(masks, torch.long),
        "loss_mask": nested(masks, torch.long),
        "input_ids": nested(input_ids, torch.long),
        "position_ids": nested([list(range(len(ids))) for ids in input_ids], torch.long),
        "advantages": nested(per_token_adv, torch.float32),
    }
    if old_log_probs is not None:
        fields["old_log_probs"] = nested(old_log_probs, torch.float32)
    if entropy is not None:
        fields["entropy"] = nested(entropy, torch.float32)
    return tu.get_tensordict(fields, non_tensor_dict={"temperature": temperature})
