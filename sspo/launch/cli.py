"""The recipe's one entry point: compose the Hydra config, run pre-flight checks, start verl's trainer.

    python -m sspo.launch.cli experiment=sspo_qwen2.5-math-1.5b [hydra overrides...]
    python -m sspo.launch.cli --dry-run experiment=grpo_qwen2.5-math-7b cluster=2x8gpu
    python -m sspo.launch.cli --multirun experiment=sspo_qwen2.5-math-1.5b \
        actor_rollout_ref.actor.policy_loss.granularity=token,subsentence,sequence
    python -m sspo.launch.cli --multirun experiment=sspo_cpu sspo.seed=1,2,3   # runs sspo_cpu__seed-{1,2,3}

``sspo.seed`` sets every seed verl reads (recipe/config/sspo_trainer.yaml; docs/statistics.md).
The config is ``recipe/config/sspo_trainer.yaml``, which extends verl's real ``ppo_trainer`` config.
Checks run on the driver (sspo.launch.preflight) before any GPU is touched; then ``verl.trainer.main_ppo.main``
runs with the composed config (verl's own entry, called through Hydra's config pass-through).
``--dry-run`` prints the resolved config and the checks and exits (CPU only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from sspo.launch import config_values, preflight

CONFIG_NAME = "sspo_trainer"
# recipe/config beside the package (editable install, a git checkout, or a Ray job's working_dir)
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipe" / "config"
RESOLVED_HEADER = "===== resolved config ====="
POLICY_LOSS_KEY = "actor_rollout_ref.actor.policy_loss"
# the first line of a run, read by sspo.tools.progress (the run's directory: where its console log goes)
RUN_MARKER = "[sspo] run {name}: {dir} ({total} steps)"
CHECKS_HEADER = "===== pre-flight checks ====="
# keys holding local paths that Ray workers (other cwd) must see as absolute paths
PATH_KEYS = (
    "data.train_files",
    "data.val_files",
    "actor_rollout_ref.model.path",
    "trainer.default_local_dir",
    "trainer.validation_data_dir",
    "trainer.rollout_data_dir",
    "ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR",
)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options; everything else is a Hydra override."""
    p = argparse.ArgumentParser(
        prog="sspo-train",
        description="Compose the SSPO recipe config, check it, and start verl's PPO trainer.",
        epilog="Overrides use Hydra syntax: experiment=sspo_qwen2.5-math-7b cluster=2x8gpu data.train_batch_size=256",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides (key=value, group=option)")
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and the checks, then exit"
    )
    p.add_argument(
        "--print-key",
        metavar="KEY",
        help="print one key of the resolved config (e.g. for scripts) and exit; with --multirun one line per "
        "point, in order, and nothing else",
    )
    p.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="expand comma-separated sweeps (a=x,y) into one run per point",
    )
    p.add_argument(
        "--config-dir", type=Path, default=None, help=f"config directory (default: {DEFAULT_CONFIG_DIR})"
    )
    p.add_argument("--config-name", default=CONFIG_NAME, help="primary config name (default: %(default)s)")
    p.add_argument(
        "--name-suffix", default="", help="append to trainer.experiment_name (set per point by --multirun)"
    )
    p.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="one progress line on the screen, verl's full console in <run dir>/console.log (default: on when "
        "stdout is a terminal and VERBOSE is unset; off: verl's console as it is)",
    )
    p.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster to check GPUs against (default: $RAY_ADDRESS, which Ray sets inside a job)",
    )
    return p


def recipe_config_dir(config_dir: Path | None = None) -> Path:
    """--config-dir, else $SSPO_RECIPE_CONFIG_DIR, else recipe/config beside the package."""
    return Path(config_dir or os.environ.get("SSPO_RECIPE_CONFIG_DIR") or DEFAULT_CONFIG_DIR).resolve()


