"""Config-time checks of a composed ``ppo_trainer`` config: what SSPO's pieces need of verl's keys.

One source of truth per rule: the SSPO fields are validated by :class:`sspo.loss.SSPOSettings` (through
:class:`SSPOPolicyLossConfig`), PPO's clip range by :func:`sspo.loss.check_clip_range`; this module checks
only combinations of keys (loss vs trainer, adaptive clip vs bypass mode, what each verl trainer mode
needs) and that verl's registries hold what the config names. Called by SSPO's trainers at init and by the
recipe's pre-flight (:mod:`sspo.launch.preflight`), before any worker starts.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

from sspo.loss import check_clip_range, is_real_number
from sspo.verl_plugin.policy_loss import LOSS_MODE, POLICY_LOSS_KEY, SSPOPolicyLossConfig
from sspo.verl_plugin.seeded_rollout import AGENT_LOOP

__all__ = [
    "HOW_TO_REGISTER",
    "LEGACY_TRAINER_MODE",
    "SSPO_TRAINER_NAMES",
    "TRAINER_PREFIX",
    "VERL_TRAINER_MODES",
    "assert_checkpoint_engine_available",
    "assert_loss_registered",
    "assert_trainer_registered",
    "check_clip_keys",
    "policy_loss_key_problem",
    "policy_loss_key_problems",
    "registration_status",
    "select",
    "uses_adaptive_clip",
    "validate_config",
    "validate_trainer_mode",
    "verl_trainer_mode",
]

#: verl 0.9.1's trainer modes (``trainer.v1.trainer_mode``); SSPO's trainer for mode ``m`` is ``sspo_<m>``
#: (:mod:`sspo.verl_plugin.trainers`, which imports these names from here: this module imports nothing of it)
VERL_TRAINER_MODES = ("sync", "colocate_async", "separate_async")
TRAINER_PREFIX = "sspo_"
#: the weight sync separate_async uses on CPU (``sspo.cpu.checkpoint_engine.BACKEND``, not imported: it imports torch)
CPU_CHECKPOINT_ENGINE = "cpu_gloo"
#: the first name of SSPO's trainer, kept for old configs: the same trainer as ``sspo_sync``
LEGACY_TRAINER_MODE = "sspo"
#: the ``trainer.v1.trainer_mode`` names SSPO's trainers are registered under (``trainers.SSPO_TRAINERS``)
SSPO_TRAINER_NAMES = (*(f"{TRAINER_PREFIX}{mode}" for mode in VERL_TRAINER_MODES), LEGACY_TRAINER_MODE)


def verl_trainer_mode(trainer_mode: str) -> str | None:
    """verl's mode behind a ``trainer.v1.trainer_mode`` value: ``sspo_<m>`` and verl's ``<m>`` -> ``<m>``,
    ``sspo`` -> ``sync``; ``None`` for any other name."""
    if trainer_mode == LEGACY_TRAINER_MODE:
        return "sync"
    mode = trainer_mode.removeprefix(TRAINER_PREFIX)
    return mode if mode in VERL_TRAINER_MODES else None


ACTOR_KEY = "actor_rollout_ref.actor"
#: verl 0.9.1's loss aggregation modes (``ActorConfig.__post_init__``; pinned in tests/test_verl_runtime_state.py)
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
_SSPO_NAMES = ", ".join(f"{TRAINER_PREFIX}{mode}" for mode in VERL_TRAINER_MODES)

HOW_TO_REGISTER = (
    "verl imports plugins in every process through the `verl.plugins` entry point of an INSTALLED package "
    "(pip install -e <this repo>; not disabled by VERL_USE_EXTERNAL_PLUGINS=none), or through "
    "VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin in the environment of every process (Ray: "
    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin) for code shipped "
    "by Ray working_dir. verl hides plugin import errors: run `python -c 'import sspo.verl_plugin'` to see one."
)


def select(cfg: Any, key: str, default: Any = None) -> Any:
    """``OmegaConf.select`` with ``default`` also for a key set to null."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


# ----------------------------------------------------------------------------------------------
# Registration (verl swallows plugin import errors, so a missing registration is named here)
# ----------------------------------------------------------------------------------------------


def registration_status() -> dict[str, Any]:
    """Which SSPO pieces are registered in THIS process (for checks inside Ray workers)."""
    return {
        "pid": os.getpid(),
        "loss": POLICY_LOSS_REGISTRY.get(LOSS_MODE) is not None,
        "trainer": all(name in TRAINER_REGISTRY for name in SSPO_TRAINER_NAMES),
        "plugin_imported": "sspo.verl_plugin" in sys.modules,
    }


