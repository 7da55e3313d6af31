"""One H_ref in every trainer mode: the token-mean old-policy entropy of one optimizer step's samples (a mini-batch).

verl's ``_update_actor`` gets a whole step's batch in ``sync``/``colocate_async`` (several mini-batches, cut by the
actor workers) and one mini-batch per call in ``separate_async``. SSPO's trainer gives each row its mini-batch's
H_ref in both (:func:`sspo.verl_plugin.trainers.mini_batch_ids`), so the same samples make the same update.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import ActorConfig

from sspo.loss import entropy_reference, entropy_reference_per_group
from sspo.verl_plugin import SSPOPolicyLossConfig
from sspo.verl_plugin.actor_loss import _one_entropy_ref
from sspo.verl_plugin.trainers import mini_batch_ids


def test_mini_batch_ids_follow_verls_dispatch_then_split() -> None:
    # one rank: contiguous mini-batches
    assert mini_batch_ids(6, 1, 2).tolist() == [0, 0, 1, 1, 2, 2]
    # two ranks: rank 0 gets rows 0-3, rank 1 rows 4-7; each cuts its chunk into mini-batches of 4 / 2 = 2 rows
    assert mini_batch_ids(8, 2, 4).tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    # one mini-batch per call (separate_async): one id
    assert mini_batch_ids(4, 2, 4).tolist() == [0, 0, 0, 0]


def test_each_row_gets_its_groups_token_mean_entropy() -> None:
    entropy = torch.tensor([[1.0, 3.0, 9.0], [2.0, 0.0, 0.0], [4.0, 4.0, 4.0], [6.0, 6.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]])
    refs = entropy_reference_per_group(entropy, mask, torch.tensor([0, 0, 1, 1]))
    # group 0: (1 + 3 + 2) / 3 tokens = 2; group 1: (4 * 3 + 6 * 2) / 5 tokens = 4.8 (masked 9 and 0 ignored)
    assert refs.tolist() == pytest.approx([2.0, 2.0, 4.8, 4.8])
    one = entropy_reference_per_group(entropy, mask, torch.zeros(4, dtype=torch.long))
    assert one.tolist() == pytest.approx([float(entropy_reference(entropy, mask))] * 4)


def test_a_micro_batch_takes_its_rows_one_value_and_refuses_two() -> None:
    assert _one_entropy_ref(0.25) == 0.25
    assert _one_entropy_ref(torch.tensor([0.5, 0.5, 0.5])) == 0.5
    with pytest.raises(
        ValueError, match="carries 2 different 'sspo_entropy_ref' values: it spans two mini-batches"
    ):
        _one_entropy_ref(torch.tensor([0.5, 0.5, 0.7]))


ROWS, T, MINI = 96, 24, 24  # the tiny CPU row: 12 prompts x 8 samples, mini-batches of 3 prompts x 8


def _step_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """A step's batch whose mini-batches differ in entropy (as a policy's confident and unsure prompts do)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, T + 1, (ROWS,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    ends = (torch.rand(ROWS, T, generator=g) < 0.25) & mask
    old = -torch.rand(ROWS, T, generator=g, dtype=torch.float64) * 3
    scale = 0.2 + torch.arange(ROWS)[:, None] // MINI  # mini-batch i: entropies up to 0.2 + i
    return {
        "old_log_prob": old,
        "log_prob": old + torch.randn(ROWS, T, generator=g, dtype=torch.float64) * 0.3,
        "advantages": torch.randn(ROWS, 1, generator=g, dtype=torch.float64).expand(ROWS, T).contiguous(),
        "response_mask": mask,
        "segment_ids": torch.where(mask, torch.cumsum(ends.long(), 1) - ends.long(), -1),
        "entropy": torch.rand(ROWS, T, generator=g, dtype=torch.float64) * scale,
    }


def _actor_config() -> ActorConfig:
    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio_low=0.05,
                       clip_ratio_high=0.08, loss_agg_mode="token-mean", policy_loss=SSPOPolicyLossConfig())  # fmt: skip


