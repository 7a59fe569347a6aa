"""``python -m psftlib.post --profile mini --stage grpo --cold-start psft`` (console script ``psft-posttrain``): one
post-training run (TRL). The arguments and the profile are checked before torch, transformers and TRL load, so
``--help`` and a wrong name answer at once."""

from __future__ import annotations

import argparse
from pathlib import Path

from psftlib.config import ConfigError, load_profile


def build_parser() -> argparse.ArgumentParser:
    """The command line of one post-training run."""
    parser = argparse.ArgumentParser(
        prog="python -m psftlib.post",
        description="GRPO or DPO from a cold-start run of a profile (through TRL).",
    )
    parser.add_argument("--profile", default="mini", help="profile name (config/<name>.yaml) or a YAML path")
    parser.add_argument("--stage", required=True, choices=["grpo", "dpo"])
    parser.add_argument(
        "--cold-start", required=True, help="a run name of the profile whose checkpoint starts this"
    )
    parser.add_argument("--out", default=None, help="default results/runs/<profile>/<cold-start>+<stage>")
    return parser


def main(argv: list[str] | None = None) -> None:
    """``python -m psftlib.post --profile mini --stage grpo --cold-start psft``: one post-training run."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        prof = load_profile(args.profile)
    except ConfigError as err:
        parser.error(str(err))
    if args.stage not in prof.data:
        parser.error(f"{prof.path}: {args.stage}: the profile has no {args.stage} section")
    bases = (
        prof.base_runs if prof["world"]["kind"] == "hub" else []
    )  # a hub base model starts GRPO too (Table 5)
    if args.cold_start not in [*prof.runs, *bases]:
        parser.error(
            f"--cold-start: {args.cold_start!r} is not a run of {prof.path}; runs: {[*bases, *prof.runs]}"
        )

    from psftlib.data import read_jsonl  # torch, transformers, TRL: only once the arguments are known good
    from psftlib.eval import make_training_evaluator
    from psftlib.post.dpo import DPOSettings, run_dpo
    from psftlib.post.grpo import GRPOSettings, run_grpo
    from psftlib.post.vllm_server import grpo_server
    from psftlib.runtime import set_process_group_timeout, set_threads
    from psftlib.worlds.build import check_checkpoint, load_tokenizer

    set_threads(prof["threads"])
    set_process_group_timeout(prof.data)  # TRL's collectives outwait rank 0's evaluations (device_args)
    section, data = prof.post_stage(
        args.stage, args.cold_start
    )  # with the cold start's own updates (§4.4 VLM)
    eval_every = section.pop("eval_every", 0)
    cold = base_folder(prof.base_model_id(args.cold_start)) if args.cold_start in bases else (
        prof.layout.run(args.cold_start) / "checkpoint")  # fmt: skip
    out = Path(args.out) if args.out else prof.layout.run(f"{args.cold_start}+{args.stage}")
    evaluator = None
    if eval_every:
        evaluator = make_training_evaluator(prof, load_tokenizer(check_checkpoint(cold)))
    if args.stage == "grpo":
        prompts = read_jsonl(data, required=("prompt", "answer"))
        settings = GRPOSettings(seed=prof["seed"], **section)
        # vllm_mode server: the trl vllm-serve server on this job's last GPUs, started and stopped here (rank 0)
        with grpo_server(settings, cold, prof.layout.logs / f"vllm_server_{out.name}.log"):
            run_grpo(cold, prompts, settings, out, evaluator, eval_every, image_root=data.parent)
    else:
        pairs = read_jsonl(data, required=("prompt", "chosen", "rejected"))
        run_dpo(cold, pairs, DPOSettings(seed=prof["seed"], **section), out, evaluator, eval_every)


def base_folder(model_id: str) -> Path:
    """A hub base model as a local folder: itself when it is one, else its snapshot in the Hugging Face cache."""
    if Path(model_id).is_dir():
        return Path(model_id)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_id))


if __name__ == "__main__":
    main()
