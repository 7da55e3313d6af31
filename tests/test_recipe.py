"""The recipe's Hydra configs: every table row composes on verl's real ppo_trainer config and passes
the CPU dry run (pre-flight checks included) on data prepared by sspo.tools.data from ../shared/data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import ALL_EXPERIMENTS, BENCHMARKS, REPO, check_lines, printed_config, recipe_data_dir
from helpers import RECIPE_CONFIG as CONFIG
from omegaconf import OmegaConf

from sspo.launch import cli, preflight

EXPERIMENTS = [e for e in ALL_EXPERIMENTS if not e.endswith("_cpu")]  # the paper's table (GPU rows)
CPU_EXPERIMENTS = [e for e in ALL_EXPERIMENTS if e.endswith("_cpu")]  # tests/test_cpu_mode.py, test_diagnose_cpu.py
LOSS_MODE = {"grpo": "vanilla", "gspo": "gspo", "sspo": "sspo"}
MODEL = {"1.5b": "Qwen/Qwen2.5-Math-1.5B", "7b": "Qwen/Qwen2.5-Math-7B"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data) -> Path:
    return recipe_data_dir(tmp_path_factory, shared_data)


@pytest.fixture
def recipe_env(data_dir, tmp_path, monkeypatch) -> Path:
    """SSPO_DATA_DIR / SSPO_OUTPUT_DIR as a user sets them; no Ray cluster address."""
    monkeypatch.setenv("SSPO_DATA_DIR", str(data_dir))
    monkeypatch.setenv("SSPO_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def test_one_experiment_file_per_table_row():
    assert EXPERIMENTS == [f"{a}_qwen2.5-math-{m}" for a in ("grpo", "gspo", "sspo") for m in ("1.5b", "7b")]
    # the CPU rows, and the 7B row's engine on CPU (composed from the 7B row: test_cpu_mode.py)
    assert CPU_EXPERIMENTS == ["diagnose_cpu", "engine_7b_cpu", "grpo_cpu", "gspo_cpu", "sspo_cpu"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_file_holds_only_what_differs(name):
    """A row picks its algorithm and model groups and names itself; everything else is shared."""
    doc = yaml.safe_load((CONFIG / "experiment" / f"{name}.yaml").read_text())
    algo, size = name.split("_qwen2.5-math-")
    assert doc == {
        "defaults": [{"override /algo": algo}, {"override /base_model": f"qwen2.5-math-{size}"}],
        "trainer": {"experiment_name": name},
    }


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_dry_run_every_experiment(name, recipe_env, data_dir, capsys):
    assert cli.main(["--dry-run", f"experiment={name}"]) == 0
    out = capsys.readouterr().out
    cfg = printed_config(out)
    algo, size = name.split("_qwen2.5-math-")
    actor, rollout = cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"]
    # the row's own choices
    assert actor["policy_loss"]["loss_mode"] == LOSS_MODE[algo]
    assert cfg["actor_rollout_ref"]["model"]["path"] == MODEL[size]
    assert cfg["trainer"]["experiment_name"] == name
    # shared defaults from the public setups (SSPO.md)
    assert cfg["algorithm"]["adv_estimator"] == "grpo"
    assert rollout["n"] == 8 and cfg["data"]["max_response_length"] == 3000
    assert cfg["data"]["max_prompt_length"] + cfg["data"]["max_response_length"] <= 4096
    assert actor["optim"]["lr"] == pytest.approx(1e-6)
    assert cfg["data"]["train_files"] == str(data_dir / "train.parquet")
    assert cfg["data"]["val_files"] == [str(data_dir / f"{b}.parquet") for b in BENCHMARKS]
    assert cfg["reward"]["custom_reward_function"] == {"path": "pkg://sspo.reward", "name": "compute_score"}
    assert cfg["trainer"]["validation_data_dir"] == str(
        recipe_env / "outputs" / "sspo" / name / "validation_generations"
    )
    assert cfg["trainer"]["v1"]["trainer_mode"] == "sspo" and cfg["trainer"]["resume_mode"] == "auto"
    tensorboard = cfg["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]["TENSORBOARD_DIR"]
    assert tensorboard == str(recipe_env / "outputs" / "sspo" / name / "tensorboard")
    # every check ran; only the ones that need a GPU cluster or a local model copy are skipped
    statuses = check_lines(out)
    assert statuses == {
        "config values": "ok",
        "sspo config": "ok",
        "verl config": "ok",
        "batch sizes": "ok",
        "model": "ok",
        "vLLM-CPU": "skip",
        "C++ compiler": "skip",
        "context length": "skip",
        "data files": "ok",
        "reward function": "ok",
        "output dir": "ok",
        "loggers": "ok",
        "GPUs": "skip",
    }
    assert "train.parquet=500" in out and "olympiadbench.parquet=675" in out


def test_algorithm_groups_set_the_paper_clip_ranges_and_verl_builds_the_loss_config(recipe_env):
    """The composed actor config turns into verl's ActorConfig with our SSPOPolicyLossConfig inside."""
    from verl.utils.config import omega_conf_to_dataclass

    from sspo.verl_plugin import SSPOPolicyLossConfig

    expected = {"grpo": (0.2, 0.2, "token-mean"), "gspo": (3e-4, 4e-4, "seq-mean-token-mean")}
    for algo, (low, high, agg) in expected.items():
        actor = cli.compose_config([f"experiment={algo}_qwen2.5-math-1.5b"]).actor_rollout_ref.actor
        assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.loss_agg_mode) == (low, high, agg)
    cfg = cli.compose_config(["experiment=sspo_qwen2.5-math-7b"])
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, SSPOPolicyLossConfig)
    assert (actor.policy_loss.granularity, actor.policy_loss.adaptive_clip) == ("subsentence", True)
    # the 7B row differs from the 1.5B one in its model group only
    assert cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == 2


