"""Hub-scale runs (``world.kind: hub``, e.g. ``config/paper.yaml``): a run's base model is a public model id and its
data a ``paper.datasets`` entry loaded by :mod:`psftlib.worlds.loaders`; the training loop is
:func:`psftlib.train.train`, the same one the small world uses.

Launched once per run by the Snakefile (``rules/hub.smk``), under ``accelerate launch`` for several GPUs::

    accelerate launch --config_file config/accelerate/fsdp.yaml -m psftlib.train.hub --profile paper --run psft

``--base`` / ``--data`` replace the hub id / the loaded data by local paths (a checkpoint folder, a JSONL file of
our schema): what the tests use, and what a cluster without internet access needs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from psftlib.config import Profile, load_profile
from psftlib.data import encode_all, read_jsonl
from psftlib.layout import ROOT
from psftlib.runtime import init_distributed, set_process_group_timeout, set_threads
from psftlib.train.loop import train
from psftlib.train.run import in_training_eval
from psftlib.worlds.models import copy_processor_files, is_vision_language, load_model


def train_hub_run(
    profile: str | Path | Profile,
    run: str,
    base: str | None = None,
    data: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``run`` of a hub profile: model from ``paper.run_sources`` (or ``base``), data loaded by the
    ``hub_data`` rule (or ``data``), settings from ``train:`` + ``runs.<run>``; outputs as for the small world."""
    prof = load_profile(profile)
    cfg = prof.run_config(run)
    src = prof.run_source(run)
    model, tokenizer = load_model(
        base or src["model_id"],
        dtype="bfloat16" if cfg.bf16 else "float32",
        gradient_checkpointing=cfg.gradient_checkpointing,
        freeze_vision=src.get("freeze_vision_tower"),
    )
    path = Path(data) if data else prof.layout.data / f"{src['data']}.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no data for run {run!r}; snakemake {path.relative_to(ROOT)} loads it"
        )
    examples, report = encode_all(tokenizer, read_jsonl(path), cfg.max_length, cfg.truncation)
    # Figure 3's curves and Table 1's selection (eval.during_training); under FSDP on rank 0 with the gathered model
    curves = in_training_eval(prof, tokenizer, cfg.steps_per_train_batch, Path(base or src["model_id"]), None)
    out = Path(out_dir or prof.layout.run(run))
    rows = train(cfg, model, examples, out, tokenizer.pad_token_id,
                 tokenizer=tokenizer, progress=progress, encode_report=report, **curves)  # fmt: skip
    # train() saves the model and the tokenizer; a VLM's GRPO (§4.4, images) also needs the base's image processor
    if is_vision_language(model) and int(os.environ.get("RANK", "0")) == 0:
        for folder in (out / "checkpoint", out / "selected"):
            if folder.is_dir():
                copy_processor_files(base or src["model_id"], folder)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m psftlib.train.hub",
        description="Train one run of a hub-scale profile (accelerate launch -m psftlib.train.hub ...)",
    )
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--run", required=True, help="a name under runs: (and paper.run_sources:)")
    parser.add_argument("--base", default=None, help="a local checkpoint folder instead of the hub id")
    parser.add_argument(
        "--data", default=None, help="a JSONL file of our schema instead of the loaded dataset"
    )
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    prof = load_profile(args.profile)
    set_threads(prof["threads"])
    set_process_group_timeout(prof.data)  # the barriers outwait rank 0's in-training evaluation
    init_distributed()  # under accelerate launch: one rank per process (else each would think it is rank 0)
    train_hub_run(args.profile, args.run, args.base, args.data, args.out_dir)


if __name__ == "__main__":
    main()