def compose_config(
    overrides: Sequence[str],
    config_dir: Path | None = None,
    config_name: str = CONFIG_NAME,
    name_suffix: str = "",
    resolve: bool = True,
) -> DictConfig:
    """Compose the recipe config with Hydra's compose API (as ``@hydra.main`` would) and resolve it.

    ``name_suffix`` is appended to ``trainer.experiment_name`` before resolution, so the output
    paths derived from the name follow it (one directory per multirun point). Relative local paths
    are made absolute against the current directory: verl reads them in Ray actors whose working
    directory differs.
    """
    from hydra import compose, initialize_config_dir

    config_dir = recipe_config_dir(config_dir)
    if not (config_dir / f"{config_name}.yaml").is_file():
        raise FileNotFoundError(
            f"recipe config {config_dir / (config_name + '.yaml')} not found: run from a checkout of the project "
            "(pip install -e .), or pass --config-dir / set SSPO_RECIPE_CONFIG_DIR"
        )
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    if name_suffix:
        cfg.trainer.experiment_name = f"{cfg.trainer.experiment_name}{name_suffix}"
    if not resolve:
        return cfg
    config_values.note_derived(cfg)  # a bad value is then named at the key set, not at each copy of it
    OmegaConf.resolve(cfg)
    env_vars = OmegaConf.select(cfg, "ray_kwargs.ray_init.runtime_env.env_vars", default=None)
    for key, value in (env_vars or {}).items():  # Ray accepts strings only; `...env_vars.OMP_NUM_THREADS=2` is an int
        if value is not None and not isinstance(value, str):
            env_vars[key] = str(value).lower() if isinstance(value, bool) else str(value)
    dropped = drop_local_ray_settings(cfg)
    if dropped:
        print(f"joining a running Ray cluster: ray_kwargs.ray_init.{{{','.join(dropped)}}} ignored (they size a new one)", file=sys.stderr)
    with open_dict(cfg):
        for key in PATH_KEYS:
            value = OmegaConf.select(cfg, key)
            may_be_hub_id = key == "actor_rollout_ref.model.path"
            if isinstance(value, str):
                OmegaConf.update(cfg, key, _absolute(value, may_be_hub_id))
            elif value is not None and OmegaConf.is_list(value):
                OmegaConf.update(cfg, key, [_absolute(str(v), may_be_hub_id) for v in value])
    return cfg


# ray.init arguments that size a NEW local cluster; Ray rejects them when joining a running one
LOCAL_RAY_KEYS = ("num_cpus", "num_gpus", "resources", "object_store_memory", "include_dashboard")


def joins_running_cluster(cfg: DictConfig) -> bool:
    """verl's ``ray.init`` will join a running cluster: ``RAY_ADDRESS`` (set inside ``ray job submit``) or ``ray_init.address``."""
    address = OmegaConf.select(cfg, "ray_kwargs.ray_init.address", default=None) or os.environ.get("RAY_ADDRESS")
    return bool(address) and address != "local"


def drop_local_ray_settings(cfg: DictConfig) -> list[str]:
    """Remove :data:`LOCAL_RAY_KEYS` from ``ray_kwargs.ray_init`` when joining a running cluster; returns them.

    E.g. the CPU preset's fake ``num_gpus``: a cluster started with ``ray start --num-gpus=1`` already has them.
    """
    ray_init = OmegaConf.select(cfg, "ray_kwargs.ray_init", default=None)
    if ray_init is None or not joins_running_cluster(cfg):
        return []
    dropped = [k for k in LOCAL_RAY_KEYS if ray_init.get(k) is not None]
    with open_dict(ray_init):
        for key in dropped:
            ray_init.pop(key)
    return dropped


def _absolute(path: str, may_be_hub_id: bool = False) -> str:
    """Absolute form of a relative local path; URLs, absolute paths (and hub ids if allowed) unchanged."""
    if not path or preflight.REMOTE.match(path) or os.path.isabs(path):
        return path
    if path.startswith("~"):
        return os.path.expanduser(path)
    if may_be_hub_id and preflight.HUB_ID.match(path) and not os.path.exists(path):
        return path
    return os.path.abspath(path)