def test_groups_compose_with_overrides(recipe_env):
    cfg = cli.compose_config(
        ["experiment=gspo_qwen2.5-math-1.5b", "cluster=2x8gpu", "trainer.default_local_dir=/shared/ckpt"]
    )
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node) == (2, 8)
    assert cfg.trainer.validation_data_dir == "/shared/ckpt/validation_generations"
    with pytest.raises(Exception, match="nosuch"):
        cli.compose_config(["experiment=nosuch"])


GPU_CLUSTERS = sorted(p.stem for p in (CONFIG / "cluster").glob("*.yaml") if not p.stem.startswith("cpu"))


@pytest.mark.parametrize("cluster", GPU_CLUSTERS)
@pytest.mark.parametrize("row", ["sspo_qwen2.5-math-1.5b", "sspo_qwen2.5-math-7b"])
def test_every_gpu_cluster_group_composes_and_passes_the_config_checks(row, cluster, recipe_env):
    """The GPU layouts no CPU run can train: each composes with each model row and passes SSPO's and verl's
    config checks and the batch-size split (the GPUs check needs the real cluster and is skipped here)."""
    results = {r.name: r for r in preflight.run_checks(cli.compose_config([f"experiment={row}", f"cluster={cluster}"]),
                                                      dry_run=True)}  # fmt: skip
    if (row, cluster) == ("sspo_qwen2.5-math-7b", "1x1gpu"):  # the 7B rollout runs at TP 2: refused, with the key
        assert results["batch sizes"].status == "fail"
        assert "tensor_model_parallel_size (2) does not divide trainer.n_gpus_per_node (1)" in results["batch sizes"].detail
        del results["batch sizes"]
    for name in ("sspo config", "verl config", "batch sizes"):
        assert name not in results or results[name].status == "ok", results[name].line()
    assert results["GPUs"].status == "skip"


def test_relative_paths_become_absolute_and_hub_ids_stay(recipe_env, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SSPO_DATA_DIR")
    monkeypatch.delenv("SSPO_OUTPUT_DIR")
    cfg = cli.compose_config(["experiment=sspo_qwen2.5-math-1.5b"])
    assert cfg.data.train_files == str(tmp_path / "data" / "train.parquet")
    assert cfg.trainer.default_local_dir == str(tmp_path / "outputs" / "sspo" / "sspo_qwen2.5-math-1.5b")
    assert cfg.actor_rollout_ref.model.path == "Qwen/Qwen2.5-Math-1.5B"


def test_ablation_grid_from_the_makefile_dry_runs_every_point(recipe_env, capsys):
    """`make ablate ARGS=--dry-run`: the Makefile's grid, expanded by Hydra's parser, one run per point."""
    makefile = (REPO / "Makefile").read_text()
    grid = re.search(r"^ABLATION_GRID \?= (.+)$", makefile, flags=re.M)[1].split()
    experiment = re.search(r"^ABLATION_EXPERIMENT \?= (\S+)$", makefile, flags=re.M)[1]
    assert cli.main(["--multirun", "--dry-run", f"experiment={experiment}", *grid]) == 0
    out = capsys.readouterr().out
    runs = out.split("----- run ")[1:]
    assert len(runs) == 3 * 2 * 3
    configs = [printed_config(r) for r in runs]
    seen = {
        (
            c["actor_rollout_ref"]["actor"]["policy_loss"]["granularity"],
            c["actor_rollout_ref"]["actor"]["policy_loss"]["adaptive_clip"],
            c["actor_rollout_ref"]["actor"]["clip_ratio_low"],
        )
        for c in configs
    }
    assert len(seen) == 18
    assert {c["trainer"]["experiment_name"] for c in configs} == {
        f"{experiment}__granularity-{g}__adaptive_clip-{a}__clip-{k}"
        for g in ("token", "subsentence", "sequence")
        for a in ("True", "False")
        for k in ("narrow", "default", "wide")
    }
    assert "multirun: 18/18 run(s) succeeded" in out


def test_sweep_points_is_the_cartesian_product():
    points, swept = cli.sweep_points(["a=1,2", "b=x", "c=p,q,r"])
    assert swept == ["a", "c"]
    assert len(points) == 6 and ["a=2", "b=x", "c=q"] in points
    assert cli.run_suffix(["a=2", "b=x", "c=q"], swept) == "__a-2__c-q"


def test_main_sspo_script_is_the_same_entry(recipe_env, capsys, monkeypatch):
    import runpy

    monkeypatch.setattr("sys.argv", ["main_sspo.py", "--dry-run", "experiment=grpo_qwen2.5-math-7b"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "recipe" / "main_sspo.py"), run_name="__main__")
    assert exit_.value.code == 0
    assert printed_config(capsys.readouterr().out)["trainer"]["experiment_name"] == "grpo_qwen2.5-math-7b"


def test_resolved_config_is_plain_yaml(recipe_env):
    cfg = cli.compose_config(["experiment=sspo_qwen2.5-math-1.5b"])
    text = OmegaConf.to_yaml(cfg)
    assert "${" not in text  # fully resolved: what the workers get is what the dry run shows
