"""validate_config against verl's REAL ppo_trainer config composed with Hydra's compose API."""

from __future__ import annotations

import pytest
from helpers import compose_ppo_config

from sspo.verl_plugin import validate_config

PL = "actor_rollout_ref.actor.policy_loss"
SSPO = [
    f"{PL}._target_=sspo.verl_plugin.SSPOPolicyLossConfig",
    f"{PL}.loss_mode=sspo",
    "trainer.v1.trainer_mode=sspo",
]


# separate_async on GPUs: a rollout node of its own, nccl weight sync, batch = 2 x mini-batch
SEPARATE = [
    "trainer.v1.trainer_mode=sspo_separate_async",
    "data.train_batch_size=128",
    "actor_rollout_ref.actor.ppo_mini_batch_size=64",
    "trainer.v1.separate_async.parameter_sync_step=2",
    "actor_rollout_ref.rollout.nnodes=1",
    "actor_rollout_ref.rollout.checkpoint_engine.backend=nccl",
]
RO = "actor_rollout_ref.rollout"


def _cfg(*overrides: str):
    return compose_ppo_config(["actor_rollout_ref.model.path=/nonexistent/model", *overrides])


LM, TM = f"{PL}.loss_mode", "trainer.v1.trainer_mode"
# SSPO's loss as verl's worker builds it: (granularity, adaptive_clip, delimiters, max_subsentence_len, dual clip)
SSPO_DEFAULTS = ("subsentence", True, None, None, True)


def _accepted(*overrides: str):
    """The composed config once validate_config accepted it; the check must leave it as composed."""
    from omegaconf import OmegaConf

    cfg = _cfg(*overrides)
    composed = OmegaConf.to_container(cfg)
    validate_config(cfg)
    assert OmegaConf.to_container(cfg) == composed
    return cfg


def _holds(cfg, expected: dict) -> None:
    """Each dotted key of ``expected`` holds its value in ``cfg``."""
    from omegaconf import OmegaConf

    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected


def _sspo_loss(cfg) -> tuple:
    """The policy loss built with verl's own omega_conf_to_dataclass (as the worker does), as SSPO_DEFAULTS."""
    from verl.utils.config import omega_conf_to_dataclass

    from sspo.verl_plugin import SSPOPolicyLossConfig

    loss = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
    assert isinstance(loss, SSPOPolicyLossConfig)
    delimiters = None if loss.delimiters is None else list(loss.delimiters)
    return loss.granularity, loss.adaptive_clip, delimiters, loss.max_subsentence_len, loss.use_dual_clip


@pytest.mark.parametrize(
    "overrides, holds, sspo_loss",
    [
        ([], {LM: "vanilla", TM: "sync", "trainer.use_v1": True}, None),  # verl's defaults: the sync trainer
        ([f"{PL}.loss_mode=gspo"], {LM: "gspo", TM: "sync"}, None),
        # one trainer runs every loss mode
        ([f"{PL}.loss_mode=gspo", f"{TM}=sspo"], {LM: "gspo", TM: "sspo"}, None),
        (
            [f"{PL}.loss_mode=gspo", f"{TM}=sspo_colocate_async"],
            {LM: "gspo", TM: "sspo_colocate_async"},
            None,
        ),
        ([*SSPO, f"{TM}=sspo_sync"], {LM: "sspo", TM: "sspo_sync"}, SSPO_DEFAULTS),
        ([*SSPO, f"{TM}=sspo_colocate_async"], {LM: "sspo", TM: "sspo_colocate_async"}, SSPO_DEFAULTS),
        (
            [*SSPO, *SEPARATE],
            {
                TM: "sspo_separate_async",
                "data.train_batch_size": 128,
                "actor_rollout_ref.actor.ppo_mini_batch_size": 64,
                "trainer.v1.separate_async.parameter_sync_step": 2,  # 128 = 2 x 64
                f"{RO}.nnodes": 1,
                f"{RO}.n_gpus_per_node": 8,  # verl's default: the rollout's own GPUs
                f"{RO}.checkpoint_engine.backend": "nccl",
            },
            SSPO_DEFAULTS,
        ),
        (
            SSPO,
            {LM: "sspo", TM: "sspo", f"{PL}._target_": "sspo.verl_plugin.SSPOPolicyLossConfig"},
            SSPO_DEFAULTS,
        ),
        (
            [*SSPO, f"+{PL}.granularity=token", f"+{PL}.adaptive_clip=false"],
            {LM: "sspo"},
            ("token", False, None, None, True),
        ),
        (
            [
                *SSPO,
                f"+{PL}.granularity=sequence",
                f"+{PL}.delimiters=[',','.','。']",
                f"+{PL}.max_subsentence_len=64",
            ],
            {LM: "sspo"},
            ("sequence", True, [",", ".", "。"], 64, False),  # GSPO's granularity: no dual clip
        ),
    ],
)
def test_valid_configs_pass(overrides, holds, sspo_loss):
    from sspo.verl_plugin.config_checks import uses_adaptive_clip

    cfg = _accepted(*overrides)
    _holds(cfg, holds)
    if sspo_loss is not None:
        assert _sspo_loss(cfg) == sspo_loss
    assert uses_adaptive_clip(cfg) == (sspo_loss is not None and sspo_loss[1])