def sweep_points(overrides: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """Cartesian product of Hydra sweep overrides (``k=a,b``), parsed by Hydra's own override parser.

    Returns the points (one override list each) and the swept keys.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    axes, swept = [], []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element()
        if override.is_sweep_override():
            swept.append(key)
            axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(point) for point in itertools.product(*axes)], swept


def run_suffix(point: Sequence[str], swept: Sequence[str]) -> str:
    """experiment_name suffix of one multirun point: each swept key's last component and value (characters
    a folder name cannot hold, e.g. the '/' of a swept path, become '_')."""
    from sspo.launch.config_values import UNSAFE_NAME

    parts = [o.split("=", 1) for o in point if o.split("=", 1)[0] in swept]
    return UNSAFE_NAME.sub("_", "".join(f"__{k.rsplit('.', 1)[-1]}-{v}" for k, v in parts))


def check(cfg: DictConfig, ray_address: str | None, dry_run: bool) -> list[preflight.CheckResult]:
    """Run and print the pre-flight checks."""
    results = preflight.run_checks(cfg, ray_address=ray_address, dry_run=dry_run)
    print(CHECKS_HEADER)
    for r in results:
        print(r.line())
    return results


def train(cfg: DictConfig) -> None:
    """Start verl's trainer with the composed config (verl's ``main_ppo.main``, Hydra pass-through).

    ``VERL_USE_EXTERNAL_MODULES`` makes the workers of a local Ray cluster (which inherit this
    environment) import the plugin even if the project is not pip-installed there.
    """
    from verl.trainer.main_ppo import main as verl_main

    os.environ.setdefault("VERL_USE_EXTERNAL_MODULES", "sspo.verl_plugin")
    if cfg.trainer.get("device") == "cpu":
        # CPU mode (cluster=cpu): the driver too, else verl's auto_set_device resets trainer.device
        import sspo.cpu.bootstrap  # noqa: F401
    verl_main(cfg)


def explain_config_error(error: Exception, overrides: Sequence[str], args: argparse.Namespace) -> str:
    """One readable message for a config that does not compose: Hydra's own words, plus the closest
    existing keys when an override names a key the config does not have (a typo, most often)."""
    import difflib
    import re

    message = str(error).strip()
    bare = [o for o in overrides if "=" not in o and not o.startswith(("~", "+"))]
    rows = sorted(p.stem for p in (recipe_config_dir(args.config_dir) / "experiment").glob("*.yaml"))
    if bare:  # e.g. `sspo-train sspo_cpu`: Hydra's lexer error says only "missing EQUAL"
        close = {o: difflib.get_close_matches(o, rows, n=1, cutoff=0.8) for o in bare}
        fix = [f"experiment={o}" if o in rows else f"experiment={close[o][0]}" if close[o] else f"{o}=<value>"
               for o in bare]  # fmt: skip
        return (
            f"config error: {' '.join(bare)} is not an override (key=value): write {' '.join(fix)}"
            + (f" (the rows: {', '.join(rows)})" if any(o not in rows for o in bare) else "")
        )
    typo = re.search(r"Could not override '([^']+)'", message)
    if typo and "." in typo.group(1):
        parent, leaf = typo.group(1).rsplit(".", 1)
        groups_only = [o for o in overrides if "." not in o.split("=", 1)[0]]  # e.g. experiment=...
        try:
            node = OmegaConf.select(
                compose_config(groups_only, args.config_dir, args.config_name, resolve=False), parent
            )
        except Exception:  # noqa: BLE001 -- the hint is best effort; Hydra's message stands alone
            node = None
        if isinstance(node, DictConfig) and parent == POLICY_LOSS_KEY:  # which keys exist for which loss
            from sspo.verl_plugin.config_checks import policy_loss_key_problem

            if problem := policy_loss_key_problem(node, leaf):
                return f"config error: {problem}"
        if isinstance(node, DictConfig):
            close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=3, cutoff=0.6)
            if close:
                message += "\ndid you mean: " + ", ".join(f"{parent}.{k}" for k in close) + " ?"
        message += "\n(a leading '+' adds a NEW key: use it only for keys the config really lacks)"
    return f"config error: {message}"


def refusals(cfg: DictConfig, config_only: bool = False) -> list[str]:
    """``config error: ...`` lines for a composed config that cannot mean what it says (exit 2, nothing run):
    its values, names and policy-loss keys (:mod:`sspo.launch.config_values`); with ``config_only`` every
    check that needs no cluster, data or model (:data:`preflight.CONFIG_CHECKS`: what ``--print-key`` and the
    multirun points are held to, since no pre-flight follows them in this process)."""
    from sspo.launch.config_values import config_problems

    problems = preflight.config_check_failures(cfg) if config_only else config_problems(cfg)
    return [f"config error: {p}" for p in problems]


def print_key(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Print ``args.print_key`` of ``cfg`` (a mapping: YAML, or one JSON line with --multirun); exit code."""
    missing = object()
    value = OmegaConf.select(cfg, args.print_key, default=missing)
    if value is missing:
        print(f"config error: no key {args.print_key!r} in the resolved config", file=sys.stderr)
        return 2
    if isinstance(value, (DictConfig, ListConfig)):  # with --multirun one line per point: JSON
        container = OmegaConf.to_container(value, resolve=True)
        value = json.dumps(container) if args.multirun else OmegaConf.to_yaml(value).strip()
    print(value)
    return 0


