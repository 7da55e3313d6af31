"""Interval estimates for the recipe's comparisons: like with like, problems resampled, seeds aggregated.

One definition of *what is compared*, used by the report, the demo's screen and the plots
(:func:`policy_version`): verl logs the validation of the policy after ``s`` updates, pi_s, at step ``s``
(pi_0: ``val_before_train``, logged at step 0), and the training metrics of step ``s`` (reward, entropy, clip
fraction, lengths) from the rollouts drawn from pi_{s-1}, before step ``s``'s update. So the validation at step
``s`` pairs with the training samples of step ``s + 1``. A measure's *start* is the first policy it saw (pi_0:
the validation at step 0 and the training reward of step 1); its *end* is the last policy it saw: for the
validation after the last step S that is pi_S, for the training reward of step S it is pi_{S-1} (no rollouts
are ever drawn from the final policy). The end of the two measures therefore differs by one update; every
table names the policies (``pi0 -> pi17``) so that this is visible, and only the start is an exact pair unless
the run also validated at step S-1. (verl's async trainer modes may draw a step's rollouts from older
policies still; this pairing is that of the synchronous mode the recipe uses.)

The intervals (:class:`Interval`) are 95% percentile-bootstrap intervals from ``scipy.stats.bootstrap``
(seeded: the same input prints the same interval):

* a row's accuracy or reward at one policy (:func:`cluster_mean`): the samples of one problem are correlated
  (a problem the policy knows is right in most of its samples), so PROBLEMS are resampled, each with all of its
  samples (a cluster bootstrap); the estimate is the mean over problems of the per-problem mean (avg@k);
* a start -> end change (:func:`cluster_change`): paired by problem when both ends measured the same problems
  (the validation set), else the two ends' problems resampled independently (training batches of other
  problems);
* across seeds (:func:`across_seeds`, :func:`paired_difference`): the runs of one row are resampled (rliable's
  stratified bootstrap with one task), for the mean and the interquartile mean (IQM: ``scipy.stats.trim_mean``
  with 25% cut at each end, as rliable computes it); a difference between two rows is taken seed by seed on the
  seeds both ran, then resampled. With few seeds these intervals are too narrow (a percentile bootstrap over 3
  values has 10 distinct resamples): read them as the seeds' spread, and run 5+ seeds for a claim.

Per-problem outcomes come from verl's dumps (``trainer.validation_data_dir`` and ``trainer.rollout_data_dir``: one
``<step>.jsonl`` per dump, a row per sample with its prompt ``input`` and its ``score``, plus the reward's ``acc``).
From per-step means alone (TensorBoard, the console) no interval can be computed: the number is shown without.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIDENCE = 0.95
N_RESAMPLES = 9999  # scipy's default
BOOTSTRAP_SEED = 0
NO_DUMPS = "no interval: per-step means only"
# folders a run's dumps are found in, beside its logs (sspo_trainer.yaml; dataset/gsm8k_smollm2.yaml)
VALIDATION_DIRS = ("validation_generations",)
ROLLOUT_DIRS = ("rollouts", "rollout_generations")
SEED_IN_NAME = re.compile(r"__seed-(-?\d+)(?=__|$)")


class StatsError(ValueError):
    """A dump that cannot be read: the message names the file, the line and what is expected."""


@dataclass(frozen=True)
class Interval:
    """An estimate and its 95% interval (NaN bounds: no interval could be computed, ``note`` says why)."""

    estimate: float
    low: float = math.nan
    high: float = math.nan
    note: str = ""

    @property
    def computable(self) -> bool:
        """Both bounds are numbers."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, digits: int = 2, signed: bool = False) -> str:
        """``0.36 [0.29, 0.43]``; the estimate alone when there is no interval; ``-`` for a NaN estimate."""
        if not math.isfinite(self.estimate):
            return "-"
        fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
        if not self.computable:
            return fmt.format(self.estimate)
        return f"{fmt.format(self.estimate)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def bootstrap_interval(
    samples: Sequence[Sequence[float]],
    statistic: Callable[..., Any],
    paired: bool = False,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """95% percentile interval of ``statistic(*samples, axis=-1)`` by ``scipy.stats.bootstrap``; (nan, nan) when
    a sample has fewer than 2 values (nothing to resample)."""
    import numpy as np
    from scipy.stats import bootstrap

    arrays = tuple(np.asarray(s, dtype=float) for s in samples)
    if any(a.size < 2 for a in arrays):
        return math.nan, math.nan
    result = bootstrap(
        arrays, statistic, n_resamples=N_RESAMPLES, batch=1000, vectorized=True, paired=paired, axis=-1,
        confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean(x: Any, axis: int = -1) -> Any:
    import numpy as np

    return np.mean(x, axis=axis)


def _shift(before: Any, after: Any, axis: int = -1) -> Any:
    import numpy as np

    return np.mean(after, axis=axis) - np.mean(before, axis=axis)


def problem_means(groups: Mapping[Any, Sequence[float]]) -> list[float]:
    """Per-problem mean outcome, problems in sorted order; an empty problem is an error."""
    empty = [k for k, v in groups.items() if not len(v)]
    if empty:
        raise StatsError(f"problem(s) {empty[:3]} have no samples: every problem needs at least one outcome")
    return [sum(groups[k]) / len(groups[k]) for k in sorted(groups, key=str)]


def cluster_mean(groups: Mapping[Any, Sequence[float]]) -> Interval:
    """Mean over problems of each problem's mean outcome (avg@k), problems resampled with all their samples."""
    means = problem_means(groups)
    if not means:
        return Interval(math.nan, note="no samples")
    low, high = bootstrap_interval([means], _mean)
    note = "" if math.isfinite(low) else "one problem: no interval"
    return Interval(sum(means) / len(means), low, high, note)


def cluster_change(
    before: Mapping[Any, Sequence[float]], after: Mapping[Any, Sequence[float]]
) -> Interval:
    """``after - before`` of :func:`cluster_mean`: paired by problem when both measured the same problems,
    otherwise each side's problems resampled independently (``note`` says which)."""
    a, b = problem_means(before), problem_means(after)
    if not a or not b:
        return Interval(math.nan, note="no samples")
    paired = set(before) == set(after)
    low, high = bootstrap_interval([a, b], _shift, paired=paired)
    note = "paired by problem" if paired else "unpaired: different problems at the two ends"
    return Interval(sum(b) / len(b) - sum(a) / len(a), low, high, note)


def _mean_of_means(*samples: Any, axis: int = -1) -> Any:
    import numpy as np

    return np.mean([np.mean(s, axis=axis) for s in samples], axis=0)


def stratified_mean(strata: Sequence[Sequence[float]]) -> Interval:
    """Mean over strata (e.g. benchmarks) of each stratum's mean of per-problem values, the problems resampled
    within each stratum (a stratified bootstrap: the five-benchmark average)."""
    if not strata or any(not len(s) for s in strata):
        return Interval(math.nan, note="a stratum without problems")
    low, high = bootstrap_interval(strata, _mean_of_means)
    return Interval(sum(sum(s) / len(s) for s in strata) / len(strata), low, high)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean``, 25% cut at each end;
    with fewer than 4 values nothing is cut, so it is the mean)."""
    from scipy.stats import trim_mean

    return float(trim_mean(values, 0.25)) if len(values) else math.nan


def _iqm(x: Any, axis: int = -1) -> Any:
    from scipy.stats import trim_mean

    return trim_mean(x, 0.25, axis=axis)


def across_seeds(values: Sequence[float], statistic: str = "mean") -> Interval:
    """The ``mean`` or ``iqm`` of one row's runs (one value per seed), the runs resampled."""
    if statistic not in ("mean", "iqm"):
        raise ValueError(f"statistic {statistic!r}: use 'mean' or 'iqm'")
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return Interval(math.nan, note="no finite value")
    estimate = sum(finite) / len(finite) if statistic == "mean" else iqm(finite)
    low, high = bootstrap_interval([finite], _mean if statistic == "mean" else _iqm)
    return Interval(estimate, low, high, "" if math.isfinite(low) else "one seed: no interval")


