"""sspo.verl_plugin's data path on one micro-batch, against verl's own ppo_loss (no engine, no Ray)."""

from __future__ import annotations

import functools

import pytest
import torch
from verl_batches import ACTOR_OVERRIDES, compose_ppo_config, make_actor_batch

import sspo.loss
from sspo import verl_plugin
from sspo.segmentation import SubsentenceSegmenter
from sspo.verl_plugin import (
    SSPOTrainer,
    build_actor_config,
    fed_policy_loss,
    policy_loss_inputs,
    sspo_ppo_loss,
)

PL = "actor_rollout_ref.actor.policy_loss"
SSPO = [
    f"{PL}._target_=sspo.verl_plugin.SSPOPolicyLossConfig",
    f"{PL}.loss_mode=sspo",
    "trainer.v1.trainer_mode=sspo",
]
TEXTS = [
    "First, add 2 and 3. Then, the answer: 5!",
    "We multiply; so the sum is 12.\n\nCheck: 1,000 ok?",
    "so we add",
    "Finally, 3.14 is pi. Done.",
]
# exercise the whole of ppo_loss: entropy bonus and KL loss too
FULL_PPO = [
    "actor_rollout_ref.actor.entropy_coeff=0.01",
    "actor_rollout_ref.actor.use_kl_loss=true",
    "actor_rollout_ref.actor.kl_loss_coef=0.1",
]


@pytest.fixture(scope="module")
def configs(tiny_model_dir):
    """ActorConfigs (as the worker builds them) keyed by name, all on the tiny model."""

    def actor_config(*overrides):
        return build_actor_config(
            compose_ppo_config(
                [
                    *ACTOR_OVERRIDES,
                    f"actor_rollout_ref.model.path={tiny_model_dir}",
                    *FULL_PPO,
                    *overrides,
                ]
            )
        )

    return {
        "vanilla": actor_config(),
        "gspo": actor_config(f"{PL}.loss_mode=gspo"),
        "sspo": actor_config(*SSPO),
        "sspo_token": actor_config(*SSPO, f"+{PL}.granularity=token", f"+{PL}.adaptive_clip=false"),
        "sspo_sequence": actor_config(*SSPO, f"+{PL}.granularity=sequence", f"+{PL}.adaptive_clip=false"),
        "sspo_capped": actor_config(*SSPO, f"+{PL}.delimiters=[';']", f"+{PL}.max_subsentence_len=3"),
    }


