"""Our SFT tokens/s against TRL 1.16 SFTTrainer, same model, data, batch size and steps, measured in one run.

Both pad each batch to its longest sequence, train on the response tokens with the token-mean NLL, use AdamW
and clip gradients at 1.0; tokens/s counts non-pad tokens of the processed batches over the training loop's wall
time (setup excluded for both). Prints the ratio; asserts nothing.

    python benchmarks/bench_vs_trl.py [--hidden 256 --layers 4] [--steps 30] [--batch 16]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import machine, setup

from psftlib.config import TrainConfig
from psftlib.data import collate
from psftlib.train import Plan, train


def ours(model, tok, examples, steps: int, batch: int, tmp: str) -> float:
    cfg = TrainConfig(objective="sft", train_batch_size=batch, mini_batch_size=batch, micro_batch_size=batch,
                      lr=1e-4, epochs=steps * batch / len(examples), save_checkpoint=False, seed=0)  # fmt: skip
    plan = Plan(cfg, len(examples))
    tokens = sum(int(collate([examples[i] for i in plan.indices(s)], 0)["attention_mask"].sum())
                 for s in range(plan.n_steps))  # fmt: skip
    start = time.perf_counter()
    train(cfg, model, examples, tmp, tok.pad_token_id, progress=False)
    return tokens / (time.perf_counter() - start), plan.n_steps


def trl(model, tok, rows, steps: int, batch: int, tmp: str) -> float:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data = [{"prompt": [{"role": "system", "content": r["system"]}, {"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": r["response"]}]} for r in rows]  # fmt: skip
    args = SFTConfig(output_dir=tmp, use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
                     per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4, bf16=False,
                     activation_checkpointing=False, dataloader_num_workers=0, disable_tqdm=True, seed=0,
                     weight_decay=0.1, lr_scheduler_type="constant", max_length=None)  # fmt: skip
    counted: list[int] = []

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            counted.append(int(inputs["attention_mask"].sum()))
            return super().training_step(model, inputs, num_items_in_batch)

    trainer = Counting(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tok)
    out = trainer.train()
    return sum(counted) / out.metrics["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    _, tok, model, examples, rows = setup("mini", args.hidden, args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        ours_tps, steps = ours(copy.deepcopy(model), tok, examples, args.steps, args.batch, f"{tmp}/ours")
        trl_tps = trl(copy.deepcopy(model), tok, rows, steps, args.batch, f"{tmp}/trl")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"machine: {machine()}")
    print(f"model: {n_params / 1e6:.2f}M parameters, batch {args.batch}, {steps} steps")
    print(f"tokens/s: ours {ours_tps:,.0f}, TRL SFTTrainer {trl_tps:,.0f}")
    print(f"ratio ours / TRL: {ours_tps / trl_tps:.3f}x  (target >= 1.0x)")


if __name__ == "__main__":
    main()