def paired_difference(row: Mapping[int, float], baseline: Mapping[int, float]) -> Interval:
    """Mean over the seeds both ran of ``row[seed] - baseline[seed]``, the seeds resampled."""
    seeds = sorted(s for s in set(row) & set(baseline) if math.isfinite(row[s]) and math.isfinite(baseline[s]))
    if not seeds:
        return Interval(math.nan, note="no seed in common")
    diffs = [row[s] - baseline[s] for s in seeds]
    low, high = bootstrap_interval([diffs], _mean)
    return Interval(sum(diffs) / len(diffs), low, high, f"{len(seeds)} common seed(s)")


def split_seed(name: str) -> tuple[str, int | None]:
    """``sspo_cpu__seed-3`` -> (``sspo_cpu``, 3): the run name that ``--multirun ... sspo.seed=1,2,3`` gives
    (``__seed-N`` anywhere among the suffixes); a name without it -> (name, None)."""
    match = SEED_IN_NAME.search(name)
    if not match:
        return name, None
    return name[: match.start()] + name[match.end() :], int(match.group(1))


# ----------------------------------------------------------------------------------------------
# Like with like: policy versions
# ----------------------------------------------------------------------------------------------
def policy_version(step: int, validation: bool) -> int:
    """The policy a metric logged at ``step`` measured (updates applied before it): the validation at step
    ``s`` measured pi_s, the training samples of step ``s`` were drawn from pi_{s-1} (module docstring)."""
    return int(step) if validation else int(step) - 1


