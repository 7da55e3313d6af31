"""SSPO's trainers in each of verl's modes, built as main_ppo builds them, with verl's REAL ``__init__``.

main_ppo's TaskRunner runs ``get_trainer_cls(config.trainer.v1.trainer_mode)(config=config)`` and then
``init()`` (``_setup()``: workers, rollout; then ``on_init_end()``). ``__init__`` runs on CPU; the hooks of
``init()`` run here against recording worker groups and checkpoint managers (Ray-free).

separate_async needs a weight-sync backend other than ``naive``; on this CPU machine none of verl's is
registered (nccl needs cupy), so these tests register :class:`RecordingEngine` through verl's own
``checkpoint_engine.custom_backend_module`` hook (this module) and build the config for GPUs.
"""

from __future__ import annotations

import copy
import functools

import pytest
from helpers import ACTOR_OVERRIDES, compose_ppo_config
from verl.checkpoint_engine import CheckpointEngineManager, CheckpointEngineRegistry
from verl.checkpoint_engine.base import CheckpointEngine
from verl.trainer.ppo.v1 import (
    PPOTrainerColocateAsync,
    PPOTrainerSeparateAsync,
    PPOTrainerSync,
    get_trainer_cls,
)

from sspo import verl_plugin
from sspo.verl_plugin import (
    SSPOColocateAsyncTrainer,
    SSPOSeparateAsyncTrainer,
    SSPOSyncTrainer,
    SSPOTrainer,
    SSPOTrainerMixin,
    sspo_ppo_loss,
    validate_config,
)
from sspo.verl_plugin.weight_sync import BoundedWeightSync

PL = "actor_rollout_ref.actor.policy_loss"
SSPO_LOSS = [f"{PL}._target_=sspo.verl_plugin.SSPOPolicyLossConfig", f"{PL}.loss_mode=sspo"]
TEST_ENGINE = "sspo_test_recording"


@CheckpointEngineRegistry.register(TEST_ENGINE)
class RecordingEngine(CheckpointEngine):
    """A registered checkpoint-engine name for separate_async's config checks (never started here)."""


# separate_async on GPUs: 1 training node + 1 rollout node, batch = parameter_sync_step x mini-batch
SEPARATE = [
    "trainer.device=cuda",
    "data.train_batch_size=12",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "trainer.v1.separate_async.parameter_sync_step=3",
    "actor_rollout_ref.rollout.nnodes=1",
    "actor_rollout_ref.rollout.n_gpus_per_node=1",
    f"actor_rollout_ref.rollout.checkpoint_engine.backend={TEST_ENGINE}",
    f"actor_rollout_ref.rollout.checkpoint_engine.custom_backend_module={__name__}",
]
MODES = {  # trainer_mode -> (SSPO class, verl's class, verl's mode, overrides the mode needs)
    "sspo_sync": (SSPOSyncTrainer, PPOTrainerSync, "sync", []),
    "sspo_colocate_async": (SSPOColocateAsyncTrainer, PPOTrainerColocateAsync, "colocate_async", []),
    "sspo_separate_async": (SSPOSeparateAsyncTrainer, PPOTrainerSeparateAsync, "separate_async", SEPARATE),
}


def _config(model_dir, trainer_mode, *overrides):
    extra = MODES[trainer_mode][3] if trainer_mode in MODES else []
    return compose_ppo_config(
        [
            *ACTOR_OVERRIDES,
            f"actor_rollout_ref.model.path={model_dir}",
            *SSPO_LOSS,
            f"trainer.v1.trainer_mode={trainer_mode}",
            *extra,
            *overrides,
        ]
    )


