"""Every piece of verl/vLLM runtime state the project sets or reads (``docs/verl-integration.md``, "Runtime
state"), one test each, checked against the installed versions: an upgrade that removes or renames one fails
here, loudly, instead of silently changing a run. Read from the installed source where importing would
start an engine."""

from __future__ import annotations

import importlib.util
import inspect
from importlib.metadata import version
from pathlib import Path

CHECKED = {"verl": "0.9.1", "vllm": "0.28.0+cpu"}


def _source(module: str) -> str:
    return Path(importlib.util.find_spec(module).origin).read_text()


def test_the_versions_the_list_was_checked_against():
    assert {name: version(name) for name in CHECKED} == CHECKED, "re-check docs/verl-integration.md's list"


def test_replay_buffer_poll_interval_is_an_attribute_its_wait_loop_reads():
    """Set by ``SSPOTrainerMixin._build_replay_buffer`` (``sspo.replay_poll_interval_s``)."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    assert inspect.signature(ReplayBuffer.__init__).parameters["poll_interval"].default == 2.0
    assert "self.poll_interval = poll_interval" in inspect.getsource(ReplayBuffer.__init__)
    assert "time.sleep(self.poll_interval)" in inspect.getsource(ReplayBuffer)


def test_trainers_sync_weights_through_their_checkpoint_manager_attributes():
    """``on_init_end`` replaces each ``CheckpointEngineManager`` attribute of the trainer with ``BoundedWeightSync``;
    verl's trainers must keep calling ``self.<manager>.update_weights(...)`` on those attributes."""
    from verl.checkpoint_engine import CheckpointEngineManager
    from verl.trainer.ppo.v1 import trainer_colocate_async, trainer_separate_async, trainer_sync

    assert "global_steps" in inspect.signature(CheckpointEngineManager.update_weights).parameters
    for module in (trainer_sync, trainer_colocate_async):
        assert "self.checkpoint_manager.update_weights(self.global_steps)" in inspect.getsource(module)
    assert "self.standalone_checkpoint_manager.update_weights(" in inspect.getsource(trainer_separate_async)


def test_per_row_fields_reach_the_loss_through_the_batchs_field_list():
    """SSPO's trainer puts ``sspo_entropy_ref`` and ``sspo_policy_lag`` per row into TransferQueue and appends them to
    ``batch.fields`` (when set, the worker fetches only those); verl's worker turns the batch into a TensorDict of
    every listed field, and its mini- and micro-batch splits keep them."""
    from transfer_queue import KVBatchMeta
    from verl.utils import transferqueue_utils

    assert "fields" in KVBatchMeta.__dataclass_fields__
    convert = inspect.getsource(transferqueue_utils.async_kv_batch_meta2batch_meta)
    assert "fields = meta.fields" in convert and "batch_meta.select_fields(fields)" in convert


def test_mini_batches_are_contiguous_pieces_of_each_ranks_contiguous_chunk():
    """``mini_batch_ids``: rank r gets the r-th contiguous chunk (``KVBatchMeta.chunk``, the order ``_balance_batch``
    arranges), and each rank cuts its chunk with ``make_iterator`` (a DataLoader, shuffled only if asked); the dp size
    is read from the worker group's dispatch map as ``_balance_batch`` reads it."""
    from transfer_queue import BatchMeta, KVBatchMeta
    from verl.protocol import BatchData
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils import tensordict_utils

    assert "chunk_keys = self.keys[start:end]" in inspect.getsource(KVBatchMeta.chunk)
    # the dispatch turns a KVBatchMeta argument into a BatchMeta (same key order) and chunks that
    assert "kv_batch_meta2batch_meta(data)" in inspect.getsource(BatchData.chunk)
    assert "indices = list(range(start, end))" in inspect.getsource(BatchMeta.chunk)
    assert "dp_size = max(dp_rank_mapping) + 1" in inspect.getsource(PPOTrainer._balance_batch)
    assert "worker_group._query_dispatch_info(role)" in inspect.getsource(PPOTrainer._balance_batch)
    assert "DataLoader" in inspect.getsource(tensordict_utils.make_iterator)
    assert (
        '"dataloader_kwargs": {"shuffle": self.config.actor_rollout_ref.actor.shuffle}'
        in inspect.getsource(PPOTrainer._update_actor)
    )


