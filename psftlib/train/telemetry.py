"""What a run records: one ``metrics.jsonl`` row per optimizer step, sampled per-token rows for ``tokens.parquet``
(Figure 10) and every token of the traced demonstrations for ``traces.parquet`` (the report)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from psftlib.config import TrainConfig
from psftlib.data import atomic_write
from psftlib.objectives import LOG_RATIO_CLAMP, clipped
from psftlib.runtime import all_reduce, dist
from psftlib.train.plan import Plan

METRIC_KEYS = (
    "step", "train_batch", "epoch", "loss", "nll", "token_accuracy", "entropy", "clip_fraction_high",
    "clip_fraction_low", "ratio_mean", "ratio_max", "approx_kl", "kl", "weight_mean", "grad_norm", "lr",
    "tokens", "response_tokens", "trained_tokens", "tokens_per_s", "wall_s",
)  # fmt: skip
# Measured wall-clock quantities: the only fields that differ between two runs of the same config and seed.
TIMING_KEYS = ("tokens_per_s", "wall_s")
TOKEN_COLUMNS = ("step", "train_batch", "epoch", "token_id", "token_text", "position", "logprob", "old_logprob",
                 "ratio", "clipped", "entropy")  # fmt: skip


def aggregate(parts: list[dict[str, float]], device: torch.device | None = None) -> dict[str, float]:
    """Combine per-micro-batch (and per-rank) metrics: token-weighted means, max for ``*_max``, sum for ``loss``.
    ``device``: where the cross-rank reduction runs (the GPU under NCCL, which reduces no CPU tensor)."""
    keys = [k for k in parts[0] if k != "num_tokens"]
    sums = torch.tensor(
        [sum(p[k] * (1.0 if k == "loss" else p["num_tokens"]) for p in parts) for k in keys]
        + [sum(p["num_tokens"] for p in parts)],
        dtype=torch.float64,
        device=device,
    )
    maxes = torch.tensor(
        [max(p[k] for p in parts) if k.endswith("_max") else 0.0 for k in keys],
        dtype=torch.float64,
        device=device,
    )
    sums, maxes = all_reduce(sums).tolist(), all_reduce(maxes, "max").tolist()
    total = sums[-1] or 1.0
    out = {}
    for i, k in enumerate(keys):
        out[k] = maxes[i] if k.endswith("_max") else sums[i] / (1.0 if k == "loss" else total)
    return out


def read_step_scalars(
    parts: list[dict], tensors: list[dict], micro: list[dict], grad_norm: float | torch.Tensor
) -> tuple[list[dict[str, float]], list[dict[str, float]], float]:
    """Every device scalar of one optimizer step read to the host in **one** synchronisation (one ``.tolist()``):
    tensor values of ``parts`` (each micro batch's ``loss``, and any metric an objective returns as a tensor), the
    telemetry sums of ``tensors`` and each micro batch's token and trained-token counts (``sums``), and
    ``grad_norm``. Returns ``(parts, sums, grad_norm)`` as floats; each value is the tensor's exactly (fp32 and
    integer counts are exact in float64), so the row equals one read value by value with ``float(...)``."""
    parts = [dict(p) for p in parts]
    sums = [{"entropy_sum": t["entropy_sum"], "argmax_sum": t["argmax_sum"], "n_response": t["n_response"],
             "tokens": mb["attention_mask"].sum(), "trained": t["mask"].sum()}
            for t, mb in zip(tensors, micro, strict=True)]  # fmt: skip
    holders = [*parts, *sums, {"grad_norm": grad_norm}]
    pending = [(d, key) for d in holders for key, v in d.items() if isinstance(v, torch.Tensor)]
    if pending:
        device = pending[0][0][pending[0][1]].device
        values = torch.stack([d[key].detach().to(device, torch.float64).reshape(()) for d, key in pending])
        for (d, key), value in zip(pending, values.tolist(), strict=True):
            d[key] = value
    return parts, sums, holders[-1]["grad_norm"]


def step_row(
    plan: Plan, step: int, parts: list[dict], tensors: list[dict], micro: list[dict],
    grad_norm: float | torch.Tensor, lr: float, step_s: float, wall_s: float,
) -> dict[str, float]:  # fmt: skip
    """The ``metrics.jsonl`` row of 0-based optimizer ``step`` (keys in :data:`METRIC_KEYS` order), summed over
    ranks; refuses a non-finite value. The step's device scalars are read in one sync (:func:`read_step_scalars`)."""
    tb, k, epoch, tbe = plan.where(step)
    parts, sums, grad_norm = read_step_scalars(parts, tensors, micro, grad_norm)
    device = micro[0]["input_ids"].device if dist()[0] > 1 else None  # NCCL reduces device tensors only
    stats = all_reduce(torch.tensor(
        [sum(t["entropy_sum"] for t in sums), sum(t["argmax_sum"] for t in sums),
         sum(t["n_response"] for t in sums), sum(int(t["tokens"]) for t in sums),
         sum(t["trained"] for t in sums)], dtype=torch.float64, device=device)).tolist()  # fmt: skip
    row = {
        "step": step + 1,
        "train_batch": tb + (k + 1) / plan.steps_per_train_batch,
        "epoch": epoch + (tbe + (k + 1) / plan.steps_per_train_batch) / plan.batches_per_epoch,
        **aggregate(parts, device),
        "entropy": stats[0] / max(stats[2], 1.0),
        "token_accuracy": stats[1] / max(stats[2], 1.0),
        "grad_norm": grad_norm,
        "lr": lr,
        "tokens": int(stats[3]),
        "response_tokens": int(stats[2]),
        "trained_tokens": int(stats[4]),
        "tokens_per_s": stats[3] / max(step_s, 1e-9),
        "wall_s": wall_s,
    }
    row = {key: row[key] for key in METRIC_KEYS if key in row}
    if not all(math.isfinite(v) for v in row.values()):
        raise FloatingPointError(f"non-finite metric at step {step + 1}: {row}")
    return row


