"""End to end on CPU: GRPO, GSPO and SSPO learn small additions through verl's engine (sspo.local_run).

One module-scoped training session (shared warm-up, then each algorithm, then the same run with the
optimizer step disabled as the control) feeds the tests below. The reward check compares the mean
training reward of the first and the last steps; the control proves the margin is out of reach of a
run whose update does nothing.
"""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch

from sspo.local_run import (
    ALGOS,
    DATA_SOURCE,
    LocalRunConfig,
    LocalRunError,
    main,
    recipe_algo_overrides,
    train,
)

# Short but real: the same settings as `make demo` except the number of steps (demo: 60).
STEPS = 30
WINDOW = 6  # steps averaged at the start and at the end
MARGIN = 0.08  # reward gain a run must show; the control (no update) must stay below it
INTERRUPT_AT = 3
VAL_ACC = f"val-core/{DATA_SOURCE}/acc/mean@1"


def _read(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _rewards(records: list[dict]) -> list[float]:
    return [r["data"]["critic/score/mean"] for r in records if "critic/score/mean" in r["data"]]


def reward_gain(records: list[dict]) -> float:
    """Mean training reward of the last WINDOW steps minus that of the first WINDOW steps."""
    rewards = _rewards(records)
    assert len(rewards) >= 2 * WINDOW, len(rewards)
    return sum(rewards[-WINDOW:]) / WINDOW - sum(rewards[:WINDOW]) / WINDOW


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Train every algorithm and the control once; interrupt and resume a second GRPO run."""
    out = tmp_path_factory.mktemp("local_run")
    runs = {algo: train(LocalRunConfig(algo=algo, steps=STEPS), out, progress=False) for algo in ALGOS}
    control_out = tmp_path_factory.mktemp("control")
    (control_out / "warmup").symlink_to(out / "warmup", target_is_directory=True)
    runs["control"] = train(
        LocalRunConfig(algo="grpo", steps=STEPS, update=False), control_out, progress=False
    )

    # A real SIGINT in the middle of step INTERRUPT_AT (the handler the CLI installs), then --resume.
    resumed_out = tmp_path_factory.mktemp("resumed")
    (resumed_out / "warmup").symlink_to(out / "warmup", target_is_directory=True)

    def ctrl_c(step: int, metrics: dict) -> None:
        if step == INTERRUPT_AT:
            signal.raise_signal(signal.SIGINT)

    interrupted = train(
        LocalRunConfig(algo="grpo", steps=STEPS), resumed_out, progress=False, on_step_end=ctrl_c
    )
    after_interrupt = _read(interrupted.run_dir)
    state_after_interrupt = json.loads((interrupted.run_dir / "state.json").read_text())
    resumed = train(
        LocalRunConfig(algo="grpo", steps=2 * INTERRUPT_AT), resumed_out, resume=True, progress=False
    )
    return {
        "out": out,
        "runs": runs,
        "records": {name: _read(r.run_dir) for name, r in runs.items()},
        "interrupted": interrupted,
        "after_interrupt": after_interrupt,
        "state_after_interrupt": state_after_interrupt,
        "resumed": resumed,
    }


@pytest.mark.slow
def test_every_algorithm_learns_and_the_control_does_not(session):
    gains = {name: reward_gain(records) for name, records in session["records"].items()}
    print("reward gain (last - first", WINDOW, "steps):", {k: round(v, 3) for k, v in gains.items()})
    for algo in ALGOS:
        assert gains[algo] > MARGIN, f"{algo} did not learn: gain {gains[algo]:.3f} <= {MARGIN}"
    # The same check on the run whose optimizer step is disabled must fail.
    assert gains["control"] <= MARGIN, gains["control"]
    # Greedy accuracy on every problem: unchanged without updates (same weights), up with them.
    for name, records in session["records"].items():
        val = [r["data"][VAL_ACC] for r in records if VAL_ACC in r["data"]]
        if name == "control":
            assert len(set(val)) == 1, val
        else:
            assert val[-1] > val[0], (name, val)


@pytest.mark.slow
def test_metrics_are_finite_and_complete(session):
    for name, records in session["records"].items():
        steps = [r["step"] for r in records]
        assert steps == list(range(STEPS + 1)), (name, steps)  # step 0: the evaluation before training
        for record in records[1:]:
            data = record["data"]
            for key in ("critic/score/mean", "train/acc", "actor/entropy", "response_length/mean"):
                assert math.isfinite(data[key]), (name, key, data[key])
            if name != "control":
                for key in ("actor/pg_clipfrac", "actor/pg_loss", "actor/ppo_kl", "actor/grad_norm"):
                    assert math.isfinite(data[key]), (name, key, data[key])
                assert 0.0 <= data["actor/pg_clipfrac"] <= 1.0
            else:
                assert "actor/pg_loss" not in data
    # SSPO's own diagnostics reached the metrics: its loss ran through the project's wrapper with
    # segment ids (several subsentences per response) and the old policy's entropy (adaptive scale).
    sspo_step = session["records"]["sspo"][1]["data"]
    assert sspo_step["actor/sspo/units_per_response"] > 1.5
    assert sspo_step["actor/sspo/adaptive_scale_max"] > sspo_step["actor/sspo/adaptive_scale_min"]
    assert not any(k.startswith("actor/sspo/") for k in session["records"]["grpo"][1]["data"])


@pytest.mark.slow
def test_clip_fraction_diagnostic_is_measured(session):
    """The paper's diagnostic, measured (what we saw is in the report; only its presence is asserted)."""
    mean_clip = {}
    for algo in ALGOS:
        values = [r["data"]["actor/pg_clipfrac"] for r in session["records"][algo][1:]]
        mean_clip[algo] = sum(values) / len(values)
    print("mean token-weighted clip fraction:", {k: f"{v:.4f}" for k, v in mean_clip.items()})
    assert all(0.0 <= v <= 1.0 for v in mean_clip.values())
    assert any(v > 0 for v in mean_clip.values())
    # SSPO's updates also measure the clip fraction at ONE clip range by granularity, every step; only
    # the ones of the sspo loss (verl's vanilla/gspo runs do not have them).
    same_range = {}
    for granularity in ("token", "subsentence", "sequence"):
        key = f"actor/sspo/clipfrac_at_{granularity}"
        values = [r["data"][key] for r in session["records"]["sspo"][1:]]
        assert len(values) == STEPS and all(0.0 <= v <= 1.0 for v in values), (key, values)
        same_range[granularity] = sum(values) / len(values)
        assert key not in session["records"]["gspo"][1]["data"]
    print("SSPO, mean clip fraction at one clip range:", {k: f"{v:.4f}" for k, v in same_range.items()})
    assert same_range["token"] > 0  # the diagnostic sees clipping at all


@pytest.mark.slow
def test_ctrl_c_leaves_a_checkpoint_and_resume_matches_an_uninterrupted_run(session):
    interrupted = session["interrupted"]
    assert interrupted.interrupted and interrupted.last_step == INTERRUPT_AT
    assert session["state_after_interrupt"]["step"] == INTERRUPT_AT
    assert [r["step"] for r in session["after_interrupt"]] == list(range(INTERRUPT_AT + 1))

    resumed = session["resumed"]
    assert not resumed.interrupted and resumed.last_step == 2 * INTERRUPT_AT
    records = _read(resumed.run_dir)
    assert [r["step"] for r in records] == list(range(2 * INTERRUPT_AT + 1))
    # Same seed, same data, restored weights + optimizer: the resumed steps reproduce the
    # uninterrupted GRPO run's steps.
    reference = {r["step"]: r["data"] for r in session["records"]["grpo"]}
    for record in records[INTERRUPT_AT + 1 :]:
        for key in ("critic/score/mean", "actor/pg_loss", "actor/entropy"):
            assert record["data"][key] == pytest.approx(reference[record["step"]][key], rel=1e-4, abs=1e-6), (
                key
            )


@pytest.mark.slow
def test_saved_model_reloads_with_the_trained_accuracy(session):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sspo.local_run import evaluate

    run_dir = session["runs"]["sspo"].run_dir
    state = json.loads((run_dir / "state.json").read_text())
    assert state["step"] == STEPS and (run_dir / state["checkpoint"]).is_dir()
    model = AutoModelForCausalLM.from_pretrained(run_dir / "hf", attn_implementation="eager").float().eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "hf")
    cfg = LocalRunConfig(**json.loads((run_dir / "config.json").read_text()))
    last_val = [r["data"][VAL_ACC] for r in session["records"]["sspo"] if VAL_ACC in r["data"]][-1]
    assert evaluate(model, tokenizer, cfg) == pytest.approx(last_val)
    # and it is not the warm-up model
    warm = AutoModelForCausalLM.from_pretrained(session["out"] / "warmup").float()
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), warm.parameters(), strict=True))