@pytest.mark.parametrize(
    "overrides, key",
    [
        # the default trainer cannot feed segment ids / entropy to the sspo loss
        (
            [f"{PL}._target_=sspo.verl_plugin.SSPOPolicyLossConfig", f"{PL}.loss_mode=sspo"],
            "trainer.v1.trainer_mode",
        ),
        ([*SSPO, "trainer.use_v1=false"], "trainer.use_v1"),
        ([f"{PL}.loss_mode=sspo", "trainer.v1.trainer_mode=sspo"], f"{PL}._target_"),
        ([*SSPO, f"{PL}._target_=verl.workers.config.PolicyLossConfig"], f"{PL}._target_"),
        ([*SSPO, f"{PL}._target_=sspo.loss.NoSuchConfig"], f"{PL}._target_"),
        ([*SSPO, f"+{PL}.granularity=clause"], f"{PL}.granularity"),
        ([*SSPO, f"+{PL}.delimiters=[',','']"], f"{PL}.delimiters"),
        ([*SSPO, f"+{PL}.delimiters=[]"], f"{PL}.delimiters"),
        ([*SSPO, f"+{PL}.max_subsentence_len=0"], f"{PL}.max_subsentence_len"),
        ([*SSPO, f"+{PL}.adaptive_min=1.5"], f"{PL}.adaptive_min"),
        ([*SSPO, f"+{PL}.no_such_knob=1"], PL),
        ([*SSPO, "actor_rollout_ref.actor.clip_ratio_low=1.2"], "actor_rollout_ref.actor.clip_ratio_low"),
        ([*SSPO, "actor_rollout_ref.actor.clip_ratio_low=-0.1"], "actor_rollout_ref.actor.clip_ratio_low"),
        ([*SSPO, "actor_rollout_ref.actor.clip_ratio_high=-0.2"], "actor_rollout_ref.actor.clip_ratio_high"),
        (["actor_rollout_ref.actor.clip_ratio_low=1.0"], "actor_rollout_ref.actor.clip_ratio_low"),
        ([*SSPO, "actor_rollout_ref.actor.clip_ratio_c=0.5"], "actor_rollout_ref.actor.clip_ratio_c"),
        (
            [*SSPO, "algorithm.rollout_correction.bypass_mode=true"],
            "algorithm.rollout_correction.bypass_mode",
        ),
        ([*SSPO, "distillation.enabled=true"], "distillation.enabled"),
        ([*SSPO, "actor_rollout_ref.actor.shuffle=true"], "actor_rollout_ref.actor.shuffle=false"),
        # each trainer mode: what verl asserts only inside the TaskRunner, or never
        ([*SSPO, "trainer.v1.trainer_mode=separate_async"], "trainer.v1.trainer_mode=sspo_separate_async"),
        (
            [*SSPO, "trainer.v1.trainer_mode=sspo_async"],
            "sspo_sync, sspo_colocate_async, sspo_separate_async",
        ),
        ([*SSPO, *SEPARATE, "trainer.v1.separate_async.parameter_sync_step=4"], "parameter_sync_step"),
        ([*SSPO, *SEPARATE, f"{RO}.nnodes=0"], f"{RO}.nnodes"),
        ([*SSPO, *SEPARATE, f"{RO}.n_gpus_per_node=0"], f"{RO}.n_gpus_per_node"),
        ([*SSPO, *SEPARATE, f"{RO}.checkpoint_engine.backend=naive"], f"{RO}.checkpoint_engine.backend"),
        ([*SSPO, *SEPARATE, "trainer.device=cpu"], "trainer.device=cpu"),
        (
            [*SSPO, *SEPARATE, "reward.reward_model.enable=true"],
            "reward.reward_model.enable_resource_pool",
        ),
        ([f"{PL}.loss_mode=gspo", *SEPARATE, f"{RO}.nnodes=0"], f"{RO}.nnodes"),  # every loss mode
        ([*SSPO, *SEPARATE, "skip.rollout_tq.enable=true"], "skip.rollout_tq.enable"),
        (
            [*SSPO, *SEPARATE, "algorithm.rollout_correction.bypass_mode=true"],
            "algorithm.rollout_correction.bypass_mode",
        ),
    ],
)
def test_bad_configs_fail_naming_the_key(overrides, key):
    with pytest.raises(ValueError) as info:
        validate_config(_cfg(*overrides))
    assert key in str(info.value), str(info.value)