def test_a_samples_tags_carry_the_policy_versions_it_was_generated_with():
    """``sspo_policy_lag`` is verl's ``trajectory_staleness``: ``(global_steps - 1) - max_global_steps`` of the tags."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    source = inspect.getsource(PPOTrainer._compute_metrics)
    assert (
        'tag["max_global_steps"]' in source
        and "trajectory_staleness = (global_steps - 1) - max_global_steps" in source
    )


def test_detach_worker_takes_its_snapshot_handler_from_a_property():
    """``CPUDetachActorWorker`` overrides ``copy_handler``; verl's ``save_model_to_cpu`` calls it."""
    from verl.experimental.separation.engine_workers import DetachActorWorker

    assert isinstance(inspect.getattr_static(DetachActorWorker, "copy_handler"), property)
    assert "self.copy_handler(self.actor.engine.module)" in inspect.getsource(
        DetachActorWorker.save_model_to_cpu
    )


def test_separate_async_updates_the_actor_once_per_mini_batch_and_counts_them_in_step():
    """``sspo/local_updates`` counts ``_update_actor`` calls inside ``PPOTrainer.step``."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert "for trigger_idx in range(self.parameter_sync_step):" in inspect.getsource(PPOTrainer.step)
    assert "batch = self._update_actor(batch, metrics=metrics)" in inspect.getsource(PPOTrainer._step_once)


def test_trainer_mode_attribute_and_its_branches():
    """SSPO's trainers answer verl's mode name through a ``trainer_mode`` property that ``PPOTrainer.__init__`` assigns."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    init = inspect.getsource(PPOTrainer.__init__)
    assert "self.trainer_mode = " in init
    assert 'self.trainer_mode == "sync"' in inspect.getsource(PPOTrainer)


