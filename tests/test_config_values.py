"""Counts, lengths, rates, temperatures, logger and run names, policy-loss keys: refused by KIND, before any compute.

Each refusal is one line naming the key, the value and the fix; the CLI exits 2 with no traceback. Values
verl gives a meaning (lr 0, temperature 0, freq <= 0 "never", -1 "unset", null "derive it") pass.
"""

from __future__ import annotations

import copy
import subprocess

import pytest
from omegaconf import OmegaConf, open_dict

from sspo.launch import cli
from sspo.launch.config_values import config_problems, logger_problems, name_problems, value_problems
from sspo.verl_plugin.config_checks import policy_loss_key_problems, validate_config

ROW = "experiment=sspo_qwen2.5-math-1.5b"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The 1.5B SSPO row as composed (no data needed: nothing here reads files)."""
    return cli.compose_config([ROW])


def with_value(cfg, key: str, value):
    """A copy of ``cfg`` with ``key`` set (added if absent: an unlisted member of a kind)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def test_the_composed_rows_have_no_problem(base):
    assert config_problems(base) == []


# (key, bad value): each must be named; the keys not listed by name in the rules are members of a kind
BAD = [
    ("data.train_batch_size", 0), ("data.train_batch_size", -4), ("data.train_batch_size", "abc"),
    ("data.train_batch_size", 2.5), ("data.train_batch_size", True), ("data.train_batch_size", None),
    ("trainer.n_gpus_per_node", -8), ("trainer.n_gpus_per_node", 0), ("trainer.nnodes", 0),
    ("actor_rollout_ref.actor.optim.lr", -1), ("actor_rollout_ref.actor.optim.lr", float("nan")),
    ("critic.optim.lr", -0.1),
    ("actor_rollout_ref.rollout.temperature", -1), ("actor_rollout_ref.rollout.val_kwargs.temperature", -0.5),
    ("data.max_prompt_length", -5), ("data.max_response_length", 0),
    ("trainer.total_training_steps", 0), ("trainer.total_training_steps", -3), ("trainer.total_epochs", 0),
    ("actor_rollout_ref.actor.ppo_mini_batch_size", 0), ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", 0),
    ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", -1), ("data.val_batch_size", 0),
    ("actor_rollout_ref.rollout.n", 0), ("actor_rollout_ref.rollout.val_kwargs.n", 0),
    ("data.dataloader_num_workers", -1), ("actor_rollout_ref.rollout.agent.num_workers", 0),
    ("actor_rollout_ref.rollout.top_p", 0), ("actor_rollout_ref.rollout.top_p", 1.5),
    ("actor_rollout_ref.rollout.gpu_memory_utilization", 1.2), ("actor_rollout_ref.rollout.max_model_len", 0),
    ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", 0), ("actor_rollout_ref.actor.optim.lr_warmup_steps", -2),
    ("actor_rollout_ref.actor.optim.min_lr_ratio", 1.5), ("trainer.save_freq", "often"), ("trainer.test_freq", None),
    ("actor_rollout_ref.rollout.tensor_model_parallel_size", 0), ("actor_rollout_ref.actor.ppo_epochs", 0),
    # members of a kind that no rule names: caught by the kind's pattern
    ("actor_rollout_ref.actor.new_micro_batch_size_per_gpu", 0), ("data.max_answer_length", -1),
    ("reward.extra_num_workers", 0), ("actor_rollout_ref.rollout.some_model_parallel_size", 0),
]  # fmt: skip


