"""A run's files while it trains, and resuming it: a killed run restarted with the same command ends as if never
killed.

While running, ``metrics.jsonl`` and ``eval.jsonl`` grow as hidden ``.partial`` files and become the real names only
when training ends. With ``checkpoint_every`` > 0 a resume state (model, optimizer, RNG, step, pending old-policy
log-probs) is saved every that many steps under ``resume/``; a restart loads it, cuts the partial files back to its
step and continues. The end of a run is ordered so that a kill at any point of it is recoverable the same way:
the token tables, the selection record and the checkpoint are written first, then the streams get their real
names, and the resume state goes last; a restart that finds the streams already published takes them back.

``PSFT_FAULT_AFTER_STEP=k`` (tests) kills the process right after step k; ``=finish:outputs`` after the final
outputs are written, ``=finish:streams`` after the streams are published (the resume state still there).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from psftlib.config import TrainConfig
from psftlib.data import DataError, EncodeReport, atomic_write
from psftlib.runtime import FolderLockedError, acquire_folder_lock, all_reduce, dist, release_folder_lock
from psftlib.train.plan import Plan

FAULT_ENV = (
    "PSFT_FAULT_AFTER_STEP"  # tests: SIGKILL this process at a step number or a named point (finish:...)
)


RunLockedError = FolderLockedError  # another live process is writing the same run folder


class RunFiles:
    """The output folder of one run, seen from rank ``rank`` (only rank 0 writes the JSONL streams).

    While a run writes its folder, rank 0 holds ``<folder>/.lock`` (its PID): a second run into the same folder
    stops with the holder named; a lock left by a killed process is taken over."""

    def __init__(self, out_dir: Path, rank: int, with_curves: bool):
        self.out_dir, self.rank, self.with_curves = out_dir, rank, with_curves
        self.resume_dir = out_dir / "resume"
        self.metrics_partial = out_dir / ".metrics.jsonl.partial"
        self.eval_partial = out_dir / ".eval.jsonl.partial"
        self._metrics = None

    @property
    def _state_file(self) -> Path:
        return self.resume_dir / f"state_rank{self.rank}.pt"

    def load_state(self, model, optimizer, cfg: TrainConfig, n_examples: int) -> dict[str, Any]:
        """The resume state (model and optimizer restored into ``model`` / ``optimizer``), or a fresh one."""
        if not self._state_file.exists():
            return {"step": 0, "pending": {}, "wall_s": 0.0, "token_rows": []}
        try:  # tensors and plain data only: a file planted in the run folder cannot run code here
            saved = torch.load(self._state_file, weights_only=True)
        except pickle.UnpicklingError as err:
            raise DataError(
                f"{self._state_file}: not a resume state this code wrote ({str(err).splitlines()[0]}); "
                "delete it to restart"
            ) from None
        except (RuntimeError, EOFError, OSError) as err:  # a truncated or corrupt file
            raise DataError(
                f"{self._state_file}: cannot be read as a resume state ({str(err).splitlines()[0]}); "
                "delete it to restart"
            ) from None
        if not isinstance(saved, dict) or not {
            "config",
            "n_examples",
            "model",
            "optimizer",
            "rng",
            "state",
        } <= set(saved):
            raise DataError(f"{self._state_file}: not a resume state this code wrote; delete it to restart")
        if saved["config"] != dataclasses.asdict(cfg) or saved["n_examples"] != n_examples:
            raise DataError(
                f"{self.resume_dir}: resume state is from a different config or dataset; delete it to restart"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        return saved["state"]

    def check_ranks_agree(self, step: int) -> None:
        """With several processes every rank must resume from the same step (each saves its own state file; a kill
        while they were written can leave them apart): a clear error otherwise, on every rank."""
        if dist()[0] > 1:
            steps = all_reduce(torch.tensor([step, -step], dtype=torch.float64), op="max")
            if steps[0] != -steps[1]:
                raise DataError(
                    f"{self.resume_dir}: the processes' resume states are at different steps ({int(-steps[1])} to "
                    f"{int(steps[0])}), a kill while they were written; delete {self.resume_dir} to restart"
                )

    def save_state(self, model, optimizer, state: dict, cfg: TrainConfig, n_examples: int) -> None:
        self.resume_dir.mkdir(parents=True, exist_ok=True)
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                   "state": state, "config": dataclasses.asdict(cfg), "n_examples": n_examples}  # fmt: skip
        with atomic_write(self._state_file, "wb") as f:
            torch.save(payload, f)

    def start(
        self, cfg: TrainConfig, plan: Plan, encode_report: EncodeReport | None, step: int
    ) -> list[dict]:
        """Write ``config.json``, cut the partial streams back to ``step`` (evaluations after it are redone) and
        open the metrics stream; returns the metric rows kept (rank 0; [] elsewhere)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.rank != 0:
            return []
        acquire_folder_lock(self.out_dir, "run folder")
        with atomic_write(self.out_dir / "config.json") as f:
            info = {"n_examples": plan.n_examples, "n_steps": plan.n_steps, "processes": plan.world,
                    "examples_dropped_per_epoch": plan.dropped_per_epoch,
                    "length_policy": dataclasses.asdict(encode_report) if encode_report else None}  # fmt: skip
            json.dump({**dataclasses.asdict(cfg), **info}, f, indent=2, default=str)
        print(data_summary(plan, encode_report), file=sys.stderr)
        p = self.metrics_partial
        kept = self._take_back(p, self.out_dir / "metrics.jsonl")[:step]
        rows = [row for _, row in _parse_lines(p, kept)]
        if len(rows) < step:
            raise DataError(
                f"{p}: {len(rows)} lines, but the resume state in {self.resume_dir} is at step {step}: the stream "
                "lost lines; delete the resume state to train this run again from the start"
            )
        p.write_text("".join(line + "\n" for line in kept))
        if self.with_curves:  # evaluations after the resume point are redone; a fresh start redoes step 0 too
            lines = self._take_back(self.eval_partial, self.out_dir / "eval.jsonl")
            lines = [line for line, row in _parse_lines(self.eval_partial, lines, torn_tail=True)
                     if step > 0 and row["step"] <= step]  # fmt: skip
            self.eval_partial.write_text("".join(line + "\n" for line in lines))
        self._metrics = open(p, "a")  # noqa: SIM115 - closed by close()
        return rows

    @staticmethod
    def _take_back(partial: Path, final: Path) -> list[str]:
        """The lines of a stream: its partial file, or (a run killed after publishing it, before its resume state
        went) the published file, which goes back to being partial."""
        if not partial.exists() and final.exists():
            os.replace(final, partial)
        return partial.read_text(encoding="utf-8").splitlines() if partial.exists() else []

    def log(self, row: dict) -> None:
        if self._metrics is not None:
            self._metrics.write(json.dumps(row) + "\n")
            self._metrics.flush()

    def log_eval(self, row: dict) -> None:
        with open(self.eval_partial, "a") as f:
            f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        """Close the metrics stream and give the folder's lock back."""
        if self._metrics is not None:
            self._metrics.close()
        if self.rank == 0:
            release_folder_lock(self.out_dir)

    def publish_streams(self) -> None:
        """The finished run's ``metrics.jsonl`` and ``eval.jsonl`` under their real names (rank 0)."""
        if self.rank == 0:
            os.replace(self.metrics_partial, self.out_dir / "metrics.jsonl")
            if self.with_curves:
                os.replace(self.eval_partial, self.out_dir / "eval.jsonl")

    def remove_resume_state(self) -> None:
        if self.resume_dir.exists() and self.rank == 0:
            shutil.rmtree(self.resume_dir)


