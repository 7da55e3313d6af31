"""Pre-flight checks: each bad input fails before any GPU time, with a message naming the key and the fix."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import check_lines, closed_port, recipe_data_dir

from sspo.launch import cli, preflight
from sspo.verl_plugin.config_checks import validate_config

ROW = "experiment=sspo_qwen2.5-math-1.5b"


@pytest.fixture(scope="module")
def good_data(tmp_path_factory, shared_data) -> Path:
    return recipe_data_dir(tmp_path_factory, shared_data)


@pytest.fixture
def env(good_data, tmp_path, monkeypatch) -> Path:
    """A private copy of the prepared data (tests may break it) and an output dir."""
    data = tmp_path / "data"
    shutil.copytree(good_data, data)
    monkeypatch.setenv("SSPO_DATA_DIR", str(data))
    monkeypatch.setenv("SSPO_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(preflight.RAY_JOB_ENV, raising=False)
    return data


def failures(*overrides: str) -> dict[str, str]:
    """name -> detail of every failed check for the row plus ``overrides``."""
    results = preflight.run_checks(cli.compose_config([ROW, *overrides]), dry_run=True)
    return {r.name: r.detail for r in results if r.status == "fail"}


def test_good_config_has_no_failure(env):
    assert failures() == {}


def test_dry_run_exit_code_and_message_on_failure(env, capsys):
    (env / "amc.parquet").unlink()
    assert cli.main(["--dry-run", ROW]) == 1
    captured = capsys.readouterr()
    assert check_lines(captured.out)["data files"] == "fail"
    assert "nothing was started" in captured.err and "amc.parquet does not exist" in captured.err
    assert "make data" in captured.err


def test_training_run_stops_before_verl_when_a_check_fails(env, capsys, monkeypatch):
    """Without --dry-run a failed check returns 1 and verl's launch is never reached."""
    import verl.trainer.main_ppo as main_ppo

    launched = []
    monkeypatch.setattr(main_ppo, "run_ppo", lambda *args, **kwargs: launched.append(args))
    (env / "train.parquet").unlink()
    assert cli.main([ROW]) == 1
    assert launched == []
    assert "data.train_files" in capsys.readouterr().err


def test_unreadable_and_incomplete_parquet(env):
    (env / "math500.parquet").write_bytes(b"not parquet at all")
    assert "math500.parquet is not a readable parquet file" in failures()["data files"]
    pq.write_table(pa.table({"data_source": ["x"], "prompt": ["y"]}), env / "math500.parquet")
    msg = failures()["data files"]
    assert "lacks column(s) ['reward_model']" in msg and "make data" in msg


def test_too_few_training_rows(env):
    msg = failures("data.train_batch_size=1024", "actor_rollout_ref.actor.ppo_mini_batch_size=64")[
        "data files"
    ]
    assert "data.train_batch_size=1024 exceeds the 500 training rows" in msg


def test_mini_batch_not_splitting_over_ranks(env):
    """verl asserts this only in the worker after the first rollout (engine_workers.update_actor)."""
    msg = failures("actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2")[
        "batch sizes"
    ]
    assert "actor_rollout_ref.actor.ppo_mini_batch_size (2) x actor_rollout_ref.rollout.n (2)" in msg
    assert "do not split over 8 data-parallel ranks" in msg


def test_train_batch_not_whole_mini_batches(env):
    msg = failures("actor_rollout_ref.actor.ppo_mini_batch_size=48")["batch sizes"]
    assert (
        "data.train_batch_size (128) is not a multiple of actor_rollout_ref.actor.ppo_mini_batch_size (48)"
        in msg
    )


def test_rollout_tensor_parallel_must_divide_the_node(env):
    msg = failures("actor_rollout_ref.rollout.tensor_model_parallel_size=3")["batch sizes"]
    assert "tensor_model_parallel_size (3) does not divide trainer.n_gpus_per_node (8)" in msg


def test_verl_own_check_is_reported_not_duplicated(env):
    """train_batch_size*n vs the GPU count is verl's rule (without dynamic batch size): surfaced from
    verl's validate_config; the mini-batch split over ranks is ours and holds with dynamic batch size too."""
    msg = failures("trainer.n_gpus_per_node=7", "actor_rollout_ref.actor.use_dynamic_bsz=false")
    assert "verl's validate_config: real_train_batch_size (1024) must be divisible" in msg["verl config"]
    assert "do not split over 7 data-parallel ranks" in msg["batch sizes"]
    dynamic = failures("trainer.n_gpus_per_node=7")
    assert (
        "verl config" not in dynamic and "do not split over 7 data-parallel ranks" in dynamic["batch sizes"]
    )


