"""A bounded weight sync: a sync that fails fails the run, instead of hanging it.

verl's trainers push the actor's weights into the rollout servers with
``checkpoint_manager.update_weights(step)`` (after loading a checkpoint and after every step). When
the rollout side fails while loading them (e.g. vLLM-CPU's packed Linear weights: ``docs/cpu-mode.md``),
its error is logged by the rollout server, but the actor side keeps waiting for an acknowledgement that
never comes, and the run hangs with no error at the driver. :class:`BoundedWeightSync` wraps the
trainer's checkpoint manager so that ``update_weights`` raises :class:`WeightSyncTimeout` after
``timeout_s`` seconds; the trainer's exception then ends ``main_ppo`` (exit code != 0).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

__all__ = ["WeightSyncTimeout", "BoundedWeightSync", "DEFAULT_TIMEOUT_S"]

#: seconds; a 7B model's sync takes seconds on GPUs (override: ``+sspo.weight_sync_timeout_s``)
DEFAULT_TIMEOUT_S = 600.0


class WeightSyncTimeout(RuntimeError):
    """The actor -> rollout weight sync did not finish in time."""


class BoundedWeightSync:
    """verl's ``CheckpointEngineManager`` with a deadline on ``update_weights``; everything else passes through."""

    def __init__(self, manager: Any, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"sspo.weight_sync_timeout_s={timeout_s!r} must be > 0 seconds")
        self._manager = manager
        self.timeout_s = float(timeout_s)
        # one thread: syncs never overlap; a timed-out sync leaves it blocked, and the run ends anyway
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="weight-sync")

    def update_weights(self, global_steps: int | None = None) -> Any:
        """``manager.update_weights(global_steps)``, or :class:`WeightSyncTimeout` after ``timeout_s``."""
        future = self._pool.submit(self._manager.update_weights, global_steps)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            self._pool.shutdown(wait=False)
            raise WeightSyncTimeout(
                f"weight sync actor -> rollout (global step {global_steps}) did not finish within "
                f"{self.timeout_s:.0f} s (sspo.weight_sync_timeout_s): the rollout server's error is in the log "
                "above (lines from the rollout server / vLLM worker processes)"
            ) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)
