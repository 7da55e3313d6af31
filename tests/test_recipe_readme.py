"""The README's commands are the ones that exist and that the tests run.

Every `make <target>` named in the README is a Makefile target; every `python -m <module>` is an
importable module; the README's `python -m sspo.launch.cli` dry runs run here (with data from sspo.tools.data)
and its other sspo.launch.cli invocations compose; what the README says a target runs is what `make -n` prints;
the overrides for a user's own `main_ppo` run compose on verl's config and pass SSPO's checks.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import recipe_data_dir

from sspo.launch import cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
MAKEFILE = (REPO / "Makefile").read_text()


def code_commands() -> list[str]:
    """Shell commands of the README's fenced code blocks (continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", README, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", MAKEFILE, flags=re.M))


def make_dry(*args: str) -> str:
    """What `make -n` would run (nothing is executed)."""
    # Run as a top-level make even under `make test` (a sub-make would print "Entering directory").
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(
        ["make", "-n", "--no-print-directory", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=600  # a hang guard only
    ).stdout


def test_setup_is_make_demo_and_make_test_and_ci_runs_make_test():
    setup = README.split("## Set up", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make (\w+)", setup, flags=re.M) == ["demo", "test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_make_target_named_in_the_readme_exists():
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", README))
    assert {"demo", "test", "data", "train", "submit", "docker", "ablate", "eval", "bench", "lint"} <= named
    assert named <= make_targets(), named - make_targets()


def test_every_python_module_named_in_the_readme_exists():
    modules = set(re.findall(r"python -m ([\w.]+)", README))
    assert {"sspo.launch.cli", "sspo.tools.data", "sspo.tools.evaluation", "verl.model_merger"} <= modules
    missing = {m for m in modules if importlib.util.find_spec(m) is None}
    assert not missing


def test_readme_says_what_the_makefile_runs():
    assert "-m sspo.launch.cli experiment=sspo_qwen2.5-math-1.5b" in make_dry("-o", "install", "train")
    assert "-m sspo.launch.cli --dry-run experiment=grpo_qwen2.5-math-7b" in make_dry(
        "-o", "install", "dry-run", "EXPERIMENT=grpo_qwen2.5-math-7b"
    )
    ablate = make_dry("-o", "install", "ablate", "ARGS=--dry-run")
    assert "-m sspo.launch.cli --multirun experiment=sspo_qwen2.5-math-1.5b" in ablate and ablate.rstrip().endswith(
        "--dry-run"
    )
    assert "recipe/scripts/submit.sh experiment=sspo_qwen2.5-math-7b cluster=2x8gpu" in make_dry(
        "-o", "install", "submit", "EXPERIMENT=sspo_qwen2.5-math-7b", "ARGS=cluster=2x8gpu", "OUTPUT_DIR=/shared/sspo"
    )
    assert "-m sspo.tools.evaluation score --run grpo_qwen2.5-math-1.5b=" in make_dry("-o", "install", "eval")
    assert "-m sspo.tools.data --out-dir data" in make_dry("-o", "install", "data")
    assert "recipe/scripts/demo_cpu.sh" in make_dry("-o", "install", "demo")
    assert "docker build -f docker/Dockerfile -t sspo-verl:0.1.0 ." in make_dry("docker")
    assert "docker build -f docker/Dockerfile --build-arg VARIANT=cpu -t sspo-verl:cpu ." in make_dry("docker-cpu")


def test_readme_experiment_names_are_the_experiment_files():
    named = set(re.findall(r"\b((?:grpo|gspo|sspo)_(?:qwen2\.5-math-(?:1\.5b|7b)|cpu)|diagnose_cpu|engine_7b_cpu)\b", README))
    files = {p.stem for p in (REPO / "recipe" / "config" / "experiment").glob("*.yaml")}
    assert named == files


def test_readme_sspo_cli_commands_run(tmp_path_factory, shared_data, tmp_path, monkeypatch, capsys):
    """Each README `python -m sspo.launch.cli` / docker-run invocation: dry runs run, the others compose."""
    monkeypatch.setenv("SSPO_DATA_DIR", str(recipe_data_dir(tmp_path_factory, shared_data)))
    monkeypatch.setenv("SSPO_OUTPUT_DIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    invocations = []
    for command in code_commands():
        words = shlex.split(command)
        while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
            words = words[1:]
        if words[:3] == ["python", "-m", "sspo.launch.cli"]:
            invocations.append(words[3:])
        elif words[:1] == ["sspo-train"]:
            invocations.append(words[1:])
        elif words[:2] == ["docker", "run"]:
            (image,) = [i for i, w in enumerate(words) if w.startswith("sspo-verl:")]
            args = words[image + 1 :]
            if args[:1] not in ([], ["demo"]):  # the entrypoint runs the CPU demo for these
                invocations.append(args)
    assert len(invocations) >= 2
    for args in invocations:
        parsed = cli.build_parser().parse_args(args)
        if parsed.dry_run:
            assert cli.main(args) == 0, args
            assert "dry run OK" in capsys.readouterr().out
        else:
            assert cli.compose_config(parsed.overrides).trainer.experiment_name in README


def test_readme_overrides_for_your_own_main_ppo_compose_and_validate():
    """The README's "Use SSPO in your own verl run" overrides on verl's own ``ppo_trainer`` config: they
    compose, pass SSPO's config checks and build SSPO's policy-loss config (as the actor worker does)."""
    from hydra import compose, initialize_config_module
    from verl.utils.config import omega_conf_to_dataclass

    from sspo.verl_plugin import SSPOPolicyLossConfig, validate_config

    (command,) = [c for c in code_commands() if c.startswith("python -m verl.trainer.main_ppo ")]
    overrides = [w for w in shlex.split(command)[3:] if "=" in w]  # drops the "<your config ...>" placeholder
    assert "trainer.v1.trainer_mode=sspo_sync" in overrides
    assert "actor_rollout_ref.actor.policy_loss.loss_mode=sspo" in overrides
    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    validate_config(cfg)
    settings = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
    assert isinstance(settings, SSPOPolicyLossConfig) and settings.granularity == "subsentence"


@pytest.mark.parametrize("script", ["recipe/scripts/submit.sh", "recipe/scripts/demo_cpu.sh"])
def test_scripts_named_in_the_readme_exist_and_are_executable(script):
    assert script in README
    assert (REPO / script).stat().st_mode & 0o111


@pytest.mark.parametrize(("seeds", "axis"), [("1,3", "1,3"), ("2", "1,2")])
def test_make_seeds_runs_each_row_over_the_seeds_and_reports_the_folders_those_runs_write(
    monkeypatch, tmp_path, capsys, seeds, axis
):
    """`make seeds`: every row of SEED_ROWS over the seed axis (SEEDS: a list, or a count from 1) with the demo's
    schedule, then the report over exactly the run folders that multirun writes (``<row>__seed-N``); nothing runs."""
    rows = ["grpo_cpu", "sspo_cpu"]
    dry = make_dry("-o", "install", "seeds", f"SEEDS={seeds}", f"SEED_ROWS={' '.join(rows)}", "OUTPUT_DIR=out")
    loop, report = dry.split("sspo.tools.report", 1)
    assert f"for row in {' '.join(rows)}; do" in loop and f"experiment=$row schedule=demo sspo.seed={axis}" in loop
    assert "SSPO_OUTPUT_DIR=out " in loop  # the runs write where the report reads
    reported = re.findall(r"(\S+)=out/sspo/(\S+)/tensorboard", report)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSPO_OUTPUT_DIR", "out")
    written = []
    for row in rows:
        assert cli.main(["--multirun", "--print-key", "trainer.default_local_dir", f"experiment={row}",
                         "schedule=demo", f"sspo.seed={axis}"]) == 0  # fmt: skip
        written += capsys.readouterr().out.split()
    assert [(name, folder) for name, folder in reported] == [(Path(w).name, Path(w).name) for w in written]
    assert [Path(w).parent for w in written] == [tmp_path / "out" / "sspo"] * 4


def test_the_docs_state_the_demo_schedule_it_runs():
    """README and examples/README.md give the demo's steps, validation samples and checkpoints as
    recipe/config/schedule/demo.yaml sets them (a schedule change without its docs fails here)."""
    from omegaconf import OmegaConf

    demo = OmegaConf.load(REPO / "recipe" / "config" / "schedule" / "demo.yaml")
    steps, n, save = demo.trainer.total_training_steps, demo.actor_rollout_ref.rollout.val_kwargs.n, demo.trainer.save_freq
    examples = (REPO / "examples" / "README.md").read_text()
    settings = examples.split("Settings:", 1)[1].split("\n\n", 1)[0]
    assert f"{steps} steps," in settings and f"with {n} samples each" in settings
    assert f"checkpoints every {save} steps" in settings
    header = f"| row | training reward (pi0 -> pi{steps - 1}) | validation accuracy, 36 problems x {n} samples (pi0 -> pi{steps}) |"
    assert header in README
    assert f"36 prompts a step, {steps} steps" in README