def _parse_lines(path: Path, lines: list[str], torn_tail: bool = False) -> list[tuple[str, dict]]:
    """(line, row) of a stream's JSON lines, each an object with an integer ``step``; a bad line is refused with
    ``path`` and its number, except (``torn_tail``) a last line cut by a kill while it was written, which is left
    out (it is after the resume point: the state is saved after the line is written)."""
    out = []
    for lineno, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if torn_tail and lineno == len(lines):
                break
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise DataError(f"{path}:{lineno}: expected a JSON object with an integer 'step'")
        out.append((line, row))
    return out


def data_summary(plan: Plan, report: EncodeReport | None) -> str:
    """One line for the log at the start of training: the demonstrations the length policy dropped or cut, and those
    the batch arithmetic leaves out of every epoch (the tail that fills no train batch)."""
    parts = []
    if report is not None:
        parts.append(
            f"{report.n_records} demonstrations read, {report.n_kept} kept; "
            f"{report.n_dropped + report.n_no_response_left} dropped by the length limit, "
            f"{report.n_truncated} truncated"
        )
    parts.append(
        f"{plan.dropped_per_epoch} of {plan.n_examples} left out of every epoch (train_batch_size "
        f"{plan.cfg.train_batch_size} fills {plan.batches_per_epoch} train batches)"
    )
    return "data: " + "; ".join(parts)


def inject_fault(point: int | str) -> None:
    """Tests: SIGKILL this process at ``point`` (a step number, or ``finish:...``) when ``PSFT_FAULT_AFTER_STEP``
    names it."""
    if os.environ.get(FAULT_ENV) == str(point):
        os.kill(os.getpid(), signal.SIGKILL)
