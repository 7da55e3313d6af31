"""A CPU platform for verl 0.9.1, and ``build_cpu_actor``: verl's real actor worker on CPU.

FOR TESTS AND LOCAL RUNS ONLY. Real training runs on GPUs with verl's own CUDA platform; nothing in
the recipe imports this module. It exists so that the SSPO glue can be proven through verl's REAL
actor path (``ActorRolloutRefWorker`` -> ``TrainingWorker`` -> ``FSDPEngineWithLMHead``, FSDP2,
eager attention) on a laptop or in CI, with a tiny model.

How it plugs into verl (all through verl's own extension points, nothing patched):

* ``verl.plugin.platform`` -- ``PlatformRegistry.register("cpu")`` registers :class:`PlatformCPU`
  (device ``"cpu"``, collective backend ``"gloo"``) and ``set_platform`` makes it the process-wide
  platform *before* anything calls ``get_platform()`` (verl caches the first platform it resolves;
  on a machine without GPUs it would otherwise fall back to "nvidia" and crash in ``torch.cuda``).
  Do NOT set ``VERL_PLATFORM=cpu`` globally: a process resolving its platform before importing this
  module (``import verl`` loads ``sspo.verl_plugin``, which imports verl's trainer and engine modules,
  and verl's FSDP engine module calls ``get_device_name()`` at import) would not find "cpu" registered.
  One consequence: ``verl.workers.engine.fsdp.transformer_impl.device_name`` (a module constant, used
  only for Ulysses sequence parallelism) still says "cuda" on CPU; keep ``ulysses_sequence_parallel_size=1``.
* ``torch.cpu`` lacks the memory/RNG helpers verl calls on ``get_torch_device()`` (``empty_cache``,
  ``max_memory_allocated``, ``mem_get_info``, ``get_rng_state``, ...): :data:`cpu_device_module`
  is ``torch.cpu`` plus those helpers (memory figures are 0: there is no device memory).
* ``verl.workers.engine.EngineRegistry`` only registers ``FSDPEngineWithLMHead`` for devices
  ``cuda``/``npu``; :func:`register_cpu_engine` registers the same class for device ``"cpu"``.
* ``TrainingWorker`` expects a torch.distributed process group (it calls
  ``initialize_global_process_group_ray``, whose default backend string names the device twice on
  CPU); :func:`init_cpu_process_group` initialises a single-process gloo group first, and the
  ``Worker`` base class reads ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``, which it sets.

What does not run on CPU (verl 0.9.1): the full trainer (``main_ppo``: its resource pool demands
GPUs, and rollout needs a vLLM/SGLang/TRT-LLM server), so :func:`build_cpu_actor` builds the actor
role only (no rollout, no reference model) and tests feed it batches made by :func:`make_actor_batch`.
"""

from __future__ import annotations

import os
import socket
import types
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry, get_platform, set_platform

__all__ = [
    "PlatformCPU",
    "cpu_device_module",
    "use_cpu_platform",
    "register_cpu_engine",
    "init_cpu_process_group",
    "compose_ppo_config",
    "CPUActor",
    "build_cpu_actor",
    "make_actor_batch",
]


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
    """verl platform for CPU-only processes: device ``"cpu"``, backend ``"gloo"`` (tests/local runs only)."""

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
        # Never auto-detected: a GPU host must keep verl's own platform. Select it explicitly.
        return False

    def current_device(self) -> str:  # type: ignore[override]
        # verl passes this to ``tensor.to(...)``/``module.to(...)``: an int would mean "accelerator #0".
        return "cpu"

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
        # verl reads/writes this variable around Ray workers; a name no CUDA library looks at.
        return "SSPO_CPU_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def use_cpu_platform() -> PlatformCPU:
    """Make :class:`PlatformCPU` verl's platform in this process (idempotent) and register the CPU engine.

    Call it before building any verl worker; verl resolves ``get_platform()`` once per process.
    """
    current = _current_platform_or_none()
    if not isinstance(current, PlatformCPU):
        set_platform(PlatformCPU())
    register_cpu_engine()
    platform = get_platform()
    assert isinstance(platform, PlatformCPU)
    return platform


