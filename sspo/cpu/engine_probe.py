"""What verl's FSDP engine really ran in a CPU actor worker: wrapper, dtypes, torch.compile, recomputation, offload.

The GPU rows' engine settings run on CPU in ``experiment=engine_7b_cpu``. With ``SSPO_ENGINE_PROBE=1`` in the
workers' environment, :class:`sspo.cpu.workers.CPUTrainingWorker` attaches an :class:`EngineProbe` to its engine
and prints one line after its first update, so a test can see that each setting took effect rather than that it
was configured::

    [sspo engine probe] {"rank": 0, "fsdp": 2, "forward_weight_dtypes": ["torch.bfloat16"], ...}
"""

from __future__ import annotations

import json
from typing import Any

import torch

__all__ = ["PROBE_ENV", "PROBE_TAG", "EngineProbe"]

#: the environment variable that switches the probe on in a worker (read by ``sspo.cpu.workers``)
PROBE_ENV = "SSPO_ENGINE_PROBE"
#: the prefix of the probe's line in the worker's output
PROBE_TAG = "[sspo engine probe]"


def _fsdp_version(module: torch.nn.Module) -> int:
    """2 for FSDP2 (``fully_shard``), 1 for FSDP1 (``FullyShardedDataParallel``), 0 for neither."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    if isinstance(module, FSDPModule):
        return 2
    return 1 if isinstance(module, FullyShardedDataParallel) else 0


class EngineProbe:
    """Hooks on one verl FSDP engine (after ``engine.initialize()``) and the facts they saw (module docstring)."""

    def __init__(self, engine: Any, rank: int) -> None:
        self.engine, self.rank = engine, rank
        self.forward_weight_dtypes: set[str] = set()
        self.layer_forwards = 0  # a decoder layer's forwards outside backward
        self.layer_recomputes = 0  # ... and inside backward: non-reentrant gradient checkpointing recomputes there
        self.reported = False
        module = engine.module
        linear = next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
        layer = next(m for m in module.modules() if type(m).__name__.endswith("DecoderLayer"))
        linear.register_forward_pre_hook(self._record_weight_dtype)
        layer.register_forward_pre_hook(self._count_layer_forward)

    def _record_weight_dtype(self, module: torch.nn.Module, _args: Any) -> None:
        self.forward_weight_dtypes.add(str(module.weight.dtype))  # the compute dtype: FSDP casts before forward

    def _count_layer_forward(self, _module: torch.nn.Module, _args: Any) -> None:
        if torch._C._current_graph_task_id() == -1:  # not inside an autograd backward pass
            self.layer_forwards += int(torch.is_grad_enabled())
        else:
            self.layer_recomputes += 1

    def facts(self) -> dict[str, Any]:
        """What the engine ran so far (call after an update)."""
        from torch._dynamo.utils import counters

        module, optimizer = self.engine.module, getattr(self.engine, "optimizer", None)
        state = [t for s in (optimizer.state.values() if optimizer else []) for t in s.values() if torch.is_tensor(t)]
        entropy_fn = getattr(self.engine, "compute_entropy_from_logits", None)
        return {
            "rank": self.rank,
            "fsdp": _fsdp_version(module),
            "stored_param_dtypes": sorted({str(p.dtype) for p in module.parameters()}),
            "forward_weight_dtypes": sorted(self.forward_weight_dtypes),
            "optimizer_state_dtypes": sorted({str(t.dtype) for t in state if t.dim() > 0}),
            "optimizer_state_devices": sorted({str(t.device) for t in state}),
            "param_offload": bool(self.engine.is_param_offload_enabled),
            "optimizer_offload": bool(self.engine.is_optimizer_offload_enabled),
            "entropy_fn_compiled": hasattr(entropy_fn, "_torchdynamo_orig_callable"),
            "dynamo_graphs": int(counters["stats"]["unique_graphs"]),
            "layer_forwards": self.layer_forwards,
            "layer_recomputes": self.layer_recomputes,
        }

    def report_once(self) -> None:
        """Print :meth:`facts` as one line, the first time only."""
        if not self.reported:
            self.reported = True
            print(f"{PROBE_TAG} {json.dumps(self.facts(), sort_keys=True)}", flush=True)
