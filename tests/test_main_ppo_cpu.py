"""verl's own trainer end to end on CPU: the recipe's CPU rows through ``sspo-train`` -> ``main_ppo``.

One shared Ray cluster of two nodes for the session (two raylets on this machine, one fake GPU = one CPU
worker slot each), one tiny warmed-up model, and one real run per algorithm, each bounded in time:

* SSPO: a Ray job through ``recipe/scripts/submit.sh`` (what ``make submit`` runs; working_dir shipped, not
  installed) across the two nodes in the GPU rows' layout (``cluster=cpu_dp2 trainer.nnodes=2
  trainer.n_gpus_per_node=1``: 2 data-parallel FSDP ranks, one per node, 2 vLLM-CPU replicas, token-budget
  micro-batches, packed sequences) with reproducible rollouts (``rollout.full_determinism=true``); stopped with
  ``ray job stop`` one step after its first checkpoint and submitted again: it must continue from that
  checkpoint (step counter, data order) and repeat the step it ran twice exactly;
* GSPO (and SSPO a second time): in verl's ``separate_async`` trainer mode (``test_separate_async_cpu.py``);
* GRPO: on the 7B row's engine (``test_engine_cpu.py``).

Every row's every step must move the policy along its advantages (``sspo.update_check``: no learning
threshold). Plus ``sspo.tools.evaluation generate`` on vLLM-CPU and a weight-sync failure that must end the run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from helpers import (
    REPO,
    RUN_TIMEOUT_S,
    SAVE_FREQ,
    STEPS,
    STEPS_PER_PASS,
    Run,
    assert_finished,
    assert_update_along_advantages,
    command,
    read_metrics,
    run_bounded,
    run_env,
    stopped_then_resubmitted,
)

CLIP_MONITOR_KEYS = (
    "actor/monitor/clipfrac_at_token",
    "actor/monitor/clipfrac_at_subsentence",
    "actor/monitor/clipfrac_at_sequence",
)
PROBLEM = re.compile(r"What is (\d) \+ (\d)\?")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sspo_run(ray_head, tiny_assets, tmp_path_factory) -> Run:
    """SSPO as a Ray job across the two nodes in the GPU rows' layout, stopped one step after its first
    checkpoint and resubmitted (module docstring)."""
    shared = tmp_path_factory.mktemp("shared_outputs")
    out = shared / "sspo" / "sspo_cpu"  # where the README says: $OUTPUT_DIR/<project>/<experiment>
    args = [
        "experiment=sspo_cpu", "cluster=cpu_dp2", "trainer.nnodes=2", "trainer.n_gpus_per_node=1",
        "actor_rollout_ref.rollout.full_determinism=true", "sspo.update_check=true",
        f"trainer.total_training_steps={STEPS}", f"trainer.save_freq={SAVE_FREQ}", f"trainer.test_freq={STEPS}",
        "trainer.logger=[console,file,tensorboard]", f"trainer.rollout_data_dir={out}/rollouts",
        f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={out}/metrics.jsonl",
    ]  # fmt: skip
    env = {"OUTPUT_DIR": str(shared), "SSPO_TINY_DIR": str(tiny_assets)}
    return stopped_then_resubmitted(ray_head, env, args, out, save_freq=SAVE_FREQ, timeout=RUN_TIMEOUT_S)


# ------------------------------------------------------------------------------------------ the rows run


def test_sspo_metrics_reach_verl_logger_from_the_workers(sspo_run):
    """``set_loss_fn`` reached the Ray actor workers: the loss's own metrics are in verl's logged metrics."""
    steps = sspo_run.training_steps()
    assert steps, sspo_run.outputs[-1][-3000:]
    for s in steps:
        m = sspo_run.metrics[s]
        assert all(k in m and 0.0 <= m[k] <= 1.0 for k in CLIP_MONITOR_KEYS), (s, sorted(m))
        assert m["actor/sspo/units_per_response"] > 1.0  # real subsentences of the tiny model's answers
        assert round(m["perf/total_num_tokens"] / m["global_seqlen/mean"]) == 2  # two data-parallel ranks
        # packed rows: the actor's log-probs of the sampled tokens are vLLM's (rows that saw each other would not be)
        assert m["training/rollout_probs_diff_max"] < 1e-3, (s, m["training/rollout_probs_diff_max"])
        # every micro-batch on every rank clipped with its mini-batch's H_ref, computed on the driver: the loss
        # reports the mean of what its micro-batches received, which lies within the step's mini-batch values
        low, high = m["actor/sspo/entropy_ref_batch_min"], m["actor/sspo/entropy_ref_batch_max"]
        assert low * (1 - 1e-5) <= m["actor/sspo/entropy_ref"] <= high * (1 + 1e-5), s
        assert low < high, s  # 4 mini-batches a step, each its own H_ref
        assert m["sspo/local_updates"] == 1, s  # sync: one actor update call a step


def _both_runs(run: Run) -> dict[int, dict[str, float]]:
    """Step -> metrics over the first run (to its stop) and the resumed one (after it)."""
    metrics = read_metrics(run.out / "metrics_run1.jsonl")
    metrics.update({s: m for s, m in run.metrics.items() if "critic/score/mean" in m})
    return metrics


def test_sspos_updates_moved_the_policy_along_its_advantages(sspo_run):
    """A loss that stopped moving the policy, or moved it against its advantages, fails here (sspo.update_check;
    the lr-0 control in make test-extra must fail it)."""
    metrics = _both_runs(sspo_run)
    assert_update_along_advantages(metrics, sspo_run.training_steps(metrics))


# ------------------------------------------------------------------------------------------ kill and resume


def test_stopped_job_resumes_from_its_last_checkpoint(sspo_run, tiny_assets):
    first, second = sspo_run.outputs
    resumed = sspo_run.training_steps()
    # the resubmitted job continued the step counter from the checkpoint, and finished the run
    assert resumed == list(range(SAVE_FREQ + 1, STEPS + 1)), resumed
    assert (
        f"Resuming from {sspo_run.out / f'global_step_{SAVE_FREQ}'}, setting global step to {SAVE_FREQ}"
        in second
    )
    assert (sspo_run.out / f"global_step_{STEPS}" / "actor").is_dir()
    # ... and the data order: step k of the rerun got rows (k-1)*12 .. k*12 of the training file
    import pyarrow.parquet as pq

    rows = pq.read_table(tiny_assets / "train.parquet", columns=["extra_info"]).to_pylist()
    batch = len(rows) // 30 // STEPS_PER_PASS  # prompts per step: 36 problems / 3 steps
    for step in (SAVE_FREQ + 1, STEPS):
        dumped = [json.loads(line)["input"] for line in (sspo_run.out / "rollouts" / f"{step}.jsonl").open()]
        seen = {PROBLEM.search(text).groups() for text in dumped}
        expected = {
            PROBLEM.search(r["extra_info"]["problem"]).groups()
            for r in rows[(step - 1) * batch : step * batch]
        }
        assert seen == expected, step


# ------------------------------------------------------------------------------------------ evaluation


def test_generate_runs_on_vllm_cpu_and_its_file_scores(tiny_assets, tmp_path):
    out = tmp_path / "gen.jsonl"
    result = run_bounded(
        [sys.executable, "-m", "sspo.tools.evaluation", "generate", "--device", "cpu", "--model", str(tiny_assets / "model"),
         "--data-dir", str(tiny_assets), "--benchmarks", "tiny_add", "--k", "2", "--temperature", "1.0",
         "--max-tokens", "24", "--max-model-len", "256", "--out", str(out)],
        log=tmp_path / "generate.log", timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert_finished(result, "sspo.tools.evaluation generate --device cpu")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 36 * 2 and {r["benchmark"] for r in rows} == {"tiny_add"}
    # the warmed-up model answers in the task's format: a boxed sum in most samples
    correct = sum(f"\\boxed{{{r['ground_truth']}}}" in r["response"] for r in rows)
    assert correct > len(rows) // 4, [r["response"] for r in rows[:4]]
    csv_path = tmp_path / "table.csv"
    scored = subprocess.run(
        [sys.executable, "-m", "sspo.tools.evaluation", "score", "--run", f"tiny={out}", "--csv", str(csv_path),
         "--policy", "training"],  # boxed answers only, as counted above (the evaluation policy also reads prose)
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    row = next(r for r in csv_path.read_text().splitlines() if r.startswith("tiny,tiny_add,"))
    assert float(row.split(",")[5]) == pytest.approx(correct / len(rows), abs=1e-6)


# ------------------------------------------------------------------------------------------ cluster job


def test_submit_sh_runs_a_real_cpu_training_job_on_two_nodes(sspo_run):
    """The job's files where the README says, and its two data-parallel ranks, one on each node."""
    first, second = sspo_run.outputs
    assert "SSPOSyncTrainer" in second
    assert (sspo_run.out / "latest_checkpointed_iteration.txt").read_text().strip() == str(STEPS)
    dumps = {p.name for p in (sspo_run.out / "validation_generations").iterdir()}
    assert {"0.jsonl", f"{STEPS}.jsonl"} <= dumps, dumps
    from sspo.tools.report import load_run

    run = load_run(f"sspo={sspo_run.out / 'tensorboard'}")  # both jobs' event files: every step
    assert sorted(run.metrics["critic/score/mean"]) == list(range(1, STEPS + 1))
    # the cluster's two nodes have one fake GPU each, and the job's pools took both: one rank on each node
    fit = r"^\[ok\s*\] GPUs: trainer\.nnodes=2 x trainer\.n_gpus_per_node=1 fit .*: 1 GPUs, \d+ CPUs; node .*: 1 GPUs"
    for output in (first, second):
        assert re.search(fit, output, flags=re.M), output[:3000]