@pytest.mark.parametrize("trainer_mode", list(MODES))
def test_main_ppo_builds_each_mode_with_verls_own_settings(tiny_model_dir, trainer_mode):
    """The SSPO trainer for a mode behaves as verl's trainer for that mode: same replay buffer class, same
    ``trainer.v1.<mode>`` settings, same parameter_sync_step; only the registered name differs."""
    sspo_cls, verl_cls, verl_mode, _ = MODES[trainer_mode]
    cfg = _config(tiny_model_dir, trainer_mode)
    trainer = get_trainer_cls(cfg.trainer.v1.trainer_mode)(config=cfg)
    assert (
        type(trainer) is sspo_cls and isinstance(trainer, verl_cls) and isinstance(trainer, SSPOTrainerMixin)
    )
    assert trainer.trainer_mode == verl_mode and trainer.registered_trainer_mode == trainer_mode

    verl_cfg = copy.deepcopy(cfg)
    verl_cfg.trainer.v1.trainer_mode = verl_mode
    verls = verl_cls(config=verl_cfg)
    assert type(trainer.replay_buffer) is type(verls.replay_buffer)
    assert trainer.replay_buffer.trainer_mode == verls.replay_buffer.trainer_mode == verl_mode
    assert (
        trainer.replay_buffer.trainer_config
        == verls.replay_buffer.trainer_config
        == cfg.trainer.v1[verl_mode]
    )
    assert (
        trainer.parameter_sync_step
        == verls.parameter_sync_step
        == (3 if verl_mode == "separate_async" else 1)
    )


def test_each_async_mode_reads_its_own_settings(tiny_model_dir, monkeypatch):
    """``trainer.v1.colocate_async.*`` / ``trainer.v1.separate_async.*`` reach verl's code, not the defaults."""
    colocate = get_trainer_cls("sspo_colocate_async")(
        _config(tiny_model_dir, "sspo_colocate_async", "trainer.v1.colocate_async.num_warmup_batches=3")
    )
    separate = get_trainer_cls("sspo_separate_async")(
        _config(
            tiny_model_dir,
            "sspo_separate_async",
            "trainer.v1.separate_async.num_warmup_batches=2",
            "trainer.v1.separate_async.hybrid_rollout.switch_threshold_ratio=0.7",
        )
    )
    assert separate.hybrid_rollout_config.switch_threshold_ratio == 0.7
    for trainer, batches in ((colocate, 3), (separate, 2)):
        asked = []
        monkeypatch.setattr(trainer, "_add_prompts_to_generate", asked.append)
        trainer.on_train_begin()  # verl's hook: warm-up prompts from trainer.v1.<mode>.num_warmup_batches
        assert asked == [batches * trainer.config.data.train_batch_size]