def test_model_path_checks(env, tmp_path, tiny_model_dir):
    missing = tmp_path / "no_model_here"
    assert "no model there" in failures(f"actor_rollout_ref.model.path={missing}")["model"]
    assert "actor_rollout_ref.model.path is not set" in failures("actor_rollout_ref.model.path=''")["model"]
    # a local model: its config.json bounds prompt + response (tiny model: 1024 positions)
    msg = failures(f"actor_rollout_ref.model.path={tiny_model_dir}")["context length"]
    assert "= 4024 exceeds the model's context of 1024 tokens" in msg
    assert "lower data.max_response_length to at most 0" in msg
    ok = preflight.check_context_length(
        cli.compose_config(
            [
                ROW,
                f"actor_rollout_ref.model.path={tiny_model_dir}",
                "data.max_prompt_length=256",
                "data.max_response_length=512",
            ]
        )
    )
    assert ok == "prompt 256 + response 512 = 768 <= context 1024"


def test_rollout_max_model_len_bounds_the_lengths(env):
    msg = failures("actor_rollout_ref.rollout.max_model_len=2048")["context length"]
    assert "actor_rollout_ref.rollout.max_model_len (2048)" in msg


def test_bad_reward_function(env):
    msg = failures("reward.custom_reward_function.name=no_such_fn")["reward function"]
    assert "reward.custom_reward_function.path='pkg://sspo.reward' name='no_such_fn' cannot be loaded" in msg


def test_unregistered_loss_and_trainer(env):
    """verl looks the loss up only at the first actor update, the trainer inside the TaskRunner."""
    results = preflight.run_checks(
        cli.compose_config(
            [
                "experiment=grpo_qwen2.5-math-1.5b",
                "actor_rollout_ref.actor.policy_loss.loss_mode=no_such_loss",
                "trainer.v1.trainer_mode=no_such_trainer",
            ]
        ),
        dry_run=True,
    )
    got = {r.name: r.detail for r in results if r.status == "fail"}
    # one check names both problems, each with its fix
    assert "policy loss 'no_such_loss'" in got["sspo config"] and "check the spelling" in got["sspo config"]
    assert "trainer 'no_such_trainer'" in got["sspo config"]
    assert "SSPO's trainers: sspo_sync" in got["sspo config"] and "sspo_separate_async" in got["sspo config"]


def test_sspo_config_errors_name_the_key(env):
    msg = failures("actor_rollout_ref.actor.policy_loss.granularity=word")
    assert any("actor_rollout_ref.actor.policy_loss.granularity" in m for m in msg.values()), msg


def test_gpu_check_against_cluster_inventories(env):
    cfg = cli.compose_config([ROW])  # 1 node x 8 GPUs
    assert "fit" in preflight.check_gpus(cfg, [8.0], "cluster")
    with pytest.raises(ValueError, match=r"trainer.nnodes=1 x trainer.n_gpus_per_node=8 requested"):
        preflight.check_gpus(cfg, [4.0, 4.0], "cluster")
    two = cli.compose_config([ROW, "cluster=2x8gpu"])
    assert "fit" in preflight.check_gpus(two, [8.0, 8.0, 0.0], "cluster")
    with pytest.raises(ValueError, match="cluster=1x8gpu, 2x8gpu"):
        preflight.check_gpus(two, [8.0], "cluster")
    with pytest.raises(preflight.Skipped):
        preflight.check_gpus(cfg, None, "")


