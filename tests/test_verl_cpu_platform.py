"""verl's real actor worker on CPU through sspo.cpu_platform (verl's platform plugin layer, FSDP2, gloo)."""

from __future__ import annotations

import pytest
import torch

from sspo.cpu_platform import PlatformCPU, build_cpu_actor, make_actor_batch, use_cpu_platform

TEXTS = [
    "First, add 2 and 3. Then, the answer: 5!",
    "We multiply; so the sum is 12.\n\nCheck: 1,000 ok?",
    "so we add",
    "Finally, 3.14 is pi. Done.",
]


def _batch(tokenizer, advantages=(1.0, -1.0, 0.5, -0.5)):
    prompts = [tokenizer(f"What is {i} + 3?")["input_ids"] for i in range(len(TEXTS))]
    responses = [tokenizer(t)["input_ids"] for t in TEXTS]
    return prompts, responses, make_actor_batch(prompts, responses, advantages=list(advantages))


def test_platform_is_registered_through_verl_plugin_layer():
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    use_cpu_platform()
    use_cpu_platform()  # idempotent
    assert PlatformRegistry.get("cpu") is PlatformCPU
    assert isinstance(get_platform(), PlatformCPU)
    assert get_device_name() == "cpu" and get_nccl_backend() == "gloo"
    # the memory helpers verl's metrics call exist and answer
    assert get_torch_device().max_memory_allocated() == 0
    free, total = get_torch_device().mem_get_info()
    assert 0 < free <= total
    assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is FSDPEngineWithLMHead


@pytest.mark.slow
@pytest.mark.parametrize("use_remove_padding", [True, False])
def test_real_actor_worker_infers_and_trains_on_cpu(tiny_model_dir, use_remove_padding):
    from transformers import AutoModelForCausalLM

    actor = build_cpu_actor(tiny_model_dir, use_remove_padding=use_remove_padding)
    assert type(actor.engine).__name__ == "FSDPEngineWithLMHead"
    assert actor.actor_config.strategy == "fsdp2"
    assert actor.actor_config.model_config.hf_config._attn_implementation == "eager"
    prompts, responses, batch = _batch(actor.tokenizer)

    # infer_batch: log-probs and entropy of every response token equal plain HF on the same weights
    actor.compute_old_log_prob(batch)
    reference = (
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").float().eval()
    )
    with torch.no_grad():
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            ids = torch.tensor([list(p) + list(r)])
            logits = reference(ids).logits[0, len(p) - 1 : -1]
            logp = torch.log_softmax(logits, -1)
            expected_lp = logp.gather(-1, torch.tensor(r)[:, None])[:, 0]
            expected_ent = -(logp.exp() * logp).sum(-1)
            torch.testing.assert_close(batch["old_log_probs"][i], expected_lp, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(batch["entropy"][i], expected_ent, atol=1e-4, rtol=1e-4)

    # update_actor with verl's default loss (vanilla PPO): one optimizer step moves the weights
    before = [p.detach().clone() for p in actor.module.parameters()]
    metrics = actor.update_actor(batch)
    assert torch.isfinite(torch.tensor(metrics["actor/pg_loss"])).all()
    assert metrics["grad_norm"][0] > 0
    moved = sum(
        (p.detach() - q).abs().sum().item() for p, q in zip(actor.module.parameters(), before, strict=True)
    )
    assert moved > 0


@pytest.mark.slow
def test_update_after_old_log_prob_uses_training_micro_batches(tiny_model_dir):
    """The inference pass must not leave its micro-batch size on the batch for the update."""
    actor = build_cpu_actor(
        tiny_model_dir,
        use_remove_padding=False,
        overrides=[
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        ],
    )
    _, _, batch = _batch(actor.tokenizer)
    actor.compute_old_log_prob(batch)
    assert "micro_batch_size_per_gpu" not in batch.keys()
    # mini-batches of 2 are not divisible by the inference micro-batch of 4: this failed before
    metrics = actor.update_actor(batch, mini_batch_size=2)
    assert len(metrics["actor/pg_loss"]) >= 2 and all(map(torch.isfinite, torch.tensor(metrics["actor/pg_loss"])))


def test_make_actor_batch_rejects_bad_input(tiny_tokenizer):
    with pytest.raises(ValueError, match="differ in length"):
        make_actor_batch([[1, 2]], [[3], [4]], advantages=[1.0, 2.0])
    with pytest.raises(ValueError, match="at least one token"):
        make_actor_batch([[1, 2]], [[]], advantages=[1.0])
