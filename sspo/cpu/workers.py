"""verl's actor worker on CPU: the same classes with a gloo process group set up first.

verl's ``TrainingWorker.__init__`` initialises torch.distributed with the backend string
``"cpu:gloo,<device>:<backend>"``, which on CPU names the device twice (``"cpu:gloo,cpu:gloo"``) and
torch rejects it. :class:`CPUTrainingWorker` initialises the same process group with plain ``gloo``
first (verl's call then finds it initialised); :class:`CPUActorRolloutRefWorker` is verl's
``ActorRolloutRefWorker`` using it for the actor and the reference model, through the class
attributes verl provides for that; :class:`CPUDetachActorWorker` is the same for ``separate_async``'s
``DetachActorWorker``, whose pi_old snapshot is also made a real copy on CPU. With ``SSPO_ENGINE_PROBE=1``
the actor reports what its engine ran (:mod:`sspo.cpu.engine_probe`). The trainer maps its roles to these
classes in CPU mode (``sspo.verl_plugin``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map_only
from verl.experimental.separation.engine_workers import DetachActorWorker
from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register
from verl.utils.distributed import initialize_global_process_group_ray
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from sspo.cpu.engine_probe import PROBE_ENV, EngineProbe

__all__ = ["CPUTrainingWorker", "CPUActorRolloutRefWorker", "CPUDetachActorWorker", "cpu_role_worker_mapping"]


class CPUTrainingWorker(TrainingWorker):
    """verl's ``TrainingWorker`` whose process group is gloo (rank and world size from verl's Ray env)."""

    def __init__(self, config: Any) -> None:
        initialize_global_process_group_ray(timeout_second=None, backend="gloo")
        super().__init__(config)
        self.engine_probe: EngineProbe | None = None

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def reset(self) -> None:
        """verl's engine (re)initialisation; with ``SSPO_ENGINE_PROBE=1``, the probe attached to the engine."""
        super().reset()
        if os.environ.get(PROBE_ENV) == "1" and self.engine_probe is None:
            self.engine_probe = EngineProbe(self.engine, rank=self.rank)

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="train"), blocking=False)
    def train_mini_batch(self, data: Any) -> Any:
        """verl's update; the probe (if any) reports what the engine ran after the first one."""
        output = super().train_mini_batch(data)
        if self.engine_probe is not None:
            self.engine_probe.report_once()
        return output


class CPUActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's ``ActorRolloutRefWorker`` with :class:`CPUTrainingWorker` for the actor and reference roles."""

    actor_worker_cls = CPUTrainingWorker
    ref_worker_cls = CPUTrainingWorker


class CPUDetachActorWorker(DetachActorWorker):
    """verl's ``separate_async`` actor (``DetachActorWorker``) on CPU: gloo workers, and a pi_old snapshot that copies.

    ``separate_async`` keeps pi_old for every mini-batch of a sync cycle with ``save_model_to_cpu`` /
    ``restore_model_from_cpu``. verl's FSDP2 handler saves each shard with ``.detach().cpu()``, which on a CPU
    tensor returns the same storage: the "saved" pi_old would follow every update and its restore do nothing, so
    the old log-probs and entropies (SSPO's H_ref) of mini-batches 2..k would silently come from the current
    weights. Here the saved state is a copy of verl's (a no-op cost on GPUs, where this class is not used).
    """

    actor_worker_cls = CPUTrainingWorker
    ref_worker_cls = CPUTrainingWorker

    @property
    def copy_handler(self) -> Callable[[torch.nn.Module], Any]:
        """verl's save handler for this strategy, returning tensors that share no storage with the model."""
        save = super().copy_handler
        return lambda module: tree_map_only(torch.Tensor, lambda t: t.detach().clone(), save(module))


#: verl's worker class -> its CPU variant (any other class is refused: ``sspo.verl_plugin.trainers``)
CPU_WORKERS: dict[type, type] = {
    ActorRolloutRefWorker: CPUActorRolloutRefWorker,
    DetachActorWorker: CPUDetachActorWorker,
    TrainingWorker: CPUTrainingWorker,
}


def cpu_role_worker_mapping(role_worker_mapping: dict[Any, Any]) -> dict[Any, Any]:
    """verl's role -> Ray worker class mapping with each class swapped for its CPU variant (:data:`CPU_WORKERS`)."""
    import ray

    return {
        role: ray.remote(CPU_WORKERS[getattr(remote, "__ray_actor_class__", remote)])
        for role, remote in role_worker_mapping.items()
    }