@pytest.mark.slow
def test_report_renders_the_runs(session, tmp_path):
    from sspo.report import make_report

    runs = [str(session["runs"][a].run_dir) for a in ALGOS]
    result = make_report(runs, tmp_path / "report")
    assert {p.name for p in result["pngs"]} >= {
        "overview.png",
        "reward.png",
        "clip_fraction.png",
        "clip_by_granularity.png",
    }
    for p in result["pngs"]:
        assert p.read_bytes()[:4] == b"\x89PNG"
    rows = {row["run"]: row for row in result["rows"]}
    assert set(rows) == set(ALGOS)
    for algo in ALGOS:
        assert rows[algo]["reward end"] > rows[algo]["reward start"]
    assert math.isfinite(rows["sspo"]["same-range clip @sequence"])
    assert math.isnan(rows["grpo"]["same-range clip @sequence"])


def test_algorithm_settings_come_from_the_gpu_recipe():
    from omegaconf import OmegaConf

    from sspo.cpu_platform import compose_ppo_config

    for algo, loss_mode, low in (("grpo", "vanilla", 0.2), ("gspo", "gspo", 3e-4), ("sspo", "sspo", 0.02)):
        cfg = compose_ppo_config(recipe_algo_overrides(algo))
        assert OmegaConf.select(cfg, "actor_rollout_ref.actor.policy_loss.loss_mode") == loss_mode
        assert OmegaConf.select(cfg, "actor_rollout_ref.actor.clip_ratio_low") == pytest.approx(low)
    sspo = compose_ppo_config(recipe_algo_overrides("sspo"))
    assert sspo.actor_rollout_ref.actor.policy_loss._target_ == "sspo.loss.SSPOPolicyLossConfig"
    assert sspo.actor_rollout_ref.actor.policy_loss.granularity == "subsentence"


