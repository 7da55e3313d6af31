"""Reproducible rollouts under verl's own ``actor_rollout_ref.rollout.full_determinism=true``.

verl 0.9.1 then seeds every request of a replica alike (``replica_rank + seed``, set with ``setdefault`` in
``vLLMHttpServer.generate``), so the n samples of a prompt come out identical and every group advantage is 0.
The agent loop ``sspo_single_turn`` (the recipe's default, registered by :mod:`sspo.verl_plugin`) is verl's
single-turn loop that, under full determinism only, first gives the request its own seed, derived from the
rollout seed, the training step, the prompt and the sample's place in its group, and an id made from that seed
(verl's would be ``det-0`` for all, which its load balancer sends to one replica): distinct samples within a
group, the same ones from run to run, whichever replica, agent worker or data-parallel layout serves them.
Text prompts only (the seed is made from the prompt's JSON form). Without full determinism it is verl's loop
unchanged.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

AGENT_LOOP = "sspo_single_turn"

__all__ = ["AGENT_LOOP", "SeededSingleTurnAgentLoop", "sample_seed"]


def sample_seed(seed: int, step: Any, prompt: Any, sample: int) -> int:
    """The sampling seed of one sample: fixed by (rollout seed, step, prompt, place in its group), a 31-bit int."""
    key = json.dumps(_plain([seed, step, prompt, sample]), sort_keys=True, default=str)
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") & 0x7FFFFFFF


def _plain(value: Any) -> Any:
    """Tensors and numpy values as Python lists and numbers, so the seed does not depend on their type."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value.tolist() if hasattr(value, "tolist") else value


class SeededSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn agent loop with a seed per sample under ``full_determinism`` (see the module docstring)."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """verl's ``run``; under full determinism the request carries :func:`sample_seed` (verl keeps a set seed)
        and a request id of its own.

        The sample's place in its group is verl's ``session_id`` (its v1 agent loop runs a prompt's n samples as
        sessions 0..n-1, with the step in ``global_steps``). verl would name every such request ``det-0``, and its
        load balancer routes a request by its id under full determinism: every request would go to one replica.
        """
        if self.rollout_config.full_determinism:
            missing = [k for k in ("session_id", "global_steps") if k not in kwargs]
            if missing:
                raise ValueError(
                    f"{AGENT_LOOP}: verl's agent loop gave no {missing}; the per-sample seed needs verl's v1 "
                    "agent loop (trainer.use_v1=true)"
                )
            prompt = [kwargs.get("index"), kwargs.get("raw_prompt")]
            seed = sample_seed(
                self.rollout_config.seed, kwargs["global_steps"], prompt, int(kwargs["session_id"])
            )
            sampling_params = {**sampling_params, "seed": seed}
            self.server_manager = _RequestId(self.server_manager, f"det-{seed:08x}")
        return await super().run(sampling_params, **kwargs)


class _RequestId:
    """verl's server client for one sample (verl makes one agent loop per sample), sending ``request_id``."""

    def __init__(self, client: Any, request_id: str) -> None:
        self._client, self._request_id = client, request_id

    async def generate(self, *, request_id: str, **kwargs: Any) -> Any:
        return await self._client.generate(request_id=self._request_id, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
