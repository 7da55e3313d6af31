"""separate_async's pi_old snapshot on CPU: ``CPUDetachActorWorker`` saves a real copy; verl's handler does not.

verl's ``DetachActorWorker.save_model_to_cpu`` / ``restore_model_from_cpu`` keep pi_old across the mini-batches of
a sync cycle. Run here on an FSDP2-sharded model (a one-rank gloo group), with the worker's own methods: save,
update the weights in place as an optimizer step does, restore, compare.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from verl.experimental.separation.engine_workers import DetachActorWorker

from sspo.cpu.workers import CPU_WORKERS, CPUActorRolloutRefWorker, CPUDetachActorWorker, CPUTrainingWorker


@pytest.fixture(scope="module")
def one_rank_group():
    """A one-rank gloo process group (FSDP2 needs one), torn down after the module's tests."""
    from helpers import free_ports

    if dist.is_initialized():  # pragma: no cover - another test left one: use it
        yield
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_ports(1)[0]))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _worker(cls: type, module: torch.nn.Module) -> DetachActorWorker:
    """The worker's snapshot methods on ``module``, without Ray (what they read: the strategy and the engine)."""
    worker = cls.__new__(cls)
    worker.config = OmegaConf.create({"actor": {"strategy": "fsdp2"}})
    worker._strategy_handlers = None
    worker.actor = SimpleNamespace(engine=SimpleNamespace(module=module))
    return worker


def _sharded_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
    return model


def _values(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().full_tensor().clone() for p in model.parameters()]


def _save_update_restore(cls: type) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(pi_old, the updated weights, the weights after restoring pi_old)."""
    model = _sharded_model()
    worker = _worker(cls, model)
    before = _values(model)
    worker.save_model_to_cpu(0)  # pi_old, at the start of a sync cycle
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # an optimizer step updates the shards in place
    updated = _values(model)
    worker.restore_model_from_cpu(0)
    return before, updated, _values(model)


def test_cpu_worker_restores_pi_old_after_an_in_place_update(one_rank_group) -> None:
    before, updated, restored = _save_update_restore(CPUDetachActorWorker)
    assert all(
        not torch.equal(b, u) for b, u in zip(before, updated, strict=True)
    )  # the update did change them
    assert all(torch.equal(b, r) for b, r in zip(before, restored, strict=True))


def test_verls_handler_on_cpu_keeps_the_update_instead_of_pi_old(one_rank_group) -> None:
    """The bug the CPU worker fixes: ``.detach().cpu()`` of a CPU shard is the shard itself. Should verl copy one
    day, this fails and the override in sspo.cpu.workers can go."""
    before, updated, restored = _save_update_restore(DetachActorWorker)
    assert all(torch.equal(u, r) for u, r in zip(updated, restored, strict=True))
    assert not any(torch.equal(b, r) for b, r in zip(before, restored, strict=True))


def test_every_verl_worker_class_has_its_cpu_variant() -> None:
    from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

    assert CPU_WORKERS == {
        ActorRolloutRefWorker: CPUActorRolloutRefWorker,
        DetachActorWorker: CPUDetachActorWorker,
        TrainingWorker: CPUTrainingWorker,
    }
    assert issubclass(CPUDetachActorWorker, DetachActorWorker)
    assert CPUDetachActorWorker.actor_worker_cls is CPUTrainingWorker  # gloo process group first