def assert_loss_registered(loss_mode: str) -> None:
    """Raise RuntimeError, saying how to fix it, unless ``loss_mode`` is in verl's policy-loss registry."""
    if loss_mode in POLICY_LOSS_REGISTRY:
        return
    hint = HOW_TO_REGISTER if loss_mode == LOSS_MODE else f"check the spelling of {POLICY_LOSS_KEY}.loss_mode"
    raise RuntimeError(
        f"policy loss {loss_mode!r} ({POLICY_LOSS_KEY}.loss_mode) is not registered in verl in process "
        f"{os.getpid()}; registered: {sorted(POLICY_LOSS_REGISTRY)}. {hint}"
    )


def assert_trainer_registered(trainer_mode: str) -> None:
    """Raise RuntimeError, saying how to fix it, unless ``trainer_mode`` is a registered verl v1 trainer."""
    if trainer_mode in TRAINER_REGISTRY:
        return
    if trainer_mode.startswith(TRAINER_PREFIX) and trainer_mode not in SSPO_TRAINER_NAMES:
        raise ValueError(f"trainer.v1.trainer_mode={trainer_mode!r} is not one of SSPO's trainers: {_SSPO_NAMES}")
    hint = HOW_TO_REGISTER if trainer_mode in SSPO_TRAINER_NAMES else f"SSPO's trainers: {_SSPO_NAMES}"
    raise RuntimeError(
        f"trainer {trainer_mode!r} (trainer.v1.trainer_mode) is not registered in verl in process "
        f"{os.getpid()}; registered: {sorted(TRAINER_REGISTRY)}. {hint}"
    )


# ----------------------------------------------------------------------------------------------
# Config-time checks
# ----------------------------------------------------------------------------------------------


def validate_config(cfg: Any) -> None:
    """Config-time checks of a composed ``ppo_trainer`` config (DictConfig); ValueError names the key and fix.

    The loss mode and trainer are registered (RuntimeError with the fix if not); PPO's clip range; what verl's
    trainer mode needs (:func:`validate_trainer_mode`); for ``loss_mode=sspo`` also :func:`_validate_sspo`.
    """
    loss_mode = select(cfg, f"{POLICY_LOSS_KEY}.loss_mode", "vanilla")
    trainer_mode = str(select(cfg, "trainer.v1.trainer_mode", "sync"))
    _assert_registered(loss_mode, trainer_mode)
    if key_problems := policy_loss_key_problems(cfg):
        raise ValueError(" | ".join(key_problems))
    if not select(cfg, "trainer.use_v1", True):
        raise ValueError(
            "trainer.use_v1=false selects verl's deprecated legacy trainer, which cannot run SSPO's trainers: "
            "remove the override (verl's default is trainer.use_v1=true)"
        )
    clip_ratio = select(cfg, f"{ACTOR_KEY}.clip_ratio", 0.2)
    low = select(cfg, f"{ACTOR_KEY}.clip_ratio_low", clip_ratio)
    high = select(cfg, f"{ACTOR_KEY}.clip_ratio_high", clip_ratio)
    check_clip_keys(loss_mode, low, high)
    _check_full_determinism(cfg)
    _check_update_check(cfg)
    _check_sequence_parallel_attention(cfg)
    agg = select(cfg, f"{ACTOR_KEY}.loss_agg_mode", "token-mean")
    if agg not in LOSS_AGG_MODES:
        raise ValueError(f"{ACTOR_KEY}.loss_agg_mode={agg!r} is unknown: use one of {list(LOSS_AGG_MODES)}")
    if agg == "seq-mean-token-sum-norm" and select(cfg, f"{ACTOR_KEY}.loss_scale_factor") is None:
        raise ValueError(
            f"{ACTOR_KEY}.loss_agg_mode=seq-mean-token-sum-norm with {ACTOR_KEY}.loss_scale_factor=null: verl then "
            "divides each micro-batch's loss by its own padded width, so the update changes with the micro-batch "
            f"size and dynamic batching. Set {ACTOR_KEY}.loss_scale_factor=${{data.max_response_length}} (a fixed horizon)"
        )

    _check_seconds(cfg, "sspo.replay_poll_interval_s", "or null for verl's 2 s")
    _check_seconds(cfg, "sspo.weight_sync_timeout_s", "(default 600)")
    monitor = select(cfg, "sspo.monitor", True)
    if not isinstance(monitor, bool):
        raise ValueError(f"sspo.monitor={monitor!r}: need true (log actor/monitor/* for every loss) or false")

    verl_mode = verl_trainer_mode(trainer_mode)
    if loss_mode == LOSS_MODE:
        _require_sspo_trainer(trainer_mode, verl_mode)
    if verl_mode is not None:
        validate_trainer_mode(cfg, trainer_mode, verl_mode)
    if loss_mode == LOSS_MODE:
        _validate_sspo(cfg, low, high)