class RecordingManager(CheckpointEngineManager):
    """verl's checkpoint manager type, recording the calls verl's hooks make (no engine, no replicas)."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def update_weights(self, global_steps=None):
        self.calls.append((f"{self.name}.update_weights", global_steps))

    def resume_generation_replicas(self):
        self.calls.append((f"{self.name}.resume_generation_replicas", None))


@pytest.mark.parametrize(
    "trainer_mode, managers, verls_calls",
    [
        ("sspo_sync", ["checkpoint_manager"], ["checkpoint_manager.update_weights"]),
        ("sspo_colocate_async", ["checkpoint_manager"], ["checkpoint_manager.update_weights"]),
        (
            "sspo_separate_async",
            ["checkpoint_manager", "standalone_checkpoint_manager"],
            ["standalone_checkpoint_manager.update_weights", "checkpoint_manager.update_weights"],
        ),
    ],
)
def test_on_init_end_installs_the_loss_bounds_every_sync_then_runs_verls_hook(
    tiny_model_dir, trainer_mode, managers, verls_calls
):
    from types import SimpleNamespace

    cfg = _config(tiny_model_dir, trainer_mode, "+sspo.weight_sync_timeout_s=42")
    trainer = get_trainer_cls(trainer_mode)(config=cfg)
    calls = []
    trainer.actor_rollout_wg = SimpleNamespace(set_loss_fn=lambda fn: calls.append(("set_loss_fn", fn)))
    for name in managers:
        setattr(trainer, name, RecordingManager(name, calls))
    trainer.global_steps = 5  # as _load_checkpoint leaves it on resume
    trainer.on_init_end()

    assert [name for name, _ in calls] == ["set_loss_fn", *verls_calls]
    assert all(step == 5 for _, step in calls[1:])
    fn = calls[0][1]
    assert isinstance(fn, functools.partial) and fn.func is sspo_ppo_loss
    assert fn.keywords["config"].policy_loss.loss_mode == "sspo"
    for name in managers:  # every weight sync of the mode is bounded
        wrapped = getattr(trainer, name)
        assert isinstance(wrapped, BoundedWeightSync) and wrapped.timeout_s == 42


def test_old_name_sspo_is_the_sync_trainer(tiny_model_dir):
    cfg = _config(tiny_model_dir, "sspo")
    trainer = get_trainer_cls("sspo")(config=cfg)
    assert SSPOTrainer is SSPOSyncTrainer and type(trainer) is SSPOSyncTrainer
    assert trainer.trainer_mode == "sync" and trainer.registered_trainer_mode == "sspo"
    assert trainer.replay_buffer.trainer_config == cfg.trainer.v1.sync


@pytest.mark.parametrize("trainer_mode", list(MODES))
def test_replay_poll_interval_reaches_each_modes_replay_buffer(tiny_model_dir, trainer_mode):
    default = get_trainer_cls(trainer_mode)(config=_config(tiny_model_dir, trainer_mode))
    cfg = _config(tiny_model_dir, trainer_mode, "+sspo.replay_poll_interval_s=0.25")
    assert default.replay_buffer.poll_interval == 2.0  # verl's own
    assert get_trainer_cls(trainer_mode)(config=cfg).replay_buffer.poll_interval == 0.25


@pytest.mark.parametrize("bad", ["0", "-1", "slow", "null"])
def test_bad_weight_sync_timeout_is_refused_at_config_time_not_when_the_workers_are_up(tiny_model_dir, bad):
    with pytest.raises(ValueError, match=r"sspo\.weight_sync_timeout_s=.*need seconds > 0"):
        validate_config(_config(tiny_model_dir, "sspo_sync", f"+sspo.weight_sync_timeout_s={bad}"))
    validate_config(_config(tiny_model_dir, "sspo_sync", "+sspo.weight_sync_timeout_s=30"))


@pytest.mark.parametrize("bad", ["0", "-1", "fast"])
def test_bad_replay_poll_interval_is_refused_at_config_time(tiny_model_dir, bad):
    with pytest.raises(ValueError, match=r"sspo\.replay_poll_interval_s=.*need seconds > 0"):
        validate_config(_config(tiny_model_dir, "sspo_sync", f"+sspo.replay_poll_interval_s={bad}"))


def test_registrations_through_verls_api():
    names = {"sspo": SSPOSyncTrainer, **{name: cls for name, (cls, *_rest) in MODES.items()}}
    for name, cls in names.items():
        assert get_trainer_cls(name) is cls
    verl_plugin.register()  # importing the plugin again keeps the registrations
    assert all(get_trainer_cls(name) is cls for name, cls in names.items())
    assert verl_plugin.registration_status()["trainer"]


@pytest.mark.parametrize(
    "trainer_mode, fix",
    [
        ("sync", "trainer.v1.trainer_mode=sspo_sync"),
        ("colocate_async", "trainer.v1.trainer_mode=sspo_colocate_async"),
        ("separate_async", "trainer.v1.trainer_mode=sspo_separate_async"),
    ],
)
def test_sspo_loss_under_a_verl_mode_names_the_sspo_trainer_for_it(tiny_model_dir, trainer_mode, fix):
    with pytest.raises(ValueError, match=fix):
        validate_config(_config(tiny_model_dir, trainer_mode))


def test_misspelled_sspo_mode_lists_the_names(tiny_model_dir):
    with pytest.raises(ValueError, match="sspo_sync, sspo_colocate_async, sspo_separate_async"):
        validate_config(_config(tiny_model_dir, "sspo_async"))


def test_cpu_workers_for_sync_and_colocate(tiny_model_dir):
    """CPU mode maps verl's roles to sspo.cpu.workers' gloo classes in both colocated modes."""
    from verl.trainer.ppo.utils import Role

    from sspo.cpu.workers import CPUActorRolloutRefWorker

    for trainer_mode in ("sspo_sync", "sspo_colocate_async"):
        trainer = get_trainer_cls(trainer_mode)(_config(tiny_model_dir, trainer_mode))
        trainer._init_resource_pool_mgr()
        mapped = trainer.role_worker_mapping[Role.ActorRollout]
        assert mapped.__ray_actor_class__ is CPUActorRolloutRefWorker


def test_cpu_mapping_swaps_separate_asyncs_detach_worker_and_refuses_unknown_classes(tiny_model_dir):
    """separate_async maps the actor to DetachActorWorker (save/restore of pi_old): CPU mode swaps it for its gloo
    variant; a worker class without a CPU variant would lose its methods in the swap, so it is refused."""
    import ray
    from verl.trainer.ppo.utils import Role

    from sspo.cpu.workers import CPUDetachActorWorker

    trainer = get_trainer_cls("sspo_separate_async")(_config(tiny_model_dir, "sspo_separate_async"))
    trainer.config.trainer.device = "cpu"
    trainer._init_resource_pool_mgr()
    assert trainer.role_worker_mapping[Role.ActorRollout].__ray_actor_class__ is CPUDetachActorWorker

    class CustomWorker:
        pass

    trainer.role_worker_mapping = {Role.ActorRollout: ray.remote(CustomWorker)}
    with pytest.raises(ValueError, match="CustomWorker, which has no CPU variant"):
        from sspo.verl_plugin.trainers import _refuse_unknown_cpu_workers

        _refuse_unknown_cpu_workers(trainer.role_worker_mapping, "separate_async")


def test_separate_async_on_cpu_needs_the_cpu_weight_sync(tiny_model_dir):
    from sspo.cpu.checkpoint_engine import BACKEND
    from sspo.verl_plugin.config_checks import CPU_CHECKPOINT_ENGINE

    assert CPU_CHECKPOINT_ENGINE == BACKEND  # the config checks name it without importing torch's side
    cfg = _config(tiny_model_dir, "sspo_separate_async")
    cfg.trainer.device = "cpu"
    with pytest.raises(ValueError, match=r"backend='sspo_test_recording' cannot reach a CPU rollout.*cluster=cpu_separate"):
        validate_config(cfg)
    cfg.actor_rollout_ref.rollout.checkpoint_engine.backend = BACKEND
    validate_config(cfg)


# ---------------------------------------------------------------- the sync trainer's construction and hooks

SSPO = [*SSPO_LOSS, "trainer.v1.trainer_mode=sspo"]


def _trainer_config(model_dir, *overrides):
    """verl's ppo_trainer config for sspo; ACTOR_OVERRIDES for the micro-batch size an ActorConfig needs."""
    return compose_ppo_config(
        [*ACTOR_OVERRIDES, f"actor_rollout_ref.model.path={model_dir}", *SSPO, *overrides]
    )


