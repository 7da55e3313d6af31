"""verl glue for SSPO: the ``sspo`` loss's inputs, the trainers that install them, config checks.

``import sspo.verl_plugin`` (the project's ``verl.plugins`` entry point, so every verl process imports
it; or ``VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin`` for code shipped by Ray ``working_dir``) registers:

* the ``sspo`` policy loss behind :func:`fed_policy_loss`, which fills its keyword-only inputs
  ``segment_ids`` and ``entropy`` from :func:`policy_loss_inputs`;
* one trainer per verl trainer mode, ``sspo_sync`` (also ``sspo``), ``sspo_colocate_async``,
  ``sspo_separate_async``: verl's trainer for that mode plus :class:`SSPOTrainerMixin`, which installs
  :func:`sspo_ppo_loss` (verl's ``ppo_loss`` plus those inputs, computed from the micro-batch's
  ``responses`` and old-policy ``entropy``) on every actor worker with ``set_loss_fn`` and bounds the
  weight syncs.

Use it::

    python -m verl.trainer.main_ppo ... trainer.v1.trainer_mode=sspo_colocate_async \\
        actor_rollout_ref.actor.policy_loss._target_=sspo.loss.SSPOPolicyLossConfig \\
        actor_rollout_ref.actor.policy_loss.loss_mode=sspo \\
        +actor_rollout_ref.actor.policy_loss.granularity=subsentence

verl's hooks used here, their caveats and why: ``docs/verl-integration.md``.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, register_policy_loss

# This module is imported from INSIDE ``import verl`` (entry point / VERL_USE_EXTERNAL_MODULES). If
# the process imported ``sspo`` (hence ``sspo.loss``, which imports verl) BEFORE verl -- e.g. a
# reward function ``pkg://sspo.reward`` in a Ray worker -- ``sspo.loss`` is still half-initialised
# here and registers the raw ``sspo`` loss only after we return. So nothing below may need
# ``sspo.loss``'s contents at import time: the loss adapter is (re)installed idempotently by
# :func:`ensure_fed_sspo_loss`, here and at every call of :func:`sspo_ppo_loss`.
import sspo.loss as sspo_loss

__all__ = [
    "LOSS_MODE",
    "VERL_TRAINER_MODES",
    "LEGACY_TRAINER_MODE",
    "SSPO_TRAINERS",
    "verl_trainer_mode",
    "policy_loss_inputs",
    "fed_policy_loss",
    "ensure_fed_sspo_loss",
    "sspo_loss_inputs",
    "sspo_ppo_loss",
    "make_actor_loss_fn",
    "build_actor_config",
    "SSPOTrainerMixin",
    "SSPOSyncTrainer",
    "SSPOColocateAsyncTrainer",
    "SSPOSeparateAsyncTrainer",
    "SSPOTrainer",
    "assert_loss_registered",
    "assert_trainer_registered",
    "registration_status",
    "validate_config",
    "validate_trainer_mode",
    "assert_checkpoint_engine_available",
]

LOSS_MODE = "sspo"
_POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"

# ----------------------------------------------------------------------------------------------
# Per-call inputs for registered losses (see the module docstring)
# ----------------------------------------------------------------------------------------------

_LOSS_INPUTS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "sspo_policy_loss_inputs", default=None
)


@contextmanager
def policy_loss_inputs(**inputs: Any) -> Iterator[None]:
    """Within this block, a loss registered through :func:`fed_policy_loss` receives ``inputs``
    (keyword-only arguments) when its caller -- verl's ``ppo_loss`` -- does not pass them."""
    token = _LOSS_INPUTS.set(inputs)
    try:
        yield
    finally:
        _LOSS_INPUTS.reset(token)