def sample_tokens(
    tensors: list[dict], micro: list[dict], idx: list[int], row: dict, cfg: TrainConfig, step: int, rank: int
) -> tuple[list[dict], list[dict]]:
    """Seeded Bernoulli sample of trained tokens for ``tokens.parquet`` (a function of seed, step, rank), and every
    trained token of the traced demonstrations (``idx``: the step's example indices, in micro-batch order)."""
    g = torch.Generator().manual_seed(cfg.seed * 7_919 + step * 104_729 + rank)
    sampled, traced = [], []
    for i, (t, mb) in enumerate(zip(tensors, micro, strict=True)):
        # each tensor copied to the host once, not read token by token (a sync each on a GPU)
        t = {key: v.cpu() if isinstance(v, torch.Tensor) else v for key, v in t.items()}
        mb = {"input_ids": mb["input_ids"].cpu()}
        mask = t["mask"] > 0
        keep = mask & (torch.rand(mask.shape, generator=g) < cfg.token_sample_rate)
        examples = idx[i * cfg.micro_batch_size : (i + 1) * cfg.micro_batch_size]  # row b of this micro batch
        trace = torch.tensor([e < cfg.trace_examples for e in examples])[:, None] & mask
        for b, pos in (keep | trace).nonzero().tolist():
            lp = float(t["logprobs"][b, pos])
            old = float(t["old"][b, pos]) if t["old"] is not None else None
            ratio = (
                math.exp(max(min(lp - old, LOG_RATIO_CLAMP), -LOG_RATIO_CLAMP)) if old is not None else None
            )
            token = {
                "step": row["step"], "train_batch": row["train_batch"], "epoch": row["epoch"],
                "token_id": int(mb["input_ids"][b, pos + 1]), "position": pos + 1, "logprob": lp,
                "old_logprob": old, "ratio": ratio,
                "clipped": bool(ratio is not None and clipped(ratio, cfg.clip_high)),
                "entropy": float(t["entropy"][b, pos]),
            }  # fmt: skip
            if keep[b, pos]:
                sampled.append(token)
            if trace[b, pos]:
                traced.append({**token, "example": examples[b]})
    return sampled, traced


def gather_rows(rows: list[dict], world: int) -> list[dict]:
    """Every rank's token rows, in rank order (rows unchanged in one process)."""
    if world == 1:
        return rows
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, rows)
    return [r for part in gathered for r in part]


def write_tokens(path: Path, rows: list[dict], tokenizer: Any) -> None:
    """Token rows (:data:`TOKEN_COLUMNS`, ``token_text`` from the tokenizer) as Parquet, written atomically."""
    import pandas as pd  # deferred: pandas is only needed when a run samples tokens

    extra = ["example"] if rows and "example" in rows[0] else []
    df = pd.DataFrame(rows, columns=[*(c for c in TOKEN_COLUMNS if c != "token_text"), *extra])
    texts = (
        tokenizer.convert_ids_to_tokens(df["token_id"].tolist())
        if tokenizer is not None and len(df)
        else None
    )
    df.insert(4, "token_text", texts if texts is not None else df["token_id"].astype(str))
    with atomic_write(path, "wb") as f:
        df.to_parquet(f, index=False)
