"""SSPO's actor loss (sspo.verl_plugin.actor_loss, policy_loss) on one micro-batch, against verl's own ppo_loss,
and the one registration path (no engine, no Ray)."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import ACTOR_OVERRIDES, compose_ppo_config, make_actor_batch

from sspo import verl_plugin
from sspo.verl_plugin import (
    SSPOTrainer,
    build_actor_config,
    compute_policy_loss_sspo,
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
# The tiny tokenizer's pieces of TEXTS (asserted in the test, so that the ids below stay readable off them).
PIECES = [
    ["First", ",", " add", " ", "2", " and", " ", "3", ".", " Then", ",", " the", " answer", ":", " ", "5", "!"],
    ["W", "e", " multiply", ";", " so", " the", " sum", " is", " ", "1", "2", ".", "\n", "\n", "Check", ":", " ",
     "1", ",", "0", "0", "0", " ", "o", "k", "?"],
    ["s", "o", " we", " add"],
    ["F", "in", "ally", ",", " ", "3", ".", "1", "4", " is", " ", "p", "i", ".", " ", "D", "o", "n", "e", "."],
]  # fmt: skip
# Segment ids written by hand from the rules in docs/sspo.md: a delimiter closes (and belongs to) its subsentence;
# "." / "," between digits ("3.14", "1,000") does not split; "12." before a newline does; each "\n" closes one.
SEGMENT_IDS = {
    "sspo": [  # default delimiters, no cap
        [0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4],
        [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5],
        [0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2],
    ],
    "sspo_capped": [  # delimiters [";"], max_subsentence_len 3: runs of 3 tokens, ";" closes "We multiply;" early
        [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5],
        [0, 0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8, 9],
        [0, 0, 0, 1],
        [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6],
    ],
}  # fmt: skip
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
    verls = _run(ppo_loss, config, data, log_probs, entropy)
    for monitor in (False, True):  # the clip monitor only adds its own metrics (tests/test_monitor.py)
        ours = _run(functools.partial(sspo_ppo_loss, monitor=monitor), config, data, log_probs, entropy)
        assert all(torch.equal(a, b) for a, b in zip(ours[:3], verls[:3], strict=True))
        mine = {k: v for k, v in ours[3].items() if not k.startswith("actor/monitor/")}
        assert mine.keys() == verls[3].keys() and "actor/entropy_loss" in mine and "kl_loss" in mine
        assert mine == verls[3]
        assert any(k.startswith("actor/monitor/") for k in ours[3]) == monitor


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
    assert "actor/monitor/clipfrac_at_subsentence" in ours[3]


def _record_core_inputs(monkeypatch) -> list[dict]:
    """Record what the registered loss hands to the core (``sspo.loss.sspo_token_losses``), then run it."""
    from sspo.verl_plugin import policy_loss

    seen, core = [], policy_loss.sspo_token_losses

    def record(old_log_prob, log_prob, advantages, response_mask, *args, **kwargs):
        seen.append({**kwargs, "response_mask": response_mask})
        return core(old_log_prob, log_prob, advantages, response_mask, *args, **kwargs)

    monkeypatch.setattr(policy_loss, "sspo_token_losses", record)
    return seen


@pytest.mark.parametrize("mode", ["sspo", "sspo_capped"])
def test_sspo_loss_receives_segment_ids_and_old_entropy(configs, monkeypatch, mode):
    from sspo.verl_plugin import policy_loss

    config = configs[mode]
    tokenizer = config.model_config.tokenizer
    data, log_probs, entropy = _micro_batch(tokenizer)
    seen = _record_core_inputs(monkeypatch)
    loss, grad, _, metrics = _run(sspo_ppo_loss, config, data, log_probs, entropy)

    assert len(seen) == 1
    padded = data.select("responses", "response_mask", "entropy").to_padded_tensor()
    mask = padded["response_mask"].bool()
    pieces = [
        [tokenizer.decode([int(i)]) for i in row[m]] for row, m in zip(padded["responses"], mask, strict=True)
    ]
    assert pieces == PIECES
    width = mask.shape[1]
    expected = torch.tensor([ids + [-1] * (width - len(ids)) for ids in SEGMENT_IDS[mode]])  # -1 on padding
    assert mask.sum(1).tolist() == [len(ids) for ids in SEGMENT_IDS[mode]]
    assert seen[0]["segment_ids"].tolist() == expected.tolist()
    assert torch.equal(seen[0]["response_mask"], mask)
    assert torch.equal(seen[0]["entropy"], padded["entropy"])  # the OLD policy's entropy, not the current one
    assert torch.isfinite(loss) and grad.abs().sum() > 0
    assert metrics["actor/sspo/units_per_response"][1][0] > 1
    assert policy_loss._LOSS_CALL.get() is None  # nothing leaks out of the call


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


def test_explicit_inputs_win_over_the_context(configs, monkeypatch):
    seen = _record_core_inputs(monkeypatch)
    B, T = 2, 3
    args = (torch.zeros(B, T), torch.zeros(B, T, requires_grad=True), torch.ones(B, T), torch.ones(B, T, dtype=torch.bool))
    context, explicit = torch.tensor([[0, 0, 1], [0, 1, 1]]), torch.tensor([[0, 1, 2], [0, 0, 0]])
    with policy_loss_inputs(segment_ids=context, entropy=torch.ones(B, T), entropy_ref=2.0):
        compute_policy_loss_sspo(*args, config=configs["sspo"], segment_ids=explicit)
        compute_policy_loss_sspo(*args, config=configs["sspo"])
    assert torch.equal(seen[0]["segment_ids"], explicit) and seen[0]["entropy_ref"] == 2.0
    assert torch.equal(seen[1]["segment_ids"], context)
    with pytest.raises(TypeError, match="unexpected inputs"):
        compute_policy_loss_sspo(*args, config=configs["sspo"], segment_id=context)


def test_registrations_happen_once_in_the_plugin():
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls

    assert get_policy_loss_fn("sspo") is compute_policy_loss_sspo  # the function itself: no adapter
    assert get_trainer_cls("sspo") is SSPOTrainer and issubclass(SSPOTrainer, PPOTrainerSync)
    verl_plugin.register()  # importing the plugin again changes nothing
    assert get_policy_loss_fn("sspo") is compute_policy_loss_sspo
    status = verl_plugin.registration_status()
    assert status["loss"] and status["trainer"]


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


def test_without_the_update_batchs_entropy_reference_the_loss_refuses(configs):
    """A micro-batch's own mean entropy would make the adaptive clip depend on how the batch was split."""
    from sspo.verl_plugin.actor_loss import ENTROPY_REF_KEY

    data, log_probs, entropy = _micro_batch(configs["sspo"].model_config.tokenizer)
    del data[ENTROPY_REF_KEY]
    with pytest.raises(ValueError, match=f"carries no '{ENTROPY_REF_KEY}'.*sspo_sync"):
        sspo_ppo_loss(configs["sspo"], {"log_probs": log_probs, "entropy": entropy}, data)


def test_minima_and_maxima_are_reduced_by_min_and_max_not_averaged(configs):
    """verl averages every policy-loss metric over micro-batches; the loss's extremes leave as MIN/MAX metrics."""
    from verl.utils.metric import AggregationType, Metric

    data, log_probs, entropy = _micro_batch(configs["sspo"].model_config.tokenizer)
    _, metrics = sspo_ppo_loss(configs["sspo"], {"log_probs": log_probs, "entropy": entropy}, data)
    for key in ("actor/sspo/ratio_min", "actor/sspo/ratio_max", "actor/sspo/adaptive_scale_max"):
        metric = metrics[key]
        assert isinstance(metric, Metric), key
        assert metric.aggregation == (AggregationType.MIN if key.endswith("_min") else AggregationType.MAX), key
    assert Metric.aggregate_dp([Metric(AggregationType.MAX, 1.0), Metric(AggregationType.MAX, 3.0)]) == 3.0
