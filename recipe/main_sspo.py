"""verl-style recipe entry: ``python recipe/main_sspo.py experiment=sspo_qwen2.5-math-1.5b [overrides]``.

The same code as ``python -m sspo.cli`` / ``sspo-train`` (compose, pre-flight checks, verl's trainer);
kept for users who expect a ``recipe/<name>/main_*.py`` script as in verl's own recipes, and used by
recipe/scripts/submit.sh as the Ray job's entrypoint.

verl is imported before ``sspo``: with ``VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin`` (set by
submit.sh), ``import verl`` imports the plugin, which imports ``sspo.loss``; importing ``sspo`` first
would re-enter ``sspo.loss`` half-initialised through verl's import (a circular import).
"""

import sys

import verl  # noqa: F401  (first: loads the plugins named in VERL_USE_EXTERNAL_MODULES)

from sspo.cli import main

if __name__ == "__main__":
    sys.exit(main())
