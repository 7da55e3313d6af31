"""CPU mode in every process of a run: import this through ``VERL_USE_EXTERNAL_MODULES``.

``recipe/config/cluster/cpu_device.yaml`` (composed by every CPU preset) puts ``VERL_USE_EXTERNAL_MODULES=sspo.cpu.bootstrap,sspo.verl_plugin``
into the Ray runtime environment, so ``import verl`` runs this module first in the TaskRunner, every
worker and every vLLM server process: before the ``verl.plugins`` entry points, hence before
``sspo.verl_plugin`` imports verl's FSDP engine module, which reads the device name at import.
It makes :class:`~sspo.cpu.platform.PlatformCPU` the platform, registers verl's FSDP engine for
device ``cpu``, and registers :class:`~sspo.cpu.vllm_replica.CPUvLLMReplica` as verl's ``vllm``
rollout replica. Importing it is the switch: nothing here runs on a GPU cluster.
"""

from __future__ import annotations

from sspo.cpu.platform import use_cpu_platform

use_cpu_platform()  # first: verl modules imported below read the device name at import

from verl.workers.rollout.replica import RolloutReplicaRegistry  # noqa: E402


def _load_cpu_vllm_replica() -> type:
    from sspo.cpu.vllm_replica import CPUvLLMReplica

    return CPUvLLMReplica


RolloutReplicaRegistry.register("vllm", _load_cpu_vllm_replica)
