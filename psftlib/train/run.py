"""A run of a profile: ``python -m psftlib.train --profile mini --run psft`` (what the Snakefile's train rule runs)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from transformers.utils import logging as hf_logging

from psftlib.config import Profile, load_profile, parse_overrides
from psftlib.data import EncodeReport, check_unknown_rate, encode_all, read_jsonl
from psftlib.eval import make_training_evaluator, read_initial_curves, selection_score
from psftlib.runtime import init_distributed, set_process_group_timeout, set_threads
from psftlib.train.loop import train
from psftlib.worlds.build import load_checkpoint


def in_training_eval(
    prof: Profile, tokenizer: Any, steps_per_train_batch: int, base: Path, initial_curves: str | Path | None
) -> dict[str, Any]:
    """``train()``'s evaluation arguments from the profile's ``eval.during_training`` (none when it is off):
    the evaluator, every how many optimizer steps (the same data points for every objective), the selection rule
    on the in-domain tasks, and the base model's scores as step 0 when ``initial_curves`` is given."""
    during = (prof.data.get("eval") or {}).get("during_training")
    if not (during and during.get("every_train_batches", 0) > 0):
        return {}
    return {
        "evaluator": make_training_evaluator(prof, tokenizer),
        "eval_every": during["every_train_batches"] * steps_per_train_batch,
        "select_checkpoint": functools.partial(
            selection_score, in_domain_tasks=prof.domain_tasks("in_domain")
        ),
        "initial_scores": read_initial_curves(initial_curves, prof, base) if initial_curves else None,
    }


def length_warnings(
    source: Path, report: EncodeReport, max_length: int | None, context: int | None, policy: str
) -> list[str]:
    """Warnings for the log: demonstrations longer than the limit (``max_length``, else the model's context length
    ``context``) and what the length policy did with them; a ``max_length`` beyond the context length."""
    lines = []
    if max_length is not None and context is not None and max_length > context:
        lines.append(
            f"warning: max_length {max_length} is longer than the model's context length {context} "
            "(max_position_embeddings): sequences in between train past it"
        )
    over = report.n_dropped + report.n_truncated + report.n_no_response_left
    if over:
        limit = (
            f"max_length {max_length}" if max_length is not None else f"the model's context length {context}"
        )
        lines.append(
            f"warning: {source}: {over} of {report.n_records} demonstrations are longer than {limit} tokens: "
            f"{report.n_dropped + report.n_no_response_left} dropped, {report.n_truncated} truncated "
            f"(truncation: {policy!r})"
        )
    return lines


def train_run(
    profile: str | Path | Profile,
    run: str,
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    initial_curves: str | Path | None = None,
) -> list[dict[str, float]]:
    """Train run ``run`` of a profile from its base model and data (built by ``psftlib.worlds``).

    ``initial_curves``: the base model's in-training evaluation (``psftlib.eval --initial-curves``), checked
    against the base's weights and the profile, used as the curves' step 0 instead of evaluating again."""
    hf_logging.disable_progress_bar()
    prof = load_profile(profile)
    cfg = prof.run_config(run, overrides)
    lay = prof.layout
    if not lay.base.exists():
        raise FileNotFoundError(f"{lay.base}: no base model; build the world first (snakemake world)")
    model, tokenizer = load_checkpoint(lay.base)
    data = lay.data / "train.jsonl"
    context = getattr(model.config, "max_position_embeddings", None)
    limit = cfg.max_length if cfg.max_length is not None else context
    examples, report = encode_all(tokenizer, read_jsonl(data), limit, cfg.truncation)
    for line in length_warnings(data, report, cfg.max_length, context, cfg.truncation):
        print(line, file=sys.stderr)
    check_unknown_rate(tokenizer, (e.input_ids for e in examples), str(data))
    # under FSDP the whole model is gathered on rank 0 for each evaluation (psftlib.train.shard.Unsharded)
    curves = in_training_eval(prof, tokenizer, cfg.steps_per_train_batch, lay.base, initial_curves)
    return train(cfg, model, examples, out_dir or lay.run(run), tokenizer.pad_token_id, tokenizer=tokenizer,
                 progress=progress, encode_report=report, **curves)  # fmt: skip


def main(args: argparse.Namespace) -> None:
    """Train the run of already-checked command-line arguments (the parser: :mod:`psftlib.train.__main__`)."""
    prof = load_profile(args.profile)
    set_threads(prof["threads"])
    set_process_group_timeout(prof.data)  # the barriers outwait rank 0's in-training evaluation
    init_distributed()
    train_run(args.profile, args.run, parse_overrides(args.set), args.out, initial_curves=args.initial_curves)
