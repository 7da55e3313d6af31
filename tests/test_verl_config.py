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


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # verl's defaults: vanilla with the sync trainer
        [f"{PL}.loss_mode=gspo"],
        [f"{PL}.loss_mode=gspo", "trainer.v1.trainer_mode=sspo"],  # one trainer runs every loss mode
        [f"{PL}.loss_mode=gspo", "trainer.v1.trainer_mode=sspo_colocate_async"],
        [*SSPO, "trainer.v1.trainer_mode=sspo_sync"],
        [*SSPO, "trainer.v1.trainer_mode=sspo_colocate_async"],
        [*SSPO, *SEPARATE],
        SSPO,
        [*SSPO, f"+{PL}.granularity=token", f"+{PL}.adaptive_clip=false"],
        [
            *SSPO,
            f"+{PL}.granularity=sequence",
            f"+{PL}.delimiters=[',','.','。']",
            f"+{PL}.max_subsentence_len=64",
        ],
    ],
)
def test_valid_configs_pass(overrides):
    validate_config(_cfg(*overrides))


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
    validate_config(_cfg(*SSPO, f"+{PL}.granularity=sequence", "actor_rollout_ref.actor.clip_ratio_c=0.5"))


def test_bypass_mode_is_fine_without_adaptive_clip():
    validate_config(
        _cfg(*SSPO, f"+{PL}.adaptive_clip=false", "algorithm.rollout_correction.bypass_mode=true")
    )


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
    validate_config(_cfg(*SSPO, "trainer.v1.trainer_mode=sspo_colocate_async", "skip.rollout_tq.enable=true"))
