"""The SFT / PSFT training loop, with the paper's train-batch / mini-batch / old-policy structure.

For every *train batch* (paper: 256 sequences) the old policy π_θold is the current weights: their
log-probabilities of the batch's dataset tokens (``old_logprobs``) are taken once, with no grad, before the
first update. Then one optimizer step is taken per *mini batch* (paper: 32 sequences, so 8 steps per refresh),
each accumulated over *micro batches* (memory only: the loss is divided by the mini batch's token count, so
micro-batching never changes the maths). SFT runs through the same loop with no old policy; the paper's SFT
uses mini batch = train batch (one step per 256 sequences).

The first mini batch of a train batch is evaluated at exactly the refresh weights, so its own forward gives
its ``old_logprobs`` (detached): only the other mini batches need the extra no-grad pass. With one mini batch
per train batch PSFT has r = 1 everywhere and is plain SFT, parameter for parameter (tests check this).

Outputs in ``out_dir`` (each written to a temp name and renamed when complete)::

    metrics.jsonl   one JSON line per optimizer step (see METRIC_KEYS); ``step`` counts optimizer steps,
                    ``train_batch`` counts train batches (fractional within one), which is what verl
                    and the paper's figures call a step: SFT and PSFT share that axis
    config.json     the resolved TrainConfig
    checkpoint/     Hugging Face format (model + tokenizer), if cfg.save_checkpoint
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from psftlib.config import ROOT, TrainConfig, load_profile, parse_overrides
from psftlib.data import Example, atomic_write, collate, encode_all, read_jsonl
from psftlib.logprobs import token_logprobs
from psftlib.objectives import psft_loss, sft_loss

METRIC_KEYS = (
    "step",
    "train_batch",
    "epoch",
    "loss",
    "nll",
    "token_accuracy",
    "entropy",
    "clip_fraction_high",
    "clip_fraction_low",
    "ratio_mean",
    "ratio_max",
    "approx_kl",
    "grad_norm",
    "lr",
    "tokens",
    "response_tokens",
    "tokens_per_s",
    "wall_s",
)
# Measured wall-clock quantities: the only fields that differ between two runs of the same config and seed.
TIMING_KEYS = ("tokens_per_s", "wall_s")


def set_threads(n: int | None = None) -> int:
    """Use ``OMP_NUM_THREADS`` if set (Snakemake sets it per job), else ``n``, else torch's default."""
    env = os.environ.get("OMP_NUM_THREADS")
    n = int(env) if env else n
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _aggregate(parts: list[dict[str, float]]) -> dict[str, float]:
    """Combine per-micro-batch metrics: token-weighted means, max for ``*_max``, sum for ``loss``."""
    total = sum(p["num_tokens"] for p in parts) or 1.0
    out: dict[str, float] = {}
    for key in parts[0]:
        if key == "num_tokens":
            continue
        if key.endswith("_max"):
            out[key] = max(p[key] for p in parts)
        elif key == "loss":
            out[key] = sum(p[key] for p in parts)
        else:
            out[key] = sum(p[key] * p["num_tokens"] for p in parts) / total
    return out


def _micro_batches(mini: Sequence[Example], cfg: TrainConfig, pad_id: int) -> list[dict[str, torch.Tensor]]:
    return [
        collate(mini[i : i + cfg.micro_batch_size], pad_id) for i in range(0, len(mini), cfg.micro_batch_size)
    ]


@torch.no_grad()
def old_policy_logprobs(
    model: torch.nn.Module, micro_batches: list[dict[str, torch.Tensor]]
) -> list[torch.Tensor]:
    """π_θold log-probs of each micro batch's dataset tokens (``[b, T-1]`` each), eval mode, no grad."""
    was_training = model.training
    model.eval()
    out = [
        token_logprobs(model, mb["input_ids"], mb["attention_mask"], with_stats=False).logprobs
        for mb in micro_batches
    ]
    model.train(was_training)
    return out