#: verl losses whose published setting puts ``clip_ratio_low`` at 1 or above: there the clip keys are no PPO
#: ratio range [1 - low, 1 + high], or a lower bound <= 0 means "none" (recipe/config/algo/<loss>.yaml)
LOW_CLIP_MAY_EXCEED_ONE = {
    "cispo": "an IS-weight truncation; MiniMax-M1 sets no lower bound (clip_ratio_low=10)",
    "clip_cov": "Clip-Cov's recipe opens the PPO clip to [0, 2] (clip_ratio_low=1)",
    "geo_mean": "a clip of the log-ratio to [-low, high]",
    "dppo_tv": "a total-variation threshold",
    "dppo_kl": "a binary-KL threshold",
}


def check_clip_keys(loss_mode: str, low: Any, high: Any) -> None:
    """``actor.clip_ratio_low/high`` for ``loss_mode``: PPO's range (:func:`check_clip_range`), except for the
    losses of :data:`LOW_CLIP_MAY_EXCEED_ONE`, where each must only be a finite number >= 0."""
    key = f"{ACTOR_KEY}.clip_ratio"
    if loss_mode not in LOW_CLIP_MAY_EXCEED_ONE:
        check_clip_range(low, high, None, dual_clip=False, key=key)
        return
    for side, value in (("low", low), ("high", high)):
        if not is_real_number(value) or value < 0:
            raise ValueError(
                f"{key}_{side}={value!r} with loss_mode={loss_mode} ({LOW_CLIP_MAY_EXCEED_ONE[loss_mode]}): "
                "need a finite number >= 0"
            )


def _check_update_check(cfg: Any) -> None:
    """``sspo.update_check`` compares the updated policy with the old log-probs of the same batch: it needs verl's
    old-log-prob pass (not bypass mode). In separate_async those are pi_old's, the weights at the start of the
    parameter-sync cycle, so after a cycle's k-th mini-batch the check measures the cycle's first k updates on
    that mini-batch's samples (``sspo.update_check``)."""
    if not select(cfg, "sspo.update_check", False):
        return
    if select(cfg, "algorithm.rollout_correction.bypass_mode", False):
        raise ValueError(
            "sspo.update_check=true with algorithm.rollout_correction.bypass_mode=true: the old log-probs are then the "
            "rollout's, and the check would count the rollout-vs-actor gap as movement. Fix: bypass_mode=false or "
            "sspo.update_check=false"
        )


def _check_full_determinism(cfg: Any) -> None:
    """``rollout.full_determinism`` promises a bit-for-bit repeat, which holds only in the sync trainer mode (in
    the async modes the policy version a rollout sees depends on timing); and verl 0.9.1's key alone makes the
    n samples of a prompt identical (see the messages)."""
    rollout = "actor_rollout_ref.rollout"
    trainer_mode = str(select(cfg, "trainer.v1.trainer_mode", "sync"))
    verl_mode = verl_trainer_mode(trainer_mode)
    if select(cfg, f"{rollout}.full_determinism", False) and verl_mode not in (None, "sync"):
        raise ValueError(
            f"{rollout}.full_determinism=true with trainer.v1.trainer_mode={trainer_mode}: a run repeats bit for bit "
            f"only in the sync mode (in {verl_mode} the policy version each rollout sees depends on timing). Fix: "
            f"trainer.v1.trainer_mode={TRAINER_PREFIX + 'sync' if trainer_mode.startswith(TRAINER_PREFIX) else 'sync'}, "
            f"or {rollout}.full_determinism=false"
        )
    n = select(cfg, f"{rollout}.n", 1)
    agent_loop = select(cfg, f"{rollout}.agent.default_agent_loop", "single_turn_agent")
    if select(cfg, f"{rollout}.full_determinism", False) and n > 1 and agent_loop != AGENT_LOOP:
        raise ValueError(
            f"{rollout}.full_determinism=true with {rollout}.n={n} and {rollout}.agent.default_agent_loop="
            f"{agent_loop}: verl 0.9.1 then gives every rollout request of a replica the same sampling seed "
            "(replica_rank + seed), so the n samples of a prompt come out identical and every group advantage is 0. "
            f"Set {rollout}.agent.default_agent_loop={AGENT_LOOP} (verl's single-turn loop with a seed per sample; "
            "the recipe's default), or leave full_determinism=false"
        )


