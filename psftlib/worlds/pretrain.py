"""Pretraining the small world's base model: next-token loss on the responses of a chat corpus.

The base model stands in for the paper's instruct model: it must master the world's base skills and have seen
the target style only rarely. This is plain supervised learning with AdamW, warm-up then cosine decay, examples
packed into rows of ``block_size`` tokens (no compute on padding, every task in every batch; batches of one
task, as length bucketing makes them, learned far worse); nothing here is the paper's contribution.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from psftlib.data import Example, collate


@dataclass
class PretrainConfig:
    """How the base model is pretrained (``pretrain:`` in a profile)."""

    epochs: float = 4.0
    batch_size: int = 16  # packed rows per optimizer step
    block_size: int = 128  # tokens per packed row
    lr: float = 2.0e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"pretrain: unknown field(s) {sorted(unknown)}")
        return cls(**values)


def pack(examples: list[Example], order: list[int], block_size: int) -> list[Example]:
    """Concatenate examples (in ``order``) into rows of at most ``block_size`` tokens, never splitting one.

    As in GPT pretraining, a later example in a row attends to the earlier ones (they are unrelated: the model
    learns to ignore them); every task is mixed into every batch.
    """
    rows, ids, mask = [], [], []
    for i in order:
        e = examples[i]
        if len(e.input_ids) > block_size:
            raise ValueError(
                f"pretrain: an example of {len(e.input_ids)} tokens exceeds block_size {block_size}"
            )
        if len(ids) + len(e.input_ids) > block_size:
            rows.append(Example(ids, mask))
            ids, mask = [], []
        ids, mask = ids + e.input_ids, mask + e.loss_mask
    if ids:
        rows.append(Example(ids, mask))
    return rows


def masked_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token NLL over the loss-masked (response) tokens of a batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, targets = logits[:, :-1], batch["input_ids"][:, 1:]  # position t predicts token t+1: [B, T-1, V]
    mask = batch["loss_mask"][:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    return (nll * mask.reshape(-1)).sum() / mask.sum().clamp(min=1)


def pretrain(
    model: torch.nn.Module,
    examples: list[Example],
    pad_token_id: int,
    cfg: PretrainConfig,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``examples``; returns one metrics row per 20 optimizer steps (and the last)."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    steps = []
    for _ in range(math.ceil(cfg.epochs)):  # a fresh shuffle and packing per epoch
        order = list(range(len(examples)))
        rng.shuffle(order)
        rows = pack(examples, order, cfg.block_size)
        steps.append([rows[i : i + cfg.batch_size] for i in range(0, len(rows), cfg.batch_size)])
    per_epoch = len(steps[0])
    steps = [b for epoch in steps for b in epoch][: max(1, round(cfg.epochs * per_epoch))]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)  # fmt: skip

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, len(steps) - cfg.warmup_steps)
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    history, running, start = [], [], time.perf_counter()
    bar = tqdm(steps, desc="pretrain base", disable=not progress, mininterval=5)
    for step, rows in enumerate(bar):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = masked_nll(model, collate(rows, pad_token_id))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        running.append(loss.item())
        if (step + 1) % 20 == 0 or step + 1 == len(steps):
            row = {"step": step + 1, "epoch": (step + 1) / per_epoch, "nll": sum(running) / len(running),
                   "grad_norm": float(grad_norm), "lr": lr_at(step), "wall_s": time.perf_counter() - start}  # fmt: skip
            history.append(row)
            bar.set_postfix(nll=f"{row['nll']:.3f}")
            running = []
    model.eval()
    return history
