"""verl's platform for CPU-only processes: device ``cpu``, collective backend ``gloo``.

Registered as ``"cpu"`` through verl's platform plugin layer (``verl.plugin.platform``) and made the
process's platform by :func:`use_cpu_platform` (``sspo.cpu.bootstrap`` calls it in every process of a
CPU run). Ray's ``GPU`` resource stands for a CPU worker slot: verl's resource pool and vLLM replica
count ``GPU`` resources only, so a CPU run starts Ray with fake GPUs (``ray_init.num_gpus``); the
torch device stays CPU.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry, get_platform, set_platform

__all__ = ["PlatformCPU", "cpu_device_module", "use_cpu_platform", "register_cpu_engine"]


def _zero(*_args: Any, **_kwargs: Any) -> int:
    return 0


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _mem_get_info(*_args: Any, **_kwargs: Any) -> tuple[int, int]:
    import psutil

    vm = psutil.virtual_memory()
    return vm.available, vm.total


def _build_cpu_device_module() -> types.ModuleType:
    """``torch.cpu`` plus the ``torch.cuda``-style helpers verl calls on ``get_torch_device()``."""
    module = types.ModuleType("sspo_cpu_device", "torch.cpu with the torch.cuda memory/RNG API verl calls")
    for name in dir(torch.cpu):
        if not name.startswith("__"):
            setattr(module, name, getattr(torch.cpu, name))
    helpers: dict[str, Callable[..., Any]] = {
        "empty_cache": _noop,
        "ipc_collect": _noop,
        "reset_peak_memory_stats": _noop,
        "set_per_process_memory_fraction": _noop,
        "memory_allocated": _zero,
        "memory_reserved": _zero,
        "max_memory_allocated": _zero,
        "max_memory_reserved": _zero,
        "mem_get_info": _mem_get_info,
        "get_rng_state": lambda *a, **k: torch.get_rng_state(),
        "set_rng_state": lambda state, *a, **k: torch.set_rng_state(state),
        "manual_seed": lambda seed: torch.manual_seed(seed),
        "manual_seed_all": lambda seed: torch.manual_seed(seed),
        "get_device_name": lambda *a, **k: "cpu",
        "memory_stats": lambda *a, **k: {},
    }
    for name, fn in helpers.items():
        setattr(module, name, fn)
    return module


cpu_device_module: types.ModuleType = _build_cpu_device_module()


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    """verl platform for CPU-only processes (never auto-detected: selected by the CPU preset)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return cpu_device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # a GPU host must keep verl's own platform

    def current_device(self) -> str:  # type: ignore[override]
        return "cpu"  # verl passes it to tensor.to(...): an int would mean "accelerator #0"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "SSPO_CPU_VISIBLE_DEVICES"  # a name no CUDA library reads

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"  # fake Ray GPUs = CPU worker slots (see the module docstring)

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def use_cpu_platform() -> PlatformCPU:
    """Make :class:`PlatformCPU` verl's platform in this process and register the CPU engine (idempotent).

    Must run before verl's FSDP engine module is imported: it reads the device name at import.
    """
    from verl.plugin.platform import platform_manager

    # the cached singleton, read without triggering verl's auto-detection (which probes for GPUs)
    if not isinstance(platform_manager._current_platform, PlatformCPU):
        set_platform(PlatformCPU())
    register_cpu_engine()
    platform = get_platform()
    assert isinstance(platform, PlatformCPU), platform
    return platform


def register_cpu_engine() -> None:
    """Register verl's ``FSDPEngineWithLMHead`` for device ``"cpu"`` in ``EngineRegistry`` (idempotent)."""
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    backends = EngineRegistry._engines.get("language_model", {})
    missing = [b for b in ("fsdp", "fsdp2") if "cpu" not in backends.get(b, {})]
    if missing:
        EngineRegistry.register(model_type="language_model", backend=missing, device="cpu")(
            FSDPEngineWithLMHead
        )
