"""SSPO's trainers: each of verl 0.9.1's v1 trainer modes plus :class:`SSPOTrainerMixin`.

``sspo_sync`` (also ``sspo``), ``sspo_colocate_async`` and ``sspo_separate_async`` are verl's trainer for
that mode with SSPO's hooks (all are verl hook methods or overrides of its trainer's own steps):
config checks before verl's ``__init__``, the CPU workers in CPU mode, SSPO's actor loss on every actor
worker, the step's entropy reference for the adaptive clip, and bounded weight syncs. Registered by
:func:`sspo.verl_plugin.register`.
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo.v1 import PPOTrainerColocateAsync, PPOTrainerSeparateAsync, PPOTrainerSync

from sspo.verl_plugin import config_checks
from sspo.verl_plugin.actor_loss import build_actor_config, make_actor_loss_fn

# the mode names live with the config checks (which import nothing of this module: one direction only)
from sspo.verl_plugin.config_checks import (
    LEGACY_TRAINER_MODE,
    TRAINER_PREFIX,
    VERL_TRAINER_MODES,
    verl_trainer_mode,
)

__all__ = [
    "LEGACY_TRAINER_MODE",
    "SSPO_TRAINERS",
    "TRAINER_PREFIX",
    "VERL_TRAINER_MODES",
    "SSPOColocateAsyncTrainer",
    "SSPOSeparateAsyncTrainer",
    "SSPOSyncTrainer",
    "SSPOTrainer",
    "SSPOTrainerMixin",
    "verl_trainer_mode",
]


class SSPOTrainerMixin:
    """SSPO's hooks on one of verl's trainers (``class X(SSPOTrainerMixin, <verl trainer>)``).

    * ``__init__``: :func:`sspo.verl_plugin.config_checks.validate_config` before any of verl's code runs;
    * ``trainer_mode`` reads as verl's mode name (``verl_mode``), so verl's ``== "sync"`` branches and its
      ``trainer.v1.get(self.trainer_mode)`` settings are those of the mode this trainer extends;
    * ``_init_resource_pool_mgr``: the CPU workers of :mod:`sspo.cpu.workers` when ``trainer.device=cpu``;
    * ``on_init_end``: installs :func:`sspo_ppo_loss` on every actor worker and bounds every weight sync
      (:class:`sspo.verl_plugin.weight_sync.BoundedWeightSync`), then runs verl's hook (the first weight sync);
    * ``_build_replay_buffer``: ``sspo.replay_poll_interval_s`` when set;
    * ``_balance_batch``: under ``rollout.full_determinism``, the step's samples in a fixed order first;
    * ``step``: counts the actor updates of a global step (``sspo/local_updates``);
    * ``_update_actor``: each row's H_ref, its mini-batch's (adaptive clip only), and its policy lag for the clip
      monitor's breakdown; with ``sspo.update_check``, the update's direction on its own batch afterwards
      (:mod:`sspo.update_check`).
    """

    verl_mode: str  # set by each trainer class below

    def __init__(self, config: Any) -> None:
        config_checks.validate_config(config)  # before any worker, rollout or GPU time
        # the loss's own settings, built as the worker builds them: the driver and the workers agree
        self.sspo_adaptive_clip = config_checks.uses_adaptive_clip(config)
        self.sspo_monitor = bool(config.get("sspo", {}).get("monitor", True)) and not _distillation(config)
        if self.verl_mode == "separate_async":  # its weight sync to the standalone rollout
            config_checks.assert_checkpoint_engine_available(config)
        super().__init__(config)  # type: ignore[call-arg]

    @property
    def trainer_mode(self) -> str:
        """verl's mode name; ``PPOTrainer.__init__`` assigns ``config.trainer.v1.trainer_mode`` to it."""
        return self.verl_mode

    @trainer_mode.setter
    def trainer_mode(self, name: str) -> None:
        self.registered_trainer_mode = name

    def _init_resource_pool_mgr(self) -> None:
        """verl's role -> worker mapping; in CPU mode (``trainer.device=cpu``) the gloo workers of :mod:`sspo.cpu.workers`."""
        super()._init_resource_pool_mgr()  # type: ignore[misc]
        if self.config.trainer.get("device") == "cpu":
            from sspo.cpu.workers import cpu_role_worker_mapping

            _refuse_unknown_cpu_workers(self.role_worker_mapping, self.verl_mode)
            self.role_worker_mapping = cpu_role_worker_mapping(self.role_worker_mapping)

    def _build_replay_buffer(self) -> Any:
        """verl's replay buffer, polling for finished rollouts every ``sspo.replay_poll_interval_s`` when set.

        verl polls every 2 s (a constructor argument its config does not expose): nothing on GPUs, where a
        rollout takes minutes, but a third of a tiny CPU step, so the CPU preset sets 0.25 s.
        """
        buffer = super()._build_replay_buffer()  # type: ignore[misc]
        poll_s = self.config.get("sspo", {}).get("replay_poll_interval_s")
        if poll_s is not None:
            buffer.poll_interval = float(poll_s)
        return buffer

    def on_init_end(self) -> None:
        """verl's hook after ``init_model``: install the loss wrapper, bound the weight syncs, then verl's
        own hook (the first weight sync into every rollout replica)."""
        from verl.checkpoint_engine import CheckpointEngineManager

        from sspo.verl_plugin.weight_sync import DEFAULT_TIMEOUT_S, BoundedWeightSync

        self.install_actor_loss()
        timeout_s = self.config.get("sspo", {}).get("weight_sync_timeout_s", DEFAULT_TIMEOUT_S)
        # sync/colocate_async: checkpoint_manager; separate_async adds standalone_checkpoint_manager
        for name, manager in list(vars(self).items()):
            if isinstance(manager, CheckpointEngineManager):
                setattr(self, name, BoundedWeightSync(manager, timeout_s))
        super().on_init_end()  # type: ignore[misc]

    def install_actor_loss(self) -> None:
        """``actor_rollout_wg.set_loss_fn(partial(sspo_ppo_loss, config=<ActorConfig>, monitor=<sspo.monitor>))`` on
        every actor worker: SSPO's loss inputs, and the clip monitor for every loss (``sspo.monitor``, default on).

        The ``ActorConfig`` is built here from ``self.config`` exactly as the worker builds its own (verl
        ships the critic's loss config the same way). With distillation enabled verl installs
        ``distillation_ppo_loss`` (which calls ``ppo_loss`` itself) and ``validate_config`` refuses
        ``sspo``, so verl's loss is left in place.
        """
        if not _distillation(self.config):
            monitor = bool(self.config.get("sspo", {}).get("monitor", True))
            self.actor_rollout_wg.set_loss_fn(
                make_actor_loss_fn(build_actor_config(self.config), monitor=monitor)
            )

    def _balance_batch(
        self, batch: Any, metrics: dict, logging_prefix: str = "global_seqlen", keep_minibatch: bool = False
    ) -> Any:
        """verl's balancing over data-parallel ranks; under ``rollout.full_determinism`` the batch is first put in
        a fixed order (by its token ids). verl's replay buffer hands over a step's samples in the order they
        finished, which changes from run to run, and the mini-batches follow that order: with several mini-batches
        per step the same rollouts would give a different update. (Seeds per sample: ``seeded_rollout``.)
        """
        if self.config.actor_rollout_ref.rollout.get("full_determinism", False):
            batch.reorder(_content_order(batch))
        return super()._balance_batch(  # type: ignore[misc]
            batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch
        )

    def _update_actor(self, batch: Any, metrics: dict) -> Any:
        """verl's actor update; with SSPO's adaptive clip, each row carries the H_ref of its optimizer step.

        OUR CHOICE (one definition in every trainer mode, the same on every layout): H_ref is the token-mean
        old-policy entropy of the samples of one optimizer step, i.e. of one mini-batch. verl hands this method a
        whole step's batch in sync/colocate_async (``data.train_batch_size`` prompts, several mini-batches) and
        one mini-batch per call in separate_async. It is computed here on the driver, before verl splits the
        batch over data-parallel ranks and micro-batches, and stored per row in TransferQueue
        (``ENTROPY_REF_KEY``); the loss checks that its micro-batch holds a single value.
        """
        self.sspo_local_updates = getattr(self, "sspo_local_updates", 0) + 1
        if self.sspo_adaptive_clip:
            dp_size, rows = self._actor_dp_size(), self._mini_batch_rows()
            group = mini_batch_ids(len(batch), dp_size, rows)  # [rows]
            row_refs = _mini_batch_entropy_refs(batch, dp_size, rows)  # [rows]
            refs = row_refs.new_zeros(int(group.max()) + 1).scatter_(0, group, row_refs)  # [mini-batches]
            # the loss reports the mean of what its micro-batches received as actor/sspo/entropy_ref
            metrics.update(
                {
                    "actor/sspo/entropy_ref_batch": float(refs.mean()),
                    "actor/sspo/entropy_ref_batch_min": float(refs.min()),
                    "actor/sspo/entropy_ref_batch_max": float(refs.max()),
                }
            )
        if self.sspo_monitor:  # the monitor's breakdown by policy lag
            _store_policy_lag(batch, self.global_steps)
        batch = super()._update_actor(batch, metrics)  # type: ignore[misc]
        if self.config.get("sspo", {}).get("update_check", False):
            metrics.update(self._update_check(batch))
        return batch

    def step(self, metrics: dict, timing_raw: dict) -> Any:
        """verl's global step; logs ``sspo/local_updates``, the actor updates it ran (``parameter_sync_step``)."""
        self.sspo_local_updates = 0
        batch = super().step(metrics, timing_raw)  # type: ignore[misc]
        metrics["sspo/local_updates"] = float(self.sspo_local_updates)
        return batch

    def _actor_dp_size(self) -> int:
        """The actor's data-parallel size, read as verl's ``_balance_batch`` reads it (the dispatch's rank map)."""
        wg = self.actor_rollout_wg
        if "actor" not in wg._dispatch_info:
            wg._dispatch_info["actor"] = wg._query_dispatch_info("actor")
        return max(wg._dispatch_info["actor"]) + 1

    def _mini_batch_rows(self) -> int:
        """Rows of one mini-batch: ``ppo_mini_batch_size`` prompts x ``rollout.n`` (verl's ``_update_actor``)."""
        arr = self.config.actor_rollout_ref
        return int(arr.actor.ppo_mini_batch_size) * int(arr.rollout.n)

    def _update_check(self, batch: Any) -> dict[str, float]:
        """``actor/update/*`` (:mod:`sspo.update_check`): the batch's log-probs under the updated weights against
        its old ones, weighed by its advantages. One forward pass, as verl's reference pass makes it."""
        import transfer_queue as tq
        from verl.workers.utils.padding import response_from_nested

        from sspo.update_check import UPDATE_PREFIX, update_direction

        saved = dict(batch.extra_info)
        batch.extra_info.update(
            {
                "calculate_entropy": False,
                "compute_loss": False,
                "no_lora_adapter": False,  # the trained policy, whatever verl's ref pass left here
                "temperature": self.config.actor_rollout_ref.rollout.temperature,
            }
        )
        try:  # writes the scratch field log_probs, as verl's ref pass does
            output = self.actor_rollout_wg.compute_log_prob(batch)
            assert len(output) == len(batch), (len(output), len(batch))
        finally:
            batch.extra_info.clear()
            batch.extra_info.update(saved)
        fields = ["log_probs", "old_log_probs", "advantages", "response_mask"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        data["new_log_probs"] = response_from_nested(data.pop("log_probs"), data["response_mask"])
        padded = data.to_padded_tensor()
        check = update_direction(
            padded["new_log_probs"], padded["old_log_probs"], padded["advantages"], padded["response_mask"]
        )
        return {f"{UPDATE_PREFIX}{name}": value for name, value in check.items()}


def _distillation(config: Any) -> bool:
    """verl's distillation installs its own loss (no SSPO monitor then)."""
    from verl.trainer.distillation import is_distillation_enabled

    return bool(is_distillation_enabled(config.get("distillation")))


def mini_batch_ids(rows: int, dp_size: int, mini_batch_rows: int) -> torch.Tensor:
    """Which mini-batch each row of an update batch trains in: [rows] ids 0..M-1.

    verl's dispatch gives data-parallel rank r the r-th contiguous chunk of the batch (``KVBatchMeta.chunk``, the
    order ``_balance_batch`` arranges for), and each rank cuts its chunk into contiguous mini-batches of
    ``mini_batch_rows / dp_size`` rows (``make_iterator`` without shuffling): mini-batch i is the i-th piece of
    every rank's chunk.
    """
    per_rank, per_rank_mini = rows // dp_size, max(mini_batch_rows // dp_size, 1)
    return (torch.arange(rows) % per_rank) // per_rank_mini


def _mini_batch_entropy_refs(batch: Any, dp_size: int, mini_batch_rows: int) -> torch.Tensor:
    """Each row's H_ref (its mini-batch's token-mean old-policy entropy), written to TransferQueue; returns them."""
    import transfer_queue as tq

    from sspo.loss import entropy_reference_per_group
    from sspo.verl_plugin.actor_loss import ENTROPY_REF_KEY

    data = tq.kv_batch_get(
        keys=batch.keys, partition_id=batch.partition_id, select_fields=["entropy", "response_mask"]
    )
    padded = data.to_padded_tensor()
    group = mini_batch_ids(len(batch), dp_size, mini_batch_rows)
    refs = entropy_reference_per_group(padded["entropy"], padded["response_mask"], group)  # [rows]
    _put_rows(batch, ENTROPY_REF_KEY, refs)
    return refs


def _store_policy_lag(batch: Any, global_steps: int) -> None:
    """Each row's policy lag for the clip monitor's breakdown, as verl's ``trajectory_staleness`` counts it:
    ``(global_steps - 1) - max_global_steps`` of the sample's tags (0 in sync; -1 for padding rows: not counted)."""

    from sspo.verl_plugin.actor_loss import POLICY_LAG_KEY

    lag = torch.tensor(
        [
            -1
            if tag.get("is_padding", False)
            else max(global_steps - 1 - tag.get("max_global_steps", global_steps - 1), 0)
            for tag in batch.tags
        ],
        dtype=torch.long,
    )  # [rows]
    _put_rows(batch, POLICY_LAG_KEY, lag)


def _put_rows(batch: Any, name: str, values: torch.Tensor) -> None:
    """One value per row into TransferQueue as field ``name``, and the field into the batch's field list (verl's
    workers fetch only the listed fields when the batch has one: the list of a ``kv_batch_put`` before this)."""
    import transfer_queue as tq
    from tensordict import TensorDict

    fields = TensorDict({name: values}, batch_size=[len(values)])
    tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
    if batch.fields is not None and name not in batch.fields:
        batch.fields = [*batch.fields, name]


def _content_order(batch: Any) -> list[int]:
    """The batch's positions sorted by (prompt ids, response ids, session, output index): an order that depends only
    on the samples (a key is ``<uid>_<session>_<output index>``; the uid is random, the rest breaks ties)."""
    import transfer_queue as tq

    data = tq.kv_batch_get(
        keys=batch.keys, partition_id=batch.partition_id, select_fields=["prompts", "responses"]
    )
    prompts, responses = data["prompts"].unbind(0), data["responses"].unbind(0)  # nested or padded rows
    places = [tuple(int(part) for part in key.rsplit("_", 2)[1:]) for key in batch.keys]
    rows = [
        (tuple(p.tolist()), tuple(r.tolist()), place)
        for p, r, place in zip(prompts, responses, places, strict=True)
    ]
    return sorted(range(len(rows)), key=rows.__getitem__)


def _refuse_unknown_cpu_workers(role_worker_mapping: dict[Any, Any], verl_mode: str) -> None:
    """CPU mode swaps each of verl's worker classes for its gloo variant (``sspo.cpu.workers.CPU_WORKERS``); a class
    without one would lose its methods in that swap: refuse it."""
    from sspo.cpu.workers import CPU_WORKERS

    for role, remote_cls in role_worker_mapping.items():
        cls = getattr(remote_cls, "__ray_actor_class__", remote_cls)
        if cls not in CPU_WORKERS:
            raise ValueError(
                f"trainer.device=cpu: verl's {verl_mode!r} trainer maps role {role} to {cls.__name__}, which has no "
                f"CPU variant in sspo.cpu.workers; run this trainer mode on GPUs (trainer.v1.trainer_mode)"
            )


class SSPOSyncTrainer(SSPOTrainerMixin, PPOTrainerSync):
    """verl's synchronous trainer (``sync``) with SSPO's hooks. Also registered as ``sspo`` (old configs)."""

    verl_mode = "sync"


class SSPOColocateAsyncTrainer(SSPOTrainerMixin, PPOTrainerColocateAsync):
    """verl's ``colocate_async`` trainer (rollout on the training GPUs, partial rollouts) with SSPO's hooks."""

    verl_mode = "colocate_async"


class SSPOSeparateAsyncTrainer(SSPOTrainerMixin, PPOTrainerSeparateAsync):
    """verl's ``separate_async`` trainer (standalone rollout GPUs, ``DetachActorWorker``) with SSPO's hooks."""

    verl_mode = "separate_async"


#: the first name of the sync trainer (kept: tests and users import it)
SSPOTrainer = SSPOSyncTrainer

#: ``trainer.v1.trainer_mode`` value -> SSPO trainer class
SSPO_TRAINERS: dict[str, type[SSPOTrainerMixin]] = {
    f"{TRAINER_PREFIX}{cls.verl_mode}": cls
    for cls in (SSPOSyncTrainer, SSPOColocateAsyncTrainer, SSPOSeparateAsyncTrainer)
}
SSPO_TRAINERS[LEGACY_TRAINER_MODE] = SSPOSyncTrainer
