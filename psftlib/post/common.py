"""What the GRPO and DPO stages share: cold-start checks, TRL plumbing, metrics and eval in our JSONL shape.

TRL does the algorithms (``psftlib.post.grpo`` drives ``GRPOTrainer``, ``psftlib.post.dpo`` drives ``DPOTrainer``); this module
turns their logs into the same ``metrics.jsonl`` / ``eval.jsonl`` files the SFT trainer writes, with the same
names where the quantity is the same (``entropy``, ``clip_fraction_high`` ...).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from tqdm import tqdm
from transformers import TrainerCallback
from transformers.trainer import DEFAULT_PROGRESS_CALLBACK

from psftlib.runtime import launched_processes, process_group_timeout
from psftlib.worlds.build import load_checkpoint, save_pretrained_atomic

# TRL log key -> our metric name (conventions.md); every other numeric key is kept under its TRL name
RENAME = {
    "loss": "loss",
    "entropy": "entropy",
    "grad_norm": "grad_norm",
    "learning_rate": "lr",
    "reward": "reward",
    "reward_std": "reward_std",
    "clip_ratio/high_mean": "clip_fraction_high",
    "clip_ratio/low_mean": "clip_fraction_low",
    "clip_ratio/region_mean": "clip_fraction",
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "completion_truncated_fraction",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
    "logps/chosen": "logp_chosen",
    "logps/rejected": "logp_rejected",
    "kl": "kl",
}


def load_cold_start(path: str | Path):
    """(model, tokenizer) of a cold start, loaded by path (TRL rebuilds references from paths, not objects)."""
    try:
        return load_checkpoint(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; train the cold start first") from None


def load_processing_class(path: str | Path, model: Any, tokenizer: Any) -> Any:
    """What TRL gets as ``processing_class`` for rows with images: the VLM cold start's processor
    (:func:`psftlib.worlds.models.load_processor`), else a clear error naming what is missing."""
    from psftlib.worlds.models import is_vision_language, load_processor

    if not is_vision_language(model):
        raise ValueError(
            f"{path}: the prompts have images but this cold start is a text-only model ({type(model).__name__})"
        )
    processor = load_processor(path, tokenizer)
    if processor is None:
        raise FileNotFoundError(
            f"{path}: no preprocessor_config.json: this VLM checkpoint was saved without its image processor "
            "(psftlib.train.hub copies it from the base model; psftlib.worlds.models.copy_processor_files)"
        )
    return processor


def device_args() -> dict[str, Any]:
    """TRL/transformers arguments for this machine: CPU runs fp32 without activation checkpointing. ``ddp_timeout``:
    the process group's collective timeout (:func:`psftlib.runtime.process_group_timeout`; transformers passes it
    to accelerate's ``PartialState`` on GPUs, its CPU path keeps torch's default)."""
    timeout = {"ddp_timeout": math.ceil(process_group_timeout().total_seconds())}
    if torch.cuda.is_available():
        return {"bf16": True, "activation_checkpointing": True, **timeout}
    return {"use_cpu": True, "bf16": False, "fp16": False, "activation_checkpointing": False, **timeout}


def conversation(row: dict[str, Any]) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return [*messages, {"role": "user", "content": row["prompt"]}]


def make_callbacks(out_dir: Path, evaluator: Any = None, eval_every: int = 0, steps_per_train_batch: int = 1):
    """A TrainerCallback writing ``metrics.jsonl`` (one line per optimizer step) and ``eval.jsonl``.

    With several processes (``run_trl`` sets its ``trainer``), an evaluation gathers the weights on every rank,
    rank 0 evaluates them (``evaluator(model, state_dict=...)``: saved and evaluated by a child process) and writes
    the row while the other ranks wait at a barrier."""

    class JsonlLogger(TrainerCallback):
        def __init__(self) -> None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.partial = out_dir / ".metrics.jsonl.partial"
            self.eval_partial = out_dir / ".eval.jsonl.partial"
            # under accelerate launch, rank 0 writes the files
            self.writes = int(os.environ.get("RANK", "0")) == 0
            for p in (self.partial, self.eval_partial) if self.writes else ():
                p.write_text("")
            self.rows: list[dict[str, float]] = []
            self.trainer: Any = None  # run_trl sets it: the accelerator and wrapped model (several processes)

        def _eval(self, model, step: int) -> None:
            if evaluator is None:
                return
            acc = self.trainer.accelerator if self.trainer is not None else None
            if acc is None or acc.num_processes == 1:
                scores = evaluator(model)  # evaluate() gives the model back in the mode it found it
            else:  # every rank takes part in gathering the (sharded) weights; rank 0 saves and evaluates them
                state = acc.get_state_dict(self.trainer.model_wrapped)
                scores = evaluator(acc.unwrap_model(model), state_dict=state) if acc.is_main_process else None
                del state
                acc.wait_for_everyone()
            if not self.writes:
                return
            with open(self.eval_partial, "a") as f:
                f.write(
                    json.dumps({"step": step, "train_batch": step / steps_per_train_batch, **scores}) + "\n"
                )

        def on_train_begin(self, args, state, control, model=None, **kw):
            self._eval(model, 0)

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "train_runtime" in logs:
                return
            row: dict[str, float] = {
                "step": state.global_step,
                "train_batch": state.global_step / steps_per_train_batch,
            }
            for key, value in logs.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    row[RENAME.get(key, key)] = float(value)
            self.rows.append(row)
            if not self.writes:
                return
            with open(self.partial, "a") as f:
                f.write(json.dumps(row) + "\n")

        def on_step_end(self, args, state, control, model=None, **kw):
            if eval_every and (state.global_step % eval_every == 0 or state.global_step == state.max_steps):
                self._eval(model, state.global_step)

        def finish(self) -> None:
            if not self.writes:
                return
            os.replace(self.partial, out_dir / "metrics.jsonl")
            if evaluator is not None:
                os.replace(self.eval_partial, out_dir / "eval.jsonl")
            elif self.eval_partial.exists():
                self.eval_partial.unlink()

    return JsonlLogger()


class StderrProgress(TrainerCallback):
    """A progress bar of optimizer steps on stderr, drawn as the SFT loop draws its own (``psftlib.train.loop``: at
    most every 5 s, so a job's log stays short); it stands in for transformers' bar, which also prints every log."""

    def __init__(self, desc: str) -> None:
        self.desc, self.bar = desc, None

    def on_train_begin(self, args, state, control, **kw):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, desc=self.desc, mininterval=5, file=sys.stderr)

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()


def run_trl(trainer_cls, cold_start, dataset_rows, args_for, out_dir, evaluator, eval_every,
            steps_per_train_batch: int = 1, images: bool = False, **trainer_kwargs) -> list[dict[str, float]]:  # fmt: skip
    """Load the cold start by path, train with a TRL trainer, write our JSONL files and the checkpoint atomically.

    ``dataset_rows(processing_class) -> rows`` builds the dataset; ``args_for(trl_dir, processes) -> TRL config``.
    TRL's ``processing_class`` is the tokenizer, or with ``images`` (rows carrying images) the VLM's processor
    (:func:`load_processing_class`). A VLM's checkpoint gets the cold start's processor files beside it.
    """
    from psftlib.worlds.models import copy_processor_files

    out_dir = Path(out_dir)
    model, tokenizer = load_cold_start(cold_start)
    processing = load_processing_class(cold_start, model, tokenizer) if images else tokenizer
    logger = make_callbacks(out_dir, evaluator, eval_every, steps_per_train_batch)
    trl_dir = out_dir / ".trl"  # TRL saves nothing there (save_strategy "no"); removed after
    trainer = trainer_cls(model=model, args=args_for(trl_dir, launched_processes()), train_dataset=Dataset.from_list(dataset_rows(processing)),
                          processing_class=processing, callbacks=[logger], **trainer_kwargs)  # fmt: skip
    logger.trainer = trainer
    trainer.remove_callback(
        DEFAULT_PROGRESS_CALLBACK
    )  # TRL configs keep tqdm on (disable_tqdm=False): our bar
    trainer.add_callback(StderrProgress(trainer_cls.__name__.removesuffix("Trainer").lower()))
    trainer.train()
    logger.finish()
    shutil.rmtree(trl_dir, ignore_errors=True)
    acc = trainer.accelerator
    if acc.num_processes > 1:  # every rank gathers the (sharded) weights, rank 0 writes: two writers raced
        state = acc.get_state_dict(trainer.model)
        if acc.is_main_process:
            save_pretrained_atomic(acc.unwrap_model(trainer.model), tokenizer, out_dir / "checkpoint", state)
        acc.wait_for_everyone()
    else:
        save_pretrained_atomic(trainer.model, tokenizer, out_dir / "checkpoint")
    if acc.is_main_process:  # a VLM's image processor (none for a text-only model)
        copy_processor_files(cold_start, out_dir / "checkpoint")
    return logger.rows
