"""Training: the loop (:func:`train`), a profile's run (:func:`train_run`) and their parts, one file each.

plan.py       which sequences each optimizer step sees; the lr schedule
step.py       one mini batch's forward/backward for any objective (psftlib.objectives.OBJECTIVES)
refresh.py    the old policy's log-probs of a refresh window
telemetry.py  metrics.jsonl rows, tokens.parquet / traces.parquet
curves.py     in-training evaluation (eval.jsonl) and Table 1's checkpoint selection
resume.py     the run's files while it trains; resuming a killed run
shard.py      LoRA, FSDP, saving checkpoints
loop.py       train(): the loop, top to bottom
run.py        train_run() and the command line (python -m psftlib.train)
hub.py        a hub-scale run (paper profile: public models on GPUs)
"""

from typing import Any

__all__ = ["FAULT_ENV", "METRIC_KEYS", "TIMING_KEYS", "TOKEN_COLUMNS", "Plan", "backward_mini_batch", "train",
           "train_run"]  # fmt: skip


def __getattr__(name: str) -> Any:
    # the exports load on first use, so `python -m psftlib.train --help` (psft-train) answers before torch loads
    if name in __all__:
        globals().update(_exports())
        return globals()[name]
    raise AttributeError(f"module 'psftlib.train' has no attribute {name!r}")


def _exports() -> dict[str, Any]:
    """The package's names (imported here, outside ``__getattr__``, so psftlib.sources counts them as its imports)."""
    from psftlib.train.loop import train
    from psftlib.train.plan import Plan
    from psftlib.train.resume import FAULT_ENV
    from psftlib.train.run import train_run
    from psftlib.train.step import backward_mini_batch
    from psftlib.train.telemetry import METRIC_KEYS, TIMING_KEYS, TOKEN_COLUMNS

    return {"FAULT_ENV": FAULT_ENV, "METRIC_KEYS": METRIC_KEYS, "TIMING_KEYS": TIMING_KEYS,
            "TOKEN_COLUMNS": TOKEN_COLUMNS, "Plan": Plan, "backward_mini_batch": backward_mini_batch, "train": train,
            "train_run": train_run}  # fmt: skip
