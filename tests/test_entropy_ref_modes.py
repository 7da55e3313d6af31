"""One H_ref in every trainer mode: the token-mean old-policy entropy of one optimizer step's samples (a mini-batch).

verl's ``_update_actor`` gets a whole step's batch in ``sync``/``colocate_async`` (several mini-batches, cut by the
actor workers) and one mini-batch per call in ``separate_async``. SSPO's trainer gives each row its mini-batch's
H_ref in both (:func:`sspo.verl_plugin.trainers.mini_batch_ids`), so the same samples make the same update.
"""

from __future__ import annotations

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


def _optimizer_step(batch: dict, rows: slice, h_ref: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SSPO's loss and its gradient for one mini-batch, with the H_ref it was handed."""
    cfg = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio_low=0.05,
                      clip_ratio_high=0.08, loss_agg_mode="token-mean", policy_loss=SSPOPolicyLossConfig())  # fmt: skip
    cut = {k: v[rows] for k, v in batch.items()}
    cfg.global_batch_info.update(
        dp_size=1, batch_num_tokens=int(cut["response_mask"].sum()), global_batch_size=MINI
    )
    log_prob = cut["log_prob"].clone().requires_grad_(True)
    loss, _ = get_policy_loss_fn("sspo")(
        cut["old_log_prob"], log_prob, cut["advantages"], cut["response_mask"], "token-mean", cfg, None,
        segment_ids=cut["segment_ids"], entropy=cut["entropy"], entropy_ref=h_ref,
    )  # fmt: skip
    loss.backward()
    return loss.detach(), log_prob.grad


@pytest.mark.parametrize("dp_size", [1, 2])
def test_sync_and_separate_async_make_the_same_update_from_the_same_samples(dp_size: int) -> None:
    batch = _step_batch()
    # sync: one _update_actor call with the step's 4 mini-batches (rows as the trainer ordered them)
    sync_ids = mini_batch_ids(ROWS, dp_size, MINI)
    sync_refs = entropy_reference_per_group(batch["entropy"], batch["response_mask"], sync_ids)
    for i in range(ROWS // MINI):
        rows = torch.nonzero(sync_ids == i).flatten()
        # separate_async: this mini-batch alone in its own call (its rows, in the same order)
        alone = {k: v[rows] for k, v in batch.items()}
        separate_ref = entropy_reference_per_group(
            alone["entropy"], alone["response_mask"], mini_batch_ids(MINI, dp_size, MINI)
        )
        assert torch.equal(sync_refs[rows], separate_ref)
        sync_step = _optimizer_step(
            {k: v[rows] for k, v in batch.items()}, slice(None), float(sync_refs[rows][0])
        )
        separate_step = _optimizer_step(alone, slice(None), float(separate_ref[0]))
        assert torch.equal(sync_step[0], separate_step[0]) and torch.equal(sync_step[1], separate_step[1])


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
