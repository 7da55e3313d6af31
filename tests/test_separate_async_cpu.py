"""verl's ``separate_async`` trainer end to end on CPU (``cluster=cpu_separate``): the trainer and a standalone rollout
that never pauses, weights pushed over the ``cpu_gloo`` checkpoint engine once per batch, 2 updates per batch.

* SSPO: 2 standalone vLLM-CPU replicas on a private Ray head with 3 fake GPUs; staleness threshold 1 with
  ``drop`` (a prompt older than the current policy version is evicted, so every sample trained on was generated
  by the weights just pushed); SIGKILLed after its first checkpoint and run again: it resumes.
* GSPO: 1 standalone replica on the session's two-node cluster (training on one node, rollout on the other, as
  ``2x8gpu_separate`` lays them out); threshold 2 with ``wait``: trains on samples of the previous policy.

Checked every step: the actor ran ``parameter_sync_step`` updates; the rollout holds the weights just pushed (SSPO:
the actor's log-probs of its fresh samples equal vLLM's, which also needs pi_old restored for the second
mini-batch; both: the sync's CRC-32 was verified by every receiver and changes every step); the loss got the H_ref
its trainer computed; every update moved the policy along its advantages.
"""

from __future__ import annotations

import pytest
from helpers import (
    RUN_TIMEOUT_S,
    SAVE_FREQ,
    STEPS,
    Run,
    assert_finished,
    assert_update_along_advantages,
    command,
    killed_then_rerun,
    ray_head,
    read_metrics,
    run_bounded,
    run_env,
)

pytestmark = pytest.mark.slow

CRC = "weight_sync/cpu_gloo/crc32"
#: no validation: these runs check the training loop (CI's other runs validate), ~20 s a validation here
NO_VALIDATION = ("trainer.val_before_train=false", "trainer.test_freq=-1")
STALENESS = "training/off_policy/trajectory_staleness_worst/max"
SPANS = "training/off_policy/trajectory_spans/max"


@pytest.fixture(scope="module")
def sspo_separate(tiny_assets, tmp_path_factory) -> Run:
    """SSPO in separate_async with 2 standalone replicas, killed after checkpoint SAVE_FREQ and run again."""
    out = tmp_path_factory.mktemp("sspo_separate")
    cmd = command(
        "sspo_cpu",
        out,
        "cluster=cpu_separate",
        "trainer.v1.sampler.max_off_policy_threshold=1",
        *NO_VALIDATION,
    )
    with ray_head(num_cpus=16, num_gpus=3) as head:
        return killed_then_rerun(
            cmd, out, run_env(head, tiny_assets), save_freq=SAVE_FREQ, timeout=RUN_TIMEOUT_S
        )


@pytest.fixture(scope="module")
def gspo_separate(ray_head, tiny_assets, tmp_path_factory) -> Run:
    """GSPO in separate_async with 1 standalone replica on the second node, dropless staleness control."""
    out = tmp_path_factory.mktemp("gspo_separate")
    cmd = command(
        "gspo_cpu", out, "cluster=cpu_separate", "actor_rollout_ref.rollout.n_gpus_per_node=1",
        "trainer.v1.sampler.max_off_policy_strategy=wait", *NO_VALIDATION,
    )  # fmt: skip
    result = run_bounded(cmd, log=out / "run.log", timeout=RUN_TIMEOUT_S, env=run_env(ray_head, tiny_assets))
    assert_finished(result, "gspo_cpu cluster=cpu_separate")
    return Run(out, [result.output])


def _all_steps(run: Run) -> dict[int, dict[str, float]]:
    """Step -> metrics over a killed first run (if any) and the run after it."""
    first = run.out / "metrics_run1.jsonl"
    metrics = read_metrics(first) if first.is_file() else {}
    metrics.update({s: m for s, m in run.metrics.items() if "critic/score/mean" in m})
    return metrics


def _assert_every_step_synced_and_updated_twice(metrics: dict[int, dict[str, float]]) -> None:
    steps = sorted(s for s, m in metrics.items() if "critic/score/mean" in m)
    assert steps == list(range(1, STEPS + 1)), steps
    for s in steps:
        m = metrics[s]
        assert m["sspo/local_updates"] == 2, (s, m.get("sspo/local_updates"))  # parameter_sync_step
        assert m["weight_sync/cpu_gloo/bytes"] > 0, s  # every receiver confirmed this sync's CRC-32
    crcs = [metrics[s][CRC] for s in steps]
    assert len(set(crcs)) == len(crcs), crcs  # new weights every step: each sync carried what the actor had


def test_sspo_in_separate_async_trains_on_the_weights_just_pushed(sspo_separate):
    first, second = sspo_separate.outputs
    assert "SSPOSeparateAsyncTrainer" in first
    metrics = _all_steps(sspo_separate)
    _assert_every_step_synced_and_updated_twice(metrics)
    evicted = 0.0
    for s, m in metrics.items():
        if "critic/score/mean" not in m:
            continue
        # fresh samples only (threshold 1, drop): the actor's old log-probs, taken under pi_old restored for the
        # second mini-batch, are vLLM's own: the rollout held the weights pushed at the end of the step before
        assert m[STALENESS] == 0, (s, m[STALENESS])
        assert m["training/rollout_probs_diff_max"] < 1e-3, (s, m["training/rollout_probs_diff_max"])
        # the loss clipped with the H_ref the trainer computed for its mini-batch
        assert m["actor/sspo/entropy_ref"] == pytest.approx(m["actor/sspo/entropy_ref_batch"], rel=1e-5), s
        evicted += m.get("training/off_policy/evicted_samples", 0.0)
    assert evicted > 0  # the drop strategy acted: the warm-up's prompts were a version too old
    assert_update_along_advantages(metrics, sorted(s for s in metrics if "critic/score/mean" in metrics[s]))


def test_sspo_in_separate_async_resumes_from_its_last_checkpoint(sspo_separate):
    first, second = sspo_separate.outputs
    resumed = (
        f"Resuming from {sspo_separate.out / f'global_step_{SAVE_FREQ}'}, setting global step to {SAVE_FREQ}"
    )
    assert resumed in second
    assert sspo_separate.training_steps() == list(range(SAVE_FREQ + 1, STEPS + 1))
    assert (sspo_separate.out / f"global_step_{STEPS}" / "actor").is_dir()


def test_gspo_in_separate_async_trains_on_the_previous_policys_samples(gspo_separate):
    metrics = _all_steps(gspo_separate)
    _assert_every_step_synced_and_updated_twice(metrics)
    steps = sorted(metrics)
    assert not any(k.startswith("actor/sspo/") for s in steps for k in metrics[s])  # loss_mode gspo: verl's
    # the rollout works a batch ahead: samples of the previous policy, never older than the threshold allows
    assert max(metrics[s][STALENESS] for s in steps) >= 1
    assert all(metrics[s][SPANS] <= 2 for s in steps), [metrics[s][SPANS] for s in steps]
    assert_update_along_advantages(metrics, steps)