def test_role_worker_mapping_is_the_trainers_attribute():
    """CPU mode maps the roles to the gloo workers by replacing ``self.role_worker_mapping`` after verl's
    ``_init_resource_pool_mgr``."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert "self.role_worker_mapping" in inspect.getsource(PPOTrainer._init_resource_pool_mgr)


def test_platform_manager_caches_the_platform_in_a_module_global():
    """``sspo.cpu.platform.use_cpu_platform`` reads ``platform_manager._current_platform`` (no GPU probe)."""
    from verl.plugin.platform import platform_manager

    assert hasattr(platform_manager, "_current_platform")
    assert "global _current_platform" in inspect.getsource(platform_manager)


def test_engine_registry_keeps_its_engines_in_a_class_dict():
    """``sspo.cpu.platform.register_cpu_engine`` reads ``EngineRegistry._engines[model_type][backend][device]``."""
    from verl.workers.engine import EngineRegistry

    assert isinstance(EngineRegistry._engines, dict)
    assert "fsdp" in EngineRegistry._engines.get("language_model", {})


def test_vllm_cpu_onednn_flag_is_a_module_global_its_linear_layer_reads():
    """``sspo.cpu.vllm_replica`` sets ``vllm._custom_ops._supports_onednn = False`` in the vLLM worker."""
    assert "\n_supports_onednn = " in _source("vllm._custom_ops")
    assert "_supports_onednn" in _source("vllm.model_executor.layers.utils")


def test_preflight_batch_rules_are_the_asserts_verl_makes_after_the_first_rollout():
    """``sspo.launch.preflight.check_batch_sizes`` re-derives two asserts verl makes only mid-step: a mini-batch
    splits over the data-parallel ranks, and fixed micro-batches tile a rank's share. Pinned to verl's source."""
    from verl.workers.engine import utils as engine_utils
    from verl.workers.engine_workers import TrainingWorker

    assert "assert mini_batch_size % self.engine.get_data_parallel_size() == 0" in inspect.getsource(
        TrainingWorker.train_mini_batch
    )
    assert "assert total_data_size % (force_group_size * micro_batch_size_per_gpu) == 0" in inspect.getsource(
        engine_utils
    )


def test_worker_pools_ask_each_node_for_gpu_bundles_of_max_colocate_count_cpus():
    """``sspo.launch.preflight.check_gpus`` places verl's pools as verl asks for them: per GPU one bundle of
    ``{"CPU": max_colocate_count, GPU: 1}`` (default 3), one STRICT_PACK group per node, waited for without bound."""
    from verl.single_controller.ray.base import RayResourcePool, ResourcePoolManager

    assert ResourcePoolManager.__dataclass_fields__["max_colocate_count"].default == 3
    source = inspect.getsource(RayResourcePool.get_placement_groups)
    assert 'bundle = {"CPU": self.max_colocate_count}' in source and "bundle[device_name] = 1" in source
    assert "ray.get([pg.ready() for pg in pgs])" in source  # no timeout: an unplaceable pool hangs the run


def test_full_determinism_seeds_every_request_alike_unless_the_request_brings_its_seed():
    """Why ``sspo_single_turn`` sets a seed and an id per sample: verl 0.9.1 seeds every request of a replica
    alike, keeping a seed the request already has (``setdefault``); its single-turn loop names every request
    ``det-<priority>`` (priority 0 in the v1 loop) and its load balancer routes such ids by hash; the v1 agent loop
    runs a prompt's n samples as ``session_id`` 0..n-1 with the step in ``global_steps``."""
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
    from verl.trainer.ppo.v1 import agent_loop_tq
    from verl.workers.rollout.router import GlobalRequestLoadBalancer
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer

    generate = inspect.getsource(vLLMHttpServer.generate)
    assert 'sampling_params.setdefault("seed", self.replica_rank + self.config.seed)' in generate
    assert 'f"det-{priority}"' in inspect.getsource(SingleTurnAgentLoop.run)
    assert "hash(request_id) % len(self._servers)" in inspect.getsource(
        GlobalRequestLoadBalancer.acquire_server
    )
    assert "session_id=i, **prompt" in inspect.getsource(agent_loop_tq)
    assert 'kwargs["global_steps"]' in inspect.getsource(agent_loop_tq)


def test_the_replay_buffer_hands_over_a_steps_samples_in_the_order_they_finished():
    """Why ``SSPOTrainerMixin._balance_batch`` sorts the batch under full determinism: verl's batch order is the
    replay buffer's snapshot order (finish order), and mini-batches are cut from it."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert "for key, tag in partition_snapshot.items():" in inspect.getsource(ReplayBuffer._materialize_batch)
    assert "batch = self._balance_batch(batch, metrics=metrics)" in inspect.getsource(PPOTrainer._step_once)


def test_a_samples_key_ends_in_its_session_and_output_index():
    """``trainers._content_order`` breaks ties with the last two parts of a sample's TransferQueue key."""
    from verl.trainer.ppo.v1 import agent_loop_tq

    assert 'keys.append(f"{uid}_{session_id}_{i}")' in inspect.getsource(agent_loop_tq)


def test_loss_agg_modes_are_verls():
    """``config_checks.LOSS_AGG_MODES`` lists the modes verl's ``ActorConfig`` accepts (its error lists none)."""
    from verl.workers.config import ActorConfig

    from sspo.verl_plugin.config_checks import LOSS_AGG_MODES

    source = inspect.getsource(ActorConfig.__post_init__)
    assert all(f'"{mode}"' in source for mode in LOSS_AGG_MODES)
    assert source.count('"seq-mean-') + source.count('"token-') == len(LOSS_AGG_MODES)
