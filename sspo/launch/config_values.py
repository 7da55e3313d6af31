"""Every count, length, rate and temperature of a composed config inside its meaning; names verl takes as given.

verl 0.9.1 does not range-check most numbers: ``data.train_batch_size=0`` trains "0 prompts", a negative
learning rate ascends, ``ppo_mini_batch_size=0`` dies in a bare ``ZeroDivisionError`` after the workers are
up, ``data.train_batch_size=abc`` in a ``TypeError`` naming no key. :data:`VALUE_RULES` says, per KIND of
key (a glob over the dotted key), what the value means and which values verl gives a meaning of their own
(its sentinels, read from verl 0.9.1's config classes and trainer: ``-1`` "unset" for
``optim.total_training_steps``, ``optim.lr_warmup_steps``, ``data.*_max_samples``, ``top_k``; ``null``
"derive it" for micro-batch sizes, ``max_model_len``, ``trainer.total_training_steps``; any
``save_freq``/``test_freq`` <= 0 "never", as its trainer tests ``freq > 0``). :func:`config_problems` walks
every leaf of the config once and applies the first rule whose pattern matches, so a key of the same kind
that no rule names (a new ``*_micro_batch_size_per_gpu``, a ``*max_*_length``) is checked too.

Names: ``trainer.logger`` entries against verl's own ``Tracking.supported_backend``; ``trainer.project_name``
and ``trainer.experiment_name`` must each be one non-empty, path-safe folder name (the run's folder is
``<output dir>/<project>/<experiment>``: an empty name would make it the parent of every row's folder).
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "VALUE_RULES",
    "Range",
    "config_problems",
    "logger_problems",
    "name_problems",
    "note_derived",
    "value_problems",
]


@dataclass(frozen=True)
class Range:
    """What the values of one kind of key mean: a whole number or a real one, its bounds, verl's sentinels.

    ``low``/``high`` are inclusive unless ``low_open``; ``sentinels`` are values verl gives a meaning of its own
    (allowed, named in the message); ``nullable``: ``null`` has a meaning for this key in verl ("derive it").
    """

    what: str
    whole: bool = True
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    sentinels: tuple[int, ...] = ()
    nullable: bool = True

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``a whole number >= 1 (or null)``."""
        kind = "a whole number" if self.whole else "a number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_fmt(self.low)}")
        if self.high is not None:
            bounds.append(f"<= {_fmt(self.high)}")
        extra = [f"{s} (verl: unset)" for s in self.sentinels] + (["null"] if self.nullable else [])
        return f"{kind} {' and '.join(bounds)}".strip() + (f" (or {', '.join(extra)})" if extra else "")

    def problem(self, key: str, value: Any) -> str | None:
        """None if ``value`` is allowed for ``key``, else one line naming the key, the value and the fix."""
        if value is None:
            return None if self.nullable else f"{key}=null: {self.what} must be set. Fix: {key}=<{self.allowed()}>"
        if value in self.sentinels and isinstance(value, int) and not isinstance(value, bool):
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (self.whole and not isinstance(value, int)) or not math.isfinite(value):
            return f"{key}={value!r} is not {self.allowed()} ({self.what}). Fix: {key}=<{self.allowed()}>"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and value > self.high
        if below or above:
            return f"{key}={value!r}: {self.what} must be {self.allowed()}. Fix: {key}=<{self.allowed()}>"
        return None


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


COUNT = Range("a count", low=1)
COUNT_OR_NONE = Range("a count (0: none)", low=0)
#: verl's -1 "unset" (``OptimizerConfig.total_training_steps``/``lr_warmup_steps``, ``data.*_max_samples``)
COUNT_OR_UNSET = Range("a count", low=0, sentinels=(-1,))
LENGTH = Range("a length in tokens", low=1)
RATE = Range("a fraction", whole=False, low=0, high=1)

