"""The 7B paper row's engine through verl's ``main_ppo`` on CPU: ``experiment=engine_7b_cpu algo=grpo``.

The row is ``sspo_qwen2.5-math-7b`` with only the model, the data and the device swapped
(``recipe/config/experiment/engine_7b_cpu.yaml``); ``algo=grpo`` makes it the GRPO 7B row's engine, and CI's
GRPO row. One run (4 agent-loop and 4 reward workers instead of the row's 8 and 8: memory), under the progress
view, on a private one-node Ray head with 2 fake GPUs (the vLLM replica's
tensor parallel size 2 needs both on one node). ``SSPO_ENGINE_PROBE=1`` makes each actor rank report what its
engine ran (``sspo.cpu.engine_probe``); Ray's state API lists the run's actors afterwards. What cannot run on
CPU and where it stops: docs/gpu-settings.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest
from helpers import (
    REPO,
    RUN_TIMEOUT_S,
    STEPS,
    Run,
    actor_classes,
    assert_finished,
    assert_update_along_advantages,
    ray_head,
    recipe_command,
    run_bounded,
    run_env,
)
from omegaconf import OmegaConf

from sspo.cpu.engine_probe import PROBE_ENV, PROBE_TAG

VAL_N = OmegaConf.load(REPO / "recipe/config/dataset/tiny_add.yaml").actor_rollout_ref.rollout.val_kwargs.n
VAL_ACC = f"val-core/tiny_add/acc/mean@{VAL_N}"
STALENESS = "training/off_policy/trajectory_staleness_worst/max"
#: the actor's token probabilities vs vLLM's, both in bf16 (fp32 rows: max < 1e-3, test_main_ppo_cpu.py): the
#: mean over the step's tokens and the max; measured here: see docs/gpu-settings.md
BF16_PROBS_DIFF_MEAN = 0.02
#: agent-loop and reward workers in CI's run: the row's 8 and 8 ran here once (all tests passed) at a machine peak of
#: 20.3 GB, over CI's ~18 GB budget; each worker is a Ray process of ~0.4 GB, and 4 take the same code paths
WORKERS = 4
BF16_PROBS_DIFF_MAX = 0.5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine_run(tiny_assets, tmp_path_factory) -> tuple[Run, Counter]:
    out = tmp_path_factory.mktemp("engine_7b_cpu")
    cmd = recipe_command(
        "engine_7b_cpu", out, "algo=grpo", "sspo.update_check=true",
        f"+ray_kwargs.ray_init.runtime_env.env_vars.{PROBE_ENV}=1",
        f"actor_rollout_ref.rollout.agent.num_workers={WORKERS}", f"reward.num_workers={WORKERS}",
        "actor_rollout_ref.actor.fsdp_config.param_offload=true",  # off in the 7B row; on here so verl's path runs too
        steps=STEPS, save_freq=STEPS,
    )  # fmt: skip
    cmd.insert(cmd.index("sspo.launch.cli") + 1, "--progress=on")  # the progress view, as on a terminal
    with ray_head(num_cpus=32, num_gpus=2) as head:
        result = run_bounded(cmd, log=out / "run.log", timeout=RUN_TIMEOUT_S, env=run_env(head, tiny_assets))
        actors = actor_classes(head.dashboard)
    assert_finished(result, "engine_7b_cpu algo=grpo")
    return Run(out, [result.output]), actors


def test_grpo_on_the_gpu_engine_runs_every_step_under_the_progress_view(engine_run):
    run, _ = engine_run
    screen = run.outputs[0].splitlines()
    assert len(screen) < 80 and not any("Training Progress" in line for line in screen), screen[-20:]
    console = (run.out / "console.log").read_text()
    assert f"step:{STEPS} - " in console and len(console.splitlines()) > 10 * len(screen)
    metrics = run.metrics
    assert run.training_steps() == list(range(1, STEPS + 1))
    assert all(not any(k.startswith("actor/sspo/") for k in metrics[s]) for s in metrics)  # verl's vanilla loss
    assert all(metrics[s][STALENESS] == 0 for s in run.training_steps())  # sync mode: always on-policy
    assert (run.out / f"global_step_{STEPS}" / "actor").is_dir()
    assert_update_along_advantages(metrics, run.training_steps())


def _probes(console: str) -> list[dict]:
    return [json.loads(line.split(PROBE_TAG, 1)[1]) for line in console.splitlines() if PROBE_TAG in line]


def test_each_actor_rank_ran_the_7b_rows_engine(engine_run):
    """bf16 compute over fp32 parameters and optimizer state, torch.compile, recomputed activations, the
    offload path: what each of the 2 actor ranks saw after its first update (sspo.cpu.engine_probe)."""
    run, _ = engine_run
    probes = _probes((run.out / "console.log").read_text())
    assert sorted(p["rank"] for p in probes) == [0, 1], probes
    for p in probes:
        assert p["fsdp"] == 2, p  # FSDP1 cannot start on CPU (docs/gpu-settings.md): FSDP2, same mixed precision
        assert p["stored_param_dtypes"] == ["torch.float32"], p  # the sharded master weights
        assert p["forward_weight_dtypes"] == ["torch.bfloat16"], p  # mixed_precision.param_dtype bf16 (verl's default)
        assert p["optimizer_state_dtypes"] == ["torch.float32"], p
        assert p["optimizer_offload"] and p["param_offload"], p  # the 7B row's optimizer offload, CI's param offload
        assert p["optimizer_state_devices"] == ["cpu"], p  # where the offload path leaves it (on CPU: no move)
        assert p["entropy_fn_compiled"] and p["dynamo_graphs"] > 0, p  # use_torch_compile: the compiled fn ran
        # enable_gradient_checkpointing: every training forward of a decoder layer ran again in the backward pass
        assert p["layer_forwards"] > 0 and p["layer_recomputes"] == p["layer_forwards"], p


def test_the_rollout_ran_at_tensor_parallel_size_2_in_bf16_and_received_every_weight_sync(engine_run):
    run, _ = engine_run
    console = (run.out / "console.log").read_text()
    # verl prints the vLLM server's arguments one a line; vLLM then starts one worker process per TP rank
    assert re.search(r"'--tensor_parallel_size',[^\n]*\n[^\n]*'2'", console), "vLLM not launched at TP 2"
    assert re.search(r"'--dtype',[^\n]*\n[^\n]*'bfloat16'", console), "vLLM not launched in bf16"
    tp_workers = set(re.findall(r"\(Worker(?:_TP\d+)? pid=(\d+)\)", console))
    assert len(tp_workers) == 2, tp_workers
    steps = run.training_steps()
    means = [run.metrics[s]["training/rollout_probs_diff_mean"] for s in steps]
    maxes = [run.metrics[s]["training/rollout_probs_diff_max"] for s in steps]
    print(f"bf16 actor vs vLLM token-probability diff per step: mean {means}, max {maxes}")
    assert max(means) < BF16_PROBS_DIFF_MEAN and max(maxes) < BF16_PROBS_DIFF_MAX, (means, maxes)


def test_several_agent_loop_and_reward_workers(engine_run):
    _, actors = engine_run
    agent = sum(n for name, n in actors.items() if "AgentLoopWorker" in name)
    reward = sum(n for name, n in actors.items() if "RewardLoopWorker" in name)
    assert (agent, reward) == (WORKERS, WORKERS), actors


def test_validation_dumps_score_into_the_table(engine_run, tiny_assets, tmp_path):
    """verl's validation dumps -> ``sspo.tools.evaluation score``: under the policy verl's validation scored with (the
    training reward), the table's pass@1 is verl's own val accuracy (the evaluation policy also reads unboxed answers)."""
    run, _ = engine_run
    csv_path = tmp_path / "table.csv"
    result = subprocess.run(
        [sys.executable, "-m", "sspo.tools.evaluation", "score", "--run", f"grpo={run.out / 'validation_generations'}",
         "--data-dir", str(tiny_assets), "--csv", str(csv_path), "--policy", "training"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = next(r for r in csv_path.read_text().splitlines() if r.startswith("grpo,tiny_add,"))
    _, _, n_problems, n_samples, _, pass1, _ = row.split(",")
    assert (int(n_problems), int(n_samples)) == (36, VAL_N)  # the folder's latest dump: step STEPS
    assert float(pass1) == pytest.approx(run.metrics[STEPS][VAL_ACC], abs=1e-6)
