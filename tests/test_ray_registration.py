"""The sspo loss and trainer are registered INSIDE Ray worker processes, through each of verl's routes.

Routes (verl/__init__.py): the ``verl.plugins`` entry point of the installed project, and
``VERL_USE_EXTERNAL_MODULES=sspo.verl_plugin`` (for code shipped by Ray ``working_dir``), here with
entry points disabled (``VERL_USE_EXTERNAL_PLUGINS=none``) so that only the variable can do it.
With both off, nothing is registered: the check below can fail.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


def _probe_registration(import_project_first: bool = False) -> dict:
    """Runs in a fresh Ray worker: import verl as any verl process does, then read verl's registries.

    ``import_project_first``: import ``sspo`` before verl, as a worker running a reward function from
    this project does (``sspo.loss`` then imports verl, which imports the plugin, half-way through).
    """
    import os
    import sys

    if import_project_first:
        import sspo  # noqa: F401
    import verl  # noqa: F401  (loads plugins as configured by the environment)
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    return {
        "pid": os.getpid(),
        "loss": "sspo" in POLICY_LOSS_REGISTRY,
        "trainer": "sspo" in TRAINER_REGISTRY,
        "plugin_module_loaded": "sspo.verl_plugin" in sys.modules,
        "sspo_loaded": "sspo" in sys.modules,
    }


@pytest.fixture(scope="module")
def ray_cluster():
    """One private local CPU Ray for this module (never a cluster another process started: helpers.private_ray)."""
    from helpers import private_ray

    with private_ray(num_cpus=2) as ray:
        yield ray


ROUTES = {
    "entry_point": {"VERL_USE_EXTERNAL_PLUGINS": "auto", "VERL_USE_EXTERNAL_MODULES": ""},
    "env_var": {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": "sspo.verl_plugin"},
    "neither": {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": ""},
}
PROJECT_FIRST = {"env_var_project_imported_first": ROUTES["env_var"]}


def test_registered_in_ray_workers_through_each_route_and_not_without(ray_cluster):
    import sys

    ray = ray_cluster
    # tests/ is not importable in the workers: ship the probe by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    probe = ray.remote(num_cpus=1)(_probe_registration)
    refs = {name: probe.options(runtime_env={"env_vars": env}).remote() for name, env in ROUTES.items()}
    refs.update(
        {
            name: probe.options(runtime_env={"env_vars": env}).remote(True)
            for name, env in PROJECT_FIRST.items()
        }
    )
    results = {name: ray.get(ref, timeout=300) for name, ref in refs.items()}

    for name, result in results.items():
        assert result["pid"] != os.getpid(), name  # really another process
    for name in ("entry_point", "env_var", *PROJECT_FIRST):
        assert results[name]["loss"] and results[name]["trainer"], (name, results[name])
        assert results[name]["plugin_module_loaded"], (name, results[name])
    assert not results["neither"]["loss"] and not results["neither"]["trainer"], results["neither"]
    assert not results["neither"]["sspo_loaded"], results["neither"]
