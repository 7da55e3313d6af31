"""One process of a ``cpu_gloo`` weight-sync test (``tests/test_cpu_checkpoint_engine.py``): an actor rank or a receiver.

Run as ``python checkpoint_engine_peer.py ROLE INDEX COORD_PORT OUT_DIR SYNCS [FAULT]``, FAULT (receivers only): a
number N (die after N tensors) or ``corrupt`` (flip a byte of every bucket received). The test's
coordination store (``COORD_PORT``) does what verl's ``CheckpointEngineManager`` does over Ray: the master's
``prepare()`` metadata goes to everyone, each peer takes its own row of ``build_topology``. The two actor ranks
share a gloo group of their own, and each weight is produced collectively (its owner broadcasts it), as FSDP's
full-tensor gather is: an actor rank that did not walk the generator would stall the other. Receivers save what
they got per sync; every peer writes ``<role><index>.error`` with the message if a sync fails.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import pickle
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from sspo.cpu.checkpoint_engine import CPUGlooCheckpointEngine

ACTORS, RECEIVERS, BUCKET = 2, 2, 4096
TIMEOUT_S = 5.0


def weights(sync: int) -> dict[str, torch.Tensor]:
    """The weights of sync ``sync``: mixed dtypes, one larger than a bucket, sizes that break 4-byte alignment."""
    g = torch.Generator().manual_seed(1000 + sync)
    return {
        "big.fp32": torch.randn(3000, generator=g),  # 12,000 bytes: three chunks of a 4,096-byte bucket
        "w.bf16": torch.randn(7, 3, generator=g).to(torch.bfloat16),  # 42 bytes
        "b.fp16": torch.randn(5, generator=g).to(torch.float16),  # 10 bytes
        "ids.int64": torch.randint(-(2**40), 2**40, (9,), generator=g),
        "scale.fp32": torch.randn(1, generator=g),
        "mid.bf16": torch.randn(1500, generator=g).to(torch.bfloat16),  # 3,000 bytes: fills most of a bucket
    }


class CorruptingEngine(CPUGlooCheckpointEngine):
    """A receiver whose network flips a byte of every bucket: the CRC-32 check must catch it."""

    def _broadcast(self, data: torch.Tensor) -> None:
        super()._broadcast(data)
        if self.rank and data.numel():
            data[0] ^= 1


def collective_weights(sync: int, rank: int):
    """Yield ``(name, tensor)`` like FSDP's ``get_per_tensor_param``: each tensor needs both actor ranks."""
    for i, (name, full) in enumerate(weights(sync).items()):
        tensor = full.clone() if i % ACTORS == rank else torch.empty_like(full)
        dist.broadcast(tensor, src=i % ACTORS)
        yield name, tensor


async def sync_once(
    engine: CPUGlooCheckpointEngine,
    coord: dist.Store,
    role: str,
    index: int,
    sync: int,
    out: Path,
    die_after: int | None,
) -> None:
    """One sync: prepare, topology, group, transfer, finalize (the manager's steps)."""
    meta = engine.prepare()
    if role == "actor" and index == 0:
        coord.set(f"meta{sync}", pickle.dumps(meta))
    master = pickle.loads(coord.get(f"meta{sync}"))
    actor_kwargs, rollout_kwargs = CPUGlooCheckpointEngine.build_topology(
        ACTORS, RECEIVERS, [master] + [{}] * 3
    )
    kwargs = actor_kwargs if role == "actor" else rollout_kwargs
    engine.init_process_group(**{k: v[index] for k, v in kwargs.items()})
    if role == "actor":
        metrics = await engine.send_weights(collective_weights(sync, index), global_steps=sync)
        (out / f"sent{index}_sync{sync}.pkl").write_bytes(pickle.dumps(metrics))
    else:
        got, names = {}, set()
        async for name, tensor in engine.receive_weights(global_steps=sync):
            got[name] = tensor.clone()
            names.add(name)
            if die_after is not None and len(names) >= die_after:
                os._exit(3)  # a rollout worker that dies in the middle of a sync
        torch.save(got, out / f"received{index}_sync{sync}.pt")
    engine.finalize()


def main() -> None:
    """Run ``SYNCS`` syncs in a row as one peer."""
    role, index, port, out, syncs = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        Path(sys.argv[4]),
        int(sys.argv[5]),
    )
    fault = sys.argv[6] if len(sys.argv) > 6 else None
    die_after = int(fault) if fault and fault.isdigit() else None
    timeout = datetime.timedelta(seconds=60)
    coord = dist.TCPStore("127.0.0.1", port, None, False, timeout=timeout)
    if role == "actor":
        dist.init_process_group(
            "gloo", store=dist.PrefixStore("actors", coord), rank=index, world_size=ACTORS, timeout=timeout
        )
    engine_cls = CorruptingEngine if fault == "corrupt" else CPUGlooCheckpointEngine
    engine = engine_cls(
        BUCKET, is_master=(role == "actor" and index == 0), timeout_s=TIMEOUT_S, host="127.0.0.1"
    )
    # start together: the engine's TIMEOUT_S bounds the syncs, not how far apart four processes finish importing
    coord.set(f"ready/{role}{index}", "1")
    coord.wait([f"ready/{r}{i}" for r, n in (("actor", ACTORS), ("rollout", RECEIVERS)) for i in range(n)])
    try:
        for sync in range(syncs):
            asyncio.run(sync_once(engine, coord, role, index, sync, out, die_after))
    except Exception as error:  # the test reads the message
        (out / f"{role}{index}.error").write_text(f"{type(error).__name__}: {error}")
        raise SystemExit(1) from None
    (out / f"{role}{index}.done").write_text("ok")


if __name__ == "__main__":
    main()
