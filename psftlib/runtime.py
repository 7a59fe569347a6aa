"""The process a job runs in: torch threads, the device, and the distributed group (no-ops in one process)."""

from __future__ import annotations

import os

import torch


def set_threads(n: int | None = None) -> int:
    """Use ``OMP_NUM_THREADS`` if set (Snakemake sets it per job), else ``n``, else torch's default."""
    env = os.environ.get("OMP_NUM_THREADS")
    n = int(env) if env else n
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def launched_processes() -> int:
    """How many processes ``accelerate launch`` / torchrun started (``WORLD_SIZE``; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> None:
    """Join the process group ``accelerate launch`` / torchrun describe in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR ...), when there is more than one process and no group yet."""
    if launched_processes() > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def dist() -> tuple[int, int]:
    """(world size, rank) of the process group; (1, 0) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or ``op="max"``) ``t`` over the ranks, in place; ``t`` unchanged in one process."""
    if dist()[0] > 1:
        torch.distributed.all_reduce(
            t, torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
        )
    return t


def device_for(model: torch.nn.Module) -> torch.device:
    """This rank's GPU when there is one (``LOCAL_RANK``), else wherever the model is."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return next(model.parameters()).device