def test_bad_settings_fail_early_with_the_option_named(tmp_path, capsys):
    cases = [
        (dict(algo="ppo"), "--algo='ppo'"),
        (dict(group_size=1), "--group-size=1"),
        (dict(prompts_per_step=3, group_size=3, mini_batches=2), "--mini-batches=2 must divide"),
        (dict(lr=-1.0), "--lr=-1.0"),
        (dict(lr=float("nan")), "--lr=nan"),
        (dict(steps=0), "--steps=0"),
        (dict(max_operand=12), "--max-operand=12"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LocalRunError, match=message.replace("(", r"\(").replace("?", r"\?")):
            LocalRunConfig(**kwargs)
    with pytest.raises(LocalRunError, match="no checkpoint"):
        train(LocalRunConfig(algo="grpo"), tmp_path, resume=True, progress=False)
    # resuming with different settings is refused before any work
    run_dir = tmp_path / "grpo"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({**LocalRunConfig(algo="grpo").__dict__, "lr": 1.0}))
    (run_dir / "state.json").write_text(json.dumps({"step": 1, "checkpoint": "checkpoint/global_step_1"}))
    with pytest.raises(LocalRunError, match=r"differ from the checkpoint's \(\['lr'\]\)"):
        train(LocalRunConfig(algo="grpo"), tmp_path, resume=True, progress=False)
    # the command line reports them and exits with 2
    assert main(["--algo", "ppo", "--out", str(tmp_path / "x")]) == 2
    assert "--algo='ppo'" in capsys.readouterr().err
    assert main(["--algo", "grpo", "--mini-batches", "3", "--out", str(tmp_path / "x")]) == 2
