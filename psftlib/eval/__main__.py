"""``python -m psftlib.eval --profile mini --checkpoint <folder> --task-sets in_domain --out-dir <folder>``
(console script ``psft-eval``); prints a table of the scores when it finishes. torch, transformers and lm-eval
load only after the arguments are parsed, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from psftlib.config import ConfigError, load_profile


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
    try:
        sets = load_profile(args.profile).task_sets
    except ConfigError as err:
        parser.error(str(err))
    if unknown := [name for name in args.task_sets or [] if name not in sets]:
        parser.error(f"--task-sets: no task set {unknown} in profile {args.profile!r}; have {sorted(sets)}")
    from psftlib.eval.training import write_initial_curves  # the heavy imports, after the arguments
    from psftlib.runtime import folder_lock, set_threads

    if args.initial_curves:
        prof = load_profile(args.profile)
        set_threads(prof["threads"])
        write_initial_curves(prof, args.checkpoint, args.initial_curves)
        return
    if not (args.task_sets and args.out_dir):
        parser.error("--task-sets and --out-dir are required (or --initial-curves PATH)")
    with (
        contextlib.ExitStack() as locks
    ):  # one lock per task set: a second writer of a set stops, its PID named
        for name in sorted(args.task_sets):  # (rules eval and eval_only write other sets of one run at once)
            locks.enter_context(folder_lock(args.out_dir, f"evaluation folder's {name!r}", f".lock.{name}"))
        evaluate_task_sets(args)
    results = {name: json.loads((Path(args.out_dir) / f"{name}.json").read_text()) for name in args.task_sets}
    print(f"scores of {args.checkpoint} (0-1; ± standard error), in {args.out_dir}:\n{score_table(results)}")


def score_table(results: dict[str, dict[str, Any]]) -> str:
    """Evaluation summaries (``{task set: <out-dir>/<task set>.json}``) as a text table: a row per task with its
    problems ``n``, samples per problem ``k`` and each metric as ``value ± standard error``."""
    metrics = list(dict.fromkeys(m for res in results.values() for scores in res["scores"].values() for m in scores
                                 if m not in ("n", "k") and not m.endswith("_stderr")))  # fmt: skip
    rows = [["task set", "task", "n", "k", *metrics]]
    for name, res in results.items():
        for task, scores in res["scores"].items():
            cells = [_cell(scores.get(m), scores.get(f"{m}_stderr")) for m in metrics]
            rows.append([name, task, str(scores.get("n", "")), str(scores.get("k", "")), *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _cell(value: Any, stderr: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    return f"{value:.3f}" + (f" ± {stderr:.3f}" if isinstance(stderr, (int, float)) else "")


def evaluate_task_sets(args: argparse.Namespace) -> None:
    """Evaluate ``--checkpoint`` on ``--task-sets`` into ``--out-dir`` (or copy the final evaluation)."""
    from psftlib.eval.harness import EvalError, evaluate
    from psftlib.eval.training import profile_eval_config, reuse_final_eval
    from psftlib.runtime import set_threads
    from psftlib.worlds.build import load_checkpoint

    if args.reuse_final and reuse_final_eval(args.checkpoint, args.reuse_final, args.task_sets, args.out_dir):
        print(f"{args.checkpoint} is the final checkpoint: copied its evaluation from {args.reuse_final}")
        return
    prof = load_profile(args.profile)
    set_threads(prof["threads"])
    cfg, task_sets = profile_eval_config(prof)
    for name in args.task_sets:
        if name not in task_sets:
            raise EvalError(f"{prof.path}: eval.task_sets.{name}: no such task set; have {sorted(task_sets)}")
    # hf: loaded once for every task set (one process, one load); vllm reads the folder (or hub id) itself
    model, tokenizer = (args.checkpoint, None) if cfg.backend == "vllm" else load_checkpoint(args.checkpoint)
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