def test_placement_counts_each_nodes_cpus_and_names_the_node(env):
    """verl asks each node for a STRICT_PACK group of {GPU: 1, CPU: 3} bundles and Ray waits for it forever if
    no node can hold it (seen: 2 raylets with 4 CPUs each, nnodes=2 x 1 GPU, a run that never started)."""
    Node = preflight.Node
    per_bundle = preflight.cpus_per_bundle()
    assert per_bundle == 3  # verl 0.9.1's ResourcePoolManager.max_colocate_count
    two = cli.compose_config([ROW, "trainer.nnodes=2", "trainer.n_gpus_per_node=1"])
    small = [Node("node 10.0.0.1", 1.0, 4.0), Node("node 10.0.0.2", 1.0, 4.0)]
    with pytest.raises(ValueError, match=r"1 GPUs and 3 CPUs .* \+ 2 for the driver side.*node 10.0.0.1: 1 GPUs, 4 CPUs"):
        preflight.check_gpus(two, small, "the Ray cluster at x")
    roomy = [Node("node 10.0.0.1", 1.0, 8.0), Node("node 10.0.0.2", 1.0, 5.0)]
    assert "node 10.0.0.2: 1 GPUs, 5 CPUs" in preflight.check_gpus(two, roomy, "the Ray cluster at x")
    # one node, 2 GPUs: both bundles on it (6 CPUs) plus the driver side (2)
    dp2 = cli.compose_config([ROW, "trainer.nnodes=1", "trainer.n_gpus_per_node=2"])
    assert "fit" in preflight.check_gpus(dp2, [Node("n", 2.0, 8.0)], "x")
    with pytest.raises(ValueError, match="ray start --num-cpus"):
        preflight.check_gpus(dp2, [Node("n", 2.0, 7.0)], "x")


def test_separate_async_layout_needs_training_and_rollout_nodes(env):
    """cluster=2x8gpu_separate: one training node and one rollout node; the rollout's weight-sync engine
    (nccl) is looked up in verl only once the layout fits (not on a CPU dry run: the GPUs check skips)."""
    cfg = cli.compose_config(["experiment=sspo_qwen2.5-math-7b", "cluster=2x8gpu_separate"])
    assert [r[0] for r in preflight.gpu_requests(cfg)] == ["trainer", "actor_rollout_ref.rollout"]
    keys = re.escape("trainer.nnodes=1 x trainer.n_gpus_per_node=8 + actor_rollout_ref.rollout.nnodes=1")
    with pytest.raises(ValueError, match=keys):  # one 8-GPU node holds the training pool only
        preflight.check_gpus(cfg, [8.0], "cluster")
    with pytest.raises(ValueError, match="cluster=1x8gpu"):
        preflight.check_gpus(cfg, [8.0, 4.0], "cluster")
    with pytest.raises(preflight.Skipped, match=keys):
        preflight.check_gpus(cfg, None, "")
    # two nodes fit; then the checkpoint engine is looked up: registered or not, the result says which
    try:
        import cupy  # noqa: F401

        assert "weight sync training -> rollout: nccl" in preflight.check_gpus(cfg, [8.0, 8.0], "cluster")
    except ImportError:
        with pytest.raises(ValueError, match="checkpoint_engine.backend='nccl' cannot run here"):
            preflight.check_gpus(cfg, [8.0, 8.0], "cluster")
    # the standalone rollout's tensor parallelism must split its own nodes
    odd = cli.compose_config(
        [
            "experiment=sspo_qwen2.5-math-7b",
            "cluster=2x8gpu_separate",
            "actor_rollout_ref.rollout.n_gpus_per_node=3",
        ]
    )
    with pytest.raises(ValueError, match="does not divide actor_rollout_ref.rollout.n_gpus_per_node"):
        preflight.check_batch_sizes(odd)
    # the dry run's config checks pass for the 7B row in this layout, for each algorithm's row
    for row in ("sspo", "grpo", "gspo"):
        results = preflight.run_checks(
            cli.compose_config([f"experiment={row}_qwen2.5-math-7b", "cluster=2x8gpu_separate"]), dry_run=True
        )
        status = {r.name: r.status for r in results}
        assert [status[k] for k in ("sspo config", "verl config", "batch sizes")] == ["ok"] * 3


def test_outputs_inside_a_ray_job_working_dir_are_refused(env, tmp_path, monkeypatch):
    """In a Ray job the cwd is a temporary working_dir: checkpoints there would be lost (no resume)."""
    job_dir = tmp_path / "ray_working_dir"
    job_dir.mkdir()
    monkeypatch.chdir(job_dir)
    monkeypatch.delenv("SSPO_OUTPUT_DIR")
    monkeypatch.setenv(preflight.RAY_JOB_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://pkg.zip"}}))
    assert "temporary working_dir" in failures()["output dir"]
    monkeypatch.setenv("SSPO_OUTPUT_DIR", str(tmp_path / "shared"))
    assert "output dir" not in failures()


def test_missing_config_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--config-dir"):
        cli.compose_config([ROW], config_dir=tmp_path)


def test_train_hands_the_composed_config_to_verl_main_ppo(env, monkeypatch):
    """`train` calls verl's own `main_ppo.main` (Hydra pass-through): verl's device and config checks
    accept the composed config and reach the Ray launch. The launch itself needs GPUs, so a spy takes
    the place of `run_ppo` and records what verl would start."""
    import verl.trainer.main_ppo as main_ppo

    launched = []
    monkeypatch.setattr(
        main_ppo, "run_ppo", lambda config, task_runner_class: launched.append((config, task_runner_class))
    )
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "")  # so that monkeypatch restores its absence after
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES")  # cli.train sets it in this process
    cfg = cli.compose_config([ROW])
    cli.train(cfg)
    ((config, runner),) = launched
    assert runner is main_ppo.TaskRunnerV1
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "sspo"
    assert config.trainer.v1.trainer_mode == "sspo"
    assert os.environ["VERL_USE_EXTERNAL_MODULES"] == "sspo.verl_plugin"


