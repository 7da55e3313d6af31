"""The ``cpu_gloo`` weight sync (``sspo.cpu.checkpoint_engine``) between real processes: bit-equal, bounded on failure.

Four processes (``tests/fault_injection/checkpoint_engine_peer.py``): two actor ranks (rank 0 the master) and two
receivers, three syncs in a row of mixed-dtype weights, one larger than a bucket.
"""

from __future__ import annotations

import datetime
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from sspo.cpu.checkpoint_engine import BACKEND, CPUGlooCheckpointEngine, WeightSyncError

sys.path.insert(0, str(Path(__file__).parent / "fault_injection"))
import checkpoint_engine_peer as peer  # noqa: E402

PEER = Path(peer.__file__)
HANG_GUARD_S = 600  # only a hang gets near this: start-up (4 processes importing verl) is the most of it


def _run_peers(out: Path, syncs: int, fault: str | None = None) -> dict[str, int]:
    """Start the four peers on a fresh coordination store; their exit codes by name."""
    coord = dist.TCPStore(
        "127.0.0.1", 0, None, True, timeout=datetime.timedelta(seconds=60), wait_for_workers=False
    )
    procs = {}
    for role, count in (("actor", peer.ACTORS), ("rollout", peer.RECEIVERS)):
        for index in range(count):
            extra = [fault] if (fault is not None and role == "rollout" and index == 1) else []
            args = [
                sys.executable,
                str(PEER),
                role,
                str(index),
                str(coord.port),
                str(out),
                str(syncs),
                *extra,
            ]
            # a log file, not an unread pipe (a full pipe would block the peer): <role><index>.log
            with open(out / f"{role}{index}.log", "wb") as log:
                procs[f"{role}{index}"] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    codes = {}
    try:
        for name, proc in procs.items():
            codes[name] = proc.wait(timeout=HANG_GUARD_S)
    finally:
        for proc in procs.values():
            proc.kill()
    return codes


def test_three_syncs_reach_both_receivers_bit_equal(tmp_path: Path) -> None:
    codes = _run_peers(tmp_path, syncs=3)
    assert codes == {"actor0": 0, "actor1": 0, "rollout0": 0, "rollout1": 0}, [
        p.read_text() for p in tmp_path.glob("*.error")
    ]
    for sync in range(3):
        sent = peer.weights(sync)
        for receiver in range(peer.RECEIVERS):
            got = torch.load(tmp_path / f"received{receiver}_sync{sync}.pt")
            assert list(got) == list(sent)  # every weight, in the order sent
            for name, tensor in sent.items():
                assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
                # bit-equal: compare the bytes (NaN-safe, dtype-exact)
                assert torch.equal(got[name].view(-1).view(torch.uint8), tensor.view(-1).view(torch.uint8)), (
                    name
                )
    # the weights do change between syncs, so a receiver repeating an old sync would have failed above
    assert not torch.equal(peer.weights(0)["big.fp32"], peer.weights(1)["big.fp32"])
    # the master reports each sync's size and checksum (logged by verl's trainer); the other actor rank nothing
    sent = [pickle.loads((tmp_path / f"sent0_sync{sync}.pkl").read_bytes()) for sync in range(3)]
    nbytes = sum(t.nbytes for t in peer.weights(0).values())  # 12000 + 42 + 10 + 72 + 4 + 3000 = 15128
    assert all(
        nbytes <= m[f"weight_sync/{BACKEND}/bytes"] < nbytes + 16 * 6 for m in sent
    )  # + alignment gaps
    assert len({m[f"weight_sync/{BACKEND}/crc32"] for m in sent}) == 3
    assert pickle.loads((tmp_path / "sent1_sync0.pkl").read_bytes()) == {}


def test_a_receiver_that_gets_other_bytes_fails_the_sync(tmp_path: Path) -> None:
    codes = _run_peers(tmp_path, syncs=1, fault="corrupt")
    assert codes == {"actor0": 1, "actor1": 0, "rollout0": 0, "rollout1": 1}, codes
    assert "1 rollout worker(s) got other bytes" in (tmp_path / "actor0.error").read_text()
    assert "differ from its CRC-32" in (tmp_path / "rollout1.error").read_text()


def test_a_receiver_that_dies_fails_the_sync_naming_the_backend(tmp_path: Path) -> None:
    codes = _run_peers(tmp_path, syncs=1, fault="1")
    assert codes["rollout1"] == 3  # it died after its first tensor
    assert codes["actor0"] == 1 and codes["rollout0"] == 1, (
        codes
    )  # both ended with an error instead of waiting
    for name in ("actor0", "rollout0"):
        message = (tmp_path / f"{name}.error").read_text()
        assert message.startswith("WeightSyncError:") and f"checkpoint engine {BACKEND!r}" in message, message
        assert "timeout_s=5)" in message
    assert codes["actor1"] == 0  # the non-master actor rank only walked its generator


def test_it_is_registered_in_verl_and_built_the_way_verl_builds_it() -> None:
    from verl.checkpoint_engine import CheckpointEngineRegistry

    engine = CheckpointEngineRegistry.new(BACKEND, is_master=False, bucket_size=1 << 20, timeout_s=7)
    assert isinstance(engine, CPUGlooCheckpointEngine) and engine.timeout.total_seconds() == 7
    assert engine.prepare() == {}  # only the master opens a store


def test_topology_puts_actor_rank_0_first_and_keeps_other_actor_ranks_out() -> None:
    master = {"host": "10.0.0.1", "port": 29555}
    actor, rollout = CPUGlooCheckpointEngine.build_topology(4, 3, [master, {}, {}, {}, {}, {}, {}])
    assert actor["rank"] == [0, -1, -1, -1] and rollout["rank"] == [1, 2, 3]
    assert actor["world_size"] == [4] * 4 and rollout["world_size"] == [4] * 3
    assert rollout["master"] == [master] * 3
    with pytest.raises(WeightSyncError, match="actor rank 0 must be the master"):
        CPUGlooCheckpointEngine.build_topology(2, 1, [{}, {}, {}])


def test_bad_settings_are_refused_with_their_values() -> None:
    with pytest.raises(ValueError, match="timeout_s=0"):
        CPUGlooCheckpointEngine(1024, timeout_s=0)
