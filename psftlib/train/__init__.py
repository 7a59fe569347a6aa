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

from psftlib.train.loop import train
from psftlib.train.plan import Plan
from psftlib.train.resume import FAULT_ENV
from psftlib.train.run import train_run
from psftlib.train.step import backward_mini_batch
from psftlib.train.telemetry import METRIC_KEYS, TIMING_KEYS, TOKEN_COLUMNS

__all__ = ["FAULT_ENV", "METRIC_KEYS", "TIMING_KEYS", "TOKEN_COLUMNS", "Plan", "backward_mini_batch", "train",
           "train_run"]  # fmt: skip
