"""sspo.verl_plugin.weight_sync: a weight sync that cannot finish ends the run instead of hanging it."""

from __future__ import annotations

import threading
import time

import pytest

from sspo.verl_plugin.weight_sync import BoundedWeightSync, WeightSyncTimeout


class _Manager:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls, self.other = seconds, [], "passed through"

    def update_weights(self, global_steps=None):
        self.calls.append(global_steps)
        time.sleep(self.seconds)
        return {"synced": global_steps}


def test_bounded_weight_sync_returns_in_time_and_passes_the_rest_through():
    bounded = BoundedWeightSync(_Manager(0.0), timeout_s=5)
    assert bounded.update_weights(3) == {"synced": 3} and bounded.other == "passed through"


def test_bounded_weight_sync_raises_instead_of_hanging():
    hung = threading.Event()
    manager = _Manager(0.0)
    manager.update_weights = lambda global_steps=None: hung.wait(60)  # a sync whose receiver died
    start = time.monotonic()
    with pytest.raises(WeightSyncTimeout, match=r"global step 7.*within 1 s"):
        BoundedWeightSync(manager, timeout_s=1).update_weights(7)
    assert time.monotonic() - start < 30  # at the bound, not when the hung sync ends (60 s): a wide, load-proof margin
    hung.set()
    with pytest.raises(ValueError, match="weight_sync_timeout_s"):
        BoundedWeightSync(manager, timeout_s=0)
