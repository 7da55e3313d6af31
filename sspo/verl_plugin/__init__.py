"""SSPO's verl integration; importing it is the one place anything is registered in verl.

verl imports this package in every process it starts: it is the project's ``verl.plugins`` entry point
(``import verl`` loads it), or ``VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin`` for code shipped by Ray
``working_dir``. :func:`register` then puts into verl's registries:

* policy loss ``sspo``: :func:`sspo.verl_plugin.policy_loss.compute_policy_loss_sspo` (:mod:`sspo.loss`
  aggregated by verl's ``agg_loss``);
* trainers ``sspo_sync`` (also ``sspo``), ``sspo_colocate_async``, ``sspo_separate_async``
  (:mod:`sspo.verl_plugin.trainers`): verl's trainer of each mode plus SSPO's hooks, which install SSPO's
  actor loss (:mod:`sspo.verl_plugin.actor_loss`) on every actor worker;
* agent loop ``sspo_single_turn`` (:mod:`sspo.verl_plugin.seeded_rollout`).

Import order needs no care: nothing here runs before verl's registries exist (verl loads plugins at the
end of its own ``__init__``), and :mod:`sspo.loss` imports only torch. The modules:

* :mod:`~sspo.verl_plugin.policy_loss`: verl's config class and signature for the loss;
* :mod:`~sspo.verl_plugin.actor_loss`: the loss's extra inputs per micro-batch (segment ids, entropy, H_ref);
* :mod:`~sspo.verl_plugin.trainers`: the trainers and their hooks;
* :mod:`~sspo.verl_plugin.config_checks`: config-time checks of key combinations and registrations;
* :mod:`~sspo.verl_plugin.weight_sync`: a time limit on each rollout weight sync;
* :mod:`~sspo.verl_plugin.seeded_rollout`: agent loop ``sspo_single_turn``, a seed per sample under verl's
  ``full_determinism`` (reproducible rollouts with distinct samples in a group).

The hooks used, and every piece of verl/vLLM runtime state the project sets or reads: ``docs/verl-integration.md``.
"""

from __future__ import annotations

from verl.experimental.agent_loop.agent_loop import register as register_agent_loop
from verl.trainer.ppo.core_algos import register_policy_loss
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer

from sspo.verl_plugin.actor_loss import (
    build_actor_config,
    make_actor_loss_fn,
    sspo_loss_inputs,
    sspo_ppo_loss,
)
from sspo.verl_plugin.config_checks import (
    assert_checkpoint_engine_available,
    assert_loss_registered,
    assert_trainer_registered,
    registration_status,
    validate_config,
    validate_trainer_mode,
)
from sspo.verl_plugin.policy_loss import (
    LOSS_MODE,
    SSPOPolicyLossConfig,
    compute_policy_loss_sspo,
    policy_loss_inputs,
)
from sspo.verl_plugin.seeded_rollout import AGENT_LOOP, SeededSingleTurnAgentLoop
from sspo.verl_plugin.trainers import (
    LEGACY_TRAINER_MODE,
    SSPO_TRAINERS,
    VERL_TRAINER_MODES,
    SSPOColocateAsyncTrainer,
    SSPOSeparateAsyncTrainer,
    SSPOSyncTrainer,
    SSPOTrainer,
    SSPOTrainerMixin,
    verl_trainer_mode,
)

__all__ = [
    "LEGACY_TRAINER_MODE",
    "AGENT_LOOP",
    "LOSS_MODE",
    "SSPO_TRAINERS",
    "VERL_TRAINER_MODES",
    "SSPOColocateAsyncTrainer",
    "SSPOPolicyLossConfig",
    "SSPOSeparateAsyncTrainer",
    "SSPOSyncTrainer",
    "SSPOTrainer",
    "SSPOTrainerMixin",
    "SeededSingleTurnAgentLoop",
    "assert_checkpoint_engine_available",
    "assert_loss_registered",
    "assert_trainer_registered",
    "build_actor_config",
    "compute_policy_loss_sspo",
    "make_actor_loss_fn",
    "policy_loss_inputs",
    "register",
    "registration_status",
    "sspo_loss_inputs",
    "sspo_ppo_loss",
    "validate_config",
    "validate_trainer_mode",
    "verl_trainer_mode",
]


def register() -> None:
    """Put the ``sspo`` loss, SSPO's trainers and agent loop into verl's registries (idempotent)."""
    register_policy_loss(LOSS_MODE)(compute_policy_loss_sspo)
    register_agent_loop(AGENT_LOOP)(SeededSingleTurnAgentLoop)
    for name, cls in SSPO_TRAINERS.items():
        if TRAINER_REGISTRY.get(name) is not cls:
            register_trainer(name)(cls)


register()
