"""One optimizer step's forward/backward over its micro batches, for any objective of the registry.

How the token losses of a mini batch are averaged is ``TrainConfig.loss_aggregation`` (:func:`loss_divisors`):

- ``global_token_mean`` (default): each micro batch's summed loss is divided by the mini batch's trained-token count
  summed over all ranks, so the accumulated (and, across ranks, summed) gradient is exactly the gradient of the
  global token-mean: neither micro-batching nor the number of processes changes the maths. This is verl's
  ``token-mean`` since its model-engine workers (volcengine/verl 8ed5bafc0, 2025-11-24, #4211):
  ``verl/workers/engine/fsdp/transformer_impl.py`` ``forward_backward_batch`` all-reduces ``batch_num_tokens`` over
  the data-parallel group and ``verl/trainer/ppo/core_algos.py`` ``agg_loss`` divides
  ``masked_sum(loss_mat, loss_mask) / batch_num_tokens * dp_size`` (FSDP then averages over the dp ranks).
- ``micro_token_mean``: verl before that change, and still its legacy ``verl/workers/actor/dp_actor.py``
  ``update_policy``: ``agg_loss`` takes the token mean of each *micro batch* (``masked_mean``), scaled by
  ``loss_scale_factor = 1 / gradient_accumulation`` (fixed micro batches) or ``response_mask.shape[0] /
  ppo_mini_batch_size`` (``use_dynamic_bsz``), with the per-GPU mini batch; FSDP averages the ranks. Here: a micro
  batch of b sequences gets weight b / mini_batch_size on its token mean (= 1 / (accumulation steps x ranks) when
  micro batches are equal), which is both of verl's factors. It differs from the global mean when micro batches
  hold different numbers of tokens (short sequences weigh more), and equals it when they hold the same.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch

from psftlib.config import TrainConfig
from psftlib.logprobs import (
    TokenLogprobs,
    full_logprobs,
    full_vocab_kl,
    gather_token_logprobs,
    token_logprobs,
)
from psftlib.objectives import OBJECTIVES, Objective, TokenInputs
from psftlib.runtime import all_reduce, dist


class Reference:
    """π_ref, the frozen initial model (SFT-KL, iw-SFT, PSFT with ``old_policy_refresh: never``).

    Full fine-tuning keeps a frozen copy; with LoRA the reference is the same model with adapters disabled.
    """

    def __init__(self, model: torch.nn.Module, lora: bool):
        self.lora = lora
        self.model = model if lora else copy.deepcopy(model).eval().requires_grad_(False)

    def _context(self):
        return self.model.disable_adapter() if self.lora else contextlib.nullcontext()

    def logprobs(
        self, mb: dict, mask: torch.Tensor, chunk: int | None, with_stats: bool = False, packed: bool = False
    ) -> TokenLogprobs:
        with self._context():
            return no_grad_logprobs(self.model, mb, mask, chunk, with_stats, packed)

    @torch.no_grad()
    def full_logprobs(self, mb: dict, packed: bool = False) -> torch.Tensor:
        with self._context():
            return full_logprobs(self.model, mb["input_ids"], mb["attention_mask"], packed)


def needs_reference(objectives: set[str], cfg: TrainConfig) -> bool:
    """Whether a run of these objectives keeps π_ref: one reads it, or PSFT's old policy is the initial model."""
    return any(
        OBJECTIVES[o].needs_reference
        or (OBJECTIVES[o].needs_old_policy and cfg.old_policy_refresh == "never")
        for o in objectives
    )


@torch.no_grad()
def no_grad_logprobs(
    model: torch.nn.Module, mb: dict, mask: torch.Tensor, chunk: int | None, with_stats: bool,
    packed: bool = False,
) -> TokenLogprobs:  # fmt: skip
    """Log-probs of the dataset tokens with no grad, in eval mode (the model's mode is restored); ``packed``: the
    micro batch runs as one row without padding (``padding_free``)."""
    was_training = model.training
    model.eval()
    ids, att = mb["input_ids"], mb["attention_mask"]
    out = token_logprobs(model, ids, att, with_stats, score_mask=mask, chunk_size=chunk, packed=packed)
    model.train(was_training)
    return out