@pytest.mark.parametrize("key, value", BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_a_value_outside_its_meaning_is_named_with_the_fix(base, key, value):
    problems = [p for p in value_problems(with_value(base, key, value)) if p.startswith(f"{key}=")]
    assert len(problems) == 1, value_problems(with_value(base, key, value))
    assert "Fix: " + key + "=<" in problems[0] and "\n" not in problems[0]


# values verl gives a meaning of their own (read from verl 0.9.1's config and trainer), allowed
GOOD = [
    ("actor_rollout_ref.actor.optim.lr", 0), ("actor_rollout_ref.rollout.temperature", 0),
    ("trainer.save_freq", -1), ("trainer.test_freq", 0), ("trainer.total_training_steps", None),
    ("actor_rollout_ref.actor.optim.total_training_steps", -1), ("actor_rollout_ref.actor.optim.lr_warmup_steps", -1),
    ("data.train_max_samples", -1), ("actor_rollout_ref.rollout.top_k", -1), ("actor_rollout_ref.rollout.top_k", 0),
    ("data.dataloader_num_workers", 0), ("actor_rollout_ref.actor.ppo_micro_batch_size", None),
    ("actor_rollout_ref.rollout.max_model_len", None), ("actor_rollout_ref.rollout.nnodes", 0),
    ("actor_rollout_ref.actor.optim.lr", 3e-6), ("actor_rollout_ref.rollout.top_p", 1),
]  # fmt: skip


@pytest.mark.parametrize("key, value", GOOD, ids=[f"{k}={v!r}" for k, v in GOOD])
def test_verls_own_meanings_pass(base, key, value):
    assert value_problems(with_value(base, key, value)) == []


def test_a_bad_value_is_named_at_the_key_set_not_at_its_copies():
    """rollout.n_gpus_per_node copies trainer.n_gpus_per_node (${...}): one line, at the key the user set."""
    problems = config_problems(cli.compose_config([ROW, "trainer.n_gpus_per_node=-8"]))
    assert len(problems) == 1 and problems[0].startswith("trainer.n_gpus_per_node=-8: the GPUs per training node")


def test_unknown_logger_is_named_with_the_closest_and_verls_list(base):
    (problem,) = logger_problems(with_value(base, "trainer.logger", ["console", "wandbb"]))
    assert "'wandbb' is not one of verl's loggers" in problem and "did you mean wandb?" in problem
    assert "tensorboard" in problem and "file" in problem  # verl's Tracking.supported_backend
    assert logger_problems(with_value(base, "trainer.logger", ["console", "file", "tensorboard"])) == []
    assert logger_problems(with_value(base, "trainer.logger", "console")) == []


@pytest.mark.parametrize("key", ["trainer.experiment_name", "trainer.project_name"])
@pytest.mark.parametrize("value", ["", "  ", ".", "..", "a/b", "../up", "tab\there", " padded"])
def test_run_names_must_be_one_path_safe_folder_name(base, key, value):
    (problem,) = name_problems(with_value(base, key, value))
    assert problem.startswith(f"{key}={value!r}") and f"Fix: {key}=" in problem


def test_safe_run_names_pass(base):
    assert name_problems(with_value(base, "trainer.experiment_name", "sspo_1.5b__granularity-token")) == []


def test_sspo_keys_with_another_loss_say_which_keys_exist_for_which_loss():
    cfg = cli.compose_config([ROW, "algo=gspo", "+actor_rollout_ref.actor.policy_loss.granularity=token"])
    (problem,) = policy_loss_key_problems(cfg)
    assert "granularity is one of SSPO's keys" in problem and "only with loss_mode=sspo" in problem
    assert "loss_mode=gspo has verl's PolicyLossConfig, whose keys are: loss_mode, clip_cov_ratio" in problem
    assert "Fix: algo=sspo, or drop granularity" in problem
    with pytest.raises(ValueError, match="one of SSPO's keys"):
        validate_config(cfg)


def test_a_misspelled_policy_loss_key_gets_the_closest_valid_one():
    cfg = cli.compose_config([ROW, "+actor_rollout_ref.actor.policy_loss.granulrity=token"])
    (problem,) = policy_loss_key_problems(cfg)
    assert "granulrity is not a key of SSPOPolicyLossConfig" in problem
    assert "did you mean actor_rollout_ref.actor.policy_loss.granularity?" in problem and "adaptive_clip" in problem
    gspo = cli.compose_config([ROW, "algo=gspo", "+actor_rollout_ref.actor.policy_loss.granulrity=token"])
    assert "did you mean granularity? (an SSPO key: only with algo=sspo)" in policy_loss_key_problems(gspo)[0]


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "overrides, expect",
    [
        (["algo=gspo", "actor_rollout_ref.actor.policy_loss.granularity=token"], "one of SSPO's keys"),
        (["algo=gspo", "+actor_rollout_ref.actor.policy_loss.granularity=token"], "one of SSPO's keys"),
        (["+actor_rollout_ref.actor.policy_loss.granulrity=token"], "did you mean actor_rollout_ref.actor.policy_loss.granularity?"),
        (["data.train_batch_size=abc"], "data.train_batch_size='abc' is not a whole number >= 1"),
        (["trainer.nnodes=0"], "trainer.nnodes=0: the training nodes must be"),
        (["actor_rollout_ref.actor.ppo_mini_batch_size=0"], "ppo_mini_batch_size=0: the prompts per mini-batch"),
        (["trainer.logger=[console,wandbb]"], "did you mean wandb?"),
        (["trainer.experiment_name="], "trainer.experiment_name='' is empty"),
    ],
)
def test_the_cli_refuses_in_one_line_with_exit_2_before_anything(overrides, expect, capsys, tmp_path, monkeypatch):
    """Dry run and training alike: nothing is printed of the resolved config or the checks, no verl launch."""
    import verl.trainer.main_ppo as main_ppo

    monkeypatch.setenv("SSPO_DATA_DIR", str(tmp_path / "no_data"))  # never read: the refusal comes first
    monkeypatch.setattr(main_ppo, "run_ppo", lambda *a, **k: pytest.fail("verl was started"))
    for mode in (["--dry-run"], []):
        code, out, err = run_cli([*mode, "--progress", "off", ROW, *overrides], capsys)
        assert code == 2 and expect in err and "Traceback" not in err, err
        assert err.count("config error:") == 1 and cli.CHECKS_HEADER not in out