def _current_platform_or_none() -> PlatformBase | None:
    from verl.plugin.platform import platform_manager

    # Read the cached singleton without triggering auto-detection (which would probe for GPUs).
    return platform_manager._current_platform


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_cpu_process_group() -> None:
    """Initialise a single-process gloo process group and the env vars verl's ``Worker`` reads (idempotent)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(_free_port())
        os.environ["RANK"] = "0"
        os.environ["WORLD_SIZE"] = "1"
        os.environ["LOCAL_RANK"] = "0"
        os.environ["LOCAL_WORLD_SIZE"] = "1"
        dist.init_process_group(backend="gloo", rank=0, world_size=1)
    else:
        os.environ.setdefault("RANK", str(dist.get_rank()))
        os.environ.setdefault("WORLD_SIZE", str(dist.get_world_size()))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))


# ----------------------------------------------------------------------------------------------
# verl's real ppo_trainer config, and the actor worker built from it
# ----------------------------------------------------------------------------------------------

#: Overrides that make verl's default ``ppo_trainer`` actor runnable on CPU. Everything else keeps
#: verl's defaults (loss_agg_mode, clip ratios, optimizer, ...).
CPU_ACTOR_OVERRIDES: tuple[str, ...] = (
    "trainer.device=cpu",
    "trainer.n_gpus_per_node=1",
    "actor_rollout_ref.actor.strategy=fsdp2",
    # eager attention: flash-attn is GPU-only
    "+actor_rollout_ref.model.override_config.attn_implementation=eager",
    # fp32 compute: bf16 autocast on CPU is slow and makes tiny-model tests noisy
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.reduce_dtype=fp32",
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.buffer_dtype=fp32",
    "actor_rollout_ref.actor.use_torch_compile=false",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
    "actor_rollout_ref.rollout.n=1",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.actor.optim.lr=1e-3",
)


def verl_config_dir() -> str:
    """Folder of verl's Hydra configs (``ppo_trainer.yaml`` etc.) in the installed verl."""
    import verl

    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def compose_ppo_config(overrides: Sequence[str] = ()) -> Any:
    """verl's real ``ppo_trainer`` config composed with Hydra's compose API plus ``overrides``.

    Overrides use Hydra's command-line syntax (``key=value``, ``+key=value``), exactly as a user
    would pass them to ``python -m verl.trainer.main_ppo``.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


@dataclass
class CPUActor:
    """verl's actor worker built on CPU, with the handles tests need.

    ``worker`` is verl's ``ActorRolloutRefWorker`` (role ``"actor"``): the object the trainer drives
    through ``actor_rollout_wg`` (``set_loss_fn``, ``update_actor``, ``compute_log_prob``).
    ``training_worker`` is its inner ``TrainingWorker`` (``train_batch``, ``train_mini_batch``,
    ``infer_batch``); ``engine`` the FSDP2 engine; ``config`` the composed Hydra config;
    ``actor_config`` the ``ActorConfig`` a loss wrapper receives.
    """

    worker: Any
    config: Any
    actor_config: Any

    @property
    def training_worker(self) -> Any:
        return self.worker.actor

    @property
    def engine(self) -> Any:
        return self.worker.actor.engine

    @property
    def module(self) -> torch.nn.Module:
        return self.worker.actor.engine.module

    @property
    def tokenizer(self) -> Any:
        return self.actor_config.model_config.tokenizer

    def set_loss_fn(self, loss_fn: Callable[..., Any]) -> None:
        """Install a loss wrapper exactly as the trainer does (``actor_rollout_wg.set_loss_fn``)."""
        self.worker.set_loss_fn(loss_fn)

    def update_actor(self, batch: Any, *, mini_batch_size: int | None = None, epochs: int = 1) -> dict:
        """One ``update_actor`` call (mini-batches x epochs of optimizer steps); returns the worker's metrics.

        Sets the same per-call fields as ``PPOTrainer._update_actor`` (``trainer/ppo/v1/trainer_base.py``):
        the current policy's entropy is computed iff ``actor.calculate_entropy`` or ``entropy_coeff != 0``.
        """
        from verl.utils import tensordict_utils as tu

        size = mini_batch_size or batch.batch_size[0]
        tu.assign_non_tensor(
            batch,
            calculate_entropy=bool(
                self.actor_config.calculate_entropy or self.actor_config.entropy_coeff != 0
            ),
            global_batch_size=size,
            mini_batch_size=size,
            epochs=epochs,
            seed=0,
            dataloader_kwargs={"shuffle": False},
        )
        output = self.worker.update_actor(batch)
        return tu.get(output, "metrics")

    def compute_log_prob(self, batch: Any, *, calculate_entropy: bool = True) -> Any:
        """``compute_log_prob`` on the worker: nested ``log_probs`` (and ``entropy``) over prompt+response."""
        from verl.utils import tensordict_utils as tu

        tu.assign_non_tensor(batch, calculate_entropy=calculate_entropy, compute_loss=False)
        return self.worker.compute_log_prob(batch)

    def compute_old_log_prob(self, batch: Any) -> Any:
        """Write ``old_log_probs`` and old-policy ``entropy`` into ``batch``, as verl's trainer does.

        Mirrors ``PPOTrainer._compute_old_log_prob`` (``trainer/ppo/v1/trainer_base.py``): it always asks
        for ``calculate_entropy=True`` and stores both, response part only, as nested tensors.
        """
        from verl.workers.utils.padding import response_from_nested

        output = self.compute_log_prob(batch, calculate_entropy=True)
        batch["old_log_probs"] = response_from_nested(output["log_probs"], batch["response_mask"])
        batch["entropy"] = response_from_nested(output["entropy"], batch["response_mask"])
        # Drop every per-call field the inference pass left on the batch -- including the engine
        # defaults ``infer_batch`` injects (inference micro-batch size etc.) -- so a following
        # ``update_actor`` on the same batch gets the training ones, as with verl's TransferQueue.
        for key in ("calculate_entropy", "compute_loss", *_ENGINE_CALL_KEYS):
            if key in batch.keys():
                batch.pop(key)
        return batch


# Keys ``TrainingWorker.infer_batch``/``train_batch`` inject into a batch when absent.
_ENGINE_CALL_KEYS = (
    "use_remove_padding",
    "use_dynamic_bsz",
    "max_token_len_per_gpu",
    "micro_batch_size_per_gpu",
    "use_fused_kernels",
)


def build_cpu_actor(
    model_path: str | os.PathLike,
    *,
    overrides: Sequence[str] = (),
    use_remove_padding: bool = True,
    loss_fn_factory: Callable[[Any], Callable[..., Any]] | None = None,
) -> CPUActor:
    """Build verl's real actor worker (``ActorRolloutRefWorker`` role ``"actor"``) on CPU.

    FOR TESTS AND LOCAL RUNS ONLY. The path is verl's own: the ``ppo_trainer`` config composed by
    Hydra (:data:`CPU_ACTOR_OVERRIDES`, then ``overrides``), ``ActorRolloutRefWorker.init_model``
    -> ``TrainingWorker`` -> ``FSDPEngineWithLMHead`` with FSDP2, eager attention, gloo.

    Args:
        model_path: a local HF model folder (e.g. ``sspo.tiny.save_tiny_model``), verl's ``model.path``.
        overrides: Hydra overrides of verl's ``ppo_trainer`` config, e.g.
            ``["actor_rollout_ref.actor.policy_loss.loss_mode=gspo"]``.
        use_remove_padding: verl's ``actor_rollout_ref.model.use_remove_padding``. With eager attention
            on CPU a packed micro-batch costs time quadratic in its TOTAL length: for more than a few
            short sequences per micro-batch, ``False`` (padded) is much faster.
        loss_fn_factory: called with the built ``ActorConfig``; its result is installed with
            ``set_loss_fn`` (as a trainer does). None keeps verl's default ``partial(ppo_loss, config=...)``.

    Returns:
        A :class:`CPUActor`.
    """
    use_cpu_platform()
    init_cpu_process_group()
    from verl.workers.engine_workers import ActorRolloutRefWorker

    cfg = compose_ppo_config(
        [
            *CPU_ACTOR_OVERRIDES,
            f"actor_rollout_ref.model.path={os.fspath(model_path)}",
            f"actor_rollout_ref.model.use_remove_padding={use_remove_padding}",
            *overrides,
        ]
    )
    worker = ActorRolloutRefWorker(config=cfg.actor_rollout_ref, role="actor")
    worker.init_model()
    actor_config = worker.actor.loss_fn.keywords["config"]
    actor = CPUActor(worker=worker, config=cfg, actor_config=actor_config)
    if loss_fn_factory is not None:
        actor.set_loss_fn(loss_fn_factory(actor_config))
    return actor


def make_actor_batch(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    advantages: Sequence[float] | Sequence[Sequence[float]],
    old_log_probs: Sequence[Sequence[float]] | None = None,
    entropy: Sequence[Sequence[float]] | None = None,
    response_masks: Sequence[Sequence[int]] | None = None,
    temperature: float = 1.0,
) -> Any:
    """A batch in the layout verl's v1 trainer hands to ``update_actor``/``compute_log_prob``.

    verl builds it per sample in ``AgentLoopWorkerTQ`` (no padding: jagged nested tensors for
    ``prompts``, ``responses``, ``response_mask``, ``loss_mask``, ``input_ids``, ``position_ids``)
    and adds ``old_log_probs``/``entropy`` (``_compute_old_log_prob``) and ``advantages``
    (``_compute_advantage``) as nested tensors. verl has no public helper for this outside its
    TransferQueue path, hence this one.

    Args:
        prompts, responses: token ids per sample (ragged).
        advantages: one scalar per sample (broadcast over its response, as GRPO does) or per token.
        old_log_probs, entropy: per-token values per sample; omit them and call
            :meth:`CPUActor.compute_old_log_prob` to have the actor compute them, as the trainer does.
        response_masks: per-token 0/1 (default all ones).
        temperature: sampling temperature (verl divides logits by it).
    """
    from verl.utils import tensordict_utils as tu

    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses differ in length: {len(prompts)} vs {len(responses)}")
    if any(len(p) == 0 for p in prompts) or any(len(r) == 0 for r in responses):
        raise ValueError("every prompt and every response needs at least one token")

    def nested(rows: Sequence[Any], dtype: torch.dtype) -> torch.Tensor:
        return torch.nested.as_nested_tensor(
            [torch.as_tensor(r, dtype=dtype) for r in rows], layout=torch.jagged
        )

    lengths = [len(r) for r in responses]
    masks = response_masks if response_masks is not None else [[1] * n for n in lengths]
    per_token_adv = [
        [float(a)] * n if torch.as_tensor(a).dim() == 0 else torch.as_tensor(a, dtype=torch.float32).tolist()
        for a, n in zip(advantages, lengths, strict=True)
    ]
    input_ids = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    fields: dict[str, Any] = {
        "prompts": nested(prompts, torch.long),
        "responses": nested(responses, torch.long),
        "response_mask": nested(masks, torch.long),
        "loss_mask": nested(masks, torch.long),
        "input_ids": nested(input_ids, torch.long),
        "position_ids": nested([list(range(len(ids))) for ids in input_ids], torch.long),
        "advantages": nested(per_token_adv, torch.float32),
    }
    if old_log_probs is not None:
        fields["old_log_probs"] = nested(old_log_probs, torch.float32)
    if entropy is not None:
        fields["entropy"] = nested(entropy, torch.float32)
    return tu.get_tensordict(fields, non_tensor_dict={"temperature": temperature})