def _forward(
    model: torch.nn.Module,
    mb: dict,
    obj: Objective,
    cfg: TrainConfig,
    mask: torch.Tensor,
    num_tokens: float,
    old: torch.Tensor | None,
    reference: Reference | None,
) -> tuple[TokenLogprobs, TokenInputs]:
    """The policy's forward on one micro batch and what ``obj``'s loss reads besides it."""
    response_mask = mb["loss_mask"][:, 1:]
    if obj.exact_kl(cfg):
        # one forward of each model gives log-probs, entropy, the reference's log-probs and the exact KL
        logp_all = full_logprobs(model, mb["input_ids"], mb["attention_mask"], cfg.padding_free)
        ref_all = reference.full_logprobs(mb, cfg.padding_free)
        out = gather_token_logprobs(logp_all, mb["input_ids"], response_mask)
        ref_lp = gather_token_logprobs(ref_all, mb["input_ids"], response_mask, with_stats=False).logprobs
        inputs = TokenInputs(out.logprobs, mask, num_tokens, ref_logprobs=ref_lp,
                             full_kl=full_vocab_kl(logp_all, ref_all))  # fmt: skip
        return out, inputs
    out = token_logprobs(
        model,
        mb["input_ids"],
        mb["attention_mask"],
        score_mask=response_mask,
        chunk_size=cfg.logprob_chunk_size,
        packed=cfg.padding_free,
    )
    inputs = TokenInputs(out.logprobs, mask, num_tokens)
    if (
        obj.needs_old_policy
    ):  # the first mini batch after a refresh: its own forward is the old policy (r = 1)
        inputs.old_logprobs = old if old is not None else out.logprobs.detach()
    if obj.needs_reference:
        inputs.ref_logprobs = reference.logprobs(
            mb, response_mask, cfg.logprob_chunk_size, packed=cfg.padding_free
        ).logprobs
    return out, inputs


def loss_divisors(
    aggregation: str, masks: list[torch.Tensor], num_tokens: float | torch.Tensor, world: int
) -> list[float | torch.Tensor]:
    """What each micro batch's summed token loss is divided by (the objectives' ``num_tokens``), one per micro
    batch of this rank: ``num_tokens`` (the mini batch's trained tokens over all ranks) for ``global_token_mean``;
    for ``micro_token_mean`` the micro batch's own token count times ``mini_batch_size / b`` (b: its sequences; every
    rank holds the same number of sequences), i.e. its token mean weighted by b / mini_batch_size (a device scalar:
    no host sync)."""
    if aggregation == "global_token_mean":
        return [num_tokens] * len(masks)
    if aggregation != "micro_token_mean":
        raise ValueError(f"loss_aggregation: {aggregation!r}; allowed: global_token_mean, micro_token_mean")
    sequences = sum(mask.shape[0] for mask in masks) * world  # the mini batch, all ranks
    return [mask.sum().clamp(min=1.0) * (sequences / mask.shape[0]) for mask in masks]


def backward_mini_batch(
    model: torch.nn.Module,
    micro_batches: list[dict],
    objective: str,
    cfg: TrainConfig,
    old: list[torch.Tensor | None] | None = None,
    select: list[torch.Tensor] | None = None,
    reference: Reference | None = None,
    autocast: Callable[[], Any] | None = None,
) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    """Accumulate the gradient of one mini batch into ``model``'s ``.grad``; return per-micro-batch metrics and
    detached per-token tensors for telemetry (``loss`` and the sums as device scalars, not read here: no host
    sync). ``old``: the old policy's log-probs per micro batch (None: from the micro batch's own forward);
    ``select``: a 0/1 mask of the tokens to train (entropy selection)."""
    obj = OBJECTIVES[objective]
    masks = []
    for m, mb in enumerate(micro_batches):
        mask = mb["loss_mask"][:, 1:]  # [b, T-1], aligned with logprobs
        masks.append(mask * select[m] if select is not None else mask)
    # the mini batch's trained-token count, all ranks, as a device scalar (no host read: mask sums are integers, exact
    # in fp32 and float64; the losses divide by it in fp32, as by the same number read to the host)
    num_tokens = all_reduce(torch.stack([x.sum() for x in masks]).double().sum())
    divisors = loss_divisors(cfg.loss_aggregation, masks, num_tokens, dist()[0])
    parts, tensors = [], []
    for m, mb in enumerate(micro_batches):
        response_mask, mask = mb["loss_mask"][:, 1:], masks[m]
        with autocast() if autocast else contextlib.nullcontext():
            out, inputs = _forward(
                model, mb, obj, cfg, mask, divisors[m], old[m] if old is not None else None, reference
            )
            loss, metrics = obj.loss(inputs, cfg)
        loss.backward()
        metrics["loss"] = loss.detach()  # a device scalar: telemetry.step_row reads all of them in one sync
        parts.append(metrics)
        tensors.append(
            {
                "logprobs": out.logprobs.detach(),
                "entropy": out.entropy,
                "mask": mask,
                "old": inputs.old_logprobs,
                "entropy_sum": (out.entropy * response_mask).sum(),
                "argmax_sum": (out.is_argmax * response_mask).sum(),
                "n_response": response_mask.sum(),
            }
        )
    return parts, tensors
