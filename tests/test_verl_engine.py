"""Proof through verl's REAL actor engine on CPU: vanilla, gspo and sspo optimizer steps via SSPOTrainer's hook.

verl's ``ActorRolloutRefWorker`` -> ``TrainingWorker`` -> ``FSDPEngineWithLMHead`` (FSDP2, eager
attention, gloo) around a tiny Qwen2 model and tokenizer built offline (``sspo.tiny``). The loss
wrapper is installed exactly as on a cluster: ``SSPOTrainer.install_actor_loss`` calls
``actor_rollout_wg.set_loss_fn`` -- here on the real worker object instead of a Ray worker group
(the trainer's ``init()`` needs GPUs and a rollout server; its ``__init__`` runs here).
Old log-probs and old-policy entropy come from the worker's ``compute_log_prob``, as in verl's trainer.
"""

from __future__ import annotations

import math

import pytest
import torch

import sspo.loss
from sspo.cpu_platform import CPU_ACTOR_OVERRIDES, build_cpu_actor, compose_ppo_config, make_actor_batch
from sspo.segmentation import SubsentenceSegmenter
from sspo.verl_plugin import SSPOTrainer, fed_policy_loss

pytestmark = pytest.mark.slow

PL = "actor_rollout_ref.actor.policy_loss"
MODES = {
    "vanilla": [],
    "gspo": [f"{PL}.loss_mode=gspo"],
    "sspo": [
        f"{PL}._target_=sspo.loss.SSPOPolicyLossConfig",
        f"{PL}.loss_mode=sspo",
        f"+{PL}.granularity=subsentence",
        f"+{PL}.adaptive_clip=true",
    ],
}
# a tight clip range so that the second mini-batch (after one step) gets clipped somewhere
COMMON = ["trainer.v1.trainer_mode=sspo", "actor_rollout_ref.actor.clip_ratio_low=0.01",
          "actor_rollout_ref.actor.clip_ratio_high=0.01"]  # fmt: skip
TEXTS = [
    "First, add 2 and 3. Then, the answer: 5!",
    "We multiply; so the sum is 12.\n\nCheck: 1,000 ok?",
    "so we add the numbers to get the sum",
    "Finally, 3.14 is pi. Done.",
]
ADVANTAGES = [1.0, -1.0, 0.5, -0.5]


def _params(actor) -> list[torch.Tensor]:
    return [p.detach().clone() for p in actor.module.parameters()]