def _optimizer_step(batch: dict, rows: slice, h_ref: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SSPO's loss and its gradient for one mini-batch in one pass, with the H_ref it was handed."""
    cut = {k: v[rows] for k, v in batch.items()}
    return _verl_step_update(cut, [[list(range(len(cut["response_mask"])))]], lambda _: h_ref)[:2]


def _verl_step_update(
    batch: dict, ranks: list[list[list[int]]], ref_of
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(loss, gradient on every row's log-probs, the H_ref of each micro-batch) of one optimizer step run as verl runs
    it: ranks -> micro-batches -> rows, each micro-batch's loss with ``ref_of(rows)`` and the step's
    ``global_batch_info``, the ranks' gradients averaged (the model of ``tests/test_loss_layout_invariance.py``)."""
    cfg, mask = _actor_config(), batch["response_mask"]
    step_rows = [row for rank in ranks for micro in rank for row in micro]
    cfg.global_batch_info.update(
        dp_size=len(ranks), batch_num_tokens=int(mask[step_rows].sum()), global_batch_size=len(step_rows)
    )
    log_prob = batch["log_prob"].clone().requires_grad_(True)
    total, refs = torch.zeros((), dtype=log_prob.dtype), []
    for micro_batches in ranks:
        for rows in micro_batches:
            refs.append(ref_of(rows))
            cut = {k: v[rows] for k, v in batch.items()}
            loss, _ = get_policy_loss_fn("sspo")(
                cut["old_log_prob"], log_prob[rows], cut["advantages"], cut["response_mask"], "token-mean", cfg, None,
                segment_ids=cut["segment_ids"], entropy=cut["entropy"], entropy_ref=refs[-1],
            )  # fmt: skip
            (loss / len(ranks)).backward()  # data parallelism averages the ranks' gradients
            total = total + loss.detach() / len(ranks)
    return total, log_prob.grad, refs


def _verl_optimizer_steps(
    rows: int, dp_size: int, mini_batch_rows: int, epochs: int
) -> list[list[list[int]]]:
    """Optimizer step -> rank -> rows, cut by verl 0.9.1's own code: the dispatch's per-rank chunk (``BatchMeta.chunk``:
    a ``KVBatchMeta`` argument becomes a ``BatchMeta`` in ``BatchData.chunk``) and each rank's mini-batch iterator
    (``make_iterator`` as ``train_mini_batch`` calls it, ``shuffle=False``); step i is every rank's i-th mini-batch."""
    from tensordict import TensorDict
    from transfer_queue import BatchMeta
    from verl.utils.tensordict_utils import make_iterator

    per_rank = []
    for rank, chunk in enumerate(
        BatchMeta(global_indexes=list(range(rows)), partition_ids=["train"] * rows).chunk(dp_size)
    ):
        ids = torch.tensor(chunk.global_indexes)
        iterator = make_iterator(TensorDict({"row": ids}, batch_size=[len(ids)]), mini_batch_rows // dp_size, epochs,
                                 seed=42 + rank, dataloader_kwargs={"shuffle": False})  # fmt: skip
        per_rank.append([mini["row"].tolist() for mini in iterator])
    return [list(step) for step in zip(*per_rank, strict=True)]


@pytest.mark.parametrize(
    ("rows", "dp_size", "mini", "epochs"), [(96, 1, 24, 1), (96, 2, 24, 2), (48, 2, 8, 1), (16, 4, 8, 3)]
)
def test_mini_batch_ids_are_the_rows_verl_trains_in_one_optimizer_step(rows, dp_size, mini, epochs) -> None:
    steps = _verl_optimizer_steps(rows, dp_size, mini, epochs)
    ids = mini_batch_ids(rows, dp_size, mini)
    assert len(steps) == rows // mini * epochs
    for i, step in enumerate(steps):
        step_rows = sorted(row for rank in step for row in rank)
        assert sorted(torch.nonzero(ids == i % (rows // mini)).flatten().tolist()) == step_rows
    if dp_size > 1:  # the ids a driver would give without the dispatch's chunking mix two steps' rows
        naive = torch.arange(rows) // mini
        assert any(len({int(naive[row]) for rank in step for row in rank}) > 1 for step in steps)


@pytest.mark.parametrize("dp_size", [1, 2])
def test_sync_and_separate_async_make_the_same_update_from_the_same_samples(dp_size: int) -> None:
    """sync: the trainer's per-row H_ref over the whole step batch (verl's padding rows and balanced order), the
    optimizer steps cut by verl's own chunk/iterator, micro-batches of 4 rows each taking its rows' one value.
    separate_async: the same step's samples alone in their call, one pass, H_ref their token-mean entropy by hand."""
    from verl.utils.seqlen_balancing import get_seqlen_balanced_partitions

    batch = _step_batch()
    padding = torch.arange(ROWS) >= ROWS - 6  # verl's upsampled rows: response_mask all 0
    batch["response_mask"] = batch["response_mask"] & ~padding[:, None]
    batch["segment_ids"] = torch.where(batch["response_mask"], batch["segment_ids"], -1)
    workload = (batch["response_mask"].sum(1) + 7).tolist()  # what _balance_batch balances: sequence lengths
    order = [
        j
        for part in get_seqlen_balanced_partitions(workload, k_partitions=dp_size, equal_size=True)
        for j in part
    ]
    batch = {k: v[order] for k, v in batch.items()}
    refs = entropy_reference_per_group(
        batch["entropy"], batch["response_mask"], mini_batch_ids(ROWS, dp_size, MINI)
    )
    steps = _verl_optimizer_steps(ROWS, dp_size, MINI, epochs=1)
    assert len(steps) == 4
    for step in steps:
        micro = [[rank[i : i + 4] for i in range(0, len(rank), 4)] for rank in step]
        sync = _verl_step_update(batch, micro, lambda rows: _one_entropy_ref(refs[rows]))
        alone = [row for rank in step for row in rank]
        by_hand = float(batch["entropy"][alone][batch["response_mask"][alone]].mean())
        separate = _verl_step_update(batch, [[alone]], lambda _, ref=by_hand: ref)
        assert sync[2] == pytest.approx([by_hand] * len(sync[2]), rel=1e-12)
        assert sync[1].abs().sum() > 0
        torch.testing.assert_close(sync[0], separate[0], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(sync[1], separate[1], rtol=1e-9, atol=1e-12)


def test_the_previous_whole_step_h_ref_made_sync_differ_from_separate_async() -> None:
    """What the per-mini-batch definition fixes: with H_ref over the step's whole batch (the recipe's choice before
    separate_async ran), a sync step clipped its mini-batches otherwise than separate_async does."""
    batch = _step_batch()
    whole = float(entropy_reference(batch["entropy"], batch["response_mask"]))
    rows = slice(0, MINI)  # the first, least entropic mini-batch
    own = float(entropy_reference(batch["entropy"][rows], batch["response_mask"][rows]))
    assert own < whole / 2
    old_sync, per_mini_batch = _optimizer_step(batch, rows, whole), _optimizer_step(batch, rows, own)
    assert not torch.allclose(old_sync[1], per_mini_batch[1])


class _FakeTransferQueue:
    """TransferQueue's ``kv_batch_get`` / ``kv_batch_put`` over a dict of rows (what the trainer's driver code calls)."""

    def __init__(self, rows: dict[str, dict[str, torch.Tensor]]) -> None:
        self.rows = rows

    def kv_batch_get(self, keys: list[str], partition_id: str, select_fields: list[str]) -> Any:
        from tensordict import TensorDict

        fields = {f: torch.stack([self.rows[k][f] for k in keys]) for f in select_fields}
        return TensorDict(fields, batch_size=[len(keys)])

    def kv_batch_put(self, keys: list[str], partition_id: str, fields: Any) -> None:
        for i, key in enumerate(keys):
            self.rows.setdefault(key, {}).update({f: fields[f][i] for f in fields.keys()})


def test_the_driver_writes_each_rows_h_ref_and_policy_lag_and_lists_the_fields(monkeypatch) -> None:
    import transfer_queue
    from transfer_queue import KVBatchMeta

    from sspo.verl_plugin.trainers import _mini_batch_entropy_refs, _store_policy_lag

    # 4 rows on 2 ranks, mini-batches of 2 rows: rank 0 = rows a, b (step 0: a; step 1: b), rank 1 = c, d
    entropy = {"a": [1.0, 3.0], "b": [5.0, 5.0], "c": [2.0, 9.0], "d": [7.0, 7.0]}
    mask = {"a": [1, 1], "b": [1, 0], "c": [1, 0], "d": [0, 0]}  # d: a padding row
    fake = _FakeTransferQueue({
        k: {"entropy": torch.tensor(entropy[k]), "response_mask": torch.tensor(mask[k])} for k in entropy
    })  # fmt: skip
    monkeypatch.setattr(transfer_queue, "kv_batch_get", fake.kv_batch_get)
    monkeypatch.setattr(transfer_queue, "kv_batch_put", fake.kv_batch_put)
    tags = [
        {"max_global_steps": 4},
        {"max_global_steps": 2},
        {"max_global_steps": 0},
        {"is_padding": True, "max_global_steps": 4},
    ]
    batch = KVBatchMeta(
        partition_id="train", keys=list(entropy), tags=tags, fields=["entropy", "response_mask"]
    )
    _mini_batch_entropy_refs(batch, dp_size=2, mini_batch_rows=2)
    _store_policy_lag(batch, global_steps=5)
    # step 0 = a + c: (1 + 3 + 2) / 3 tokens = 2; step 1 = b + d: 5 / 1 token (the padding row has none) = 5
    assert [float(fake.rows[k]["sspo_entropy_ref"]) for k in "abcd"] == [2.0, 5.0, 2.0, 5.0]
    # pi_old is version 4 at global step 5: lags 0, 2, 4; the padding row -1 (not counted)
    assert [int(fake.rows[k]["sspo_policy_lag"]) for k in "abcd"] == [0, 2, 4, -1]
    assert batch.fields == ["entropy", "response_mask", "sspo_entropy_ref", "sspo_policy_lag"]