def _check_sequence_parallel_attention(cfg: Any) -> None:
    """Ulysses sequence parallelism needs flash attention: verl 0.9.1 puts its all-to-all into the flash-attention
    forward only (``monkey_patch.apply_monkey_patch``); with eager or sdpa attention each rank attends over its
    own slice of the sequence. Measured on CPU (eager, 2 ranks): actor vs vLLM token probabilities apart by up
    to 0.99, and no error."""
    attention = select(cfg, "actor_rollout_ref.model.override_config.attn_implementation", "flash_attention_2")
    for role in ("actor", "ref"):
        # verl's engine reads fsdp_config's key; the role's own (older) key is copied there when > 1
        keys = [f"actor_rollout_ref.{role}.{k}ulysses_sequence_parallel_size" for k in ("", "fsdp_config.")]
        key, sp = max(((k, select(cfg, k, 1) or 1) for k in keys), key=lambda kv: kv[1])
        if sp > 1 and attention not in ("flash_attention_2", "flash_attention_3"):
            raise ValueError(
                f"{key}={sp} with "
                f"actor_rollout_ref.model.override_config.attn_implementation={attention}: verl 0.9.1 splits the "
                "sequence over ranks only inside flash attention, so each rank would attend over its own slice of "
                "every sequence (wrong log-probs, no error). Use flash_attention_2 (GPU), or sequence parallel size 1"
            )


def _check_seconds(cfg: Any, key: str, default: str) -> None:
    """``key``, when the config sets it, is a number of seconds > 0 (checked here, not when the workers are up)."""
    from omegaconf import OmegaConf

    if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
        return
    value = OmegaConf.select(cfg, key)
    if key.endswith("replay_poll_interval_s") and value is None:
        return
    if isinstance(value, bool) or not is_real_number(value) or not value > 0:
        raise ValueError(f"{key}={value!r}: need seconds > 0 {default}")


def _assert_registered(loss_mode: str, trainer_mode: str) -> None:
    """Both registrations checked, both problems named in one error (one dry run shows every problem)."""
    problems = []
    for check, name in ((assert_loss_registered, loss_mode), (assert_trainer_registered, trainer_mode)):
        try:
            check(name)
        except (RuntimeError, ValueError) as err:
            problems.append(err)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise RuntimeError(" | ".join(str(p) for p in problems))


def _require_sspo_trainer(trainer_mode: str, verl_mode: str | None) -> None:
    """``loss_mode=sspo`` needs one of SSPO's trainers: verl's own cannot feed the loss its extra inputs."""
    if trainer_mode not in SSPO_TRAINER_NAMES:
        fix = f"{TRAINER_PREFIX}{verl_mode}" if verl_mode else f"one of {_SSPO_NAMES}"
        raise ValueError(
            f"trainer.v1.trainer_mode={trainer_mode!r} cannot feed {POLICY_LOSS_KEY}.loss_mode=sspo: verl's own "
            f"trainers pass the loss only its seven standard arguments, not the subsentence ids and old-policy "
            f"entropy. Set trainer.v1.trainer_mode={fix} (verl's {verl_mode or 'chosen'} mode with SSPO's hooks)"
        )