def test_main_ppo_builds_sspo_trainer_with_verls_sync_settings(tiny_model_dir):
    """What main_ppo's TaskRunner does -- ``get_trainer_cls(config.trainer.v1.trainer_mode)(config=config)`` --
    with verl's REAL ``PPOTrainer.__init__`` (it runs on CPU; only ``init()`` needs GPUs).

    ``__init__`` assigns ``config.trainer.v1.trainer_mode`` ("sspo") to ``self.trainer_mode``, then reads
    ``trainer.v1.get(self.trainer_mode, {})`` and branches on ``== "sync"``: the result must be exactly
    verl's sync trainer's (replay buffer class, its settings, parameter_sync_step).
    """
    import copy

    from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

    cfg = _trainer_config(tiny_model_dir)
    trainer = get_trainer_cls(cfg.trainer.v1.trainer_mode)(config=cfg)
    assert type(trainer) is SSPOTrainer
    assert trainer.trainer_mode == "sync" and trainer.registered_trainer_mode == "sspo"

    sync_cfg = copy.deepcopy(cfg)
    sync_cfg.trainer.v1.trainer_mode = "sync"
    verls_sync = PPOTrainerSync(config=sync_cfg)
    assert type(trainer.replay_buffer) is type(verls_sync.replay_buffer) is ReplayBuffer
    assert trainer.replay_buffer.trainer_mode == verls_sync.replay_buffer.trainer_mode == "sync"
    assert (
        trainer.replay_buffer.trainer_config == verls_sync.replay_buffer.trainer_config == cfg.trainer.v1.sync
    )
    assert trainer.parameter_sync_step == verls_sync.parameter_sync_step == 1

    # Why the property exists: the same subclass without it, registered name "sspo", goes ASYNC in verl.
    class WithoutTheProperty(PPOTrainerSync):
        pass

    assert type(WithoutTheProperty(config=cfg).replay_buffer) is ReplayBufferAsync


