"""sspo.tools.stats: the like-with-like pairing, the cluster bootstrap over problems, the seeds' aggregation,
and the seed axis of the recipe (compose only). Expected values are worked out by hand in each test."""

from __future__ import annotations

import json
import math

import pytest

from sspo.tools import stats


def test_policy_versions_pair_the_validation_at_step_s_with_the_rollouts_of_step_s_plus_1():
    # validation at step s measured pi_s; the training samples of step s were drawn from pi_(s-1)
    assert stats.policy_version(0, validation=True) == 0
    assert stats.policy_version(1, validation=False) == 0
    assert stats.policy_version(9, validation=True) == stats.policy_version(10, validation=False) == 9
    assert stats.policy_version(18, validation=False) == 17


def test_endpoints_of_a_synthetic_run_start_at_pi0_and_end_at_the_last_policy_each_measure_saw():
    reward = {s: 0.1 + 0.01 * s for s in range(1, 19)}  # steps 1..18: policies pi0..pi17
    val = {0: 0.30, 9: 0.40, 18: 0.50}
    train = stats.endpoints("training reward", reward, validation=False)
    valid = stats.endpoints("validation accuracy", val, validation=True)
    assert (train.start_version, train.end_version, train.versions) == (0, 17, "pi0 -> pi17")
    assert (valid.start_version, valid.end_version) == (0, 18)
    assert train.start.estimate == pytest.approx(0.11) and train.end.estimate == pytest.approx(0.28)
    assert valid.start.estimate == pytest.approx(0.30) and valid.end.estimate == pytest.approx(0.50)
    assert valid.change.estimate == pytest.approx(0.20)
    # per-step means only: no interval, and the note says so
    assert not valid.change.computable and valid.change.note == stats.NO_DUMPS
    assert valid.start.text() == "0.30" and valid.change.text(signed=True) == "+0.20"
    assert stats.endpoints("x", {}, validation=True) is None
    once = stats.endpoints("validation accuracy", {18: 0.5}, validation=True)  # one validation: no change
    assert once.versions == "pi18 -> pi18" and once.change.text() == "-" and once.change.note == "one policy only"


def test_cluster_interval_of_perfectly_correlated_problems_is_wider_than_the_per_sample_one():
    # 10 problems x 8 samples; a problem's samples all agree: 5 problems always right, 5 always wrong
    groups = {p: [1.0 if p < 5 else 0.0] * 8 for p in range(10)}
    found = stats.cluster_mean(groups)
    assert found.estimate == pytest.approx(0.5)
    # naive interval, the 80 samples taken as independent: 2 * 1.96 * sqrt(0.25 / 80) = 0.219
    naive_width = 2 * 1.96 * math.sqrt(0.25 / 80)
    # resampling the 10 problems: about 2 * 1.96 * sqrt(0.25 / 10) = 0.62 (a percentile interval on a 1/10 grid)
    width = found.high - found.low
    assert width > 2 * naive_width
    assert 0.5 <= width <= 0.7 and found.low <= 0.5 <= found.high


def test_cluster_interval_known_answers():
    # two problems, right 0 and 1 of the time: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% percentiles are 0 and 1
    two = stats.cluster_mean({"a": [0.0, 0.0], "b": [1.0, 1.0]})
    assert (two.estimate, two.low, two.high) == (0.5, 0.0, 1.0)
    # every problem right half of the time: every resample's mean is 0.5
    same = stats.cluster_mean({p: [1.0, 0.0] for p in range(6)})
    assert (same.low, same.high) == (0.5, 0.5)
    # avg@k: the mean over problems of each problem's mean, not over samples (4 of 5 samples right)
    assert stats.cluster_mean({"a": [1.0] * 4, "b": [0.0]}).estimate == pytest.approx(0.5)
    one = stats.cluster_mean({"a": [1.0, 0.0]})
    assert one.estimate == 0.5 and not one.computable and one.text() == "0.50"


def test_change_is_paired_by_problem_when_both_ends_saw_the_same_problems():
    before = {p: [0.0, 0.0, 0.0, 1.0] if p % 2 else [0.0] * 4 for p in range(8)}  # means 0.25 / 0
    after = {p: [v + 0.5 for v in before[p]] for p in before}  # every problem up by exactly 0.5
    paired = stats.cluster_change(before, after)
    assert paired.note == "paired by problem"
    assert (paired.estimate, paired.low, paired.high) == pytest.approx((0.5, 0.5, 0.5))
    # the same outcomes on other problems: nothing to pair, each side resampled on its own: a real spread
    other = {p + 100: v for p, v in after.items()}
    unpaired = stats.cluster_change(before, other)
    assert unpaired.estimate == pytest.approx(0.5) and unpaired.note.startswith("unpaired")
    assert unpaired.high - unpaired.low > 0.1


def test_intervals_are_reproducible():
    groups = {p: [float((p * 7 + j) % 3 == 0) for j in range(4)] for p in range(20)}
    assert stats.cluster_mean(groups) == stats.cluster_mean(dict(reversed(list(groups.items()))))


