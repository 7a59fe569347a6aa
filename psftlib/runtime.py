"""The process a job runs in: torch threads, the device, the distributed group (no-ops in one process), and the
lock a job holds on the folder it writes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

LOCK_NAME = ".lock"

# How long a rank waits in a collective (a barrier) before the job fails: the other ranks wait while rank 0 runs the
# in-training evaluation. The paper's (eval.during_training: AIME-24's 30 + GPQA-Diamond's 198 problems, 32 samples
# each, <= 10,240 tokens) is 7,296 generations, <= 74.7 M tokens, on rank 0's GPU alone; at ~2,000 tokens/s (vLLM,
# a 7-8B model, ~30 sequences in the KV cache its 20% share of a 141 GB GPU leaves) ~3.5 h at typical lengths (~6k
# AIME, ~3k GPQA tokens), ~10.4 h if every sample ran to the limit. torch.distributed's default, 30 min, would stop
# the job; 12 h covers both (an estimate, not a measurement: paper.launcher.process_group_timeout_s changes it).
DEFAULT_PROCESS_GROUP_TIMEOUT_S = 12 * 3600
_process_group_timeout_s: float = DEFAULT_PROCESS_GROUP_TIMEOUT_S


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


def set_process_group_timeout(profile_data: Mapping[str, Any] | None = None) -> timedelta:
    """Take this process's collective timeout from a profile (``paper.launcher.process_group_timeout_s``; else
    :data:`DEFAULT_PROCESS_GROUP_TIMEOUT_S`) for the process group created next (:func:`init_distributed`, or the
    TRL trainers' through ``psftlib.post.common.device_args``); returns it."""
    global _process_group_timeout_s
    launcher = ((profile_data or {}).get("paper") or {}).get("launcher") or {}
    seconds = launcher.get("process_group_timeout_s")
    seconds = DEFAULT_PROCESS_GROUP_TIMEOUT_S if seconds is None else seconds
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
        raise ValueError(
            f"paper.launcher.process_group_timeout_s: {seconds!r} is not a positive number of seconds"
        )
    _process_group_timeout_s = float(seconds)
    return process_group_timeout()


def process_group_timeout() -> timedelta:
    """How long a collective (a barrier while rank 0 evaluates) may wait: :func:`set_process_group_timeout`'s."""
    return timedelta(seconds=_process_group_timeout_s)


def init_distributed() -> None:
    """Join the process group ``accelerate launch`` / torchrun describe in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR ...), when there is more than one process and no group yet; its collectives wait up to
    :func:`process_group_timeout`."""
    if launched_processes() > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            "nccl" if torch.cuda.is_available() else "gloo", timeout=process_group_timeout()
        )


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


class FolderLockedError(RuntimeError):
    """Another live process is writing the same output folder; the message names the folder and its PID."""


def acquire_folder_lock(folder: str | Path, what: str = "folder", name: str = LOCK_NAME) -> Path:
    """Hold ``<folder>/.lock`` (this process's PID) while writing ``folder``; returns the lock file. A ``name`` of its
    own (``.lock.<task set>``) locks one part of the folder: writers of other parts go on.

    A lock whose process is alive stops this one with :class:`FolderLockedError` naming the folder (``what``: e.g.
    "run folder") and the holder's PID; a lock left by a process that is gone (killed) is taken over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / name
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = lock.read_text().strip()
            except FileNotFoundError:  # released between the two calls: try again
                continue
            if holder.isdigit() and int(holder) != os.getpid() and _alive(int(holder)):
                raise FolderLockedError(
                    f"{folder}: process {holder} is writing this {what}; wait for it, or stop it and run again "
                    "(a killed process's lock is taken over)"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its process is gone (or an empty lock from a kill while it was written)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock


def release_folder_lock(folder: str | Path, name: str = LOCK_NAME) -> None:
    """Remove ``<folder>/.lock`` (or ``<folder>/<name>``) if this process holds it."""
    lock = Path(folder) / name
    with contextlib.suppress(FileNotFoundError):
        if lock.read_text().strip() == str(os.getpid()):
            lock.unlink()


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "folder", name: str = LOCK_NAME) -> Iterator[Path]:
    """``with folder_lock(out_dir, "evaluation folder"):`` :func:`acquire_folder_lock`, released on every exit."""
    lock = acquire_folder_lock(folder, what, name)
    try:
        yield lock
    finally:
        release_folder_lock(folder, name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
