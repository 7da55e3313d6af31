"""verl glue for SSPO: the ``sspo`` loss's inputs, the trainer that installs them, config checks.

``import sspo.verl_plugin`` (the project's ``verl.plugins`` entry point, so every verl process imports
it; or ``VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin`` for code shipped by Ray ``working_dir``) registers:

* the ``sspo`` policy loss behind :func:`fed_policy_loss`, which fills its keyword-only inputs
  ``segment_ids`` and ``entropy`` from :func:`policy_loss_inputs`;
* the ``sspo`` trainer, :class:`SSPOTrainer`: verl's sync trainer that installs :func:`sspo_ppo_loss`
  (verl's ``ppo_loss`` plus those inputs, computed from the micro-batch's ``responses`` and old-policy
  ``entropy``) on every actor worker with ``set_loss_fn``, and bounds the weight sync.

Use it::

    python -m verl.trainer.main_ppo ... trainer.v1.trainer_mode=sspo \\
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
    "TRAINER_MODE",
    "policy_loss_inputs",
    "fed_policy_loss",
    "ensure_fed_sspo_loss",
    "sspo_loss_inputs",
    "sspo_ppo_loss",
    "make_actor_loss_fn",
    "build_actor_config",
    "SSPOTrainer",
    "assert_loss_registered",
    "assert_trainer_registered",
    "registration_status",
    "validate_config",
]

LOSS_MODE = "sspo"
TRAINER_MODE = "sspo"
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
# The trainer: verl's sync trainer + one hook that installs the wrapper on every actor worker
# ----------------------------------------------------------------------------------------------

from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer  # noqa: E402
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync  # noqa: E402


class SSPOTrainer(PPOTrainerSync):
    """verl's synchronous PPO trainer that installs :func:`sspo_ppo_loss` on the actor workers.

    Selected by ``trainer.v1.trainer_mode=sspo``. Runs every loss mode: vanilla/gspo/... go through
    ``ppo_loss`` unchanged, ``sspo`` gets its segment ids and old-policy entropy. GPU clusters only
    (verl's ``main_ppo`` does not run on CPU).
    """

    def __init__(self, config: Any) -> None:
        validate_config(config)  # before any worker, rollout or GPU time
        super().__init__(config)

    # verl branches on ``self.trainer_mode == "sync"`` (replay buffer, refill, TransferQueue
    # checkpoints); PPOTrainer.__init__ assigns config.trainer.v1.trainer_mode ("sspo") to it.
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, name: str) -> None:
        self.registered_trainer_mode = name

    def _init_resource_pool_mgr(self) -> None:
        """verl's role -> worker mapping; in CPU mode (``trainer.device=cpu``) the gloo workers of :mod:`sspo.cpu.workers`."""
        super()._init_resource_pool_mgr()
        if self.config.trainer.get("device") == "cpu":
            from sspo.cpu.workers import cpu_role_worker_mapping

            self.role_worker_mapping = cpu_role_worker_mapping(self.role_worker_mapping)

    def on_init_end(self) -> None:
        """verl's hook after ``init_model``: install the loss wrapper, bound the weight sync, then verl's
        sync step (the first weight sync)."""
        from sspo.weight_sync import DEFAULT_TIMEOUT_S, BoundedWeightSync

        self.install_actor_loss()
        timeout_s = self.config.get("sspo", {}).get("weight_sync_timeout_s", DEFAULT_TIMEOUT_S)
        self.checkpoint_manager = BoundedWeightSync(self.checkpoint_manager, timeout_s)
        super().on_init_end()

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


def _register_trainer() -> None:
    existing = TRAINER_REGISTRY.get(TRAINER_MODE)
    if existing is not None and existing.__qualname__ == SSPOTrainer.__qualname__:
        return  # this module imported again (e.g. reload): keep the first registration
    register_trainer(TRAINER_MODE)(SSPOTrainer)


_register_trainer()

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
        "trainer": TRAINER_MODE in trainer_registry,
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
    hint = _HOW_TO_REGISTER if trainer_mode == TRAINER_MODE else "check trainer.v1.trainer_mode"
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

    Called by the recipe's pre-flight and by :class:`SSPOTrainer` at init, before any worker starts.
    Checks: the loss mode is registered (RuntimeError with the fix if not); clip ratios in range;
    for ``loss_mode=sspo``: ``trainer.use_v1`` and ``trainer.v1.trainer_mode=sspo`` (verl's default
    trainer cannot feed segment ids and entropy), ``policy_loss._target_`` is
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

    if loss_mode != LOSS_MODE:
        return

    if not _select(cfg, "trainer.use_v1", False):
        raise ValueError("trainer.use_v1=false: SSPO needs verl's v1 trainer (trainer.use_v1=true)")
    trainer_mode = _select(cfg, "trainer.v1.trainer_mode", "sync")
    if trainer_mode != TRAINER_MODE:
        raise ValueError(
            f"trainer.v1.trainer_mode={trainer_mode!r} cannot feed {_POLICY_LOSS}.loss_mode=sspo: verl's "
            f"{trainer_mode!r} trainer passes the loss only its seven standard arguments, not the subsentence "
            f"ids and old-policy entropy. Set trainer.v1.trainer_mode={TRAINER_MODE} (sspo.verl_plugin.SSPOTrainer)"
        )
    assert_trainer_registered(TRAINER_MODE)

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