def test_seed_aggregates_and_paired_differences():
    assert stats.iqm([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2.5)  # the middle two
    assert stats.iqm([0.0, 1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.0)  # one cut at each end of 5
    assert stats.iqm([0.1, 0.2, 0.9]) == pytest.approx(0.4)  # under 4 values: the mean
    mean = stats.across_seeds([0.2, 0.4, 0.6])
    assert mean.estimate == pytest.approx(0.4) and mean.low == pytest.approx(0.2) and mean.high == pytest.approx(0.6)
    assert stats.across_seeds([0.3, 0.3, 0.3], "iqm").text() == "0.30 [0.30, 0.30]"
    with pytest.raises(ValueError, match="'median'"):
        stats.across_seeds([0.1], "median")
    # SSPO - GRPO seed by seed, on the seeds both ran (seed 4 only in GRPO)
    grpo = {1: 0.40, 2: 0.60, 3: 0.50, 4: 0.0}
    sspo = {1: 0.50, 2: 0.70, 3: 0.60}
    diff = stats.paired_difference(sspo, grpo)
    assert (diff.estimate, diff.low, diff.high) == pytest.approx((0.1, 0.1, 0.1))
    assert diff.note == "3 common seed(s)"
    # two differences 0.1 and 0.3: resampled means 0.1, 0.2, 0.3 (chances 1/4, 1/2, 1/4) -> [0.1, 0.3]
    two = stats.paired_difference({1: 0.5, 2: 0.7}, {1: 0.4, 2: 0.4})
    assert (two.estimate, two.low, two.high) == pytest.approx((0.2, 0.1, 0.3))
    assert not stats.paired_difference({1: 0.5}, {2: 0.5}).computable


def test_run_names_carry_their_seed():
    assert stats.split_seed("sspo_cpu__seed-3") == ("sspo_cpu", 3)
    assert stats.split_seed("sspo__granularity-token__seed-12__clip-wide") == ("sspo__granularity-token__clip-wide", 12)
    assert stats.split_seed("sspo_cpu") == ("sspo_cpu", None)
    assert stats.split_seed("seedless__seed-x") == ("seedless__seed-x", None)


def test_dumps_are_read_per_problem_and_bad_rows_named(tmp_path):
    folder = tmp_path / "validation_generations"
    folder.mkdir()
    rows = [{"input": "q1", "output": "a", "gts": "2", "score": 1.0, "step": 0, "acc": True},
            {"input": "q1", "output": "b", "gts": "2", "score": 0.0, "step": 0, "acc": False},
            {"input": "q2", "output": "c", "gts": "3", "score": 0.5, "step": 0}]  # fmt: skip
    (folder / "0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "notes.jsonl").write_text("")
    assert stats.dump_files(folder) == {0: folder / "0.jsonl"}
    assert stats.read_dump(folder / "0.jsonl", "acc") == {"q1": [1.0, 0.0], "q2": [0.5]}  # no acc: the score
    assert stats.find_dump_dirs(tmp_path / "tensorboard") == {"validation": folder}
    (folder / "6.jsonl").write_text('{"input": "q1", "score": 1}\n{"output": "x"}\n')
    with pytest.raises(stats.StatsError, match=r"6.jsonl:2: a verl dump row needs 'input'"):
        stats.read_dump(folder / "6.jsonl", "acc")


def test_multirun_seed_axis_composes_runs_with_distinct_propagated_seeds():
    """``sspo.seed=1,2,3`` under --multirun: three points, each run named with its seed and every seed verl
    0.9.1 reads set from it (compose only, nothing runs)."""
    from omegaconf import OmegaConf

    from sspo.launch.cli import compose_config, run_suffix, sweep_points

    points, swept = sweep_points(["experiment=sspo_cpu", "sspo.seed=1,2,3"])
    assert swept == ["sspo.seed"] and len(points) == 3
    keys = (
        "data.seed", "actor_rollout_ref.actor.data_loader_seed", "actor_rollout_ref.actor.fsdp_config.seed",
        "actor_rollout_ref.ref.fsdp_config.seed", "actor_rollout_ref.rollout.seed", "critic.data_loader_seed",
        "critic.fsdp.seed", "reward.reward_model.rollout.seed",
    )  # fmt: skip
    dirs = set()
    for seed, point in zip((1, 2, 3), points, strict=True):
        cfg = compose_config(point, name_suffix=run_suffix(point, swept))
        assert cfg.trainer.experiment_name == f"sspo_cpu__seed-{seed}"
        assert {k: OmegaConf.select(cfg, k) for k in keys} == dict.fromkeys(keys, seed)
        dirs.add(cfg.trainer.default_local_dir)
    assert len(dirs) == 3  # one output directory per seed
    default = compose_config(["experiment=sspo_cpu"])
    assert {OmegaConf.select(default, k) for k in keys} == {42}


def test_stratified_mean_resamples_problems_within_each_stratum():
    # a stratum without spread adds none: every resample of [0.5]*3 and [0.2]*2 averages (0.5 + 0.2) / 2
    flat = stats.stratified_mean([[0.5, 0.5, 0.5], [0.2, 0.2]])
    assert (flat.estimate, flat.low, flat.high) == pytest.approx((0.35, 0.35, 0.35))
    # stratum 1 resamples to 0, 0.5 or 1 (chances 1/4, 1/2, 1/4), stratum 2 is always 1: averages 0.5, 0.75, 1
    two = stats.stratified_mean([[0.0, 1.0], [1.0, 1.0]])
    assert (two.estimate, two.low, two.high) == pytest.approx((0.75, 0.5, 1.0))
    # the average of the strata's means, not of the pooled problems (pooled: 0.8)
    assert stats.stratified_mean([[1.0] * 4 + [0.0], [0.5, 0.5]]).estimate == pytest.approx(0.65)
    assert not stats.stratified_mean([[0.5, 0.5], []]).computable