def train(
    cfg: TrainConfig,
    model: torch.nn.Module,
    examples: Sequence[Example],
    out_dir: str | Path,
    pad_token_id: int,
    tokenizer: Any = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``examples`` with ``cfg``; write outputs to ``out_dir``; return the metrics."""
    cfg.validate()
    out_dir = Path(out_dir)
    n_batches_per_epoch = len(examples) // cfg.train_batch_size
    if n_batches_per_epoch == 0:
        raise ValueError(
            f"train_batch_size {cfg.train_batch_size} is larger than the dataset ({len(examples)} examples)"
        )
    n_train_batches = max(1, math.ceil(cfg.epochs * n_batches_per_epoch))
    n_steps = n_train_batches * cfg.steps_per_train_batch
    dropped = len(examples) - n_batches_per_epoch * cfg.train_batch_size

    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
    )
    warmup = cfg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "config.json") as f:
        json.dump(
            {
                **dataclasses.asdict(cfg),
                "n_examples": len(examples),
                "n_steps": n_steps,
                "examples_dropped_per_epoch": dropped,
            },
            f,
            indent=2,
        )

    model.train()
    history: list[dict[str, float]] = []
    start = last = time.perf_counter()
    bar = tqdm(total=n_steps, desc=f"{cfg.objective}", disable=not progress, mininterval=5, file=sys.stderr)
    with atomic_write(out_dir / "metrics.jsonl") as metrics_file:
        step = 0
        order = torch.empty(0, dtype=torch.long)
        for tb in range(n_train_batches):
            epoch, tb_in_epoch = divmod(tb, n_batches_per_epoch)
            if (
                tb_in_epoch == 0
            ):  # seeded reshuffle at each epoch start; the tail that fills no batch is dropped
                order = torch.randperm(len(examples), generator=generator)
            idx = order[tb_in_epoch * cfg.train_batch_size : (tb_in_epoch + 1) * cfg.train_batch_size]
            train_batch = [examples[i] for i in idx.tolist()]
            minis = [
                _micro_batches(train_batch[k : k + cfg.mini_batch_size], cfg, pad_token_id)
                for k in range(0, cfg.train_batch_size, cfg.mini_batch_size)
            ]
            # Old-policy refresh: log-probs at the weights before this train batch's first update.
            # Mini batch 0 gets them from its own forward below (same weights), the rest from a no-grad pass.
            old: list[list[torch.Tensor] | None] = [None] * len(minis)
            if cfg.objective == "psft":
                for k in range(1, len(minis)):
                    old[k] = old_policy_logprobs(model, minis[k])

            for k, micro_batches in enumerate(minis):
                num_tokens = sum(float(mb["loss_mask"][:, 1:].sum()) for mb in micro_batches)
                optimizer.zero_grad(set_to_none=True)
                parts = []
                for m, mb in enumerate(micro_batches):
                    out = token_logprobs(model, mb["input_ids"], mb["attention_mask"])
                    mask = mb["loss_mask"][:, 1:]  # [b, T-1], aligned with out.logprobs
                    if cfg.objective == "sft":
                        loss, metrics = sft_loss(out.logprobs, mask, num_tokens=num_tokens)
                    else:
                        old_lp = old[k][m] if old[k] is not None else out.logprobs.detach()
                        loss, metrics = psft_loss(
                            out.logprobs, old_lp, mask, cfg.clip_low, cfg.clip_high, num_tokens=num_tokens
                        )
                    loss.backward()
                    n = float(mask.sum())
                    metrics["loss"] = float(loss.detach())
                    metrics["entropy"] = float((out.entropy * mask).sum() / max(n, 1.0))
                    metrics["token_accuracy"] = float((out.is_argmax * mask).sum() / max(n, 1.0))
                    parts.append(metrics)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                step += 1

                now = time.perf_counter()
                tokens = sum(int(mb["attention_mask"].sum()) for mb in micro_batches)
                row = {
                    "step": step,
                    # progress in train batches (verl's "global step", the x axis of the paper's curves)
                    "train_batch": tb + (k + 1) / len(minis),
                    "epoch": epoch + (tb_in_epoch + (k + 1) / len(minis)) / n_batches_per_epoch,
                    **_aggregate(parts),
                    "grad_norm": float(grad_norm),
                    "lr": lr,
                    "tokens": tokens,
                    "response_tokens": int(num_tokens),
                    "tokens_per_s": tokens / max(now - last, 1e-9),
                    "wall_s": now - start,
                }
                last = now
                row = {key: row[key] for key in METRIC_KEYS if key in row}
                if not all(math.isfinite(v) for v in row.values()):
                    raise FloatingPointError(f"non-finite metric at step {step}: {row}")
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                history.append(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", entropy=f"{row['entropy']:.3f}")
    bar.close()
    if cfg.save_checkpoint:
        from psftlib.world import save_pretrained_atomic

        save_pretrained_atomic(model, tokenizer, out_dir / "checkpoint")
    return history


def run_paths(profile: str, run: str, root: Path = ROOT) -> dict[str, Path]:
    """Where a profile's data, base model and a run's outputs live (conventions.md)."""
    return {
        "train_data": root / "results" / "data" / profile / "train.jsonl",
        "base": root / "results" / "world" / profile / "base",
        "out": root / "results" / "runs" / profile / run,
    }


def train_run(
    profile: str | Path,
    run: str,
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train run ``run`` of a profile from its base model and data (built by ``psftlib.world``)."""
    from transformers import AutoModelForCausalLM

    from psftlib.world import load_tokenizer

    prof = load_profile(profile)
    cfg = prof.run_config(run, overrides)
    paths = run_paths(prof.name, run)
    if not paths["base"].exists():
        raise FileNotFoundError(f"{paths['base']}: no base model; build the world first (snakemake world)")
    tokenizer = load_tokenizer(paths["base"])
    model = AutoModelForCausalLM.from_pretrained(str(paths["base"]), dtype=torch.float32)
    examples = encode_all(tokenizer, read_jsonl(paths["train_data"]))
    return train(
        cfg,
        model,
        examples,
        out_dir or paths["out"],
        tokenizer.pad_token_id,
        tokenizer=tokenizer,
        progress=progress,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one run of a profile (SFT or PSFT).")
    parser.add_argument("--profile", default="mini", help="profile name (config/<name>.yaml) or a YAML path")
    parser.add_argument("--run", required=True, help="run name under runs: in the profile")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override TrainConfig fields"
    )
    parser.add_argument("--out", default=None, help="output folder (default results/runs/<profile>/<run>)")
    args = parser.parse_args(argv)
    set_threads(load_profile(args.profile)["threads"])
    train_run(args.profile, args.run, parse_overrides(args.set), args.out)


if __name__ == "__main__":
    main()
