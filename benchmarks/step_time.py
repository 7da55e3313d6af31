"""Cost of SSPO per training step, measured where users feel it: through verl's own trainer.

    python benchmarks/step_time.py                 # the three CPU rows, 12 steps each (about 9 min here)
    python benchmarks/step_time.py --steps 20 -- actor_rollout_ref.actor.ppo_epochs=2
    python benchmarks/step_time.py --from-runs outputs/sspo    # the rows `JOBS=1 make demo` ran, one at a time

Runs ``python -m sspo.launch.cli experiment={grpo,gspo,sspo}_cpu`` (verl's ``main_ppo``, vLLM-CPU rollout)
one after another with the same steps, data and seed, reads verl's own ``timing_s/*`` metrics from its
file logger, and prints, per row, the median over the steps after the first (warm-up) of the update
phase (``timing_s/update_actor``) and of the whole step (``timing_s/step``), and the ratios SSPO/GRPO
and GSPO/GRPO. The tiny model makes the loss a LARGE share of the update, so the update ratio here is
an upper bound for real models, where the model's forward and backward dominate. ``--from-runs`` compares
rows only if they ran one at a time: ``make demo`` runs two side by side where memory allows, and those share
the cores. Needs ``make install``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = ("grpo", "gspo", "sspo")
PHASES = {"update": "timing_s/update_actor", "step": "timing_s/step", "gen": "timing_s/gen"}


def run_row(algo: str, steps: int, out: Path, extra: list[str]) -> dict[int, dict[str, float]]:
    """One CPU row through ``sspo.launch.cli``; returns step -> verl's metrics."""
    metrics = out / "metrics.jsonl"
    cmd = [
        sys.executable, "-m", "sspo.launch.cli", f"experiment={algo}_cpu", f"trainer.default_local_dir={out}",
        f"trainer.total_training_steps={steps}", f"trainer.save_freq={steps}", "trainer.test_freq=-1",
        "trainer.val_before_train=false", "trainer.logger=[console,file]",
        f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics}", *extra,
    ]  # fmt: skip
    start = time.monotonic()
    with (out / "run.log").open("w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
    if code:
        sys.exit(f"{algo}_cpu failed (exit {code}): see {out / 'run.log'}")
    print(f"  {algo}_cpu: {steps} steps in {time.monotonic() - start:.0f} s", file=sys.stderr)
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {r["step"]: r["data"] for r in rows}


def read_row(tensorboard: Path) -> dict[int, dict[str, float]]:
    """A finished run's step -> metrics from verl's TensorBoard logs."""
    from sspo.tools.report import load_run

    run = load_run(str(tensorboard))
    steps: dict[int, dict[str, float]] = {}
    for key, series in run.metrics.items():
        for step, value in series.items():
            steps.setdefault(step, {})[key] = value
    return steps


def main(argv: list[str] | None = None) -> int:
    """Run the rows, print the per-phase medians and the ratios to GRPO."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=12, help="training steps per row (the first is not timed)")
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    p.add_argument("--from-runs", type=Path, default=None,
                   help="read the rows' runs from DIR/<row>_cpu/tensorboard (e.g. outputs/sspo after make demo) "
                        "instead of running them")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every row (after --)")
    args = p.parse_args(argv)
    if args.steps < 3:
        p.error(f"--steps={args.steps}: need at least 3 (the first step is warm-up)")
    if args.from_runs is None:
        os.environ.setdefault("SSPO_TINY_DIR", "runs/tiny")
        subprocess.check_call([sys.executable, "-m", "sspo.tools.tiny_task", "--out", os.environ["SSPO_TINY_DIR"]])
    root = args.out or Path(tempfile.mkdtemp(prefix="sspo_step_time_"))
    medians: dict[str, dict[str, float]] = {}
    for algo in ROWS:
        if args.from_runs is not None:
            steps = read_row(args.from_runs / f"{algo}_cpu" / "tensorboard")
            args.steps = max(steps)
        else:
            steps = run_row(algo, args.steps, root / algo, args.overrides)
        timed = [s for s in sorted(steps) if s > 1 and PHASES["step"] in steps[s]]
        medians[algo] = {ph: statistics.median(steps[s][key] for s in timed) for ph, key in PHASES.items()}
    print(f"median seconds over steps 2..{args.steps} (verl's timing_s/*), one run of each row:")
    print(f"{'row':<6} {'update':>8} {'step':>8} {'gen':>8}")
    for algo in ROWS:
        print(f"{algo:<6} " + " ".join(f"{medians[algo][ph]:>8.3f}" for ph in PHASES))
    for algo in ("sspo", "gspo"):
        update = medians[algo]["update"] / medians["grpo"]["update"]
        step = medians[algo]["step"] / medians["grpo"]["step"]
        print(f"{algo.upper()}/GRPO: update phase x{update:.3f}, whole step x{step:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
