"""verl-style recipe entry: ``python recipe/main_sspo.py experiment=sspo_qwen2.5-math-1.5b [overrides]``.

The same code as ``python -m sspo.launch.cli`` / ``sspo-train`` (compose, pre-flight checks, verl's trainer);
kept for users who expect a ``recipe/<name>/main_*.py`` script as in verl's own recipes.
"""

import sys

from sspo.launch.cli import main

if __name__ == "__main__":
    sys.exit(main())
