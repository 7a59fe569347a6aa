"""Per-token log-probabilities and entropy of the dataset tokens under a causal LM.

Two paths, equal to 1e-5 (tests):

- ``chunk_size=None``: the plain path, full ``[B, T, V]`` logits in fp32 (what most SFT code does).
- ``chunk_size=n`` (default in training): only the trained positions are scored, ``n`` tokens at a time, from
  the final hidden states and the LM head. :class:`ChunkedLMHead` keeps no logits for the backward pass: it
  recomputes each chunk's logits there, so peak memory is one ``[n, V]`` fp32 block instead of ``[B*T, V]``
  (plus its log-softmax, its grad ...). Entropy is computed only when asked.

``packed=True`` (``TrainConfig.padding_free``, as TRL's ``padding_free``): the batch's real tokens run as one row,
``position_ids`` restarting at 0 for every sequence and no attention mask, so no compute goes to padding. Outputs
keep the padded ``[B, T-1]`` layout (0 at padding). transformers honours the sequence boundaries from the
``position_ids``: flash-attention as variable-length sequences, SDPA and eager through a block-diagonal causal
mask that ``create_causal_mask`` builds (tests: packed = padded in loss and gradients to 1e-5). Only without a KV
cache: with one (``use_cache`` defaults to true) transformers 5.x skips that detection and the packed sequences
attend to each other, so every forward here passes ``use_cache=False`` (no cache is wanted in training anyway).
Cost: flash-attention skips padding outright; SDPA and eager attend over the whole packed row through a dense
``[N, N]`` mask, N the micro batch's tokens. On CPU (SDPA, 8 sequences, 4 layers, forward + backward) packing took
0.62x the padded time on a length mix (72-758 tokens) and 4.3x on 8 x 1,024 tokens: with SDPA it pays only when
lengths vary widely.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class TokenLogprobs(NamedTuple):
    """Per-token quantities at positions ``t`` predicting ``input_ids[:, t+1]``, each ``[B, T-1]``."""

    logprobs: torch.Tensor  # log π(x_{t+1} | x_<=t); carries grad; 0 where not scored
    entropy: torch.Tensor | None  # H(π(· | x_<=t)); detached
    is_argmax: torch.Tensor | None  # 1.0 where the dataset token is the policy's greedy choice; detached


class ChunkedLMHead(torch.autograd.Function):
    """``hidden [N, H] @ weight[V, H]^T`` -> (log-prob of ``targets``, entropy, is-argmax), chunk by chunk.

    Forward and backward each loop over chunks of ``chunk_size`` rows, accumulating in fp32. Backward uses
    d logp(target) / d logits = onehot(target) - softmax(logits), recomputing the chunk's logits from the
    saved hidden states and the per-row log-sum-exp. Entropy and is-argmax are not differentiable.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int, with_stats: bool):
        n = hidden.shape[0]
        logprobs = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(n if with_stats else 0, dtype=torch.float32, device=hidden.device)
        is_argmax = torch.empty(n if with_stats else 0, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk_size):
            e = min(s + chunk_size, n)
            logits = (hidden[s:e] @ weight.t()).float()  # [c, V]: the only full-width buffer, plus one below
            lse[s:e] = torch.logsumexp(logits, dim=-1)
            logprobs[s:e] = logits.gather(1, targets[s:e, None]).squeeze(1) - lse[s:e]
            if with_stats:
                is_argmax[s:e] = (logits.argmax(-1) == targets[s:e]).float()
                probs = torch.sub(logits, lse[s:e, None]).exp_()  # [c, V]
                entropy[s:e] = lse[s:e] - probs.mul_(logits).sum(-1)
                del probs
            del logits
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(entropy, is_argmax)
        return logprobs, entropy, is_argmax

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy, _grad_is_argmax):
        hidden, weight, targets, lse = ctx.saved_tensors
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        for s in range(0, hidden.shape[0], ctx.chunk_size):
            e = min(s + ctx.chunk_size, hidden.shape[0])
            logits = (hidden[s:e] @ weight.t()).float()  # [c, V], recomputed
            # d logp(target)/d logits = onehot - softmax, times the incoming grad; in place, one [c, V] buffer
            grad_logits = logits.sub_(lse[s:e, None]).exp_().mul_(-grad_logprobs[s:e, None])
            grad_logits[rows[: e - s], targets[s:e]] += grad_logprobs[s:e]
            if grad_hidden is not None:
                grad_hidden[s:e] = (grad_logits @ weight.float()).to(hidden.dtype)
            grad_weight += grad_logits.t() @ hidden[s:e].float()
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None


def _check_plain_head(model: torch.nn.Module) -> torch.nn.Module:
    head = model.get_output_embeddings()
    config = getattr(model, "config", None)
    if getattr(head, "bias", None) is not None or getattr(config, "final_logit_softcapping", None):
        raise ValueError(
            f"{type(model).__name__}: the chunked log-prob head supports a plain linear LM head only "
            "(no bias, no logit soft-capping); use chunk_size=None"
        )
    return head


