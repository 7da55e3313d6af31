"""benchmarks/update_time.py's measuring parts: interleaving, paired ratios, and the GPU-shape loss paths (run at a
small shape here; the full benchmark is `python benchmarks/update_time.py`)."""

from __future__ import annotations

import pytest
from helpers import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("update_time")


def test_interleaved_rotates_the_order_and_times_every_repetition(bench):
    calls = []
    times = bench.interleaved({name: (lambda name=name: calls.append(name)) for name in "abc"}, reps=4)
    assert calls[:3] == ["a", "b", "c"]  # one warm-up call each, not timed
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert {name: len(ts) for name, ts in times.items()} == {"a": 4, "b": 4, "c": 4}


def test_ratios_are_paired_per_repetition(bench, capsys):
    """Load that hits both variants of a repetition cancels in the paired ratio (the ratio of the medians here
    would be 1/20: b is slowed down in more repetitions than a)."""
    times = {"a": [1.0, 1.0, 1.0, 10.0, 10.0], "b": [2.0, 2.0, 20.0, 20.0, 20.0]}
    bench.print_times("t", times, {"a/b": ("a", "b")})
    line = next(line for line in capsys.readouterr().out.splitlines() if "a/b" in line)
    assert "x0.500   IQR [x0.500, x0.500]   of minima x0.500" in line


def test_gpu_shape_paths_run_every_loss_with_and_without_the_monitor(bench, shared_data):
    texts = shared_data / "benchmarks" / "qwen_eval" / "math500.jsonl"
    times = bench.gpu_shape_times(batch=2, length=64, reps=2, texts=texts)
    assert set(times) == {
        "vanilla", "vanilla + monitor", "gspo", "gspo + monitor", "sspo", "sspo + monitor", "segmentation alone"
    }  # fmt: skip
    assert all(len(ts) == 2 and min(ts) > 0 for ts in times.values())