def fed_policy_loss(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adapter for a registered policy loss with extra keyword-only inputs: missing ones come from
    :func:`policy_loss_inputs`; explicit ones win. Same signature and result as ``fn`` otherwise."""

    @functools.wraps(fn)
    def adapter(*args: Any, **kwargs: Any) -> Any:
        for name, value in (_LOSS_INPUTS.get() or {}).items():
            kwargs.setdefault(name, value)
        return fn(*args, **kwargs)

    adapter.is_fed_policy_loss = True  # type: ignore[attr-defined]
    return adapter


def ensure_fed_sspo_loss() -> None:
    """Make verl's ``sspo`` registry entry the :func:`fed_policy_loss` adapter of the registered loss.

    Idempotent (an adapter is never wrapped twice); a no-op while ``sspo`` is not registered yet.
    Called at import and by :func:`sspo_ppo_loss` before each call, so the order in which
    ``sspo.loss`` and this module were imported does not matter.
    """
    current = POLICY_LOSS_REGISTRY.get(LOSS_MODE)
    if current is None or getattr(current, "is_fed_policy_loss", False):
        return
    register_policy_loss(LOSS_MODE)(fed_policy_loss(current))


ensure_fed_sspo_loss()

# ----------------------------------------------------------------------------------------------
# The actor loss wrapper (drop-in for verl's workers/utils/losses.py::ppo_loss)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _segmenter(tokenizer: Any, delimiters: tuple[str, ...] | None, max_subsentence_len: int | None) -> Any:
    """One :class:`SubsentenceSegmenter` per (worker tokenizer, delimiters, cap): the vocabulary table
    is decoded once per worker process, not per micro-batch."""
    from sspo.segmentation import SubsentenceSegmenter

    return SubsentenceSegmenter.from_tokenizer(
        tokenizer, delimiters=delimiters, max_subsentence_len=max_subsentence_len
    )


def _sspo_config(config: Any) -> Any:
    policy_loss = config.policy_loss
    if isinstance(policy_loss, sspo_loss.SSPOPolicyLossConfig):
        return policy_loss
    return sspo_loss.SSPOPolicyLossConfig()  # plain PolicyLossConfig(loss_mode="sspo"): the loss's defaults


def sspo_loss_inputs(config: Any, data: Any) -> dict[str, Any]:
    """``segment_ids`` and old-policy ``entropy`` (adaptive clip) for one micro-batch, padded exactly as ``ppo_loss`` pads ``response_mask`` (same ``select().to_padded_tensor()``).

    Args:
        config: verl ``ActorConfig`` (``config.model_config.tokenizer`` is the worker's tokenizer).
        data: the micro-batch TensorDict the engine hands to the loss (nested or padded fields).

    Returns:
        ``{"segment_ids": LongTensor[B, T], "entropy": FloatTensor[B, T]}`` (only the ones needed).
    """
    cfg = _sspo_config(config)
    need_entropy = cfg.adaptive_clip
    # Segment ids at EVERY granularity: at token/sequence granularity the loss ignores them but reports
    # ``actor/sspo/clipfrac_at_subsentence``, so granularity ablations log all three clip fractions.
    fields = ["response_mask", "responses"]
    if need_entropy:
        if "entropy" not in data.keys():
            raise ValueError(
                f"{_POLICY_LOSS}.adaptive_clip=true needs the old policy's per-token entropy in the batch "
                "(key 'entropy', written by verl's trainer in _compute_old_log_prob); it is missing -- "
                "algorithm.rollout_correction.bypass_mode=true skips it: set bypass_mode=false or adaptive_clip=false"
            )
        fields.append("entropy")
    padded = data.select(*fields).to_padded_tensor()
    response_mask = padded["response_mask"].bool()
    delimiters = tuple(cfg.delimiters) if cfg.delimiters is not None else None
    segmenter = _segmenter(config.model_config.tokenizer, delimiters, cfg.max_subsentence_len)
    inputs: dict[str, Any] = {"segment_ids": segmenter(padded["responses"], response_mask)}
    if need_entropy:
        inputs["entropy"] = padded["entropy"].detach()
    return inputs


def sspo_ppo_loss(config: Any, model_output: Any, data: Any, dp_group: Any = None) -> tuple[Any, dict]:
    """Drop-in for verl's ``ppo_loss`` (same signature) that also feeds SSPO's inputs.

    For ``policy_loss.loss_mode != "sspo"`` it returns ``ppo_loss(...)`` itself. For ``sspo`` it
    computes :func:`sspo_loss_inputs` and calls ``ppo_loss`` unchanged within
    :func:`policy_loss_inputs`, so the registered ``sspo`` loss receives ``segment_ids`` and the
    old-policy ``entropy`` besides verl's seven arguments (see the module docstring).
    """
    from verl.workers.utils.losses import ppo_loss

    if config.policy_loss.get("loss_mode", "vanilla") != LOSS_MODE:
        return ppo_loss(config, model_output, data, dp_group)
    ensure_fed_sspo_loss()  # a dict lookup once the adapter is in place
    with policy_loss_inputs(**sspo_loss_inputs(config, data)):
        return ppo_loss(config, model_output, data, dp_group)


def make_actor_loss_fn(actor_config: Any) -> Callable[..., Any]:
    """``partial(sspo_ppo_loss, config=actor_config)``: what ``set_loss_fn`` installs (verl installs
    ``partial(ppo_loss, config=actor_config)`` by default)."""
    return functools.partial(sspo_ppo_loss, config=actor_config)


def build_actor_config(cfg: Any) -> Any:
    """The ``ActorConfig`` the actor worker builds (same two calls as ``ActorRolloutRefWorker.init_model``)."""
    from verl.utils.config import omega_conf_to_dataclass

    actor_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    actor_config.model_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
    return actor_config


# ----------------------------------------------------------------------------------------------
# The trainers: each of verl's trainer modes + one mixin that installs the wrapper on the actor workers
# ----------------------------------------------------------------------------------------------

from verl.trainer.ppo.v1 import (  # noqa: E402
    PPOTrainerColocateAsync,
    PPOTrainerSeparateAsync,
    PPOTrainerSync,
)
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer  # noqa: E402

#: verl 0.9.1's trainer modes (``trainer.v1.trainer_mode``); SSPO's trainer for mode ``m`` is ``sspo_<m>``
VERL_TRAINER_MODES = ("sync", "colocate_async", "separate_async")
TRAINER_PREFIX = "sspo_"
#: the first name of SSPO's trainer, kept for old configs: the same trainer as ``sspo_sync``
LEGACY_TRAINER_MODE = "sspo"


def verl_trainer_mode(trainer_mode: str) -> str | None:
    """verl's mode behind a ``trainer.v1.trainer_mode`` value: ``sspo_<m>`` and verl's ``<m>`` -> ``<m>``,
    ``sspo`` -> ``sync``; ``None`` for any other name."""
    if trainer_mode == LEGACY_TRAINER_MODE:
        return "sync"
    mode = trainer_mode.removeprefix(TRAINER_PREFIX)
    return mode if mode in VERL_TRAINER_MODES else None


class SSPOTrainerMixin:
    """SSPO's hooks on one of verl's trainers (``class X(SSPOTrainerMixin, <verl trainer>)``).

    * ``__init__``: :func:`validate_config` before any of verl's code runs;
    * ``trainer_mode`` reads as verl's mode name (``verl_mode``), so verl's ``== "sync"`` branches and its
      ``trainer.v1.get(self.trainer_mode)`` settings are those of the mode this trainer extends;
    * ``_init_resource_pool_mgr``: the CPU workers of :mod:`sspo.cpu.workers` when ``trainer.device=cpu``;
    * ``on_init_end``: installs :func:`sspo_ppo_loss` on every actor worker and bounds every weight sync
      (:class:`sspo.weight_sync.BoundedWeightSync`), then runs verl's hook (the first weight sync).
    """

    verl_mode: str  # set by each trainer class below

    def __init__(self, config: Any) -> None:
        validate_config(config)  # before any worker, rollout or GPU time
        if self.verl_mode == "separate_async":  # its weight sync to the standalone rollout
            assert_checkpoint_engine_available(config)
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

        from sspo.weight_sync import DEFAULT_TIMEOUT_S, BoundedWeightSync

        self.install_actor_loss()
        timeout_s = self.config.get("sspo", {}).get("weight_sync_timeout_s", DEFAULT_TIMEOUT_S)
        # sync/colocate_async: checkpoint_manager; separate_async adds standalone_checkpoint_manager
        for name, manager in list(vars(self).items()):
            if isinstance(manager, CheckpointEngineManager):
                setattr(self, name, BoundedWeightSync(manager, timeout_s))
        super().on_init_end()  # type: ignore[misc]

    def install_actor_loss(self) -> None:
        """``actor_rollout_wg.set_loss_fn(partial(sspo_ppo_loss, config=<ActorConfig>))`` on every actor worker.

        The ``ActorConfig`` is built here from ``self.config`` exactly as the worker builds its own (verl
        ships the critic's loss config the same way). With distillation enabled verl installs
        ``distillation_ppo_loss`` (which calls ``ppo_loss`` itself) and :func:`validate_config` refuses
        ``sspo``, so verl's loss is left in place.
        """
        from verl.trainer.distillation import is_distillation_enabled

        if not is_distillation_enabled(self.config.get("distillation")):
            self.actor_rollout_wg.set_loss_fn(make_actor_loss_fn(build_actor_config(self.config)))


def _refuse_unknown_cpu_workers(role_worker_mapping: dict[Any, Any], verl_mode: str) -> None:
    """CPU mode swaps verl's ``ActorRolloutRefWorker``/``TrainingWorker`` for gloo variants; any other class
    (e.g. separate_async's ``DetachActorWorker``) would lose its methods in that swap: refuse it."""
    from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

    for role, remote_cls in role_worker_mapping.items():
        cls = getattr(remote_cls, "__ray_actor_class__", remote_cls)
        if cls not in (ActorRolloutRefWorker, TrainingWorker):
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


def _register_trainers() -> None:
    for name, cls in SSPO_TRAINERS.items():
        existing = TRAINER_REGISTRY.get(name)
        if existing is not None and existing.__qualname__ == cls.__qualname__:
            continue  # this module imported again (e.g. reload): keep the first registration
        register_trainer(name)(cls)


_register_trainers()
_SSPO_NAMES = ", ".join(f"{TRAINER_PREFIX}{mode}" for mode in VERL_TRAINER_MODES)

# ----------------------------------------------------------------------------------------------
# Registration checks (verl swallows plugin import errors)
# ----------------------------------------------------------------------------------------------

_HOW_TO_REGISTER = (
    "verl imports plugins in every process through the `verl.plugins` entry point of an INSTALLED package "
    "(pip install -e <this repo>; not disabled by VERL_USE_EXTERNAL_PLUGINS=none), or through "
    "VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin in the environment of every process (Ray: "
    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin) for code shipped "
    "by Ray working_dir. verl hides plugin import errors: run `python -c 'import sspo.verl_plugin'` to see one."
)


def registration_status() -> dict[str, Any]:
    """Which SSPO pieces are registered in THIS process (for checks inside Ray workers)."""
    import sys

    trainer_base = sys.modules.get("verl.trainer.ppo.v1.trainer_base")
    trainer_registry = getattr(trainer_base, "TRAINER_REGISTRY", {})
    return {
        "pid": os.getpid(),
        "loss": LOSS_MODE in POLICY_LOSS_REGISTRY,
        "trainer": all(name in trainer_registry for name in SSPO_TRAINERS),
        "plugin_imported": __name__ in sys.modules,
    }


def assert_loss_registered(loss_mode: str) -> None:
    """Raise RuntimeError, saying how to fix it, unless ``loss_mode`` is in verl's policy-loss registry."""
    if loss_mode in POLICY_LOSS_REGISTRY:
        return
    hint = (
        _HOW_TO_REGISTER
        if loss_mode == LOSS_MODE
        else "check the spelling of actor_rollout_ref.actor.policy_loss.loss_mode"
    )
    raise RuntimeError(
        f"policy loss {loss_mode!r} ({_POLICY_LOSS}.loss_mode) is not registered in verl in process "
        f"{os.getpid()}; registered: {sorted(POLICY_LOSS_REGISTRY)}. {hint}"
    )


def assert_trainer_registered(trainer_mode: str) -> None:
    """Raise RuntimeError, saying how to fix it, unless ``trainer_mode`` is a registered verl v1 trainer."""
    if trainer_mode in TRAINER_REGISTRY:
        return
    if trainer_mode.startswith(TRAINER_PREFIX) and trainer_mode not in SSPO_TRAINERS:
        raise ValueError(
            f"trainer.v1.trainer_mode={trainer_mode!r} is not one of SSPO's trainers: {_SSPO_NAMES}"
        )
    hint = _HOW_TO_REGISTER if trainer_mode in SSPO_TRAINERS else f"SSPO's trainers: {_SSPO_NAMES}"
    raise RuntimeError(
        f"trainer {trainer_mode!r} (trainer.v1.trainer_mode) is not registered in verl in process "
        f"{os.getpid()}; registered: {sorted(TRAINER_REGISTRY)}. {hint}"
    )


# ----------------------------------------------------------------------------------------------
# Config-time checks
# ----------------------------------------------------------------------------------------------


def _select(cfg: Any, key: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _is_sspo_config_class(target: Any) -> bool:
    """``_target_`` names :class:`sspo.loss.SSPOPolicyLossConfig` or a subclass of it."""
    from hydra.utils import get_class

    try:
        cls = get_class(str(target))
    except Exception:
        return False
    return isinstance(cls, type) and issubclass(cls, sspo_loss.SSPOPolicyLossConfig)


def validate_config(cfg: Any) -> None:
    """Config-time checks of a composed ``ppo_trainer`` config (DictConfig); ValueError names the key.

    Called by the recipe's pre-flight and by SSPO's trainers at init, before any worker starts.
    Checks: the loss mode and trainer are registered (RuntimeError with the fix if not); clip ratios in
    range; what verl's mode needs (:func:`validate_trainer_mode`); for ``loss_mode=sspo``:
    ``trainer.use_v1`` and one of SSPO's trainers ``sspo_<mode>`` (verl's own trainers cannot feed
    segment ids and entropy), ``policy_loss._target_`` is
    :class:`sspo.loss.SSPOPolicyLossConfig` and instantiates (its ``__post_init__`` validates
    granularity, delimiters, ...), no bypass mode with ``adaptive_clip``, no distillation.
    """
    from omegaconf import OmegaConf

    actor = "actor_rollout_ref.actor"
    loss_mode = _select(cfg, f"{_POLICY_LOSS}.loss_mode", "vanilla")
    assert_loss_registered(loss_mode)

    clip_ratio = _select(cfg, f"{actor}.clip_ratio", 0.2)
    low = _select(cfg, f"{actor}.clip_ratio_low", clip_ratio)
    high = _select(cfg, f"{actor}.clip_ratio_high", clip_ratio)
    if not _is_number(low) or not 0 <= low < 1:
        raise ValueError(f"{actor}.clip_ratio_low={low!r} is out of range: need 0 <= clip_ratio_low < 1")
    if not _is_number(high) or high < 0:
        raise ValueError(f"{actor}.clip_ratio_high={high!r} is out of range: need a number >= 0")

    poll_s = _select(cfg, "sspo.replay_poll_interval_s")
    if poll_s is not None and (not _is_number(poll_s) or not poll_s > 0):
        raise ValueError(f"sspo.replay_poll_interval_s={poll_s!r}: need seconds > 0, or null for verl's 2 s")

    trainer_mode = str(_select(cfg, "trainer.v1.trainer_mode", "sync"))
    assert_trainer_registered(trainer_mode)
    verl_mode = verl_trainer_mode(trainer_mode)
    if loss_mode == LOSS_MODE:
        if not _select(cfg, "trainer.use_v1", False):
            raise ValueError("trainer.use_v1=false: SSPO needs verl's v1 trainer (trainer.use_v1=true)")
        if trainer_mode not in SSPO_TRAINERS:
            fix = f"{TRAINER_PREFIX}{verl_mode}" if verl_mode else f"one of {_SSPO_NAMES}"
            raise ValueError(
                f"trainer.v1.trainer_mode={trainer_mode!r} cannot feed {_POLICY_LOSS}.loss_mode=sspo: verl's own "
                f"trainers pass the loss only its seven standard arguments, not the subsentence ids and old-policy "
                f"entropy. Set trainer.v1.trainer_mode={fix} (verl's {verl_mode or 'chosen'} mode with SSPO's hooks)"
            )
    if verl_mode is not None:
        validate_trainer_mode(cfg, trainer_mode, verl_mode)
    if loss_mode != LOSS_MODE:
        return

    policy_loss = OmegaConf.select(cfg, _POLICY_LOSS)
    target = policy_loss.get("_target_", None)
    if not _is_sspo_config_class(target):
        raise ValueError(
            f"{_POLICY_LOSS}._target_={target!r} with loss_mode=sspo: set "
            f"{_POLICY_LOSS}._target_=sspo.loss.SSPOPolicyLossConfig so that the SSPO keys "
            "(granularity, adaptive_clip, delimiters, ...) exist and are validated"
        )
    from verl.utils.config import omega_conf_to_dataclass

    try:
        sspo_cfg = omega_conf_to_dataclass(policy_loss)
    except ValueError:
        raise  # SSPOPolicyLossConfig.__post_init__: the message names the key already
    except Exception as exc:  # e.g. an unknown key: TypeError from the dataclass constructor
        raise ValueError(f"{_POLICY_LOSS} does not build an SSPOPolicyLossConfig: {exc}") from exc

    if sspo_cfg.use_dual_clip:
        clip_c = _select(cfg, f"{actor}.clip_ratio_c", 3.0)
        if not _is_number(clip_c) or clip_c <= 1:
            raise ValueError(
                f"{actor}.clip_ratio_c={clip_c!r} must be > 1 for dual-clip PPO ({_POLICY_LOSS}.dual_clip)"
            )
    if sspo_cfg.adaptive_clip and _select(cfg, "algorithm.rollout_correction.bypass_mode", False):
        raise ValueError(
            "algorithm.rollout_correction.bypass_mode=true skips verl's old-log-prob pass, so there is no old-policy "
            f"entropy for {_POLICY_LOSS}.adaptive_clip=true: set bypass_mode=false or adaptive_clip=false"
        )
    if _select(cfg, "distillation.enabled", False):
        raise ValueError(
            "distillation.enabled=true with loss_mode=sspo: verl's distillation loss calls ppo_loss directly and "
            "cannot feed SSPO's inputs; disable distillation or use another loss mode"
        )


def validate_trainer_mode(cfg: Any, trainer_mode: str, verl_mode: str) -> None:
    """What verl's trainer for ``verl_mode`` asserts only inside the TaskRunner (or never), checked now.

    ``trainer_mode`` is the configured ``trainer.v1.trainer_mode``, ``verl_mode`` verl's mode behind it
    (:func:`verl_trainer_mode`). ValueError names the key and the fix.
    """
    if verl_mode == "separate_async":
        _validate_separate_async(cfg, trainer_mode)
    sync_step = _select(cfg, f"trainer.v1.{verl_mode}.parameter_sync_step", 1)
    if trainer_mode != verl_mode and _select(cfg, "skip.rollout_tq.enable", False) and sync_step != 1:
        raise ValueError(
            f"skip.rollout_tq.enable=true with trainer.v1.trainer_mode={trainer_mode}: verl's RolloutTqSkip reads "
            f"trainer.v1.<trainer_mode>.parameter_sync_step (absent: 1), not trainer.v1.{verl_mode}.parameter_sync_step"
            f"={sync_step}; set skip.rollout_tq.enable=false or trainer.v1.{verl_mode}.parameter_sync_step=1"
        )


def _validate_separate_async(cfg: Any, trainer_mode: str) -> None:
    """separate_async: standalone rollout resources, a weight-sync engine that reaches them, whole mini-batches."""
    mode = f"trainer.v1.trainer_mode={trainer_mode}"
    rollout = "actor_rollout_ref.rollout"
    if _select(cfg, "trainer.device") == "cpu":
        raise ValueError(
            f"{mode} with trainer.device=cpu: not supported on CPU. verl's separate_async trainer maps the actor "
            "to its DetachActorWorker, which has no CPU variant in sspo.cpu.workers, and ships weights to the "
            f"standalone rollout with {rollout}.checkpoint_engine.backend other than naive, none of which runs in "
            "the CPU environment (nccl: cupy and CUDA buffers; hccl: Ascend NPUs; nixl, mooncake: not installed). "
            "On CPU use trainer.v1.trainer_mode=sspo_sync or sspo_colocate_async"
        )
    sync_step = _select(cfg, "trainer.v1.separate_async.parameter_sync_step", 1)
    batch = _select(cfg, "data.train_batch_size")
    mini = _select(cfg, "actor_rollout_ref.actor.ppo_mini_batch_size")
    if batch != sync_step * mini:
        fix = (
            f"set trainer.v1.separate_async.parameter_sync_step={batch // mini}"
            if mini and batch % mini == 0
            else "make data.train_batch_size a multiple of actor_rollout_ref.actor.ppo_mini_batch_size"
        )
        raise ValueError(
            f"{mode}: data.train_batch_size ({batch}) must equal trainer.v1.separate_async.parameter_sync_step "
            f"({sync_step}) x actor_rollout_ref.actor.ppo_mini_batch_size ({mini}) (verl syncs the rollout's "
            f"weights once per training batch). Fix: {fix}"
        )
    for key in ("nnodes", "n_gpus_per_node"):
        value = _select(cfg, f"{rollout}.{key}", 0)
        if not (isinstance(value, int) and value > 0):
            raise ValueError(
                f"{mode} runs the rollout on its own GPUs: set {rollout}.{key} (now {value!r}) > 0, e.g. "
                f"{rollout}.nnodes=1 {rollout}.n_gpus_per_node=8 beside trainer.nnodes/trainer.n_gpus_per_node"
            )
    backend = _select(cfg, f"{rollout}.checkpoint_engine.backend", "naive")
    if backend == "naive":
        raise ValueError(
            f"{mode}: {rollout}.checkpoint_engine.backend=naive only reaches rollout servers on the training "
            f"GPUs; the standalone rollout needs nccl (GPUs), hccl (Ascend), nixl or mooncake: set "
            f"{rollout}.checkpoint_engine.backend=nccl"
        )
    if _select(cfg, "reward.reward_model.enable", False) and not _select(
        cfg, "reward.reward_model.enable_resource_pool", False
    ):
        raise ValueError(
            f"{mode}: a colocated reward model cannot run beside a rollout that never pauses: set "
            "reward.reward_model.enable_resource_pool=true (with its own nnodes/n_gpus_per_node)"
        )


def assert_checkpoint_engine_available(cfg: Any) -> None:
    """``actor_rollout_ref.rollout.checkpoint_engine.backend`` is in verl's checkpoint-engine registry in THIS
    process (after its ``custom_backend_module``); verl looks it up only once the workers are up.

    Separate from :func:`validate_config` because it depends on the machine (nccl needs cupy): run it
    where the trainer runs, not on a laptop's dry run.
    """
    from verl.checkpoint_engine import CheckpointEngineRegistry
    from verl.utils.import_utils import import_external_libs

    key = "actor_rollout_ref.rollout.checkpoint_engine"
    backend = _select(cfg, f"{key}.backend", "naive")
    module = _select(cfg, f"{key}.custom_backend_module") or None
    try:
        import_external_libs(module)
    except ImportError as err:
        raise ValueError(f"{key}.custom_backend_module={module!r} does not import: {err}") from None
    try:
        CheckpointEngineRegistry.get(backend)
    except ValueError as err:
        raise ValueError(
            f"{key}.backend={backend!r} cannot run here: {err}. Install its transport (nccl: cupy; nixl; "
            f"mooncake) or register one with {key}.custom_backend_module"
        ) from None