def compose_points(points: Sequence[Sequence[str]], swept: Sequence[str], args: argparse.Namespace) -> list[DictConfig] | None:
    """Every multirun point composed and held to the config checks (:func:`refusals`, config only) BEFORE the
    first run: a typo in the last value of a sweep is found now, not after the earlier points trained.
    None (the problems printed, per point) if any point fails."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    cfgs, bad = [], 0
    for i, point in enumerate(points):
        try:
            cfg = compose_config(point, args.config_dir, args.config_name, run_suffix(point, swept))
            refused = refusals(cfg, config_only=True)
        except (HydraException, OmegaConfBaseException, FileNotFoundError) as error:
            cfg, refused = None, [explain_config_error(error, point, args)]
        if refused:
            bad += 1
            print(f"multirun point {i + 1}/{len(points)} ({' '.join(point)}):", file=sys.stderr)
            print("\n".join(f"  {line}" for line in refused), file=sys.stderr)
        cfgs.append(cfg)
    if bad:
        print(f"multirun: {bad} of {len(points)} point(s) refused: nothing was started.", file=sys.stderr)
        return None
    return cfgs


def run_one(overrides: Sequence[str], args: argparse.Namespace) -> int:
    """Compose, check and (unless --dry-run) train one configuration; returns the exit code
    (0 ok, 1 a pre-flight check failed, 2 the config does not compose or holds a value outside its meaning;
    with --print-key, 2 also for any failed config check of :data:`preflight.CONFIG_CHECKS`)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose_config(overrides, args.config_dir, args.config_name, args.name_suffix)
    except (HydraException, OmegaConfBaseException, FileNotFoundError) as error:
        print(explain_config_error(error, overrides, args), file=sys.stderr)
        return 2
    if refused := refusals(cfg, config_only=bool(args.print_key)):
        print("\n".join(refused), file=sys.stderr)
        return 2
    if args.print_key:
        return print_key(cfg, args)
    if args.dry_run:
        print(
            f"recipe config: {recipe_config_dir(args.config_dir) / args.config_name}.yaml {' '.join(overrides)}"
        )
        print(RESOLVED_HEADER)
        print(preflight.to_yaml(cfg))
    if not args.dry_run:
        total = OmegaConf.select(cfg, "trainer.total_training_steps", default=None)
        print(RUN_MARKER.format(name=cfg.trainer.experiment_name, dir=cfg.trainer.default_local_dir, total=total or "?"))
    results = check(cfg, args.ray_address, args.dry_run)
    failed = [r for r in results if r.status == "fail"]
    if failed:
        print(f"{len(failed)} pre-flight check(s) failed: nothing was started.", file=sys.stderr)
        for r in failed:
            print("  " + r.line(), file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"dry run OK: {cfg.trainer.experiment_name} ({len(results)} checks, nothing started)")
        return 0
    train(cfg)
    return 0


def wants_progress(args: argparse.Namespace, isatty: bool | None = None) -> bool:
    """Show the progress view (sspo.tools.progress) rather than verl's console: ``--progress on``, or ``auto``
    with stdout a terminal and ``VERBOSE`` unset or 0; never for --dry-run, --print-key or --multirun (whose
    runs each decide for themselves)."""
    if args.dry_run or args.print_key or args.multirun or args.progress == "off":
        return False
    if args.progress == "on":
        return True
    verbose = os.environ.get("VERBOSE", "").strip().lower() not in ("", "0", "false", "no")
    return (sys.stdout.isatty() if isatty is None else isatty) and not verbose


def run_in_view(argv: Sequence[str], args: argparse.Namespace) -> int:
    """Run this same command (``--progress off``) as a child under the progress view; its exit code.

    The child prints :data:`RUN_MARKER` first, naming the run directory where its console log goes.
    """
    from sspo.tools import progress

    cmd = [sys.executable, "-m", "sspo.launch.cli", *argv, "--progress", "off"]
    name = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("experiment=")), "sspo-train")
    return progress.run_with_progress(cmd, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``sspo-train`` / ``python -m sspo.launch.cli``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if wants_progress(args):
        return run_in_view(argv, args)
    if not args.multirun:
        return run_one(args.overrides, args)
    from hydra.errors import HydraException

    try:
        points, swept = sweep_points(args.overrides)
    except HydraException as error:  # e.g. a row without experiment=, a mistyped sweep: one message, exit 2
        print(explain_config_error(error, args.overrides, args), file=sys.stderr)
        return 2
    cfgs = compose_points(points, swept, args)  # every point checked before the first one runs
    if cfgs is None:
        return 2
    if args.print_key:  # one composing process for every point: the values only, for scripts
        for cfg in cfgs:
            if code := print_key(cfg, args):
                return code
        return 0
    print(f"multirun: {len(points)} run(s) over {swept or 'no sweep'}")
    codes = []
    for i, point in enumerate(points):
        args.name_suffix = run_suffix(point, swept)
        print(f"----- run {i + 1}/{len(points)}: {' '.join(point)} (name suffix {args.name_suffix})")
        if args.dry_run:
            codes.append(run_one(point, args))
        else:  # a fresh process per run: verl's Ray actors and GPU memory are released between runs
            cmd = [sys.executable, "-m", "sspo.launch.cli", "--config-name", args.config_name]
            cmd += ["--name-suffix", args.name_suffix, "--progress", args.progress, *point]
            if args.config_dir:
                cmd += ["--config-dir", str(args.config_dir)]
            codes.append(subprocess.call(cmd))
    bad = [p for p, c in zip(points, codes, strict=False) if c]
    print(f"multirun: {len(points) - len(bad)}/{len(points)} run(s) succeeded")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