def _validate_sspo(cfg: Any, low: float, high: float) -> None:
    """``loss_mode=sspo``: SSPO's config class, the dual-clip bound, an old-policy entropy for the adaptive clip."""
    settings = _sspo_settings(cfg)
    check_clip_range(low, high, select(cfg, f"{ACTOR_KEY}.clip_ratio_c", 3.0), settings.use_dual_clip,
                     key=f"{ACTOR_KEY}.clip_ratio")  # fmt: skip
    if settings.adaptive_clip and select(cfg, "algorithm.rollout_correction.bypass_mode", False):
        raise ValueError(
            "algorithm.rollout_correction.bypass_mode=true skips verl's old-log-prob pass, so there is no old-policy "
            f"entropy for {POLICY_LOSS_KEY}.adaptive_clip=true: set bypass_mode=false or adaptive_clip=false"
        )
    if settings.adaptive_clip and select(cfg, f"{ACTOR_KEY}.shuffle", False):
        raise ValueError(
            f"{ACTOR_KEY}.shuffle=true with {POLICY_LOSS_KEY}.adaptive_clip=true: each optimizer step clips against "
            "its mini-batch's mean entropy, computed on the driver from verl's mini-batch cut, which shuffling makes "
            f"random inside the workers. Fix: {ACTOR_KEY}.shuffle=false (every row's setting) or adaptive_clip=false"
        )
    if select(cfg, "distillation.enabled", False):
        raise ValueError(
            "distillation.enabled=true with loss_mode=sspo: verl's distillation loss calls ppo_loss directly and "
            "cannot feed SSPO's inputs; disable distillation or use another loss mode"
        )


def _policy_loss_class(target: Any) -> type | None:
    """The dataclass a ``policy_loss._target_`` names, or None when it does not load (named by other checks)."""
    import dataclasses

    from hydra.utils import get_class

    try:
        cls = get_class(str(target))
    except Exception:  # noqa: BLE001 -- an unloadable target is reported by the loss-mode checks
        return None
    return cls if dataclasses.is_dataclass(cls) else None


def policy_loss_key_problems(cfg: Any) -> list[str]:
    """One line per key under ``actor_rollout_ref.actor.policy_loss`` that its config class (``_target_``)
    lacks: verl would die in the class's constructor with a bare ``TypeError`` (:func:`policy_loss_key_problem`)."""
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.select(cfg, POLICY_LOSS_KEY, default=None)
    if not isinstance(node, DictConfig):
        return []
    problems = (policy_loss_key_problem(node, str(k)) for k in node.keys() if not str(k).startswith("_"))
    return [p for p in problems if p]


def policy_loss_key_problem(policy_loss: Any, key: str) -> str | None:
    """None if ``key`` exists in the config class of ``policy_loss`` (its ``_target_``), else one line saying
    which keys exist for which loss: SSPO's keys (:class:`sspo.loss.SSPOSettings`) only with ``loss_mode=sspo``
    (SSPO's config class); a misspelling gets the closest valid key. Also for a key the config lacks (the
    recipe's CLI asks it before advising Hydra's ``+``)."""
    import dataclasses
    import difflib

    from sspo.loss import SSPOSettings

    cls = _policy_loss_class(policy_loss.get("_target_"))
    if cls is None:
        return None
    valid = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    if key in valid:
        return None
    sspo_keys = [f.name for f in dataclasses.fields(SSPOSettings)]
    loss_mode = policy_loss.get("loss_mode")
    if key in sspo_keys:
        return (
            f"{POLICY_LOSS_KEY}.{key} is one of SSPO's keys ({', '.join(sspo_keys)}), which exist only with "
            f"loss_mode={LOSS_MODE} (algo=sspo: _target_=sspo.verl_plugin.SSPOPolicyLossConfig); loss_mode="
            f"{loss_mode} has verl's {cls.__name__}, whose keys are: {', '.join(valid)}. Fix: algo=sspo, or drop {key}"
        )
    close = difflib.get_close_matches(key, valid + sspo_keys, n=1, cutoff=0.6)
    hint = f"did you mean {POLICY_LOSS_KEY}.{close[0]}? " if close else ""
    if close and close[0] not in valid:
        hint = f"did you mean {close[0]}? (an SSPO key: only with algo=sspo) "
    return (
        f"{POLICY_LOSS_KEY}.{key} is not a key of {cls.__name__} (loss_mode={loss_mode}). Fix: {hint}"
        f"its keys are: {', '.join(valid)}"
    )


def uses_adaptive_clip(cfg: Any) -> bool:
    """The run's loss is ``sspo`` and its settings (as the worker builds them) have the adaptive clip on."""
    if select(cfg, f"{POLICY_LOSS_KEY}.loss_mode", "vanilla") != LOSS_MODE:
        return False
    return _sspo_settings(cfg).adaptive_clip