def test_unwritable_output_dir(env, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert "is not a writable directory" in failures(f"trainer.default_local_dir={blocker}/run")["output dir"]


def test_wandb_logger_needs_credentials(env, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    msg = failures("trainer.logger=[console,wandb]")["loggers"]
    assert "WANDB_API_KEY is not set" in msg
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert "loggers" not in failures("trainer.logger=[console,wandb]")


def test_multirun_training_runs_each_point_in_its_own_process(env, capfd, monkeypatch):
    """Without --dry-run each point is a fresh `python -m sspo.launch.cli` (Ray and GPU memory released between
    runs) with its name suffix; here the point's own pre-flight stops it, on any machine (its data is missing).

    The fresh interpreter is replaced by the same argv run in this process: a second interpreter importing
    verl and torch on a loaded machine was the one part of this test whose verdict depended on the machine
    (a child killed for memory loses its buffered output); the argv it receives is asserted exactly."""
    import sys

    launched: list[list[str]] = []

    def child(cmd: list[str]) -> int:
        launched.append(cmd)
        assert cmd[:3] == [sys.executable, "-m", "sspo.launch.cli"], cmd
        return cli.main(cmd[3:])

    monkeypatch.setattr(cli.subprocess, "call", child)
    point = "actor_rollout_ref.actor.policy_loss.granularity=choice(token)"
    (env / "amc.parquet").unlink()  # the config is sound (checked before any point runs); the point's data is not
    assert cli.main(["--multirun", ROW, point]) == 1
    out, err = capfd.readouterr()
    assert len(launched) == 1, launched  # one process per point
    assert "--multirun" not in launched[0] and "--dry-run" not in launched[0]
    assert ["--name-suffix", "__granularity-token"] == launched[0][5:7], launched[0]
    assert ROW in launched[0] and "actor_rollout_ref.actor.policy_loss.granularity=token" in launched[0]
    assert "multirun: 0/1 run(s) succeeded" in out, (out, err)
    assert f"under {env.parent / 'outputs' / 'sspo' / 'sspo_qwen2.5-math-1.5b__granularity-token'}" in out
    assert "[fail] data files: ValueError: data.val_files" in out and "amc.parquet does not exist" in out
    assert "nothing was started" in err


def test_config_that_does_not_compose_is_one_clear_message(env, capsys):
    """A misspelled key or an unknown experiment: exit 2, no traceback, the closest keys suggested."""
    assert cli.main(["--dry-run", ROW, "actor_rollout_ref.actor.policy_loss.granularty=token"]) == 2
    err = capsys.readouterr().err
    assert "config error: actor_rollout_ref.actor.policy_loss.granularty is not a key of SSPOPolicyLossConfig" in err
    assert "did you mean actor_rollout_ref.actor.policy_loss.granularity?" in err
    assert "Traceback" not in err
    assert cli.main(["--dry-run", ROW, "trainer.expriment_name=x"]) == 2  # any other node: Hydra's words + the closest
    err = capsys.readouterr().err
    assert "Could not override 'trainer.expriment_name'" in err and "did you mean: trainer.experiment_name" in err

    assert cli.main(["--dry-run", "experiment=sspo_qwen2.5-math-15b"]) == 2
    err = capsys.readouterr().err
    assert "sspo_qwen2.5-math-15b" in err and "sspo_qwen2.5-math-1.5b" in err  # Hydra lists the options


def test_data_file_formats_verl_cannot_read_fail_early(env):
    """verl's RLHFDataset reads .parquet/.json/.jsonl; anything else would fail only at TaskRunner start.
    JSON files pass without a row count (no false 'too few rows' failure)."""
    shutil.copy(env / "amc.parquet", env / "amc.csv")
    msg = failures(f"data.val_files=[{env / 'amc.csv'}]")["data files"]
    assert "data.val_files" in msg and "amc.csv" in msg and ".parquet, .json, .jsonl" in msg
    train_json = env / "train.json"
    train_json.write_text(json.dumps([{"prompt": "p"}] * 3))
    assert "data files" not in failures(f"data.train_files={train_json}")


def test_an_unreachable_ray_address_fails_in_seconds_naming_it(env, monkeypatch):
    """Pre-flight used to wait ~14 minutes in ray.init for a closed port: now a plain connect is refused first.

    The port is held closed by the test (bound, not listening): a fixed one (e.g. 1) may be open on a shared machine.
    """
    with closed_port() as port:
        address = f"127.0.0.1:{port}"
        monkeypatch.setenv("RAY_ADDRESS", address)
        start = time.monotonic()
        results = {r.name: r for r in preflight.run_checks(cli.compose_config([ROW]), ray_address=address)}
        took = time.monotonic() - start
    detail = results["GPUs"].detail
    assert results["GPUs"].status == "fail" and f"no Ray cluster answers at RAY_ADDRESS={address}" in detail
    assert "Connection refused" in detail, detail  # the socket check answered, not a Ray client timing out
    assert took < 180, took  # minutes before; a wide bound, whatever else loads the machine
    with pytest.raises(ValueError, match="is a dashboard URL"):
        preflight.check_ray_reachable("http://127.0.0.1:8265")
    with pytest.raises(ValueError, match="not host:port"):
        preflight.check_ray_reachable("localhost")


def test_bad_loss_agg_mode_lists_the_valid_ones(env):
    got = failures("actor_rollout_ref.actor.loss_agg_mode=bogus")
    assert "loss_agg_mode='bogus' is unknown: use one of ['token-mean', 'token-sum'" in got["sspo config"]


@pytest.mark.parametrize("arg, fix", [("sspo_cpu", "write experiment=sspo_cpu"), ("sspo_cpuu", "write experiment=sspo_cpu")])
def test_a_row_without_experiment_names_the_fix(arg, fix, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for multirun in ([], ["--multirun"]):  # also where the sweep is parsed first
        assert cli.main(["--dry-run", *multirun, arg]) == 2
        err = capsys.readouterr().err
        assert fix in err and "missing EQUAL" not in err and "Traceback" not in err, err


def test_full_determinism_runs_with_the_recipes_agent_loop_and_is_refused_with_verls(env):
    """verl's own single-turn loop under full determinism gives a prompt's n samples one seed: identical samples."""
    assert failures("actor_rollout_ref.rollout.full_determinism=true") == {}
    verls_loop = "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent"
    got = failures("actor_rollout_ref.rollout.full_determinism=true", verls_loop)
    assert "full_determinism=true with actor_rollout_ref.rollout.n=8" in got["sspo config"]
    assert "default_agent_loop=single_turn_agent" in got["sspo config"]
    assert "Set actor_rollout_ref.rollout.agent.default_agent_loop=sspo_single_turn" in got["sspo config"]


def test_norm_aggregation_without_a_fixed_horizon_is_refused(env):
    """With a null loss_scale_factor verl divides by each micro-batch's padded width: layout-dependent."""
    got = failures("actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm")
    assert "loss_scale_factor=null" in got["sspo config"] and "data.max_response_length" in got["sspo config"]
    assert "sspo config" not in failures(
        "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm", "actor_rollout_ref.actor.loss_scale_factor=3000"
    )


def test_sequence_parallelism_without_flash_attention_is_refused(monkeypatch, tmp_path):
    """verl's Ulysses all-to-all lives in the flash-attention forward only; eager attention (the CPU preset)
    would attend over each rank's slice of the sequence (measured: probabilities off by up to 0.99, no error)."""
    monkeypatch.chdir(tmp_path)
    sp = "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2"
    cpu = cli.compose_config(["experiment=sspo_cpu", "cluster=cpu_dp2", sp])
    with pytest.raises(ValueError, match="ulysses_sequence_parallel_size=2 with .*attn_implementation=eager"):
        validate_config(cpu)
    engine_key = "actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=2"  # what verl's engine reads
    with pytest.raises(ValueError, match="fsdp_config.ulysses_sequence_parallel_size=2 with"):
        validate_config(cli.compose_config(["experiment=sspo_cpu", "cluster=cpu_dp2", engine_key]))
    validate_config(cli.compose_config(["experiment=sspo_qwen2.5-math-7b", sp]))  # flash attention (verl's default)
