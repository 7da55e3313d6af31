"""Did the update move the policy the way its advantages asked? A check on the update's own batch, in plain PyTorch.

After the actor's update, the trainer recomputes the log-probs of the samples it just trained on
(``sspo.update_check=true``; one extra forward pass a step) and compares them with the old ones:

    d_t   = log pi_new(y_t) - log pi_old(y_t)                           per valid token t
    gain  = sum_t A_t d_t / sum_t 1                                      first-order gain of the surrogate sum A * ratio
    align = sum_t A_t d_t / sqrt(sum_t A_t^2 * sum_t d_t^2)             in [-1, 1]: the cosine of A and d over the tokens

A working loss with a positive learning rate makes ``gain > 0`` on the batch it trained on (each mini-batch
takes a gradient step on its own surrogate); a loss that stopped moving the policy gives ``mean |d| = 0``,
one that moves it the wrong way ``align < 0``. No threshold on how much the task's reward rose is needed.
In ``separate_async`` the old log-probs are pi_old's (the start of the parameter-sync cycle): after a cycle's
k-th mini-batch the check sees the cycle's first k updates on that mini-batch's samples.
"""

from __future__ import annotations

import torch

__all__ = ["UPDATE_PREFIX", "update_direction"]

#: the check's metrics are logged as ``actor/update/<name>``
UPDATE_PREFIX = "actor/update/"


@torch.no_grad()
def update_direction(
    new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """``{surrogate_gain, alignment, mean_abs_log_ratio, responses_agreeing}`` of one update batch (module docstring).

    Args: [B, T] tensors of the batch's responses (padding anywhere ``mask`` is 0). ``responses_agreeing``: the
    share of responses with a non-zero advantage whose mean log-ratio has the advantage's sign.
    """
    valid = mask.bool()  # [B, T]
    n = valid.sum().clamp(min=1).double()
    d = torch.where(valid, new_log_prob.double() - old_log_prob.double(), 0.0)  # [B, T]
    a = torch.where(valid, advantages.double(), 0.0)  # [B, T]
    gain = (a * d).sum() / n
    scale = torch.sqrt((a * a).sum() * (d * d).sum())
    lengths = valid.sum(-1).clamp(min=1)  # [B]
    d_resp, a_resp = d.sum(-1) / lengths, a.sum(-1) / lengths  # [B] response means
    signed = a_resp != 0
    agree = (torch.sign(d_resp) == torch.sign(a_resp)) & signed
    return {
        "surrogate_gain": float(gain),
        "alignment": float((a * d).sum() / scale) if scale > 0 else 0.0,
        "mean_abs_log_ratio": float(d.abs().sum() / n),
        "responses_agreeing": float(agree.sum() / signed.sum().clamp(min=1)),
    }