def _micro_batch(tokenizer, seed=0):
    """A micro-batch as the engine hands it to the loss, plus model outputs (log-probs with a graph)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [tokenizer(f"What is {i} + 3?")["input_ids"] for i in range(len(TEXTS))]
    responses = [tokenizer(t)["input_ids"] for t in TEXTS]
    lengths = [len(r) for r in responses]
    data = make_actor_batch(
        prompts,
        responses,
        advantages=[1.0, -1.0, 0.5, -0.5],
        old_log_probs=[-torch.rand(n, generator=g) * 3 for n in lengths],
        entropy=[torch.rand(n, generator=g) * 4 for n in lengths],
    )
    data["ref_log_prob"] = torch.nested.as_nested_tensor(
        [-torch.rand(n, generator=g) * 3 for n in lengths], layout=torch.jagged
    )
    from verl.utils import tensordict_utils as tu

    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=sum(lengths), global_batch_size=len(TEXTS))
    total = sum(len(p) + n for p, n in zip(prompts, lengths, strict=True))
    log_probs = (-torch.rand(total, generator=g) * 3).requires_grad_()
    entropy = (torch.rand(total, generator=g) * 4).requires_grad_()
    return data, log_probs, entropy


def _run(loss_fn, config, data, log_probs, entropy):
    log_probs.grad = entropy.grad = None
    loss, metrics = loss_fn(config, {"log_probs": log_probs, "entropy": entropy}, data)
    loss.backward()
    return (
        loss.detach(),
        log_probs.grad.clone(),
        entropy.grad.clone(),
        {k: _plain(v) for k, v in metrics.items()},
    )


def _plain(metric):
    """A verl ``Metric`` (or a number) as (aggregation, [float, ...])."""
    from verl.utils.metric import Metric

    if isinstance(metric, Metric):
        return str(metric.aggregation), [float(x) for x in metric.values]
    return "plain", [float(metric)]


@pytest.mark.parametrize("mode", ["vanilla", "gspo"])
def test_other_loss_modes_are_exactly_verls_ppo_loss(configs, tiny_tokenizer, mode):
    from verl.workers.utils.losses import ppo_loss

    config = configs[mode]
    data, log_probs, entropy = _micro_batch(config.model_config.tokenizer)
    ours = _run(sspo_ppo_loss, config, data, log_probs, entropy)
    verls = _run(ppo_loss, config, data, log_probs, entropy)
    assert (
        torch.equal(ours[0], verls[0]) and torch.equal(ours[1], verls[1]) and torch.equal(ours[2], verls[2])
    )
    assert ours[3].keys() == verls[3].keys() and "actor/entropy_loss" in ours[3] and "kl_loss" in ours[3]
    assert ours[3] == verls[3]


@pytest.mark.parametrize("sspo_mode, builtin", [("sspo_token", "vanilla"), ("sspo_sequence", "gspo")])
def test_sspo_through_the_wrapper_reproduces_the_builtin(configs, sspo_mode, builtin):
    """The whole data path (padding, entropy bonus, KL, aggregation) around the sspo loss is verl's."""
    from verl.workers.utils.losses import ppo_loss

    data, log_probs, entropy = _micro_batch(configs[builtin].model_config.tokenizer, seed=1)
    ours = _run(sspo_ppo_loss, configs[sspo_mode], data, log_probs, entropy)
    verls = _run(ppo_loss, configs[builtin], data, log_probs, entropy)
    for a, b in zip(ours[:3], verls[:3], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert ours[0] != 0
    # segment ids are fed at every granularity, for the same-range subsentence clip diagnostic
    assert "actor/sspo/clipfrac_at_subsentence" in ours[3]


def _recording_sspo_loss(seen):
    def record(*args, segment_ids=None, entropy=None, **kwargs):
        seen.append(
            {"segment_ids": segment_ids, "entropy": entropy, "response_mask": kwargs["response_mask"]}
        )
        return sspo.verl_plugin.compute_policy_loss_sspo(*args, segment_ids=segment_ids, entropy=entropy, **kwargs)

    return fed_policy_loss(record)


@pytest.mark.parametrize("mode", ["sspo", "sspo_capped"])
def test_sspo_loss_receives_segment_ids_and_old_entropy(configs, monkeypatch, mode):
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    config = configs[mode]
    tokenizer = config.model_config.tokenizer
    data, log_probs, entropy = _micro_batch(tokenizer)
    seen = []
    monkeypatch.setitem(POLICY_LOSS_REGISTRY, "sspo", _recording_sspo_loss(seen))
    loss, grad, _, metrics = _run(sspo_ppo_loss, config, data, log_probs, entropy)

    assert len(seen) == 1
    padded = data.select("responses", "response_mask", "entropy").to_padded_tensor()
    mask = padded["response_mask"].bool()
    pl = config.policy_loss
    expected = SubsentenceSegmenter.from_tokenizer(tokenizer, pl.delimiters, pl.max_subsentence_len)(
        padded["responses"], mask
    )
    assert torch.equal(seen[0]["segment_ids"], expected)
    assert torch.equal(seen[0]["response_mask"], mask)
    assert torch.equal(seen[0]["entropy"], padded["entropy"])  # the OLD policy's entropy, not the current one
    assert int(expected.max()) >= 2  # the punctuation really splits responses
    assert torch.isfinite(loss) and grad.abs().sum() > 0
    assert metrics["actor/sspo/units_per_response"][1][0] > 1
    assert verl_plugin._LOSS_INPUTS.get() is None  # nothing leaks out of the call


def test_verls_default_wrapper_cannot_feed_sspo(configs):
    """Why SSPOTrainer exists: verl's own ppo_loss passes the sspo loss no segment ids."""
    from verl.workers.utils.losses import ppo_loss

    data, log_probs, entropy = _micro_batch(configs["sspo"].model_config.tokenizer)
    with pytest.raises(ValueError, match="segment_ids is required"):
        ppo_loss(configs["sspo"], {"log_probs": log_probs, "entropy": entropy}, data)


def test_missing_old_entropy_fails_clearly(configs):
    data, log_probs, entropy = _micro_batch(configs["sspo"].model_config.tokenizer)
    del data["entropy"]
    with pytest.raises(ValueError, match="adaptive_clip=true needs the old policy's per-token entropy"):
        sspo_ppo_loss(configs["sspo"], {"log_probs": log_probs, "entropy": entropy}, data)


def test_explicit_inputs_win_over_the_context():
    seen = []
    fn = fed_policy_loss(lambda *, a=None, b=None: seen.append((a, b)))
    with policy_loss_inputs(a=1, b=2):
        fn(a=10)
    fn()
    assert seen == [(10, 2), (None, None)]


def test_registrations():
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls

    verl_plugin.ensure_fed_sspo_loss()  # at import, or at the wrapper's first call (import order)
    registered = get_policy_loss_fn("sspo")
    assert registered.is_fed_policy_loss and registered.__wrapped__ is sspo.verl_plugin.compute_policy_loss_sspo
    assert get_trainer_cls("sspo") is SSPOTrainer and issubclass(SSPOTrainer, PPOTrainerSync)
    verl_plugin.ensure_fed_sspo_loss()  # importing twice must not wrap twice
    verl_plugin._register_trainers()
    assert get_policy_loss_fn("sspo") is registered
    status = verl_plugin.registration_status()
    assert status["loss"] and status["trainer"]


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
    assert isinstance(fn, functools.partial) and fn.func is sspo_ppo_loss and list(fn.keywords) == ["config"]
    actor_config = fn.keywords["config"]
    assert isinstance(actor_config, ActorConfig) and actor_config.clip_ratio_high == 0.28
    policy_loss = actor_config.policy_loss
    assert isinstance(policy_loss, sspo.verl_plugin.SSPOPolicyLossConfig)
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


def test_wrapper_restores_the_adapter_if_the_raw_loss_was_registered_last(configs, monkeypatch):
    """Import order: a process that imports sspo before verl registers the raw loss after the plugin."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    monkeypatch.setitem(POLICY_LOSS_REGISTRY, "sspo", sspo.verl_plugin.compute_policy_loss_sspo)
    data, log_probs, entropy = _micro_batch(configs["sspo"].model_config.tokenizer)
    loss, _, _, _ = _run(sspo_ppo_loss, configs["sspo"], data, log_probs, entropy)
    assert torch.isfinite(loss)
    assert POLICY_LOSS_REGISTRY["sspo"].__wrapped__ is sspo.verl_plugin.compute_policy_loss_sspo


def test_installed_loss_fn_survives_rays_pickling(configs):
    """set_loss_fn ships the wrapper to every worker through Ray (cloudpickle), config and tokenizer included."""
    import ray.cloudpickle as cloudpickle

    from sspo.verl_plugin import make_actor_loss_fn

    fn = make_actor_loss_fn(configs["sspo"])
    shipped = cloudpickle.loads(cloudpickle.dumps(fn))
    assert shipped.func is sspo_ppo_loss and shipped.keywords["config"] is not configs["sspo"]
    data, log_probs, entropy = _micro_batch(configs["sspo"].model_config.tokenizer)
    expected = fn(model_output={"log_probs": log_probs, "entropy": entropy}, data=data)[0]
    got = shipped(model_output={"log_probs": log_probs, "entropy": entropy}, data=data)[0]
    assert torch.equal(got, expected) and torch.isfinite(got)
