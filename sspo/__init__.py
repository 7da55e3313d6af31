"""SSPO (Subsentence-level Policy Optimization) for verl.

``import sspo`` registers the ``sspo`` policy loss in verl's registry
(``verl.trainer.ppo.core_algos.get_policy_loss_fn("sspo")``) without importing verl itself: the loss
module (torch + verl, ~10 s) is imported when verl's ``core_algos`` is (at once if it already is),
through wrapt's post-import hook. So the reward, data and evaluation modules start in well under a
second, and a reward worker or ``python -m sspo.data`` never pays for verl.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import wrapt

__all__ = ["loss"]
__version__ = "0.1.0"


def _register_loss(_core_algos: ModuleType) -> None:
    """Post-import hook on ``verl.trainer.ppo.core_algos``: importing ``sspo.loss`` registers "sspo"."""
    importlib.import_module("sspo.loss")


wrapt.register_post_import_hook(_register_loss, "verl.trainer.ppo.core_algos")


def __getattr__(name: str) -> ModuleType:
    """``sspo.loss`` (and the other submodules) as attributes, imported on first use."""
    try:
        return importlib.import_module(f"sspo.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"sspo.{name}":
            raise
        raise AttributeError(f"module 'sspo' has no attribute {name!r}") from None
