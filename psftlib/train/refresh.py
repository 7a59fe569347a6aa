"""The old policy π_θold: its log-probs of every step of a refresh window, taken once with no grad (eq. 6).

For every *train batch* (or every ``old_policy_refresh`` mini batches) the old policy is the current weights. The
window's first mini batch is evaluated at exactly those weights, so its own forward gives its old log-probs
(exact r = 1): only the other mini batches need the no-grad pass here. With ``never`` the old policy is the initial
model (π_ref). With ``entropy_top_fraction`` the window's tokens are also ranked by the old policy's entropy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from psftlib.data import Example, collate
from psftlib.runtime import dist
from psftlib.train.plan import Plan
from psftlib.train.step import Reference, no_grad_logprobs


@torch.no_grad()
def refresh(
    model: torch.nn.Module,
    reference: Reference | None,
    examples: Sequence[Example],
    plan: Plan,
    step: int,
    pad_id: int,
    device: torch.device | None,
    autocast: Callable[[], Any] | None = None,
) -> dict[int, dict]:
    """Old-policy log-probs (and entropy selection) for every step of the refresh window starting at ``step``:
    ``{step: {"old": [per micro batch, or None: from its own forward], "select": [0/1 masks] or None}}``.

    ``autocast``: the training forward's autocast (bf16 on a GPU); the old policy runs under it too, so that r = 1
    at unchanged weights up to the precision's rounding, not the gap between an fp32 and a bf16 forward."""
    cfg = plan.cfg
    never = cfg.old_policy_refresh == "never"
    need_entropy = cfg.entropy_top_fraction is not None
    pending: dict[int, dict] = {}
    todo = []  # (step, this rank's example indices) of the window's steps that need an old-policy forward
    for s in plan.refresh_window(step):
        if s < step:
            continue
        idx = plan.indices(s)
        if s == step and not never and not need_entropy:
            pending[s] = {"old": [None] * len(range(0, len(idx), cfg.micro_batch_size)), "select": None}
            continue
        todo.append((s, idx))
    flat = [j for _, idx in todo for j in idx]  # example index of each row position
    with autocast() if autocast else contextlib.nullcontext():
        rows = _forward_rows(model, reference, examples, flat, _row_groups(todo, cfg.refresh_batch_size), pad_id,
                             device, cfg.logprob_chunk_size, never, need_entropy, cfg.padding_free)  # fmt: skip
    # split back into each step's micro batches, at the micro batch's own (padded) width
    entropies, masks = [], []  # per micro batch of the window, for the entropy selection
    offset = 0
    for s, idx in todo:
        olds = []
        for i in range(0, len(idx), cfg.micro_batch_size):
            span = range(offset + i, offset + min(i + cfg.micro_batch_size, len(idx)))
            width = max(len(examples[flat[p]].input_ids) for p in span) - 1
            olds.append(_fit_rows(rows["logprobs"], span, width))  # [micro, width]
            if need_entropy:
                entropies.append(_fit_rows(rows["entropy"], span, width))
                masks.append(_fit_rows(rows["mask"], span, width))
        pending[s] = {"old": olds, "select": None}
        offset += len(idx)
    if need_entropy:
        _select_top_entropy(pending, entropies, masks, cfg.entropy_top_fraction)
    return pending


def _row_groups(todo: list[tuple[int, list[int]]], refresh_batch_size: int | None) -> list[range]:
    """Row positions of each no-grad forward: one per mini batch, or ``refresh_batch_size`` rows each (fewer,
    fuller forwards; no activations are kept, so micro-batching for memory is not needed)."""
    n = sum(len(idx) for _, idx in todo)
    if refresh_batch_size:
        return [range(a, min(a + refresh_batch_size, n)) for a in range(0, n, refresh_batch_size)]
    groups, start = [], 0
    for _, idx in todo:
        groups.append(range(start, start + len(idx)))
        start += len(idx)
    return groups


def _forward_rows(
    model, reference, examples, flat, groups, pad_id, device, chunk, never, need_entropy, packed
):
    """``{"logprobs" | "entropy" | "mask": {row position: [T_group - 1]}}`` of the old policy, each row padded to
    its own forward's width (``packed``: each forward runs its rows as one row without padding, same outputs)."""
    rows: dict[str, dict[int, torch.Tensor]] = {"logprobs": {}, "entropy": {}, "mask": {}}
    for group in groups:
        full = {k: v.to(device) for k, v in collate([examples[flat[p]] for p in group], pad_id).items()}
        mask = full["loss_mask"][:, 1:]
        if never:
            whole = reference.logprobs(full, mask, chunk, with_stats=need_entropy, packed=packed)
        else:
            whole = no_grad_logprobs(model, full, mask, chunk, need_entropy, packed)
        for r, p in enumerate(group):
            rows["logprobs"][p], rows["mask"][p] = whole.logprobs[r], mask[r]
            if need_entropy:
                rows["entropy"][p] = whole.entropy[r]
    return rows


def _select_top_entropy(pending: dict[int, dict], entropies: list, masks: list, fraction: float) -> None:
    """Keep the top-``fraction`` highest-entropy response tokens of the whole window (old policy's entropy, across
    ranks): each pending micro batch gets its 0/1 ``select`` mask (App. C.2)."""
    threshold = _global_quantile(
        torch.cat([e[m > 0] for e, m in zip(entropies, masks, strict=True)]), 1.0 - fraction
    )
    selected = iter([((e >= threshold) & (m > 0)).float() for e, m in zip(entropies, masks, strict=True)])
    for p in pending.values():
        p["select"] = [next(selected) for _ in p["old"]]


def _fit_rows(values: dict[int, torch.Tensor], rows: range, width: int) -> torch.Tensor:
    """Rows ``[T_group - 1]`` (each padded to its own forward's width, zeros past its tokens) as ``[len(rows), width]``."""
    return torch.stack(
        [torch.nn.functional.pad(values[p][:width], (0, max(0, width - len(values[p])))) for p in rows]
    )


def _global_quantile(values: torch.Tensor, q: float) -> float:
    world, _ = dist()
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, values.cpu())
        values = torch.cat(gathered)
    return float(torch.quantile(values.double(), q)) if values.numel() else float("inf")