def _sspo_settings(cfg: Any) -> SSPOPolicyLossConfig:
    """``policy_loss`` built as verl's worker builds it; its ``_target_`` must be SSPO's config class."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    policy_loss = OmegaConf.select(cfg, POLICY_LOSS_KEY)
    target = policy_loss.get("_target_", None)
    try:
        cls = get_class(str(target))
    except Exception:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, SSPOPolicyLossConfig)):
        raise ValueError(
            f"{POLICY_LOSS_KEY}._target_={target!r} with loss_mode=sspo: set "
            f"{POLICY_LOSS_KEY}._target_=sspo.verl_plugin.SSPOPolicyLossConfig so that the SSPO keys "
            "(granularity, adaptive_clip, delimiters, ...) exist and are validated"
        )
    try:
        return omega_conf_to_dataclass(policy_loss)
    except ValueError:
        raise  # SSPOSettings.__post_init__: the message names the key already
    except Exception as exc:  # e.g. an unknown key: TypeError from the dataclass constructor
        raise ValueError(f"{POLICY_LOSS_KEY} does not build an SSPOPolicyLossConfig: {exc}") from exc


def validate_trainer_mode(cfg: Any, trainer_mode: str, verl_mode: str) -> None:
    """What verl's trainer for ``verl_mode`` asserts only inside the TaskRunner (or never), checked now.

    ``trainer_mode`` is the configured ``trainer.v1.trainer_mode``, ``verl_mode`` verl's mode behind it
    (:func:`verl_trainer_mode`). ValueError names the key and the fix.
    """
    if verl_mode == "separate_async":
        _validate_separate_async(cfg, trainer_mode)
    sync_step = select(cfg, f"trainer.v1.{verl_mode}.parameter_sync_step", 1)
    if trainer_mode != verl_mode and select(cfg, "skip.rollout_tq.enable", False) and sync_step != 1:
        raise ValueError(
            f"skip.rollout_tq.enable=true with trainer.v1.trainer_mode={trainer_mode}: verl's RolloutTqSkip reads "
            f"trainer.v1.<trainer_mode>.parameter_sync_step (absent: 1), not trainer.v1.{verl_mode}.parameter_sync_step"
            f"={sync_step}; set skip.rollout_tq.enable=false or trainer.v1.{verl_mode}.parameter_sync_step=1"
        )


def _validate_separate_async(cfg: Any, trainer_mode: str) -> None:
    """separate_async: standalone rollout resources, a weight-sync engine that reaches them, whole mini-batches."""
    mode = f"trainer.v1.trainer_mode={trainer_mode}"
    rollout = "actor_rollout_ref.rollout"
    sync_step = select(cfg, "trainer.v1.separate_async.parameter_sync_step", 1)
    batch = select(cfg, "data.train_batch_size")
    mini = select(cfg, "actor_rollout_ref.actor.ppo_mini_batch_size")
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
        value = select(cfg, f"{rollout}.{key}", 0)
        if not (isinstance(value, int) and value > 0):
            raise ValueError(
                f"{mode} runs the rollout on its own GPUs: set {rollout}.{key} (now {value!r}) > 0, e.g. "
                f"{rollout}.nnodes=1 {rollout}.n_gpus_per_node=8 beside trainer.nnodes/trainer.n_gpus_per_node"
            )
    backend = select(cfg, f"{rollout}.checkpoint_engine.backend", "naive")
    on_cpu = select(cfg, "trainer.device") == "cpu"
    if on_cpu and backend != CPU_CHECKPOINT_ENGINE:
        raise ValueError(
            f"{mode} with trainer.device=cpu: {rollout}.checkpoint_engine.backend={backend!r} cannot reach a CPU "
            f"rollout (naive: only rollout servers on the training workers; nccl: cupy and CUDA buffers; hccl: Ascend "
            f"NPUs). Fix: cluster=cpu_separate, or {rollout}.checkpoint_engine.backend={CPU_CHECKPOINT_ENGINE} and "
            f"{rollout}.checkpoint_engine.custom_backend_module=sspo.cpu.checkpoint_engine"
        )
    if backend == "naive":
        raise ValueError(
            f"{mode}: {rollout}.checkpoint_engine.backend=naive only reaches rollout servers on the training "
            f"GPUs; the standalone rollout needs nccl (GPUs), hccl (Ascend), nixl or mooncake: set "
            f"{rollout}.checkpoint_engine.backend=nccl"
        )
    if select(cfg, "reward.reward_model.enable", False) and not select(
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
    backend = select(cfg, f"{key}.backend", "naive")
    module = select(cfg, f"{key}.custom_backend_module") or None
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