@dataclass(frozen=True)
class Endpoints:
    """One measure of one run at its first and last policy, and the change between them."""

    measure: str
    start_version: int
    end_version: int
    start: Interval
    end: Interval
    change: Interval

    @property
    def versions(self) -> str:
        """``pi0 -> pi17``."""
        return f"pi{self.start_version} -> pi{self.end_version}"


def endpoints(
    measure: str,
    per_step: Mapping[int, float],
    validation: bool,
    per_problem: Callable[[int], Mapping[Any, Sequence[float]] | None] | None = None,
    dump_steps: Sequence[int] = (),
) -> Endpoints | None:
    """Start and end of ``measure`` by policy version (:func:`policy_version`), with intervals where
    ``per_problem(step)`` gives that step's per-problem outcomes (from a dump; None: not dumped).

    The estimates come from the dump where there is one (the mean over problems), else from ``per_step``.
    Returns None when the measure was never logged.
    """
    steps = sorted({int(s) for s, v in per_step.items() if math.isfinite(v)} | {int(s) for s in dump_steps})
    if not steps:
        return None
    first, last = steps[0], steps[-1]
    groups = {s: (per_problem(s) if per_problem else None) for s in {first, last}}

    def at(step: int) -> Interval:
        if groups[step]:
            return cluster_mean(groups[step])  # type: ignore[arg-type]
        return Interval(float(per_step.get(step, math.nan)), note=NO_DUMPS)

    start, end = at(first), at(last)
    if first == last:  # one policy measured: no change to speak of
        change = Interval(math.nan, note="one policy only")
    elif groups[first] and groups[last]:
        change = cluster_change(groups[first], groups[last])  # type: ignore[arg-type]
    else:
        change = Interval(end.estimate - start.estimate, note=NO_DUMPS)
    return Endpoints(measure, policy_version(first, validation), policy_version(last, validation), start, end, change)


# ----------------------------------------------------------------------------------------------
# verl's dumps
# ----------------------------------------------------------------------------------------------
def dump_files(folder: Path | None) -> dict[int, Path]:
    """``step -> <step>.jsonl`` of a verl dump folder (empty when there is none)."""
    if folder is None or not folder.is_dir():
        return {}
    return {int(f.stem): f for f in folder.glob("*.jsonl") if f.stem.isdigit()}


def find_dump_dirs(source: Path) -> dict[str, Path]:
    """The ``validation`` and ``rollouts`` dump folders of a run given by its logs' path: looked for in that
    folder and the one above (``<run>/tensorboard`` -> ``<run>/validation_generations``)."""
    found: dict[str, Path] = {}
    places = [source] if source.is_dir() else []
    places.append(source.parent)
    for kind, names in (("validation", VALIDATION_DIRS), ("rollouts", ROLLOUT_DIRS)):
        for place in places:
            hit = next((place / n for n in names if dump_files(place / n)), None)
            if hit is not None:
                found[kind] = hit
                break
    return found


def read_dump(path: Path, field: str) -> dict[str, list[float]]:
    """One verl dump (``<step>.jsonl``) as ``prompt -> outcomes``: ``field`` of each row (``acc`` for the
    validation accuracy, ``score`` for the training reward; ``score`` when a row lacks ``acc``)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise StatsError(f"{path}:{lineno}: not JSON ({e.msg}); expected one of verl's dumps") from e
        value = row.get(field, row.get("score")) if isinstance(row, dict) else None
        if not isinstance(row, dict) or "input" not in row or not isinstance(value, (bool, int, float)):
            raise StatsError(
                f"{path}:{lineno}: a verl dump row needs 'input' and a numeric '{field}' or 'score' "
                "(trainer.validation_data_dir / trainer.rollout_data_dir)"
            )
        groups[str(row["input"])].append(float(value))
    return dict(groups)
