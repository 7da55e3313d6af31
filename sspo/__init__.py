"""SSPO (Subsentence-level Policy Optimization) for verl.

Where things are (each layer imports only the ones above it; ``tests/test_layout.py`` enforces it):

* :mod:`sspo.loss`, :mod:`sspo.segmentation`: the algorithm, plain PyTorch (the paper: ``docs/sspo.md``);
* :mod:`sspo.reward`: the verifiable math reward (no torch, no verl);
* :mod:`sspo.verl_plugin`: the verl integration; importing it registers the loss and the trainers;
* :mod:`sspo.cpu`: CPU-only support (gloo workers, vLLM-CPU replica, CPU platform);
* :mod:`sspo.launch`: ``sspo-train`` (compose a recipe row, pre-flight checks, verl's ``main_ppo``);
* :mod:`sspo.tools`: data preparation, evaluation, reports, the tiny CPU task and model.

``import sspo`` imports nothing else, so the reward and the tools start without torch or verl.
"""

__version__ = "0.1.0"
