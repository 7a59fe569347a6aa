"""Time per train batch, PSFT / SFT, same model, data and mini-batch structure, measured in one run.

PSFT's only extra work is the old-policy pass: a no-grad forward over the train batch's mini batches after
the first (the first reuses its own forward). The floor is therefore about 1 + (K-1)/K x (forward / (forward +
backward)) ~ 1.2-1.3x for K = 8 mini batches. Prints the ratio; asserts nothing (speed is not a test).

    python benchmarks/bench_train_batch.py [--profile mini] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM

from psftlib.config import load_profile
from psftlib.data import encode_all, read_jsonl
from psftlib.train import run_paths, set_threads, train
from psftlib.world import build_world, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    prof = load_profile(args.profile)
    threads = set_threads(prof["threads"])
    paths = run_paths(prof.name, "_")
    with tempfile.TemporaryDirectory() as tmp:
        if not paths["base"].exists():
            build_world(prof.data, f"{tmp}/data", f"{tmp}/world")
            base, data = f"{tmp}/world/base", f"{tmp}/data/train.jsonl"
        else:
            base, data = paths["base"], paths["train_data"]
        tok = load_tokenizer(base)
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        examples, _ = encode_all(tok, read_jsonl(data))
        cfg = prof.run_config("psft", {"epochs": 1.0, "save_checkpoint": False})
        n_tb = len(examples) // cfg.train_batch_size
        times: dict[str, list[float]] = {"sft": [], "psft": []}
        for _ in range(args.repeats):
            for objective in ("sft", "psft"):  # identical structure; only the objective differs
                c = dataclasses.replace(cfg, objective=objective)
                start = time.perf_counter()
                train(
                    c, copy.deepcopy(model), examples, f"{tmp}/{objective}", tok.pad_token_id, progress=False
                )
                times[objective].append((time.perf_counter() - start) / n_tb)
    sft, psft = statistics.median(times["sft"]), statistics.median(times["psft"])
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, {threads} thread(s)"
    )
    print(
        f"profile {prof.name}: train batch {cfg.train_batch_size}, mini batch {cfg.mini_batch_size}, "
        f"{cfg.steps_per_train_batch} steps per refresh, {n_tb} train batches, median of {args.repeats}"
    )
    print(f"time per train batch: SFT {sft * 1e3:.1f} ms, PSFT {psft * 1e3:.1f} ms")
    print(f"ratio PSFT / SFT: {psft / sft:.3f}x  (target <= 1.30x)")


if __name__ == "__main__":
    main()
