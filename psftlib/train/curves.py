"""In-training evaluation: the curves of Figures 3, 5, 11, 12 (``eval.jsonl``) and Table 1's checkpoint selection."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import torch

from psftlib.data import atomic_write
from psftlib.train.plan import Plan
from psftlib.train.resume import RunFiles
from psftlib.train.shard import save_model

SELECTION_RULE = "highest mean in-domain avg@k of the in-training evaluations; ties: the later checkpoint"


class Curves:
    """Evaluates the model (rank 0) before the first step, every ``every`` steps and after the last; appends a row
    to ``eval.jsonl``; keeps the best-scoring checkpoint after step 0 (ties: the later) in ``selected/``.

    ``evaluator(model) -> {name: score}``; ``select(scores) -> float | None`` the selection score;
    ``initial_scores``: the evaluator's scores of the initial weights when already known (step 0 is not redone).
    ``unshard``: under FSDP, a :class:`psftlib.train.shard.Unsharded` that gathers the whole model on rank 0 (every
    rank calls it), which is evaluated and kept there while the other ranks wait at the barrier.
    """

    def __init__(self, evaluator: Callable | None, every: int, select: Callable | None,
                 initial_scores: dict[str, float] | None, plan: Plan, files: RunFiles, tokenizer: Any, lora: bool,
                 world: int, rank: int, unshard: Callable | None = None):  # fmt: skip
        self.evaluator, self.every, self.select, self.initial_scores = (
            evaluator,
            every,
            select,
            initial_scores,
        )
        self.plan, self.files, self.tokenizer, self.lora, self.world, self.rank = (
            plan,
            files,
            tokenizer,
            lora,
            world,
            rank,
        )
        self.unshard = unshard

    def due(self, done: int) -> bool:
        return bool(self.every) and (done % self.every == 0 or done == self.plan.n_steps)

    def __call__(self, model: torch.nn.Module, state: dict, done: int) -> None:
        """Evaluate after ``done`` optimizer steps; ``state["selected"]`` records the kept checkpoint."""
        if self.evaluator is None:
            return
        known = done == 0 and self.initial_scores is not None
        if self.unshard is not None and not known:
            model = self.unshard(model)  # a collective: the whole model on rank 0, None elsewhere
        if self.rank == 0:
            where = self.plan.position(done)
            # evaluate() gives the model back in the mode it found it; step 0 may be known already (the base's)
            scores = dict(self.initial_scores) if known else self.evaluator(model)
            self.files.log_eval({**where, **scores})
            # the base (step 0) is no candidate
            score = self.select(scores) if self.select is not None and done > 0 else None
            if score is not None and score >= state.get("selected", {}).get("score", -math.inf):
                save_model(model, self.tokenizer, self.files.out_dir / "selected", self.lora)
                state["selected"] = {**where, "score": score}
        if self.unshard is not None:
            self.unshard.release()
        if self.world > 1:
            torch.distributed.barrier()

    def write_selection(self, state: dict) -> None:
        """``selected.json``: where the kept checkpoint was taken, its score and the rule (rank 0)."""
        if self.rank == 0 and "selected" in state:
            with atomic_write(self.files.out_dir / "selected.json") as f:
                json.dump(
                    {**state["selected"], "rule": SELECTION_RULE, "final_step": self.plan.n_steps},
                    f,
                    indent=2,
                )