def test_sspo_trainer_validates_before_verls_init(tiny_model_dir, monkeypatch):
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    inits = []
    verls_init = PPOTrainer.__init__

    def spy(self, config):
        inits.append(config)
        verls_init(self, config)

    monkeypatch.setattr(PPOTrainer, "__init__", spy)
    with pytest.raises(ValueError, match=f"{PL}.granularity"):
        SSPOTrainer(_trainer_config(tiny_model_dir, f"+{PL}.granularity=clause"))
    assert inits == []  # nothing of verl's ran
    good = _trainer_config(tiny_model_dir)
    SSPOTrainer(good)
    assert inits == [good]


def test_on_init_end_installs_the_wrapper_then_runs_verls_sync_hook(tiny_model_dir):
    """verl's ``init()`` is ``_setup()`` (workers, ``init_model``) then ``on_init_end()``. Here the worker
    group and the checkpoint manager are recorders; the trainer and both hooks are real."""
    from types import SimpleNamespace

    from verl.workers.config import ActorConfig

    cfg = _trainer_config(
        tiny_model_dir,
        f"+{PL}.granularity=token",
        f"+{PL}.adaptive_clip=false",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
    )
    trainer = SSPOTrainer(cfg)
    calls = []
    trainer.actor_rollout_wg = SimpleNamespace(set_loss_fn=lambda fn: calls.append(("set_loss_fn", fn)))
    trainer.checkpoint_manager = SimpleNamespace(
        update_weights=lambda step: calls.append(("update_weights", step))
    )
    trainer.global_steps = 7  # as _load_checkpoint leaves it on resume
    trainer.on_init_end()

    assert [name for name, _ in calls] == ["set_loss_fn", "update_weights"]  # loss, then verl's weight sync
    assert calls[1][1] == 7
    fn = calls[0][1]
    assert isinstance(fn, functools.partial) and fn.func is sspo_ppo_loss and list(fn.keywords) == ["config", "monitor"]
    assert fn.keywords["monitor"] is True  # sspo.monitor defaults to on
    actor_config = fn.keywords["config"]
    assert isinstance(actor_config, ActorConfig) and actor_config.clip_ratio_high == 0.28
    policy_loss = actor_config.policy_loss
    assert isinstance(policy_loss, verl_plugin.SSPOPolicyLossConfig)
    assert (policy_loss.loss_mode, policy_loss.granularity, policy_loss.adaptive_clip) == (
        "sspo",
        "token",
        False,
    )
    assert actor_config.model_config.path == str(tiny_model_dir)
    assert actor_config.model_config.tokenizer is not None  # the segmenter is built from it on the worker


def test_with_distillation_verls_loss_is_left_in_place(tiny_model_dir):
    """verl installs distillation_ppo_loss itself; the hook (sspo is refused there) must not replace it."""
    from types import SimpleNamespace

    cfg = compose_ppo_config(
        [
            f"actor_rollout_ref.model.path={tiny_model_dir}",
            "trainer.v1.trainer_mode=sspo",
            "distillation.enabled=true",
        ]
    )
    trainer = SSPOTrainer(cfg)
    installed = []
    trainer.actor_rollout_wg = SimpleNamespace(set_loss_fn=installed.append)
    trainer.install_actor_loss()
    assert installed == []


@pytest.mark.parametrize("mode", ["sspo_sync", "sspo_separate_async"])
def test_update_check_is_refused_where_it_cannot_measure_this_update(tiny_model_dir, mode):
    bypass = "algorithm.rollout_correction.bypass_mode=true"
    with pytest.raises(ValueError, match="bypass_mode=true: the old log-probs"):
        validate_config(_config(tiny_model_dir, mode, "+sspo.update_check=true", bypass))
    validate_config(_config(tiny_model_dir, mode, "+sspo.update_check=true"))  # where it can: accepted
