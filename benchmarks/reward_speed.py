"""Reward benchmark: sspo.reward vs verl's built-in ``math_dapo`` and ``math_verify`` scorers, one run.

Prints, all measured in this run on the same inputs:

0. start-up: seconds to ``import sspo.reward``, ``import sspo``, ``python -m sspo.tools.data --help`` and
   ``python -m sspo.tools.evaluation --help`` in fresh interpreters (goal: under 2 s), next to ``import verl``;
1. quality on the 1,560 oat benchmark problems (AIME24 30, AMC 83, MATH500 500, Minerva 272,
   OlympiadBench 675), for sspo's two grading policies and verl's scorers: the gold boxed in a typical
   response (as prepared by ``sspo.tools.data`` and as written in the raw data) should score 1; the next
   problem's different gold should score 0;
2. throughput on a realistic mix of ~1.5k-character responses (1/2 correct, 1/3 wrong, 1/6 without an
   answer): responses per second (one caller thread) and per CPU-second (caller + worker processes),
   as ratios against verl's ``math_verify``;
3. latency on pathological answers (huge numbers, towers of powers, deeply nested LaTeX, 20k characters of
   garbage): the worst case per scorer, and whether sspo stayed within its time bound + 100 ms;
4. load: a batch of 512 responses (5% pathological, symbolic answers that need math-verify, hedges, wrong
   and missing answers) scored one at a time, from 8 threads, and from 8 threads inside a Ray actor (a
   local ``ray.init``, shut down at the end): the verdicts must be identical, the worst latency within the
   bound + 100 ms; throughput against verl's ``math_verify`` on the same batch.

Usage: ``python benchmarks/reward_speed.py [--data ../shared/data] [--timeout 5] [--skip-quality]
[--skip-load] [--skip-ray] [--skip-startup]``. Timings depend on the machine's load: compare ratios
from one run. The load table runs against an older ``sspo.reward`` too (``PYTHONPATH=<old checkout>``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
OAT = ("aime24", "amc", "math500", "minerva", "olympiadbench")
FILLER = (
    "Let us first restate the problem and name the unknowns. We set up the relevant equations, "
    "then simplify step by step, checking each transformation. Substituting back, the constraints hold. "
)
TEMPLATE = "{filler}Therefore, the final answer is $\\boxed{{{ans}}}$."


def cpu_seconds() -> float:
    """CPU time of this process and all its live descendants (the scorers' worker processes)."""
    procs = [psutil.Process()]
    procs += procs[0].children(recursive=True)
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def load_problems(data: Path) -> list[tuple[str, object]]:
    rows = []
    for name in OAT:
        with open(data / "benchmarks" / "oat" / f"{name}.jsonl") as f:
            rows += [(name, json.loads(line)["answer"]) for line in f]
    return rows


def make_scorers(timeout: float):
    """name -> fn(response, gold_string) -> bool (correct)."""
    from verl.utils.reward_score import math_dapo, math_verify

    from sspo.reward import score as reward

    return {
        "sspo.reward": lambda resp, gold: bool(
            reward.compute_score("math", resp, gold, timeout=timeout)["acc"]
        ),
        "sspo.reward (evaluation)": lambda resp, gold: bool(
            reward.compute_score_evaluation("math", resp, gold, timeout=timeout)["acc"]
        ),
        "verl math_dapo": lambda resp, gold: bool(math_dapo.compute_score(resp, gold)["acc"]),
        "verl math_verify": lambda resp, gold: math_verify.compute_score(resp, gold) == 1.0,
    }


def quality(scorers, rows, golds) -> None:
    from sspo.reward import canonical

    def key(g: str) -> str:
        c = canonical(g)
        return c.split("=", 1)[1] if c.count("=") == 1 and len(c.split("=")[0]) == 1 else c

    raw_forms = [(raw[0] if isinstance(raw, list) else str(raw)).strip().strip("$") for _, raw in rows]
    negatives = []
    for i, (bench, _) in enumerate(rows):
        j = (i + 1) % len(rows)
        while rows[j][0] != bench or key(golds[j]) == key(golds[i]):
            j = (j + 1) % len(rows)
        negatives.append(golds[j])
    n = len(rows)
    print(f"\n## Quality on {n} benchmark problems (oat suite; gold = ground_truth prepared by sspo.tools.data)\n")
    print("| scorer | gold boxed -> 1 | raw-form gold boxed -> 1 | other problem's gold -> 0 | time (s) |")
    print("|---|---|---|---|---|")
    for name, fn in scorers.items():
        t = time.perf_counter()
        pos = sum(fn(TEMPLATE.format(filler="", ans=g), g) for g in golds)
        raw = sum(fn(TEMPLATE.format(filler="", ans=r), g) for r, g in zip(raw_forms, golds, strict=True))
        neg = sum(not fn(TEMPLATE.format(filler="", ans=o), g) for o, g in zip(negatives, golds, strict=True))
        dt = time.perf_counter() - t
        print(f"| {name} | {pos}/{n} = {100 * pos / n:.2f}% | {raw}/{n} = {100 * raw / n:.2f}% "
              f"| {neg}/{n} = {100 * neg / n:.2f}% | {dt:.1f} |")  # fmt: skip


def throughput(scorers, golds, n: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    rng = random.Random(seed)
    items = []
    for k in range(n):
        g = golds[rng.randrange(len(golds))]
        kind = k % 6
        if kind < 3:
            ans = g
        elif kind < 5:
            ans = golds[rng.randrange(len(golds))]
        else:
            ans = None
        filler = FILLER * 8
        resp = filler + "I could not finish." if ans is None else TEMPLATE.format(filler=filler, ans=ans)
        items.append((resp, g))
    out = {}
    for name, fn in scorers.items():
        fn(*items[0])  # warm up: worker processes start outside the timing
        from sspo.reward import score as reward

        reward._verdicts.clear()  # no memo carried over from the quality run
        reward.canonical.cache_clear()
        c0, t0 = cpu_seconds(), time.perf_counter()
        for resp, g in items:
            fn(resp, g)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        out[name] = (len(items) / wall, len(items) / max(cpu, 1e-9))
    return out


def pathological() -> list[tuple[str, str, str]]:
    rng = random.Random(0)
    garbage = "".join(rng.choice(string.printable) for _ in range(20_000))
    nested = "\\frac{1}{" * 300 + "1" + "}" * 300
    return [
        ("tower of powers", "10^{10^{10^{10}}}", "10^{10^{10^{11}}}"),
        ("huge factorial", "100000!", "99999!"),
        ("huge power", "9^{9^{9^{9}}}", "2"),
        ("5000-digit number", "9" * 5000, "1" + "0" * 5000),
        ("nested \\frac x300", nested, "1"),
        ("nested \\sqrt x200", "\\sqrt{" * 200 + "2" + "}" * 200, "2"),
        ("20k garbage, boxed", garbage.replace("}", ")").replace("{", "("), "42"),
        ("20k garbage, no box", None, "42"),
    ]


def latency(scorers, timeout: float) -> None:
    cases = pathological()
    print(f"\n## Worst-case latency on pathological answers (sspo time bound {timeout:.1f} s)\n")
    print("| case | " + " | ".join(scorers) + " |")
    print("|---|" + "---|" * len(scorers))
    worst = dict.fromkeys(scorers, 0.0)
    for label, ans, gold in cases:
        resp = "x" * 20_000 if ans is None else TEMPLATE.format(filler=FILLER, ans=ans)
        cells = []
        for name, fn in scorers.items():
            t = time.perf_counter()
            fn(resp, gold)
            dt = time.perf_counter() - t
            worst[name] = max(worst[name], dt)
            cells.append(f"{dt:.3f} s")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| **worst** | " + " | ".join(f"**{worst[n]:.3f} s**" for n in scorers) + " |")
    ok = worst["sspo.reward"] <= timeout + 0.1
    print(f"\nsspo.reward worst case {worst['sspo.reward']:.3f} s vs bound + 100 ms = {timeout + 0.1:.3f} s: "
          f"{'WITHIN' if ok else 'OVER'}")  # fmt: skip
    base = worst["verl math_verify"]
    print(f"worst-case ratio sspo / verl math_verify = {worst['sspo.reward'] / base:.2f}x")


def startup() -> None:
    """Seconds from a fresh interpreter to the end of each command (best of 3), with ``import verl``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    commands = {
        "import sspo.reward": [sys.executable, "-c", "import sspo.reward"],
        "import sspo (loss registered lazily)": [sys.executable, "-c", "import sspo"],
        "python -m sspo.tools.data --help": [sys.executable, "-m", "sspo.tools.data", "--help"],
        "python -m sspo.tools.evaluation --help": [sys.executable, "-m", "sspo.tools.evaluation", "--help"],
        "python -c 'pass' (interpreter alone)": [sys.executable, "-c", "pass"],
        "import verl (for comparison)": [sys.executable, "-c", "import verl"],
    }
    print("\n## Start-up (fresh interpreter, best of 3; goal < 2 s for the sspo rows)\n")
    print("| command | seconds |")
    print("|---|---|")
    for label, cmd in commands.items():
        times = []
        for _ in range(3 if "verl" not in label else 1):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        print(f"| `{label}` | {min(times):.2f} |")


def load_batch(golds: list[str], n: int = 512, seed: int = 0) -> list[tuple[str, str, str]]:
    """(kind, response, gold) x n: 5% pathological, the rest a mix that exercises every path."""
    rng = random.Random(seed)
    numeric = [g for g in golds if g.lstrip("-").isdigit()]
    symbolic = [(f"{k}\\sqrt{{2}}", f"\\sqrt{{{2 * k * k}}}") for k in range(2, 40)]
    symbolic += [(f"(x+{k})^2", f"x^2+{2 * k}x+{k * k}") for k in range(1, 40)]
    symbolic += [(f"{k}\\pi \\text{{ cm}}^3", f"{k}\\pi") for k in (288, 36, 72)]
    patho = [p for p in pathological() if p[1] is not None]
    patho += [("tower, gold a tower", "10^{10^{10^{10}}}", "10^{10^{10^{11}}}")]
    # slow answers the screen lets through: each holds a worker until the bound (and is killed there)
    patho += [(f"big expansion {k}", f"(x+1)^{{{990 + k}}} - (x+2)^{{{990 + k}}}", "42") for k in range(3)]
    n_patho = round(0.05 * n)
    batch = []
    for k in range(n):
        filler = FILLER * rng.randint(1, 8)
        if k < n_patho:
            label, ans, gold = patho[k % len(patho)]
            batch.append(("pathological", TEMPLATE.format(filler=filler, ans=ans), gold))
            continue
        kind = rng.choice(["right", "right", "right", "symbolic", "symbolic", "wrong", "hedge", "none"])
        g = numeric[rng.randrange(len(numeric))]
        if kind == "right":
            batch.append((kind, TEMPLATE.format(filler=filler, ans=g), g))
        elif kind == "symbolic":
            ans, gold = symbolic[rng.randrange(len(symbolic))]
            batch.append((kind, TEMPLATE.format(filler=filler, ans=ans), gold))
        elif kind == "wrong":
            batch.append((kind, TEMPLATE.format(filler=filler, ans=numeric[rng.randrange(len(numeric))]), g))
        elif kind == "hedge":
            batch.append((kind, filler + f"It is $\\boxed{{{int(g) + 1}}}$ or $\\boxed{{{g}}}$.", g))
        else:
            batch.append((kind, filler + "I could not finish.", g))
    rng.shuffle(batch)
    return batch


def _score_timed(batch, timeout: float, threads: int) -> tuple[list[float], list[float], float]:
    """(scores, per-call seconds, wall seconds) of sspo's training reward, ``threads`` callers (0: one by one)."""
    from sspo.reward import score as reward
    from sspo.reward import warmup

    def one(item):
        t = time.perf_counter()
        score = reward.compute_score("math", item[1], item[2], timeout=timeout)["score"]
        return score, time.perf_counter() - t

    reward._verdicts.clear()  # every run computes its verdicts (no memo carried over)
    warmup(max(1, threads))  # steady state, as in training: one started worker per caller thread
    t0 = time.perf_counter()
    if threads:
        with ThreadPoolExecutor(max_workers=threads) as ex:
            out = list(ex.map(one, batch))
    else:
        out = [one(item) for item in batch]
    return [s for s, _ in out], [d for _, d in out], time.perf_counter() - t0


def _ray_scores(batch, timeout: float, threads: int) -> tuple[list[float], list[float], float]:
    """The same, from ``threads`` threads inside one Ray actor (as verl's reward loop), local cluster."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
    try:

        @ray.remote(num_cpus=0)
        class Scorer:
            def run(self, batch, timeout, threads):
                return _score_timed(batch, timeout, threads)

        return ray.get(Scorer.remote().run.remote(batch, timeout, threads), timeout=900)
    finally:
        ray.shutdown()


def load(golds: list[str], timeout: float, threads: int, with_ray: bool) -> None:
    from verl.utils.reward_score import math_verify

    from sspo.reward import warmup

    batch = load_batch(golds)
    warmup(1)
    runs = {
        "one at a time": _score_timed(batch, timeout, 0),
        f"{threads} threads": _score_timed(batch, timeout, threads),
    }
    if with_ray:
        runs[f"Ray actor, {threads} threads"] = _ray_scores(batch, timeout, threads)
    t0 = time.perf_counter()
    for _, resp, gold in batch:
        math_verify.compute_score(resp, gold)
    base = len(batch) / (time.perf_counter() - t0)
    alone = runs["one at a time"][0]
    kinds = sorted({k for k, _, _ in batch})
    print(f"\n## Load: {len(batch)} responses ({', '.join(f'{k} {sum(b[0] == k for b in batch)}' for k in kinds)}), "
          f"bound {timeout:.1f} s\n")  # fmt: skip
    print(
        "| how | verdicts = one at a time | worst latency (s) | within bound + 100 ms | responses/s "
        "| vs verl math_verify (1 thread) |"
    )
    print("|---|---|---|---|---|---|")
    for label, (scores, lat, wall) in runs.items():
        same = sum(a == b for a, b in zip(scores, alone, strict=True))
        worst = max(lat)
        rate = len(batch) / wall
        print(f"| sspo.reward, {label} | {same}/{len(batch)} | {worst:.3f} | "
              f"{'yes' if worst <= timeout + 0.1 else 'NO'} | {rate:.1f} | {rate / base:.2f}x |")  # fmt: skip
    print(f"| verl math_verify, 1 thread | — | — | — | {base:.1f} | 1.00x |")
    normal = [i for i, b in enumerate(batch) if b[0] != "pathological"]
    for label, (_, lat, _) in runs.items():
        print(f"worst latency of a non-pathological response, {label}: {max(lat[i] for i in normal):.3f} s")
    print(
        f"accepted (one at a time): {int(sum(alone))}/{len(batch)}; "
        f"per kind: {', '.join(f'{k} {int(sum(s for s, b in zip(alone, batch, strict=True) if b[0] == k))}' for k in kinds)}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder with benchmarks/oat")
    p.add_argument("--timeout", type=float, default=5.0, help="sspo.reward time bound (s)")
    p.add_argument("--n", type=int, default=1200, help="responses in the throughput mix")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-throughput", action="store_true", help="skip tables 2 and 3")
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-ray", action="store_true", help="load table without the Ray actor")
    p.add_argument("--threads", type=int, default=8, help="caller threads in the load table")
    p.add_argument("--skip-startup", action="store_true")
    args = p.parse_args()
    if not args.skip_startup:
        startup()

    from sspo.reward import gold_answers

    rows = load_problems(Path(args.data))
    golds = [gold_answers(raw)[0] for _, raw in rows]
    scorers = make_scorers(args.timeout)
    print(f"cores visible: {psutil.cpu_count()}, python {sys.version.split()[0]}")
    if not args.skip_quality:
        quality(scorers, rows, golds)

    if not args.skip_load:
        load(golds, args.timeout, args.threads, not args.skip_ray)
    if args.skip_throughput:
        return 0
    tp = throughput(scorers, golds, args.n)
    base_wall, base_cpu = tp["verl math_verify"]
    print(f"\n## Throughput on {args.n} mixed responses (~1.5k chars; 1/2 right, 1/3 wrong, 1/6 no answer)\n")
    print(
        "| scorer | responses/s (1 caller) | responses per CPU-second | ratio vs verl math_verify (wall / CPU) |"
    )
    print("|---|---|---|---|")
    for name, (wall, cpu) in tp.items():
        print(f"| {name} | {wall:.0f} | {cpu:.0f} | {wall / base_wall:.2f}x / {cpu / base_cpu:.2f}x |")

    latency(scorers, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
