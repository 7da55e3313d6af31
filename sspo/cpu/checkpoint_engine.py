"""A weight sync for verl's ``separate_async`` trainer without GPUs: a gloo broadcast over a private group.

``separate_async`` pushes the actor's weights into its standalone rollout replicas through a checkpoint
engine (verl's ``CheckpointEngineManager``, at start-up and once per global step) and refuses the
colocated ``naive`` one; verl's other engines need CUDA, RDMA or NPUs. This one is registered in verl's
``CheckpointEngineRegistry`` as ``cpu_gloo`` and selected by config (``cluster=cpu_separate``):

    actor_rollout_ref.rollout.checkpoint_engine.backend=cpu_gloo
    actor_rollout_ref.rollout.checkpoint_engine.custom_backend_module=sspo.cpu.checkpoint_engine

verl imports ``custom_backend_module`` in the manager, the actor worker and the rollout worker before
the lookup. Per sync: actor rank 0 (the master) opens a ``TCPStore``, every rollout worker joins a gloo
group of its own with it (ranks 1..R; torch's default group is already taken by each side's own world),
the master fills byte buckets with the weights (a tensor larger than a bucket goes in chunks, verl's
``split_weight_chunks``/``merge_weight_chunks``), posts each bucket's table of contents in the store and
broadcasts the bucket. The other actor ranks only walk the weight generator: FSDP's full-tensor gather
is collective over the actor group. Each bucket carries its CRC-32; a closing all-reduce collects every
receiver's verdict, so a receiver that died or got other bytes fails the sync, and every wait is bounded
by ``timeout_s`` (``checkpoint_engine.engine_kwargs.cpu_gloo.timeout_s``). The sync's size and checksum (a
CRC-32 over its buckets' CRC-32s) are logged as ``weight_sync/cpu_gloo/{bytes,crc32}``.
"""

from __future__ import annotations

import asyncio
import datetime
import pickle
import zlib
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import torch
import torch.distributed as dist
from verl.checkpoint_engine.base import (
    CheckpointEngine,
    CheckpointEngineRegistry,
    TensorMeta,
    merge_weight_chunks,
    split_weight_chunks,
)

__all__ = ["BACKEND", "CPUGlooCheckpointEngine", "WeightSyncError"]

#: the name to put in ``actor_rollout_ref.rollout.checkpoint_engine.backend``
BACKEND = "cpu_gloo"
#: every tensor starts at a multiple of this in a bucket, so a received chunk can be viewed as its dtype
_ALIGN = 16


class WeightSyncError(RuntimeError):
    """A ``cpu_gloo`` weight sync that could not complete (a peer died, or a wait ran past ``timeout_s``)."""


