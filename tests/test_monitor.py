"""The clip monitor on every loss: SSPO's actor loss wrapper around verl's real ``ppo_loss`` on a fake
micro-batch (verl's v1 layout), for vanilla (GRPO), gspo, geo_mean (GMPO) and sspo."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import ACTOR_OVERRIDES, compose_ppo_config, make_actor_batch

from sspo.monitor import MONITOR_PREFIX, clip_monitor, monitor_clip_range
from sspo.verl_plugin import SSPOTrainer, build_actor_config, sspo_ppo_loss

PL = "actor_rollout_ref.actor.policy_loss"
LOSSES = {
    "vanilla": [],
    "gspo": [f"{PL}.loss_mode=gspo"],
    "geo_mean": [f"{PL}.loss_mode=geo_mean"],
    "sspo": [
        f"{PL}._target_=sspo.verl_plugin.SSPOPolicyLossConfig",
        f"{PL}.loss_mode=sspo",
        "trainer.v1.trainer_mode=sspo",
    ],  # fmt: skip
}
RESPONSES = [
    "First, add 2 and 3. Then, the answer: 5!",
    "We multiply; so the sum is 12. Check: 1,000 ok?",
    "so we add",
    "Finally, 3.14 is pi. Done, and that is all.",
]
GRANULARITIES = ("token", "subsentence", "sequence")
KEYS = {f"{MONITOR_PREFIX}{k}" for k in (
    *(f"clipfrac_at_{g}" for g in GRANULARITIES), *(f"ratio_{s}_{g}" for s in ("min", "max") for g in GRANULARITIES),
    "subsentences_per_response", "tokens_per_subsentence", "clip_lower", "clip_upper",
)}  # fmt: skip


@pytest.fixture(scope="module")
def actor_configs(tiny_model_dir):
    """verl ActorConfigs as the worker builds them, one per loss, on the tiny model (base clip range 0.2)."""
    base = [*ACTOR_OVERRIDES, f"actor_rollout_ref.model.path={tiny_model_dir}"]
    return {name: build_actor_config(compose_ppo_config([*base, *extra])) for name, extra in LOSSES.items()}


@pytest.fixture(scope="module")
def micro_batch(actor_configs):
    """(data, log_probs) with old and new log-probs far enough apart that each granularity clips something."""
    from verl.utils import tensordict_utils as tu

    tokenizer = actor_configs["vanilla"].model_config.tokenizer
    g = torch.Generator().manual_seed(7)
    prompts = [tokenizer(f"What is {i} times 4?")["input_ids"] for i in range(len(RESPONSES))]
    responses = [tokenizer(text)["input_ids"] for text in RESPONSES]
    old = [-torch.rand(len(r), generator=g) * 2 for r in responses]
    data = make_actor_batch(
        prompts, responses, advantages=[1.0, -1.0, 0.7, -0.4], old_log_probs=old,
        entropy=[torch.rand(len(r), generator=g) * 3 for r in responses],
    )  # fmt: skip
    n_response_tokens = sum(len(r) for r in responses)
    tu.assign_non_tensor(
        data, dp_size=1, batch_num_tokens=n_response_tokens, global_batch_size=len(RESPONSES)
    )
    # model output in verl's no-padding layout: prompt then response tokens of each sample, back to back
    pieces = []
    for p, o in zip(prompts, old, strict=True):
        pieces += [-torch.rand(len(p), generator=g), o + 0.6 * torch.randn(len(o), generator=g)]
    return data, torch.cat(pieces)


def _call(config, data, log_probs, monitor):
    """loss, d loss / d log_probs and the metrics as plain numbers."""
    from verl.utils.metric import Metric

    log_probs = log_probs.clone().requires_grad_()
    loss, metrics = sspo_ppo_loss(config, {"log_probs": log_probs}, data, monitor=monitor)
    loss.backward()
    plain = {k: (m.aggregate() if isinstance(m, Metric) else m) for k, m in metrics.items()}
    return loss.detach(), log_probs.grad, plain


@pytest.mark.parametrize("loss", list(LOSSES))
def test_monitor_is_logged_for_every_loss_and_changes_nothing_else(actor_configs, micro_batch, loss):
    data, log_probs = micro_batch
    on_loss, on_grad, on = _call(actor_configs[loss], data, log_probs, monitor=True)
    off_loss, off_grad, off = _call(actor_configs[loss], data, log_probs, monitor=False)
    assert torch.equal(on_loss, off_loss) and torch.equal(on_grad, off_grad) and on_grad.abs().sum() > 0
    assert {k for k in on if k.startswith(MONITOR_PREFIX)} == KEYS and not any(
        k.startswith(MONITOR_PREFIX) for k in off
    )
    assert {k: v for k, v in on.items() if k not in KEYS} == off
    if loss != "sspo":  # with the monitor off, the other losses are verl's ppo_loss exactly
        from verl.workers.utils.losses import ppo_loss

        verl_loss, verl_metrics = ppo_loss(actor_configs[loss], {"log_probs": log_probs}, data)
        assert torch.equal(verl_loss, off_loss) and {k: m.aggregate() for k, m in verl_metrics.items()} == off
    for g in GRANULARITIES:
        assert 0 <= on[f"{MONITOR_PREFIX}clipfrac_at_{g}"] <= 1
        assert on[f"{MONITOR_PREFIX}ratio_min_{g}"] <= on[f"{MONITOR_PREFIX}ratio_max_{g}"]
    # coarser units average the log-ratio: their extremes lie inside the token ratios' extremes
    assert on[f"{MONITOR_PREFIX}ratio_max_sequence"] <= on[f"{MONITOR_PREFIX}ratio_max_subsentence"]
    assert on[f"{MONITOR_PREFIX}ratio_max_subsentence"] <= on[f"{MONITOR_PREFIX}ratio_max_token"]
    assert on[f"{MONITOR_PREFIX}subsentences_per_response"] > 1  # the punctuation really splits responses


def test_monitor_equals_each_builtins_own_clip_fraction(actor_configs, micro_batch):
    """At one base range the monitor's token figure is vanilla's pg_clipfrac, its sequence figure gspo's; and they
    do not depend on the run's loss (SSPO's own loss no longer computes a copy of them)."""
    data, log_probs = micro_batch
    runs = {name: _call(config, data, log_probs, monitor=True)[2] for name, config in actor_configs.items()}
    fracs = {name: [m[f"{MONITOR_PREFIX}clipfrac_at_{g}"] for g in GRANULARITIES] for name, m in runs.items()}
    assert fracs["vanilla"] == fracs["gspo"] == fracs["sspo"]
    assert 0 < fracs["vanilla"][0] and fracs["vanilla"][0] != fracs["vanilla"][2]  # the data really clips
    assert fracs["vanilla"][0] == pytest.approx(runs["vanilla"]["actor/pg_clipfrac"])
    assert fracs["gspo"][2] == pytest.approx(runs["gspo"]["actor/pg_clipfrac"])
    assert not any(k.startswith("actor/sspo/clipfrac_at_") for k in runs["sspo"])
    # GMPO clips the log-ratio: its base range is [e^-0.2, e^0.2], narrower than [0.8, 1.2] on the low side
    assert runs["geo_mean"][f"{MONITOR_PREFIX}clip_lower"] == pytest.approx(math.exp(-0.2))
    assert runs["vanilla"][f"{MONITOR_PREFIX}clip_lower"] == pytest.approx(0.8)


def test_clip_monitor_by_hand():
    """Two responses; response 0 has subsentences {0, 1} and {2}. Base range [0.9, 1.1]."""
    log_w = torch.tensor([[0.3, -0.1, 0.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    segment_ids = torch.tensor([[0, 0, 1], [0, -1, -1]])
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    old = torch.full((2, 3), -1.0)
    old[1, 1:] = float("nan")  # padding is ignored
    m = clip_monitor(old, old + log_w, adv, mask, segment_ids, 0.9, 1.1)
    # token ratios e^0.3 (cut, A>0), e^-0.1, 1, e^-0.5 (cut, A<0): 2 of 4 tokens
    assert m["clipfrac_at_token"] == pytest.approx(2 / 4)
    # subsentence {0,1}: e^0.1 = 1.105 > 1.1 (2 tokens cut), {2}: 1, response 1: e^-0.5 cut: 3 of 4
    assert m["clipfrac_at_subsentence"] == pytest.approx(3 / 4)
    # sequence 0: e^(0.2/3) = 1.069 not cut; sequence 1 cut: 1 of 4
    assert m["clipfrac_at_sequence"] == pytest.approx(1 / 4)
    assert m["ratio_max_token"] == pytest.approx(math.exp(0.3)) and m["ratio_min_token"] == pytest.approx(
        math.exp(-0.5)
    )
    assert m["ratio_max_sequence"] == pytest.approx(math.exp(0.2 / 3))
    assert m["subsentences_per_response"] == pytest.approx(3 / 2) and m[
        "tokens_per_subsentence"
    ] == pytest.approx(4 / 3)
    empty = clip_monitor(old, old, adv, torch.zeros_like(mask), torch.full((2, 3), -1), 0.9, 1.1)
    assert empty["clipfrac_at_token"] == 0 and math.isnan(empty["ratio_max_subsentence"])


def test_clip_monitor_breaks_clipped_tokens_down_by_policy_lag():
    """The same two responses as above, response 0 one version old, response 1 fresh; a third row (padding) is out."""
    log_w = torch.tensor([[0.3, -0.1, 0.0], [-0.5, 0.0, 0.0], [0.9, 0.9, 0.9]])
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, True]])
    segment_ids = torch.tensor([[0, 0, 1], [0, -1, -1], [0, 0, 0]])
    adv = torch.tensor([[1.0] * 3, [-1.0] * 3, [1.0] * 3])
    old = torch.full((3, 3), -1.0)
    m = clip_monitor(old, old + log_w, adv, mask, segment_ids, 0.9, 1.1, lag=torch.tensor([1, 0, -1]))
    # response 1 (lag 0): its one token is cut at every granularity
    assert (m["lag0/tokens"], m["lag0/clipped_at_token"], m["lag0/clipped_at_sequence"]) == (1, 1, 1)
    # response 0 (lag 1): 3 tokens; token: 1 cut (e^0.3), subsentence: 2 ({0,1} at e^0.1), sequence: 0
    assert m["lag1/tokens"] == 3 and m["lag1/clipped_at_token"] == 1
    assert m["lag1/clipped_at_subsentence"] == 2 and m["lag1/clipped_at_sequence"] == 0
    assert m["lag2/tokens"] == 0  # the padding row (-1) is counted nowhere
    # lags of 2 and more share the last bucket
    deep = clip_monitor(old, old + log_w, adv, mask, segment_ids, 0.9, 1.1, lag=torch.tensor([5, 2, 0]))
    assert deep["lag2/tokens"] == 4 and deep["lag0/tokens"] == 3


def test_monitor_clip_range():
    assert monitor_clip_range("vanilla", 0.2, 0.28) == pytest.approx((0.8, 1.28))
    assert monitor_clip_range("cispo", 10.0, 0.2) == pytest.approx(
        (-9.0, 1.2)
    )  # no lower bound: nothing cut below
    assert monitor_clip_range("geo_mean", 0.4, 0.4) == pytest.approx((math.exp(-0.4), math.exp(0.4)))


@pytest.mark.parametrize("value, installed", [(None, True), (True, True), (False, False)])
def test_trainer_installs_the_monitor_switch(tiny_model_dir, value, installed):
    """``sspo.monitor`` (default on) reaches the loss function SSPO's trainer ships to the actor workers."""
    from omegaconf import open_dict

    cfg = compose_ppo_config([*ACTOR_OVERRIDES, f"actor_rollout_ref.model.path={tiny_model_dir}"])
    if value is not None:
        with open_dict(cfg):
            cfg.sspo = {"monitor": value}
    shipped = []
    trainer = SSPOTrainer.__new__(SSPOTrainer)
    trainer.config = cfg
    trainer.actor_rollout_wg = type("WorkerGroup", (), {"set_loss_fn": lambda self, fn: shipped.append(fn)})()
    trainer.install_actor_loss()
    assert shipped[0].func is sspo_ppo_loss and shipped[0].keywords["monitor"] is installed


def test_monitor_key_is_validated():
    from omegaconf import OmegaConf

    from sspo.verl_plugin.config_checks import validate_config

    cfg = compose_ppo_config(["+sspo.monitor=maybe"])
    with pytest.raises(ValueError, match=r"sspo.monitor='maybe'"):
        validate_config(cfg)
    validate_config(OmegaConf.merge(cfg, {"sspo": {"monitor": False}}))


def test_response_log_probs_are_verls_padding(micro_batch):
    """The monitor's vectorised read of the model output equals verl's no_padding_2_padding, padding included."""
    from verl.workers.utils.padding import no_padding_2_padding

    from sspo.verl_plugin.actor_loss import _response_log_probs

    data, log_probs = micro_batch
    expected = no_padding_2_padding(log_probs, data)
    assert torch.equal(_response_log_probs(log_probs, data, expected.shape[1]), expected)
    nested = torch.nested.nested_tensor_from_jagged(log_probs, offsets=data["input_ids"].offsets())
    assert torch.equal(_response_log_probs(nested, data, expected.shape[1]), expected)