#: (glob over the dotted key, what its value must be); the FIRST matching pattern decides, so the specific
#: keys come before the kind they belong to. Keys no pattern matches are not checked here.
VALUE_RULES: tuple[tuple[str, Range], ...] = (
    # sizes that must be set
    ("trainer.nnodes", Range("the training nodes", low=1, nullable=False)),
    ("trainer.n_gpus_per_node", Range("the GPUs per training node", low=1, nullable=False)),
    ("data.train_batch_size", Range("the prompts per step", low=1, nullable=False)),
    ("actor_rollout_ref.actor.ppo_mini_batch_size", Range("the prompts per mini-batch", low=1, nullable=False)),
    ("data.max_prompt_length", Range("a length in tokens", low=1, nullable=False)),
    ("data.max_response_length", Range("a length in tokens", low=1, nullable=False)),
    ("actor_rollout_ref.rollout.n", Range("the samples per prompt", low=1, nullable=False)),
    ("trainer.total_epochs", Range("the epochs", low=1, nullable=False)),
    ("trainer.total_training_steps", Range("the training steps (null: total_epochs x the steps per epoch)", low=1)),
    # verl's trainer saves/validates when `freq > 0` and the step is a multiple: any value <= 0 means never
    ("*_freq", Range("a step interval (<= 0: never)", nullable=False)),
    # optimizer: lr 0 is a legitimate control run (no update); verl fills total_training_steps (-1) itself
    ("*optim.lr", Range("a learning rate", whole=False, low=0, nullable=False)),
    ("*optim.*lr_ratio", RATE),
    ("*optim.lr_warmup_steps_ratio", RATE),
    ("*optim.lr_warmup_steps", COUNT_OR_UNSET),
    ("*optim.total_training_steps", COUNT_OR_UNSET),
    ("*optim.clip_grad", Range("a gradient-norm bound", whole=False, low=0, low_open=True)),
    # sampling: temperature 0 is greedy (the recipe's validation); top_k -1 and 0 are vLLM's "off"
    ("*temperature", Range("a sampling temperature (0: greedy)", whole=False, low=0, nullable=False)),
    ("*top_p", Range("a nucleus probability", whole=False, low=0, high=1, low_open=True)),
    ("*top_k", Range("a top-k cut (-1 or 0: off)", low=-1)),
    ("*gpu_memory_utilization", Range("a share of GPU memory", whole=False, low=0, high=1, low_open=True)),
    ("*rollout.n", Range("the samples per prompt", low=1)),
    ("*val_kwargs.n", Range("the samples per validation prompt", low=1)),
    # nodes/GPUs of the optional pools (rollout in separate_async, reward model, teacher): 0 when unused
    ("*.nnodes", COUNT_OR_NONE),
    ("*.n_gpus_per_node", COUNT_OR_NONE),
    ("*max_samples", COUNT_OR_UNSET),
    # the kinds: every batch size, token budget, length, worker count, parallel size
    ("data.dataloader_num_workers", Range("DataLoader worker processes (0: in the main process)", low=0)),
    ("*num_workers*", COUNT),
    ("*batch_size*", COUNT),
    ("*max_token_len*", LENGTH),
    ("*max_*_length", LENGTH),
    ("*.prompt_length", LENGTH),
    ("*.response_length", LENGTH),
    ("*max_model_len", LENGTH),
    ("*max_num_seqs", COUNT),
    ("*max_num_batched_tokens", LENGTH),
    ("*sequence_parallel_size", COUNT),
    ("*model_parallel_size", COUNT),
    ("*ppo_epochs", COUNT),
    ("trainer.critic_warmup", Range("warm-up steps of the critic", low=0)),
    ("trainer.log_val_generations", Range("validation generations to log", low=0)),
)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a plain container; a list of mappings is walked as ``key[i]``."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, node


#: id(composed config) -> the keys whose value was an interpolation of another key before it was resolved
_DERIVED: dict[int, frozenset[str]] = {}


def note_derived(cfg: DictConfig) -> None:
    """Remember, before ``cfg`` is resolved, which keys only copy another (``${...}``): a bad value is then
    named once, at the key the user sets (``trainer.n_gpus_per_node``), not at each copy of it."""
    import weakref

    def walk(node: DictConfig, prefix: str) -> Iterator[str]:
        for k in node.keys():
            key = f"{prefix}{k}"
            if OmegaConf.is_interpolation(node, k):
                yield key
            elif isinstance(child := node._get_node(k), DictConfig):  # noqa: SLF001 -- no resolution
                yield from walk(child, f"{key}.")

    _DERIVED[id(cfg)] = frozenset(walk(cfg, ""))
    weakref.finalize(cfg, _DERIVED.pop, id(cfg), None)


def _rule(key: str) -> Range | None:
    return next((rule for pattern, rule in VALUE_RULES if fnmatch.fnmatchcase(key, pattern)), None)


def value_problems(cfg: DictConfig) -> list[str]:
    """One line per value of ``cfg`` outside its meaning (:data:`VALUE_RULES`), in the config's order."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    derived = _DERIVED.get(id(cfg), frozenset())
    problems = []
    for key, value in _leaves(container):
        if "profiler" in key or key in derived:  # profiler: tool settings; a copy: checked at its source
            continue
        rule = _rule(key)
        if rule is not None and (problem := rule.problem(key, value)) is not None:
            problems.append(problem)
    return problems


def logger_problems(cfg: DictConfig) -> list[str]:
    """``trainer.logger`` entries verl's ``Tracking`` does not know (it asserts only when the trainer starts)."""
    from verl.utils.tracking import Tracking

    known = [*Tracking.supported_backend, "tracking"]  # "tracking": verl's deprecated name for wandb
    loggers = OmegaConf.select(cfg, "trainer.logger", default=None) or []
    loggers = [loggers] if isinstance(loggers, str) else list(loggers)
    problems = []
    for name in loggers:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            problems.append(
                f"trainer.logger: {name!r} is not one of verl's loggers ({', '.join(Tracking.supported_backend)}). "
                f"Fix: {hint}e.g. trainer.logger=[console,tensorboard]"
            )
    return problems


#: characters a folder name may not hold on the filesystems a run writes to (and none that a shell mangles)
UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f:*?\"<>|]")


def name_problems(cfg: DictConfig) -> list[str]:
    """``trainer.project_name`` and ``trainer.experiment_name`` are each one non-empty, path-safe folder name."""
    problems = []
    for key in ("trainer.project_name", "trainer.experiment_name"):
        value = OmegaConf.select(cfg, key, default=None)
        text = "" if value is None else str(value)
        why = None
        if not text.strip():
            why = "is empty: the run's folder <output dir>/<project>/<experiment> would be the parent of every run's"
        elif text in (".", "..") or UNSAFE_NAME.search(text) or text != text.strip():
            why = "is not one folder name (no '/', '\\', '.', '..', control characters, :*?\"<>|, outer spaces)"
        if why:
            problems.append(f"{key}={value!r} {why}. Fix: {key}=<a name such as my_run-1>")
    return problems


def config_problems(cfg: DictConfig) -> list[str]:
    """Every value, name and policy-loss key of ``cfg`` that cannot mean what it says (one line each)."""
    from sspo.verl_plugin.config_checks import policy_loss_key_problems

    return value_problems(cfg) + logger_problems(cfg) + name_problems(cfg) + policy_loss_key_problems(cfg)