def test_sequence_granularity_without_dual_clip_accepts_any_clip_ratio_c():
    # gspo never dual-clips, so clip_ratio_c is irrelevant there
    cfg = _accepted(*SSPO, f"+{PL}.granularity=sequence", "actor_rollout_ref.actor.clip_ratio_c=0.5")
    _holds(cfg, {"actor_rollout_ref.actor.clip_ratio_c": 0.5})
    assert _sspo_loss(cfg) == ("sequence", True, None, None, False)


def test_bypass_mode_is_fine_without_adaptive_clip():
    from sspo.verl_plugin.config_checks import uses_adaptive_clip

    cfg = _accepted(*SSPO, f"+{PL}.adaptive_clip=false", "algorithm.rollout_correction.bypass_mode=true")
    _holds(cfg, {"algorithm.rollout_correction.bypass_mode": True})
    assert _sspo_loss(cfg) == ("subsentence", False, None, None, True)
    assert not uses_adaptive_clip(cfg)  # no old-policy entropy needed, so none missing


def test_unregistered_loss_mode_fails_with_the_fix(monkeypatch):
    with pytest.raises(RuntimeError, match="'sspoo'.*not registered"):
        validate_config(_cfg(f"{PL}.loss_mode=sspoo"))
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    monkeypatch.delitem(POLICY_LOSS_REGISTRY, "sspo")
    with pytest.raises(RuntimeError) as info:
        validate_config(_cfg(*SSPO))
    assert "VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin" in str(info.value)
    assert "pip install" in str(info.value)


def test_unregistered_trainer_fails_with_the_fix(monkeypatch):
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    monkeypatch.delitem(TRAINER_REGISTRY, "sspo")
    with pytest.raises(RuntimeError, match="trainer 'sspo'.*VERL_USE_EXTERNAL_MODULES"):
        validate_config(_cfg(*SSPO))


def test_separate_async_checkpoint_engine_is_looked_up_in_verls_registry():
    """verl looks the weight-sync backend up only in the started workers; this names the key before."""
    from sspo.verl_plugin import assert_checkpoint_engine_available

    with pytest.raises(ValueError, match=f"{RO}.checkpoint_engine.backend='no_such_engine' cannot run here"):
        assert_checkpoint_engine_available(_cfg(*SEPARATE, f"{RO}.checkpoint_engine.backend=no_such_engine"))
    with pytest.raises(ValueError, match=f"{RO}.checkpoint_engine.custom_backend_module='no_such_module'"):
        assert_checkpoint_engine_available(
            _cfg(*SEPARATE, f"{RO}.checkpoint_engine.custom_backend_module=no_such_module")
        )
    assert_checkpoint_engine_available(_cfg(f"{RO}.checkpoint_engine.backend=naive"))  # registered everywhere


def test_skip_rollout_tq_is_fine_when_the_mode_syncs_every_mini_batch():
    cfg = _accepted(*SSPO, f"{TM}=sspo_colocate_async", "skip.rollout_tq.enable=true")
    # colocate_async has no parameter_sync_step: verl's RolloutTqSkip reads 1 for it, as for the trainer's own key
    _holds(
        cfg,
        {
            TM: "sspo_colocate_async",
            "skip.rollout_tq.enable": True,
            "trainer.v1.colocate_async.parameter_sync_step": None,
            "trainer.v1.sspo_colocate_async.parameter_sync_step": None,
        },
    )
