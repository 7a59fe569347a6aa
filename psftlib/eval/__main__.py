"""``python -m psftlib.eval --profile mini --checkpoint <folder> --task-sets in_domain --out-dir <folder>``."""

from __future__ import annotations

import argparse
from pathlib import Path

from psftlib.config import load_profile
from psftlib.eval.harness import EvalError, evaluate
from psftlib.eval.training import profile_eval_config, reuse_final_eval, write_initial_curves
from psftlib.runtime import set_threads
from psftlib.worlds.build import load_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m psftlib.eval", description="Evaluate a checkpoint on task sets of a profile."
    )
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--checkpoint", required=True, help="a Hugging Face checkpoint folder")
    parser.add_argument("--task-sets", nargs="+", help="names under eval.task_sets in the profile")
    parser.add_argument("--out-dir", help="writes <out-dir>/<task set>.json and .samples.jsonl")
    parser.add_argument(
        "--initial-curves",
        default=None,
        metavar="PATH",
        help="instead: evaluate the in-training subset (eval.during_training) and write it to PATH, the step-0 "
        "point every run from this checkpoint (the base model) reads instead of evaluating it again",
    )
    parser.add_argument(
        "--reuse-final",
        default=None,
        metavar="DIR",
        help="for a run's selected checkpoint: if its selected.json names the final step, copy the final "
        "checkpoint's evaluation from DIR instead of running it again (same weights, same seed)",
    )
    args = parser.parse_args(argv)
    if args.initial_curves:
        prof = load_profile(args.profile)
        set_threads(prof["threads"])
        write_initial_curves(prof, args.checkpoint, args.initial_curves)
        return
    if not (args.task_sets and args.out_dir):
        parser.error("--task-sets and --out-dir are required (or --initial-curves PATH)")
    if args.reuse_final and reuse_final_eval(args.checkpoint, args.reuse_final, args.task_sets, args.out_dir):
        print(f"{args.checkpoint} is the final checkpoint: copied its evaluation from {args.reuse_final}")
        return
    prof = load_profile(args.profile)
    set_threads(prof["threads"])
    cfg, task_sets = profile_eval_config(prof)
    for name in args.task_sets:
        if name not in task_sets:
            raise EvalError(f"{prof.path}: eval.task_sets.{name}: no such task set; have {sorted(task_sets)}")
    model, tokenizer = load_checkpoint(args.checkpoint)  # once for every task set: one process, one load
    data = prof.layout.data
    for name in args.task_sets:
        out = Path(args.out_dir) / name
        evaluate(
            model,
            task_sets[name],
            cfg,
            tokenizer=tokenizer,
            data_dir=data,
            out=out,
            checkpoint=args.checkpoint,
        )


if __name__ == "__main__":
    main()
