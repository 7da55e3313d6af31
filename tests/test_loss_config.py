"""SSPOPolicyLossConfig (dataclass, Hydra, verl's ActorConfig) and the loss's bad-input errors."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import ActorConfig, PolicyLossConfig

import sspo  # noqa: F401
from sspo.verl_plugin import SSPOPolicyLossConfig, compute_policy_loss_sspo

KEY = "actor_rollout_ref.actor.policy_loss"


def actor_config(policy_loss, **kw) -> ActorConfig:
    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=kw.pop("clip_ratio_low", 0.2),
        clip_ratio_high=kw.pop("clip_ratio_high", 0.28),
        loss_agg_mode=kw.pop("loss_agg_mode", "token-mean"),
        policy_loss=policy_loss,
        **kw,
    )


def test_registered_and_defaults():
    fn = get_policy_loss_fn("sspo")  # sspo.verl_plugin may register it behind a thin functools.wraps adapter
    assert getattr(fn, "__wrapped__", fn) is compute_policy_loss_sspo
    cfg = SSPOPolicyLossConfig()
    assert isinstance(cfg, PolicyLossConfig)
    assert (cfg.loss_mode, cfg.granularity, cfg.adaptive_clip, cfg.delimiters, cfg.dual_clip) == (
        "sspo",
        "subsentence",
        True,
        None,
        None,
    )
    actor = actor_config(SSPOPolicyLossConfig(granularity="token", delimiters=[";"]))
    assert actor.policy_loss.granularity == "token" and actor.policy_loss["delimiters"] == [";"]
    with pytest.raises(Exception, match="frozen"):
        actor.policy_loss.granularity = "sequence"  # verl's BaseConfig: frozen fields


@pytest.mark.parametrize(
    "field,value",
    [
        ("granularity", "word"),
        ("loss_mode", "vanilla"),
        ("adaptive_clip", "yes"),
        ("adaptive_map", "cubic"),
        ("adaptive_alpha", -1.0),
        ("adaptive_alpha", float("nan")),
        ("adaptive_min", 0.0),
        ("adaptive_min", 1.5),
        ("adaptive_max", 0.5),
        ("adaptive_max", float("nan")),
        ("delimiters", "."),
        ("delimiters", []),
        ("delimiters", [""]),
        ("max_subsentence_len", 0),
        ("max_subsentence_len", 2.5),
        ("dual_clip", "auto"),
    ],
)
def test_bad_field_names_full_hydra_key(field, value):
    with pytest.raises(ValueError, match=f"{KEY}.{field}"):
        SSPOPolicyLossConfig(**{field: value})


def test_omega_conf_to_dataclass_with_dataclass_type():
    cfg = omega_conf_to_dataclass({"granularity": "sequence", "delimiters": [";"]}, SSPOPolicyLossConfig)
    assert isinstance(cfg, SSPOPolicyLossConfig) and cfg.granularity == "sequence" and cfg.delimiters == [";"]


def _compose(overrides: list[str]):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(
            config_name="ppo_trainer",
            overrides=[
                f"{KEY}._target_=sspo.verl_plugin.SSPOPolicyLossConfig",
                f"{KEY}.loss_mode=sspo",
                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
                *overrides,
            ],
        )


def test_hydra_target_through_verls_actor_yaml():
    """verl's real trainer config (pkg://verl.trainer.config), converted as verl's workers do."""
    cfg = _compose(
        [f"+{KEY}.granularity=token", f"+{KEY}.adaptive_clip=false", f"+{KEY}.delimiters=[';','.']"]
    )
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor, ActorConfig)
    pl = actor.policy_loss
    assert isinstance(pl, SSPOPolicyLossConfig)
    assert (pl.granularity, pl.adaptive_clip, list(pl.delimiters)) == ("token", False, [";", "."])
    # Defaults when only the _target_ changes.
    default = omega_conf_to_dataclass(_compose([]).actor_rollout_ref.actor).policy_loss
    assert (default.granularity, default.adaptive_clip) == ("subsentence", True)


def test_hydra_bad_value_names_the_key():
    cfg = _compose([f"+{KEY}.granularity=sentence"])
    with pytest.raises(Exception, match=f"{KEY}.granularity"):
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


# ----------------------------------------------------------------------------------------------
# Bad input to the loss
# ----------------------------------------------------------------------------------------------


def inputs(B: int = 3, T: int = 5):
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(B, T, generator=g)
    log_prob = (old + 0.1 * torch.randn(B, T, generator=g)).requires_grad_()
    adv = torch.randn(B, 1, generator=g).expand(B, T).clone()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    seg = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 1, -1, -1], [0, -1, -1, -1, -1]])
    ent = torch.rand(B, T, generator=g)
    return dict(
        old_log_prob=old, log_prob=log_prob, advantages=adv, response_mask=mask, segment_ids=seg, entropy=ent
    )


def call(cfg=None, **overrides):
    kw = inputs()
    kw.update(overrides)
    cfg = cfg or actor_config(SSPOPolicyLossConfig())
    return compute_policy_loss_sspo(**kw, loss_agg_mode=cfg.loss_agg_mode, config=cfg)


def test_good_input_runs():
    loss, metrics = call()
    assert torch.isfinite(loss) and metrics["actor/sspo/units_per_response"] == pytest.approx(6 / 3)


@pytest.mark.parametrize("name", ["old_log_prob", "log_prob", "advantages", "entropy"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_on_valid_tokens_names_the_tensor(name, bad):
    t = inputs()[name].detach().clone()
    t[1, 2] = bad
    with pytest.raises(ValueError, match=rf"(?<!old_){name} has NaN/inf"):
        call(**{name: t})


def test_non_finite_advantages_on_padding_rejected():
    adv = inputs()["advantages"].clone()
    adv[2, 4] = float("nan")  # padding, but it multiplies the loss: NaN * 0 is NaN
    with pytest.raises(ValueError, match="advantages has NaN/inf .*padding included"):
        call(advantages=adv)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_non_finite_on_padding_is_ignored(mode):
    """Documented safe behaviour: values at padding never matter, not even NaN/inf, whatever the aggregation
    (verl's masked_sum drops NaN for token-mean, but the seq-mean modes multiply by the mask: NaN * 0 is NaN)."""
    kw = inputs()
    cfg = actor_config(SSPOPolicyLossConfig(), loss_agg_mode=mode)
    clean, _ = call(cfg)
    dirty = {k: v.detach().clone() for k, v in kw.items() if k in ("old_log_prob", "log_prob", "entropy")}
    for t in dirty.values():
        t[1, 4] = float("nan")
        t[2, 1] = float("inf")
    dirty["log_prob"].requires_grad_()
    loss, _ = call(cfg, **dirty)
    torch.testing.assert_close(loss, clean)
    (grad,) = torch.autograd.grad(loss, dirty["log_prob"])
    assert torch.isfinite(grad).all() and grad[1, 4] == 0


def test_rollout_is_weights_checked():
    w = torch.ones(3, 5)
    w[0, 0] = float("nan")
    with pytest.raises(ValueError, match="rollout_is_weights has NaN/inf"):
        call(rollout_is_weights=w)
    with pytest.raises(ValueError, match="rollout_is_weights has shape"):
        call(rollout_is_weights=torch.ones(3, 4))


@pytest.mark.parametrize("name", ["old_log_prob", "log_prob", "advantages", "entropy", "segment_ids"])
def test_shape_mismatch_names_the_tensor(name):
    t = inputs()[name]
    with pytest.raises(ValueError, match=rf"{name} has shape \(3, 4\)"):
        call(**{name: t[:, :4]})


@pytest.mark.parametrize(
    "seg,problem",
    [
        ([[0, 0, 2, 2, 3], [0, 1, 1, -1, -1], [0, -1, -1, -1, -1]], "contiguous"),  # gap
        ([[1, 1, 2, 2, 3], [0, 1, 1, -1, -1], [0, -1, -1, -1, -1]], "contiguous"),  # does not start at 0
        ([[0, 1, 0, 1, 2], [0, 1, 1, -1, -1], [0, -1, -1, -1, -1]], "contiguous"),  # goes back
        ([[0, 0, 1, 1, 2], [0, 1, 1, 1, -1], [0, -1, -1, -1, -1]], "padding"),  # covers padding
        ([[0, 0, -1, 1, 2], [0, 1, 1, -1, -1], [0, -1, -1, -1, -1]], "padding"),  # -1 on a valid token
        ([[0, 0, 1, 1, 2], [0, 1, 1, -1, -1], [0, -2, -1, -1, -1]], "padding"),  # below -1
    ],
)
def test_bad_segment_ids(seg, problem):
    with pytest.raises(ValueError, match=f"segment_ids must .*{problem}"):
        call(segment_ids=torch.tensor(seg))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_non_integer_segment_ids_rejected(dtype):
    with pytest.raises(ValueError, match="segment_ids must be an integer tensor"):
        call(segment_ids=inputs()["segment_ids"].to(dtype))


def test_one_dimensional_inputs_rejected():
    """A flattened (packed) batch is not (batch, response_len): named before any tensor work."""
    flat = {k: v.detach().reshape(-1) for k, v in inputs().items()}
    with pytest.raises(ValueError, match=r"response_mask must be \(batch, response_len\), got shape \(15,\)"):
        call(**flat)


def test_missing_segment_ids_and_entropy():
    with pytest.raises(ValueError, match="segment_ids is required for granularity='subsentence'"):
        call(segment_ids=None)
    with pytest.raises(ValueError, match=f"entropy .* required when {KEY}.adaptive_clip=true"):
        call(entropy=None)
    # Allowed: no segment ids for token/sequence, no entropy without adaptive clipping.
    for g in ("token", "sequence"):
        loss, _ = call(cfg=actor_config(SSPOPolicyLossConfig(granularity=g, adaptive_clip=False)), segment_ids=None,
                       entropy=None)  # fmt: skip
        assert torch.isfinite(loss)


def test_negative_entropy_rejected():
    ent = inputs()["entropy"].clone()
    ent[0, 0] = -0.5
    with pytest.raises(ValueError, match="entropy is negative"):
        call(entropy=ent)


@pytest.mark.parametrize("field", ["clip_ratio_low", "clip_ratio_high"])
def test_negative_clip_ratio(field):
    with pytest.raises(ValueError, match=f"actor_rollout_ref.actor.{field}=-0.1"):
        call(cfg=actor_config(SSPOPolicyLossConfig(), **{field: -0.1}))


def test_dual_clip_needs_clip_ratio_c_above_one():
    with pytest.raises(ValueError, match="actor_rollout_ref.actor.clip_ratio_c"):
        call(cfg=actor_config(SSPOPolicyLossConfig(), clip_ratio_c=0.9))


def test_no_config_and_plain_policy_loss_config():
    with pytest.raises(ValueError, match="needs config"):
        compute_policy_loss_sspo(**inputs())
    # A plain PolicyLossConfig(loss_mode="sspo") means SSPO defaults (subsentence, adaptive).
    plain, _ = call(cfg=actor_config(PolicyLossConfig(loss_mode="sspo")))
    default, _ = call()
    torch.testing.assert_close(plain, default)


def test_all_padding_micro_batch_does_not_crash():
    """No valid token at all: metrics are zero counts / NaN statistics, no error (the loss is NaN as verl's)."""
    B, T = 2, 4
    mask = torch.zeros(B, T, dtype=torch.bool)
    _, m = compute_policy_loss_sspo(torch.zeros(B, T), torch.zeros(B, T, requires_grad=True), torch.ones(B, T), mask,
                                    "token-mean", actor_config(SSPOPolicyLossConfig()),
                                    segment_ids=torch.full((B, T), -1), entropy=torch.ones(B, T))  # fmt: skip
    assert m["actor/sspo/units_per_response"] == 0.0 and m["actor/pg_clipfrac"] == 0.0
    assert m["actor/sspo/ratio_mean"] != m["actor/sspo/ratio_mean"]  # NaN: no unit to average over
