"""SSPO (Subsentence-level Policy Optimization) for verl.

``import sspo`` registers the ``sspo`` policy loss in verl's registry
(``verl.trainer.ppo.core_algos.get_policy_loss_fn("sspo")``).
"""

from sspo import loss  # noqa: F401  (registers the "sspo" policy loss)

__all__ = ["loss"]
__version__ = "0.1.0"