def test_full_determinism_in_an_async_mode_is_refused_with_the_fix():
    """Bit-for-bit repeats hold only in the sync mode: in the async modes the rollout's policy version depends on timing."""
    for mode in ("sspo_colocate_async", "sspo_separate_async"):
        cfg = cli.compose_config([ROW, f"trainer.v1.trainer_mode={mode}", "actor_rollout_ref.rollout.full_determinism=true"])
        with pytest.raises(ValueError, match=f"full_determinism=true with trainer.v1.trainer_mode={mode}.*Fix: trainer.v1.trainer_mode=sspo_sync"):
            validate_config(cfg)
    validate_config(cli.compose_config([ROW, "actor_rollout_ref.rollout.full_determinism=true"]))  # sync: holds


def test_print_key_runs_the_config_checks_but_not_the_cluster_ones(capsys, monkeypatch, tmp_path):
    """submit.sh composes with --print-key: a bad clip range must stop there, before anything is uploaded;
    the data, model and GPUs are the cluster's business (the data dir here does not exist)."""
    monkeypatch.setenv("SSPO_DATA_DIR", str(tmp_path / "no_data"))
    code, out, err = run_cli(["--print-key", "trainer.experiment_name", ROW, "actor_rollout_ref.actor.clip_ratio_low=1.5"], capsys)
    assert code == 2 and out == "" and "clip_ratio_low=1.5 is out of range" in err and "Traceback" not in err
    code, out, err = run_cli(["--print-key", "trainer.experiment_name", ROW, "trainer.n_gpus_per_node=1024"], capsys)
    assert code == 2 and "do not split over 1024 data-parallel ranks" in err  # batch arithmetic: config only
    code, out, _ = run_cli(["--print-key", "trainer.experiment_name", ROW], capsys)
    assert (code, out.strip()) == (0, "sspo_qwen2.5-math-1.5b")


def test_multirun_checks_every_point_before_the_first_runs(capsys, monkeypatch, tmp_path):
    """A typo in the last value of a sweep used to surface after the earlier points trained."""
    monkeypatch.setenv("SSPO_DATA_DIR", str(tmp_path / "no_data"))
    started = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, *a, **k: started.append(cmd) or 0)
    grid = ["actor_rollout_ref.actor.policy_loss.granularity=token,sequence", "data.train_batch_size=128,0"]
    for mode in ([], ["--dry-run"], ["--print-key", "trainer.experiment_name"]):
        code, out, err = run_cli(["--multirun", *mode, ROW, *grid], capsys)
        assert code == 2 and started == [] and "----- run" not in out and "sspo_qwen" not in out, (mode, out)
        assert "multirun point 2/4 (" in err and "multirun point 4/4 (" in err and "point 1/4" not in err
        assert "data.train_batch_size=0: the prompts per step" in err and "2 of 4 point(s) refused" in err
    bad_key = ["actor_rollout_ref.actor.policy_loss.granularity=token,sequence", "clip=narrow,widee"]
    code, _, err = run_cli(["--multirun", ROW, *bad_key], capsys)
    assert code == 2 and started == [] and "widee" in err and "2 of 4 point(s) refused" in err


def test_a_swept_value_with_a_slash_makes_one_folder_name():
    assert cli.run_suffix(["a.path=org/model"], ["a.path"]) == "__path-org_model"


def test_config_checks_and_trainers_import_in_one_direction_only():
    """trainers -> config_checks (the checks run in each trainer's __init__); config_checks imports nothing of trainers."""
    import ast
    from pathlib import Path

    def imported(name: str) -> set[str]:
        tree = ast.parse((Path(__file__).resolve().parents[1] / "sspo" / "verl_plugin" / f"{name}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        return found

    assert not any("trainers" in m for m in imported("config_checks"))
    assert "sspo.verl_plugin.config_checks" in imported("trainers")