class ShardedRoot(torch.nn.Module):
    """The FSDP root around a causal LM (``psftlib.train`` with ``fsdp``): the log-prob paths run as this module's
    forward, so FSDP gathers the parameters outside the decoder layers (embeddings, final norm, LM head) for them,
    and reduce-scatters their gradients after, although the chunked head reads ``lm_head.weight`` directly."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, fn, *args, **kwargs):
        """``fn`` (:func:`token_logprobs` or :func:`full_logprobs`) applied to the wrapped model."""
        return fn(self.lm, *args, **kwargs)


class Packing(NamedTuple):
    """A right-padded ``[B, T]`` batch as one row of its real tokens (:func:`pack`)."""

    input_ids: torch.Tensor  # [1, N]: every sequence's tokens, one after another
    position_ids: torch.Tensor  # [1, N]: 0, 1, ... restarting at each sequence
    index: torch.Tensor  # [B, T]: the packed position of each padded position (-1 at padding)


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Packing:
    """Pack a right-padded batch (``attention_mask`` 1 on a prefix of each row) into one row without padding."""
    keep = attention_mask.bool()
    positions = attention_mask.long().cumsum(-1) - 1
    index = torch.where(keep, keep.flatten().long().cumsum(0).view(keep.shape) - 1, -1)
    return Packing(input_ids[keep][None], positions[keep][None], index)


def _unpack(packed: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``[1, N, D]`` -> ``[B, T, D]`` at the padded positions of ``index`` (zeros at padding)."""
    out = packed.new_zeros((*index.shape, packed.shape[-1]))
    out[index >= 0] = packed[0]
    return out


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    with_stats: bool = True,
    score_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
    packed: bool = False,
) -> TokenLogprobs:
    """Log-probability of every next dataset token, and (``with_stats``) entropy and greedy agreement.

    ``input_ids``, ``attention_mask``: ``[B, T]``. ``score_mask`` ``[B, T-1]`` (e.g. ``loss_mask[:, 1:]``) limits
    the chunked path to the positions that matter; outside it the outputs are 0. Align a loss mask with
    ``mask[:, 1:]``. Log-softmax is taken in fp32 whatever the model's dtype. ``packed``: run the batch as one
    row without padding (see the module's docstring); the outputs are the same.
    """
    if isinstance(model, ShardedRoot):
        return model(
            token_logprobs,
            input_ids,
            attention_mask,
            with_stats,
            score_mask=score_mask,
            chunk_size=chunk_size,
            packed=packed,
        )
    if chunk_size is None:
        return gather_token_logprobs(
            full_logprobs(model, input_ids, attention_mask, packed), input_ids, score_mask, with_stats
        )

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # unwrap a peft model
    head = _check_plain_head(lm)
    selected = (score_mask > 0) if score_mask is not None else attention_mask[:, 1:].bool()  # [B, T-1]
    if packed:
        p = pack(input_ids, attention_mask)
        hidden = lm.base_model(
            input_ids=p.input_ids, position_ids=p.position_ids, use_cache=False
        ).last_hidden_state[0]
        h = hidden[p.index[:, :-1][selected]]  # [N, H]: only scored positions (never padding)
    else:
        hidden = lm.base_model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        h = hidden[:, :-1][selected]  # [N, H]: only scored positions
    targets = input_ids[:, 1:][selected]  # [N]
    lp, ent, am = ChunkedLMHead.apply(h, head.weight, targets, chunk_size, with_stats)
    shape = input_ids[:, 1:].shape

    def scatter(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(shape, dtype=torch.float32, device=input_ids.device)
        return out.masked_scatter(selected, values)

    if not with_stats:
        return TokenLogprobs(scatter(lp), None, None)
    return TokenLogprobs(scatter(lp), scatter(ent), scatter(am))


def full_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, packed: bool = False
) -> torch.Tensor:
    """The plain path: log-softmax over the whole vocabulary at every position, fp32, ``[B, T-1, V]``.
    ``packed``: the batch runs as one row without padding; padding positions then get zero logits (uniform)."""
    if isinstance(model, ShardedRoot):
        return model(full_logprobs, input_ids, attention_mask, packed)
    if packed:
        p = pack(input_ids, attention_mask)
        logits = _unpack(
            model(input_ids=p.input_ids, position_ids=p.position_ids, use_cache=False).logits, p.index
        )
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, T-1, V]


def gather_token_logprobs(
    logp_all: torch.Tensor,
    input_ids: torch.Tensor,
    score_mask: torch.Tensor | None = None,
    with_stats: bool = True,
) -> TokenLogprobs:
    """:class:`TokenLogprobs` of the dataset tokens from full log-probabilities ``[B, T-1, V]``."""
    targets = input_ids[:, 1:].unsqueeze(-1)  # [B, T-1, 1]
    logprobs = logp_all.gather(-1, targets).squeeze(-1)  # [B, T-1]
    if score_mask is not None:
        logprobs = logprobs * (score_mask > 0)
    if not with_stats:
        return TokenLogprobs(logprobs, None, None)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)  # [B, T-1]
        is_argmax = (logp_all.argmax(-1) == targets.squeeze(-1)).float()  # [B, T-1]
    return TokenLogprobs(logprobs, entropy, is_argmax)


def full_vocab_kl(logp_all: torch.Tensor, ref_logp_all: torch.Tensor) -> torch.Tensor:
    """Exact per-position ``KL(π_θ(·|s) || π_ref(·|s))`` over the vocabulary, ``[B, T-1]``, from the two full
    log-probability tensors of :func:`full_logprobs` (grad flows through ``logp_all`` only, if the reference's
    was taken without grad). For the ``sft_kl`` objective with ``kl_estimator: full``.
    """
    return (logp_all.exp() * (logp_all - ref_logp_all)).sum(-1)  # [B, T-1]
