"""Per-token log-probabilities and entropy of the dataset tokens under a causal LM."""

from __future__ import annotations

from typing import NamedTuple

import torch


class TokenLogprobs(NamedTuple):
    """Per-token quantities at positions ``t`` predicting ``input_ids[:, t+1]``, each ``[B, T-1]``."""

    logprobs: torch.Tensor  # log π(x_{t+1} | x_<=t); carries grad
    entropy: torch.Tensor | None  # H(π(· | x_<=t)); detached
    is_argmax: torch.Tensor | None  # 1.0 where the dataset token is the policy's greedy choice; detached


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    with_stats: bool = True,
) -> TokenLogprobs:
    """Log-probability of every next dataset token, and (``with_stats``) entropy and greedy agreement.

    ``input_ids``, ``attention_mask``: ``[B, T]``. Align a loss mask with ``mask[:, 1:]``. Log-softmax is taken in
    fp32 whatever the model's dtype. (This is the plain full-logits path.)
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]  # [B, T-1, V]
    logp_all = torch.log_softmax(logits.float(), dim=-1)  # [B, T-1, V]
    targets = input_ids[:, 1:].unsqueeze(-1)  # [B, T-1, 1]
    logprobs = logp_all.gather(-1, targets).squeeze(-1)  # [B, T-1]
    if not with_stats:
        return TokenLogprobs(logprobs, None, None)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)  # [B, T-1]
        is_argmax = (logp_all.argmax(-1) == targets.squeeze(-1)).float()  # [B, T-1]
    return TokenLogprobs(logprobs, entropy, is_argmax)