@CheckpointEngineRegistry.register(BACKEND)
class CPUGlooCheckpointEngine(CheckpointEngine):
    """verl's checkpoint-engine interface over gloo: actor rank 0 broadcasts byte buckets to every rollout worker.

    Args:
        bucket_size: bytes per bucket (verl passes ``update_weights_bucket_megabytes << 20``).
        is_master: actor rank 0 (verl sets it on the actor side only).
        timeout_s: bound on every wait of a sync (store lookups, broadcasts, the closing barrier).
        host: the address the master's store listens on (default: this Ray node's IP, else 127.0.0.1).
    """

    def __init__(
        self, bucket_size: int, is_master: bool = False, timeout_s: float = 300.0, host: str | None = None
    ):
        if bucket_size <= 0 or not timeout_s > 0:
            raise ValueError(f"{BACKEND}: bucket_size={bucket_size} and timeout_s={timeout_s} must be > 0")
        self.bucket_size = int(bucket_size)
        self.is_master = is_master
        self.timeout = datetime.timedelta(seconds=float(timeout_s))
        self.host = host
        self.rank: int | None = None
        self._store: dist.TCPStore | None = None
        self._group: dist.ProcessGroupGloo | None = None

    def prepare(self) -> dict[str, Any]:
        """The master opens this sync's store; its address is the metadata the topology hands to everyone."""
        if not self.is_master:
            return {}
        host = self.host or _node_ip()
        self._store = dist.TCPStore(host, 0, None, True, timeout=self.timeout, wait_for_workers=False)
        return {"host": host, "port": self._store.port}

    @classmethod
    def build_topology(
        cls, actor_wg_world_size: int, rollout_world_size: int, metadata: list[dict[str, Any]]
    ) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """Actor rank 0 is rank 0 of the group, rollout workers 1..R; other actor ranks stay out (rank -1)."""
        master = metadata[0]
        if "port" not in master:
            raise WeightSyncError(
                f"{BACKEND}: actor rank 0 must be the master (it opened no store): {metadata[0]!r}"
            )
        world = 1 + rollout_world_size
        actor = {
            "rank": [0] + [-1] * (actor_wg_world_size - 1),
            "world_size": [world] * actor_wg_world_size,
            "master": [master] * actor_wg_world_size,
        }
        rollout = {
            "rank": list(range(1, world)),
            "world_size": [world] * rollout_world_size,
            "master": [master] * rollout_world_size,
        }
        return actor, rollout

    def init_process_group(self, rank: int, world_size: int, master: dict[str, Any]) -> None:
        """Join this sync's gloo group (blocks until all ``world_size`` members joined, at most ``timeout_s``)."""
        self.rank, self.world_size = rank, world_size
        if rank < 0:
            return
        try:  # a rollout worker that cannot reach the master's store fails here, named like any other wait
            if rank > 0:
                self._store = dist.TCPStore(master["host"], master["port"], None, False, timeout=self.timeout)
            self._group = dist.ProcessGroupGloo(self._store, rank, world_size, self.timeout)
        except RuntimeError as error:
            raise self._failure(f"forming the group of {world_size} (rank {rank})", error) from error

    def finalize(self) -> None:
        """Drop this sync's group and store (a new one is formed for the next sync, as verl rebuilds the topology)."""
        self._group = None
        self._store = None
        self.rank = None

    @torch.no_grad()
    async def send_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]], global_steps: int | None = None
    ) -> dict[str, float]:
        """Master: the weights in buckets to every rollout worker; other actor ranks: walk the generator."""
        if self.rank is None:
            raise WeightSyncError(f"checkpoint engine {BACKEND!r}: send_weights before init_process_group")
        if self.rank < 0:
            for _ in weights:  # producing each full tensor is collective over the actor ranks
                pass
            return {}
        try:
            return await self._send_all(weights)
        except BaseException:
            self.finalize()  # close the group: the receivers fail now instead of at their timeout
            raise

    async def _send_all(self, weights: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float]:
        bucket, table, offset, index = torch.empty(self.bucket_size, dtype=torch.uint8), [], 0, 0
        crc, total = 0, 0
        async for meta, chunk in split_weight_chunks(weights, self.bucket_size):
            start = -(-offset // _ALIGN) * _ALIGN
            if start + meta.chunk_size > self.bucket_size:  # full: send it, start the next one
                crc = await self._send_bucket(index, bucket[:offset], table, last=False, crc=crc)
                total, table, start, index = total + offset, [], 0, index + 1
            meta.offset = start
            table.append(meta)
            bucket[start : start + meta.chunk_size] = chunk
            offset = start + meta.chunk_size
        crc = await self._send_bucket(index, bucket[:offset], table, last=True, crc=crc)
        bad = await self._run(
            f"waiting for {self.world_size - 1} rollout workers to confirm", self._verdicts, 0
        )
        if bad:
            raise self._failure(
                "checking the weights", RuntimeError(f"{bad} rollout worker(s) got other bytes")
            )
        return {
            f"weight_sync/{BACKEND}/bytes": float(total + offset),
            f"weight_sync/{BACKEND}/crc32": float(crc),
        }

    async def receive_weights(
        self, global_steps: int | None = None
    ) -> AsyncGenerator[tuple[str, torch.Tensor], None]:
        """Rollout worker: ``(name, tensor)`` for every weight the master sent, whole tensors again."""
        async for name, weight in merge_weight_chunks(self._receive_chunks(), self.bucket_size):
            yield name, weight

    async def _send_bucket(
        self, index: int, data: torch.Tensor, table: list[TensorMeta], last: bool, crc: int
    ) -> int:
        """Post bucket ``index``'s table of contents and CRC-32, broadcast it; the running CRC-32 of the sync."""
        bucket_crc = zlib.crc32(data.numpy())
        header = pickle.dumps({"table": table, "length": data.numel(), "last": last, "crc32": bucket_crc})
        self._store.set(self._key(index), header)
        await self._run(f"broadcasting bucket {index}", self._broadcast, data)
        return zlib.crc32(bucket_crc.to_bytes(4, "little"), crc)  # the sync's: over its buckets' CRC-32s

    async def _receive_chunks(self) -> AsyncGenerator[tuple[TensorMeta, torch.Tensor], None]:
        index, bad = 0, 0
        while True:
            raw = await self._run(f"waiting for bucket {index}", self._store.get, self._key(index))
            header = pickle.loads(raw)
            data = torch.empty(
                header["length"], dtype=torch.uint8
            )  # a fresh buffer: yielded views stay valid
            await self._run(f"receiving bucket {index}", self._broadcast, data)
            bad = bad or int(zlib.crc32(data.numpy()) != header["crc32"])
            for meta in header["table"]:
                yield meta, data[meta.offset : meta.offset + meta.chunk_size]
            if header["last"]:
                break
            index += 1
        await self._run("confirming the sync", self._verdicts, bad)  # after every tensor was handed on
        if bad:
            raise self._failure(
                "checking the weights", RuntimeError("a bucket's bytes differ from its CRC-32")
            )

    def _broadcast(self, data: torch.Tensor) -> None:
        self._group.broadcast(data, 0).wait()

    def _verdicts(self, bad: int) -> int:
        """All-reduce of each member's "got other bytes" flag: how many did (it also waits for every member)."""
        flags = torch.tensor([float(bad)])
        self._group.allreduce(flags).wait()
        return int(flags.item())

    @staticmethod
    def _key(index: int) -> str:
        return f"bucket{index}"  # each sync has a store of its own

    async def _run(self, what: str, blocking: Any, *args: Any) -> Any:
        """``blocking(*args)`` in a thread (the rollout worker's event loop keeps serving), its error named."""
        try:
            return await asyncio.to_thread(blocking, *args)
        except RuntimeError as error:  # gloo and store errors (DistBackendError, DistStoreError) included
            raise self._failure(what, error) from error

    def _failure(self, what: str, error: BaseException) -> WeightSyncError:
        return WeightSyncError(
            f"checkpoint engine {BACKEND!r} (rank {self.rank} of {getattr(self, 'world_size', '?')}): {what} failed "
            f"(every wait is bounded by actor_rollout_ref.rollout.checkpoint_engine.engine_kwargs.{BACKEND}."
            f"timeout_s={self.timeout.total_seconds():g}): {error}. A rollout worker or the actor may have died: its "
            f"error is in the log above; if none did, the peers were too slow for that bound: raise it"
        )


def _node_ip() -> str:
    """This Ray node's address (what the other nodes reach), or the loopback outside Ray."""
    import ray

    return ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