def _run_all_modes(model_dir, use_remove_padding: bool) -> dict:
    """One actor; for each mode: install the loss via SSPOTrainer's hook, old log-probs, 2 optimizer steps."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    actor = build_cpu_actor(model_dir, use_remove_padding=use_remove_padding)
    tokenizer = actor.tokenizer
    prompts = [tokenizer(f"Question {i}: what is {i} + 3?")["input_ids"] for i in range(len(TEXTS))]
    responses = [tokenizer(t)["input_ids"] for t in TEXTS]
    results = {"responses": responses, "tokenizer": tokenizer}
    for mode, overrides in MODES.items():
        trainer = SSPOTrainer(  # verl's real __init__ (validate_config first); init() needs GPUs
            compose_ppo_config(
                [
                    *CPU_ACTOR_OVERRIDES,
                    f"actor_rollout_ref.model.path={model_dir}",
                    f"actor_rollout_ref.model.use_remove_padding={use_remove_padding}",
                    *COMMON,
                    *overrides,
                ]
            )
        )
        trainer.actor_rollout_wg = actor.worker  # what init()'s _setup() assigns: here the real worker itself
        trainer.install_actor_loss()

        seen = []  # what the registered loss receives, micro-batch by micro-batch
        inner = sspo.loss.compute_policy_loss_sspo if mode == "sspo" else POLICY_LOSS_REGISTRY[mode]

        def spy(*args, _inner=inner, _seen=seen, **kwargs):
            _seen.append({k: kwargs.get(k) for k in ("segment_ids", "entropy", "response_mask")})
            return _inner(*args, **kwargs)

        batch = make_actor_batch(prompts, responses, advantages=ADVANTAGES)
        actor.compute_old_log_prob(batch)
        before = _params(actor)
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(POLICY_LOSS_REGISTRY, mode, fed_policy_loss(spy) if mode == "sspo" else spy)
            metrics = actor.update_actor(batch, mini_batch_size=2)
        after = _params(actor)
        results[mode] = {
            "metrics": metrics,
            "seen": seen,
            "moved": sum((a - b).abs().sum().item() for a, b in zip(after, before, strict=True)),
            "params": after,
            "old_entropy": batch["entropy"],
            "wrapper": actor.training_worker.loss_fn,
        }
    return results


@pytest.fixture(scope="module")
def runs(tiny_model_dir):
    return {rmpad: _run_all_modes(tiny_model_dir, rmpad) for rmpad in (True, False)}


@pytest.mark.parametrize("use_remove_padding", [True, False])
@pytest.mark.parametrize("mode", list(MODES))
def test_optimizer_steps_through_the_wrapper(runs, mode, use_remove_padding):
    run = runs[use_remove_padding][mode]
    assert run["wrapper"].func.__name__ == "sspo_ppo_loss"  # installed by the trainer hook
    losses = run["metrics"]["actor/pg_loss"]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)  # two mini-batches, two steps
    assert run["metrics"]["grad_norm"][0] > 0  # on-policy first step (later ones may be fully clipped)
    assert run["moved"] > 0
    assert len(run["seen"]) == 2  # the registered loss ran once per micro-batch
    if mode != "sspo":
        assert all(s["segment_ids"] is None and s["entropy"] is None for s in run["seen"])
        assert not any(k.startswith("actor/sspo/") for k in run["metrics"])


@pytest.mark.parametrize("use_remove_padding", [True, False])
def test_sspo_sees_the_segments_of_its_tokens_and_the_old_entropy(runs, use_remove_padding):
    results = runs[use_remove_padding]
    run = results["sspo"]
    segmenter = SubsentenceSegmenter.from_tokenizer(results["tokenizer"])  # defaults, as configured
    seen_rows, seen_entropy = [], []
    for micro in run["seen"]:
        for seg, ent, mask in zip(
            micro["segment_ids"], micro["entropy"], micro["response_mask"], strict=True
        ):
            seen_rows.append(seg[mask])
            seen_entropy.append(ent[mask])
    assert len(seen_rows) == len(TEXTS)
    for i, tokens in enumerate(results["responses"]):
        ids = torch.tensor([tokens])
        expected = segmenter(ids, torch.ones_like(ids, dtype=torch.bool))[0]
        assert torch.equal(seen_rows[i], expected), i
        torch.testing.assert_close(seen_entropy[i], run["old_entropy"][i])
    assert int(seen_rows[0].max()) >= 3  # "First, ... 3. Then, ... answer: 5!" splits
    assert int(seen_rows[2].max()) == 0  # no punctuation: one subsentence

    # SSPO's metrics come back through verl's metric path (the worker's update_actor output)
    metrics = run["metrics"]
    for key in (
        "actor/sspo/clipfrac_unit",
        "actor/sspo/units_per_response",
        "actor/sspo/adaptive_scale_mean",
    ):
        assert len(metrics[key]) == 2 and all(math.isfinite(x) for x in metrics[key]), key
    assert metrics["actor/sspo/units_per_response"][0] > 1
    # ... and survive the trainer's reduction (PPOTrainer._update_actor) into what the logger gets
    from verl.utils.metric import reduce_metrics
    from verl.utils.py_functional import rename_dict

    logged = reduce_metrics(rename_dict(dict(metrics), "actor/"))
    assert math.isfinite(logged["actor/sspo/clipfrac_unit"]) and logged["actor/sspo/units_per_response"] > 1
    assert metrics["actor/sspo/ratio_mean"][0] == pytest.approx(1.0)  # first step: on-policy


@pytest.mark.parametrize("mode", list(MODES))
def test_same_result_with_and_without_remove_padding(runs, mode):
    on, off = runs[True][mode], runs[False][mode]
    assert on["metrics"]["actor/pg_loss"] == pytest.approx(
        off["metrics"]["actor/pg_loss"], rel=1e-4, abs=1e-6
    )
    for a, b in zip(on["params"], off["params"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if mode == "sspo":
        for micro_on, micro_off in zip(on["seen"], off["seen"], strict=True):
            assert torch.equal(micro_on["segment_ids"], micro_off["segment_ids"])


def test_sspo_diagnostics_reported_by_the_worker(runs):
    keys = {k for k in runs[True]["sspo"]["metrics"] if k.startswith("actor/sspo/")}
    assert {"actor/sspo/clipfrac_token", "actor/sspo/tokens_per_unit", "actor/sspo/ratio_max"} <= keys
    assert {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_loss"} <= set(runs[True]["sspo"]["metrics"])
