"""The plan: which sequences each optimizer step sees, as a pure function of the step (so resuming needs no state).

Words as the paper uses them: a *train batch* is one old-policy refresh (paper: 256 sequences), a *mini batch* one
optimizer step (paper: 32, so 8 steps per train batch), a *micro batch* one forward/backward that fits memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from psftlib.config import ConfigError, TrainConfig
from psftlib.data import Example, collate


@dataclasses.dataclass
class Plan:
    cfg: TrainConfig
    n_examples: int
    world: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        c = self.cfg
        self.batches_per_epoch = self.n_examples // c.train_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"train_batch_size {c.train_batch_size} is larger than the dataset ({self.n_examples} examples)"
            )
        if c.mini_batch_size % self.world:
            raise ConfigError(
                f"mini_batch_size: {c.mini_batch_size} is not divisible by {self.world} processes"
            )
        self.per_rank = c.mini_batch_size // self.world
        self.steps_per_train_batch = c.steps_per_train_batch
        self.n_train_batches = max(1, math.ceil(c.epochs * self.batches_per_epoch))
        self.n_steps = self.n_train_batches * self.steps_per_train_batch
        self.dropped_per_epoch = self.n_examples - self.batches_per_epoch * c.train_batch_size
        self._orders: dict[int, list[int]] = {}
        warmup = c.sft_warmup_train_batches or round((c.sft_warmup_epochs or 0) * self.batches_per_epoch)
        self.first_psft_step = warmup * self.steps_per_train_batch

    def order(self, epoch: int) -> list[int]:
        """Seeded shuffle of epoch ``epoch`` (a function of seed and epoch only: resumable without state)."""
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(self.n_examples, generator=g).tolist()}
        return self._orders[epoch]

    def where(self, step: int) -> tuple[int, int, int, int]:
        """0-based optimizer step -> (train batch, mini batch within it, epoch, train batch within epoch)."""
        tb, k = divmod(step, self.steps_per_train_batch)
        epoch, tb_in_epoch = divmod(tb, self.batches_per_epoch)
        return tb, k, epoch, tb_in_epoch

    def position(self, done: int) -> dict[str, float]:
        """Where training stands after ``done`` optimizer steps: step, train batch and epoch (fractional)."""
        return {"step": done, "train_batch": done / self.steps_per_train_batch,
                "epoch": done / self.steps_per_train_batch / self.batches_per_epoch}  # fmt: skip

    def indices(self, step: int) -> list[int]:
        """This rank's example indices for optimizer step ``step`` (the tail that fills no train batch is dropped)."""
        _, k, epoch, tbe = self.where(step)
        start = tbe * self.cfg.train_batch_size + k * self.cfg.mini_batch_size + self.rank * self.per_rank
        return self.order(epoch)[start : start + self.per_rank]

    def objective(self, step: int) -> str:
        """The objective of ``step``: plain SFT during PSFT's warm-up (``sft_warmup_train_batches`` or ``_epochs``)."""
        return "sft" if step < self.first_psft_step else self.cfg.objective

    def lr(self, step: int) -> float:
        """The learning rate of ``step``: the warm-up's own lr during PSFT's SFT warm-up, then a linear ramp over
        ``warmup_steps``, then constant."""
        cfg = self.cfg
        base = cfg.sft_warmup_lr if (step < self.first_psft_step and cfg.sft_warmup_lr) else cfg.lr
        return base * (min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0)

    def refresh_window(self, step: int) -> range:
        """The optimizer steps whose old policy is the one taken at the start of ``step``'s window."""
        refresh = self.cfg.old_policy_refresh
        period = self.steps_per_train_batch if refresh in ("train_batch", "never") else int(refresh)
        start = self.first_psft_step + (step - self.first_psft_step) // period * period
        return range(start, min(start + period, self.n_steps))


def micro_batches(
    examples: Sequence[Example], idx: list[int], cfg: TrainConfig, pad_id: int, device: torch.device | None
) -> list[dict[str, torch.Tensor]]:
    """The padded micro batches of the examples ``idx`` (in order), on ``device``."""
    out = []
    for i in range(0, len(idx), cfg.micro_batch_size):
        mb = collate([examples[j] for j in idx[i : i + cfg.micro_batch_size]], pad_id)
        out.append({k: v.to(device) for k, v in mb.items()})
    return out