def test_the_step_run_twice_repeats_exactly(sspo_run):
    """``rollout.full_determinism=true``: the step the first job ran after its checkpoint, run again by the
    resubmitted job from that checkpoint, draws the same samples (distinct within each group) and makes the same
    update, on two data-parallel ranks and two vLLM replicas."""
    step = SAVE_FREQ + 1
    first = read_metrics(sspo_run.out / "metrics_run1.jsonl")[step]
    again = sspo_run.metrics[step]
    for key in ("actor/pg_loss", "actor/grad_norm", "actor/pg_clipfrac", "actor/sspo/entropy_ref",
                "actor/sspo/clipfrac_unit", "critic/score/mean", "response_length/mean"):  # fmt: skip
        assert again[key] == pytest.approx(first[key], rel=1e-3, abs=1e-9), key
    samples = [
        sorted((r["input"], r["uid"].split("_")[1], r["output"]) for r in map(json.loads, path.open()))
        for path in (
            sspo_run.out / "rollouts_run1" / f"{step}.jsonl",
            sspo_run.out / "rollouts" / f"{step}.jsonl",
        )
    ]
    assert samples[0] == samples[1]
    groups: dict[str, set[str]] = {}
    for prompt, _, output in samples[0]:
        groups.setdefault(prompt, set()).add(output)
    assert sum(len(outputs) > 1 for outputs in groups.values()) > len(groups) // 2, (
        groups
    )  # not one seed per group


# ------------------------------------------------------------------------------------------ failing loudly


def test_a_weight_sync_failure_ends_the_run_with_the_workers_error(ray_head, tiny_assets, tmp_path):
    """verl's stock vLLM replica on vLLM-CPU: the sync's receiver fails inside the vLLM worker, the sender
    would wait forever. The run must end by itself (non-zero exit) and show the worker's error."""
    modules = "sspo.cpu.bootstrap,sspo.verl_plugin,stock_vllm_replica"
    result = run_bounded(
        command(
            "grpo_cpu", tmp_path / "out",
            f"ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES='{modules}'",
            f"+ray_kwargs.ray_init.runtime_env.env_vars.PYTHONPATH={REPO / 'tests' / 'fault_injection'}",
            "sspo.weight_sync_timeout_s=10",
        ),
        log=tmp_path / "run.log", timeout=RUN_TIMEOUT_S, env=run_env(ray_head, tiny_assets),
    )  # fmt: skip
    assert result.returncode != 0
    assert "WeightSyncTimeout" in result.output and "did not finish within 10 s" in result.output
    assert "weight_loader" in result.output  # the vLLM worker's own error reached the driver's console
