"""Time per train batch, PSFT / SFT, same model, data and mini-batch structure, measured in one run.

PSFT's only extra work is the old-policy pass: a no-grad forward over the train batch's mini batches after the
first (the first reuses its own forward). The floor is therefore about 1 + (K-1)/K x forward / (forward +
backward) ~ 1.2-1.3x for K = 8 mini batches. Prints the ratio; asserts nothing (speed is not a test).

    python benchmarks/bench_train_batch.py [--profile mini] [--hidden 256 --layers 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time

from common import machine, setup

from psftlib.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batches", type=int, default=4)
    args = parser.parse_args()
    prof, tok, model, examples, _ = setup(args.profile, args.hidden, args.layers)
    cfg = prof.run_config("psft", {"save_checkpoint": False})
    n_tb = min(args.train_batches, len(examples) // cfg.train_batch_size)
    cfg = dataclasses.replace(cfg, epochs=n_tb / (len(examples) // cfg.train_batch_size))
    times: dict[str, list[float]] = {"sft": [], "psft": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for objective in ("sft", "psft"):  # identical structure; only the objective differs
                c = dataclasses.replace(cfg, objective=objective)
                start = time.perf_counter()
                train(
                    c, copy.deepcopy(model), examples, f"{tmp}/{objective}", tok.pad_token_id, progress=False
                )
                times[objective].append((time.perf_counter() - start) / n_tb)
    sft, psft = statistics.median(times["sft"]), statistics.median(times["psft"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"machine: {machine()}")
    print(f"model: {n_params / 1e6:.2f}M parameters; train batch {cfg.train_batch_size}, mini batch "
          f"{cfg.mini_batch_size} ({cfg.steps_per_train_batch} steps per refresh), {n_tb} train batches, "
          f"median of {args.repeats}")  # fmt: skip
    print(f"time per train batch: SFT {sft * 1e3:.1f} ms, PSFT {psft * 1e3:.1f} ms")
    print(f"ratio PSFT / SFT: {psft / sft:.3f}x  (target <= 1.30x)")


if __name__ == "__main__":
    main()
