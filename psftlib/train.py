"""The fine-tuning loop for every objective of the paper, with PSFT's train-batch / mini-batch / old-policy structure.

For every *train batch* (paper: 256 sequences) the old policy π_θold is the current weights: their
log-probabilities of the batch's dataset tokens (``old_logprobs``) are taken once, with no grad, before the
first update. Then one optimizer step is taken per *mini batch* (paper: 32 sequences, so 8 steps per refresh),
each accumulated over *micro batches* (memory only: the loss is divided by the mini batch's token count, summed
over ranks, so neither micro-batching nor the number of processes changes the maths). SFT and the baselines
run through the same loop; the paper's SFT uses mini batch = train batch (one step per 256 sequences).

The first mini batch after a refresh is evaluated at exactly the refresh weights, so its own forward gives its
``old_logprobs`` (detached): only the other mini batches need the extra no-grad pass, and with one mini batch
per train batch PSFT has r = 1 everywhere and is plain SFT, parameter for parameter (tests check this).

Variants are configuration (``TrainConfig``): ``old_policy_refresh`` every train batch / every k mini batches /
never (the initial model, §5.3), ``clip_high: .inf`` (no clipping, §5.2), ``sft_warmup_train_batches`` (PSFT +
warm-up, §4.1), ``entropy_top_fraction`` (only the top-ρ highest-entropy tokens of a refresh window train, by
the old policy's entropy, App. C.2).

Outputs in ``out_dir`` (each written to a temp name and renamed when complete)::

    metrics.jsonl   one JSON line per optimizer step (METRIC_KEYS); ``step`` counts optimizer steps,
                    ``train_batch`` counts train batches (fractional within one), which is what verl and the
                    paper's figures call a step: SFT and PSFT share that axis
    eval.jsonl      one line per in-training evaluation (step, scores), if an evaluator is given
    tokens.parquet  sampled per-token telemetry (TOKEN_COLUMNS) if ``token_sample_rate`` > 0 (Figure 10)
    traces.parquet  every token of demonstrations 0..k-1 each time they are trained (TOKEN_COLUMNS + ``example``)
                    if ``trace_examples`` = k > 0 (the report's token-by-token rendering)
    config.json     the resolved TrainConfig and what the data's length policy did
    checkpoint/     Hugging Face format (model + tokenizer), if ``save_checkpoint``
    resume/         while running, if ``checkpoint_every`` > 0: model, optimizer, step, pending old-policy
                    log-probs; a killed run restarted with the same command continues from it exactly
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from psftlib.config import ROOT, ConfigError, TrainConfig, load_profile, parse_overrides
from psftlib.data import EncodeReport, Example, atomic_write, collate, encode_all, read_jsonl
from psftlib.logprobs import ShardedRoot, full_logprobs, full_vocab_kl, gather_token_logprobs, token_logprobs
from psftlib.objectives import dft_loss, iw_sft_loss, psft_loss, sft_kl_loss, sft_loss

METRIC_KEYS = (
    "step", "train_batch", "epoch", "loss", "nll", "token_accuracy", "entropy", "clip_fraction_high",
    "clip_fraction_low", "ratio_mean", "ratio_max", "approx_kl", "kl", "weight_mean", "grad_norm", "lr",
    "tokens", "response_tokens", "trained_tokens", "tokens_per_s", "wall_s",
)  # fmt: skip
# Measured wall-clock quantities: the only fields that differ between two runs of the same config and seed.
TIMING_KEYS = ("tokens_per_s", "wall_s")
TOKEN_COLUMNS = ("step", "train_batch", "epoch", "token_id", "token_text", "position", "logprob", "old_logprob",
                 "ratio", "clipped", "entropy")  # fmt: skip
FAULT_ENV = "PSFT_FAULT_AFTER_STEP"  # tests: SIGKILL this process right after the given step


def set_threads(n: int | None = None) -> int:
    """Use ``OMP_NUM_THREADS`` if set (Snakemake sets it per job), else ``n``, else torch's default."""
    env = os.environ.get("OMP_NUM_THREADS")
    n = int(env) if env else n
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


# ---- distributed helpers (no-ops in one process) ------------------------------------------------------------


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if _dist()[0] > 1:
        torch.distributed.all_reduce(
            t, torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
        )
    return t


def _aggregate(parts: list[dict[str, float]]) -> dict[str, float]:
    """Combine per-micro-batch (and per-rank) metrics: token-weighted means, max for ``*_max``, sum for ``loss``."""
    keys = [k for k in parts[0] if k != "num_tokens"]
    sums = torch.tensor(
        [sum(p[k] * (1.0 if k == "loss" else p["num_tokens"]) for p in parts) for k in keys]
        + [sum(p["num_tokens"] for p in parts)],
        dtype=torch.float64,
    )
    maxes = torch.tensor(
        [max(p[k] for p in parts) if k.endswith("_max") else 0.0 for k in keys], dtype=torch.float64
    )
    _all_reduce(sums)
    _all_reduce(maxes, "max")
    total = float(sums[-1]) or 1.0
    out = {}
    for i, k in enumerate(keys):
        out[k] = float(maxes[i]) if k.endswith("_max") else float(sums[i]) / (1.0 if k == "loss" else total)
    return out


# ---- the plan: which sequences each optimizer step sees, as a pure function of the step ----------------------


@dataclasses.dataclass
class Plan:
    cfg: TrainConfig
    n_examples: int
    world: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        c = self.cfg
        self.batches_per_epoch = self.n_examples // c.train_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"train_batch_size {c.train_batch_size} is larger than the dataset ({self.n_examples} examples)"
            )
        if c.mini_batch_size % self.world:
            raise ConfigError(
                f"mini_batch_size: {c.mini_batch_size} is not divisible by {self.world} processes"
            )
        self.per_rank = c.mini_batch_size // self.world
        self.steps_per_train_batch = c.steps_per_train_batch
        self.n_train_batches = max(1, math.ceil(c.epochs * self.batches_per_epoch))
        self.n_steps = self.n_train_batches * self.steps_per_train_batch
        self.dropped_per_epoch = self.n_examples - self.batches_per_epoch * c.train_batch_size
        self._orders: dict[int, list[int]] = {}
        self.first_psft_step = c.sft_warmup_train_batches * self.steps_per_train_batch

    def order(self, epoch: int) -> list[int]:
        """Seeded shuffle of epoch ``epoch`` (a function of seed and epoch only: resumable without state)."""
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(self.n_examples, generator=g).tolist()}
        return self._orders[epoch]

    def where(self, step: int) -> tuple[int, int, int, int]:
        """0-based optimizer step -> (train batch, mini batch within it, epoch, train batch within epoch)."""
        tb, k = divmod(step, self.steps_per_train_batch)
        epoch, tb_in_epoch = divmod(tb, self.batches_per_epoch)
        return tb, k, epoch, tb_in_epoch

    def indices(self, step: int) -> list[int]:
        """This rank's example indices for optimizer step ``step`` (the tail that fills no train batch is dropped)."""
        _, k, epoch, tbe = self.where(step)
        start = tbe * self.cfg.train_batch_size + k * self.cfg.mini_batch_size + self.rank * self.per_rank
        return self.order(epoch)[start : start + self.per_rank]

    def objective(self, step: int) -> str:
        return "sft" if step < self.first_psft_step else self.cfg.objective

    def refresh_window(self, step: int) -> range:
        """The optimizer steps whose old policy is the one taken at the start of ``step``'s window."""
        refresh = self.cfg.old_policy_refresh
        period = self.steps_per_train_batch if refresh in ("train_batch", "never") else int(refresh)
        start = self.first_psft_step + (step - self.first_psft_step) // period * period
        return range(start, min(start + period, self.n_steps))


def _micro_batches(
    examples: Sequence[Example], idx: list[int], cfg: TrainConfig, pad_id: int, device
) -> list[dict]:
    out = []
    for i in range(0, len(idx), cfg.micro_batch_size):
        mb = collate([examples[j] for j in idx[i : i + cfg.micro_batch_size]], pad_id)
        out.append({k: v.to(device) for k, v in mb.items()})
    return out


# ---- model set-up -------------------------------------------------------------------------------------------


def _apply_lora(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:  # pragma: no cover - peft is in the lock
        raise ConfigError("lora_r > 0 needs the 'peft' package") from err
    config = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


class _Reference:
    """π_ref, the frozen initial model (SFT-KL, iw-SFT, PSFT with ``old_policy_refresh: never``).

    Full fine-tuning keeps a frozen copy; with LoRA the reference is the same model with adapters disabled.
    """

    def __init__(self, model: torch.nn.Module, lora: bool):
        self.lora = lora
        self.model = model if lora else copy.deepcopy(model).eval().requires_grad_(False)

    def _context(self):
        return self.model.disable_adapter() if self.lora else contextlib.nullcontext()

    def logprobs(self, mb: dict, mask: torch.Tensor, chunk: int | None, with_stats: bool = False):
        with self._context():
            return _no_grad_logprobs(self.model, mb, mask, chunk, with_stats)

    @torch.no_grad()
    def full_logprobs(self, mb: dict) -> torch.Tensor:
        with self._context():
            return full_logprobs(self.model, mb["input_ids"], mb["attention_mask"])


@torch.no_grad()
def _no_grad_logprobs(model, mb, mask, chunk, with_stats):
    was_training = model.training
    model.eval()
    out = token_logprobs(
        model, mb["input_ids"], mb["attention_mask"], with_stats, score_mask=mask, chunk_size=chunk
    )
    model.train(was_training)
    return out


# ---- one optimizer step's forward/backward (the unit the multi-process test checks) --------------------------


def backward_mini_batch(
    model: torch.nn.Module,
    micro_batches: list[dict],
    objective: str,
    cfg: TrainConfig,
    old: list[torch.Tensor | None] | None = None,
    select: list[torch.Tensor] | None = None,
    reference: _Reference | None = None,
    autocast: Any = None,
) -> tuple[list[dict[str, float]], list[dict[str, torch.Tensor]]]:
    """Accumulate the gradient of one mini batch into ``model``'s ``.grad``; return per-micro-batch metrics.

    The loss of each micro batch is divided by the mini batch's trained-token count summed over all ranks,
    so the accumulated (and, across ranks, summed) gradient is exactly the gradient of the global token-mean.
    Also returns detached per-token tensors for telemetry.
    """
    masks = []
    for m, mb in enumerate(micro_batches):
        mask = mb["loss_mask"][:, 1:]  # [b, T-1], aligned with logprobs
        masks.append(mask * select[m] if select is not None else mask)
    num_tokens = _all_reduce(torch.tensor(sum(float(x.sum()) for x in masks), dtype=torch.float64))
    num_tokens = float(num_tokens)
    parts, tensors = [], []
    for m, mb in enumerate(micro_batches):
        response_mask, mask = mb["loss_mask"][:, 1:], masks[m]
        with autocast() if autocast else contextlib.nullcontext():
            full_kl = logp_all = None
            if objective == "sft_kl" and cfg.kl_estimator == "full":
                # one forward of each model gives log-probs, entropy, the reference's log-probs and the exact KL
                logp_all = full_logprobs(model, mb["input_ids"], mb["attention_mask"])
                ref_all = reference.full_logprobs(mb)
                out = gather_token_logprobs(logp_all, mb["input_ids"], response_mask)
                ref_lp = gather_token_logprobs(
                    ref_all, mb["input_ids"], response_mask, with_stats=False
                ).logprobs
                full_kl = full_vocab_kl(logp_all, ref_all)
            else:
                out = token_logprobs(
                    model,
                    mb["input_ids"],
                    mb["attention_mask"],
                    score_mask=response_mask,
                    chunk_size=cfg.logprob_chunk_size,
                )
            old_lp = None
            if objective == "sft":
                loss, metrics = sft_loss(out.logprobs, mask, num_tokens)
            elif objective == "dft":
                loss, metrics = dft_loss(out.logprobs, mask, num_tokens)
            elif objective == "psft":
                old_lp = old[m] if old is not None and old[m] is not None else out.logprobs.detach()
                loss, metrics = psft_loss(out.logprobs, old_lp, mask, cfg.clip_low, cfg.clip_high, num_tokens)
            elif objective == "sft_kl":
                if full_kl is None:
                    ref_lp = reference.logprobs(mb, response_mask, cfg.logprob_chunk_size).logprobs
                loss, metrics = sft_kl_loss(
                    out.logprobs, ref_lp, mask, cfg.kl_coef, cfg.kl_estimator, num_tokens, full_kl
                )
            elif objective == "iw_sft":
                ref_lp = reference.logprobs(mb, response_mask, cfg.logprob_chunk_size).logprobs
                loss, metrics = iw_sft_loss(
                    out.logprobs, ref_lp, mask, (cfg.iw_clip_low, cfg.iw_clip_high), cfg.iw_level, num_tokens
                )
            else:  # pragma: no cover - validated in TrainConfig
                raise ConfigError(f"objective: {objective!r}")
        loss.backward()
        n_resp = float(response_mask.sum())
        metrics["loss"] = float(loss.detach())
        parts.append(metrics)
        parts_stats = {
            "entropy_sum": float((out.entropy * response_mask).sum()),
            "argmax_sum": float((out.is_argmax * response_mask).sum()),
            "n_response": n_resp,
        }
        tensors.append(
            {
                "logprobs": out.logprobs.detach(),
                "entropy": out.entropy,
                "mask": mask,
                "old": old_lp,
                **parts_stats,
            }
        )
    return parts, tensors


# ---- the loop -----------------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    model: torch.nn.Module,
    examples: Sequence[Example],
    out_dir: str | Path,
    pad_token_id: int,
    tokenizer: Any = None,
    progress: bool = True,
    encode_report: EncodeReport | None = None,
    evaluator: Any = None,
    eval_every: int = 0,
    select_checkpoint: Any = None,
    initial_scores: dict[str, float] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` (at its initial weights) on ``examples`` with ``cfg``; write outputs; return the metrics.

    ``evaluator(model) -> {name: score}`` (e.g. :func:`psftlib.eval.make_training_evaluator`) runs before the
    first step and every ``eval_every`` optimizer steps and after the last, appending a line to ``eval.jsonl``
    (Figures 3, 5, 11, 12 are these curves). With ``select_checkpoint(scores) -> float | None`` (e.g.
    :func:`psftlib.eval.selection_score`) the checkpoint of the best-scoring evaluation after step 0 (ties: the later) is kept
    in ``out_dir/selected`` and described in ``out_dir/selected.json`` (Table 1's checkpoint selection).
    ``initial_scores``: the evaluator's scores of the initial weights when already known (the base model's, shared
    by every run: :func:`psftlib.eval.write_initial_curves`), written for step 0 instead of evaluating again.

    If ``out_dir/resume`` holds a state from an earlier, interrupted call with the same arguments, training
    continues from it and ends exactly as an uninterrupted run would.
    """
    cfg.validate()
    out_dir = Path(out_dir)
    world, rank = _dist()
    plan = Plan(cfg, len(examples), world, rank)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else None
    device = device or next(model.parameters()).device
    model.to(device)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cfg.bf16 and device.type == "cuda" else None
    )

    torch.manual_seed(cfg.seed)
    if cfg.lora_r:
        model = _apply_lora(model, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    objectives_used = {plan.objective(s) for s in (0, plan.n_steps - 1)}
    needs_ref = bool({"sft_kl", "iw_sft"} & objectives_used) or (
        "psft" in objectives_used and cfg.old_policy_refresh == "never"
    )
    reference = _Reference(model, bool(cfg.lora_r)) if needs_ref else None
    fsdp = cfg.fsdp and world > 1
    if fsdp:
        if cfg.lora_r:
            raise ConfigError("fsdp: not supported with lora_r > 0 (LoRA adapters are small: leave fsdp off)")
        if evaluator is not None:
            raise ConfigError(
                "fsdp: in-training evaluation runs on rank 0 with the whole model; turn one off"
            )
        model = _shard(model, cfg.bf16 and device.type == "cuda")
        if reference is not None:
            reference.model = _shard(reference.model, cfg.bf16 and device.type == "cuda")
        autocast = None  # the sharding's mixed-precision policy casts instead
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        fused=not cfg.fsdp,  # one kernel: the optimizer step alone ~5x faster than foreach on CPU (a run: not seen)
    )

    def lr_at(step: int) -> float:
        base = cfg.sft_warmup_lr if (step < plan.first_psft_step and cfg.sft_warmup_lr) else cfg.lr
        return base * (min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0)

    # -- state, possibly resumed --
    resume_dir = out_dir / "resume"
    partial = out_dir / ".metrics.jsonl.partial"
    eval_partial = out_dir / ".eval.jsonl.partial"
    state: dict[str, Any] = {"step": 0, "pending": {}, "wall_s": 0.0, "token_rows": []}
    if (resume_dir / f"state_rank{rank}.pt").exists():
        saved = torch.load(resume_dir / f"state_rank{rank}.pt", weights_only=False)
        if saved["config"] != dataclasses.asdict(cfg) or saved["n_examples"] != len(examples):
            raise ValueError(
                f"{resume_dir}: resume state is from a different config or dataset; delete it to restart"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        with atomic_write(out_dir / "config.json") as f:
            info = {"n_examples": len(examples), "n_steps": plan.n_steps, "processes": world,
                    "examples_dropped_per_epoch": plan.dropped_per_epoch,
                    "length_policy": dataclasses.asdict(encode_report) if encode_report else None}  # fmt: skip
            json.dump({**dataclasses.asdict(cfg), **info}, f, indent=2, default=str)
        kept = partial.read_text().splitlines()[: state["step"]] if partial.exists() else []
        partial.write_text("".join(line + "\n" for line in kept))
        if evaluator is not None:  # evals of steps after the resume point are redone
            lines = eval_partial.read_text().splitlines() if eval_partial.exists() else []
            lines = [line for line in lines if 0 < json.loads(line)["step"] <= state["step"]]
            eval_partial.write_text("".join(line + "\n" for line in lines))
    history = [json.loads(line) for line in (partial.read_text().splitlines() if rank == 0 else [])]

    model.train()
    fault_step = int(os.environ.get(FAULT_ENV, "0") or 0)
    bar = tqdm(total=plan.n_steps, initial=state["step"], desc=cfg.objective, disable=not progress or rank != 0,
               mininterval=5, file=sys.stderr)  # fmt: skip
    metrics_file = open(partial, "a") if rank == 0 else None  # noqa: SIM115 - closed below

    def run_eval(done: int) -> None:
        if evaluator is None:
            return
        if rank == 0:
            where = {"step": done, "train_batch": done / plan.steps_per_train_batch,
                     "epoch": done / plan.steps_per_train_batch / plan.batches_per_epoch}  # fmt: skip
            # evaluate() gives the model back in the mode it found it; step 0 may be known already (the base's)
            known = done == 0 and initial_scores is not None
            scores = dict(initial_scores) if known else evaluator(model)
            with open(eval_partial, "a") as f:
                f.write(json.dumps({**where, **scores}) + "\n")
            # the base (step 0) is no candidate
            score = select_checkpoint(scores) if select_checkpoint is not None and done > 0 else None
            if score is not None and score >= state.get("selected", {}).get("score", -math.inf):
                _save_model(model, tokenizer, out_dir / "selected", bool(cfg.lora_r))
                state["selected"] = {**where, "score": score}
        if world > 1:
            torch.distributed.barrier()

    try:
        if state["step"] == 0:
            run_eval(0)
        for step in range(state["step"], plan.n_steps):
            started = time.perf_counter()
            objective = plan.objective(step)
            idx = plan.indices(step)  # this rank's example indices (the epoch's seeded order, sliced)
            micro = _micro_batches(examples, idx, cfg, pad_token_id, device)
            old, select = None, None
            if objective == "psft":
                if step not in state["pending"]:
                    state["pending"] = _refresh(model, reference, examples, plan, step, pad_token_id, device)
                pending = state["pending"].pop(step)
                old, select = pending["old"], pending["select"]

            optimizer.zero_grad(set_to_none=True)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            parts, tensors = backward_mini_batch(
                model, micro, objective, cfg, old, select, reference, autocast
            )
            # exact global gradient: each rank's loss is already divided by the global token count, so the ranks'
            # gradients are summed (under FSDP the sharding reduce-scatters them)
            if world > 1 and not fsdp:
                for p in params:
                    if p.grad is not None:
                        _all_reduce(p.grad)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            optimizer.step()

            step_s = time.perf_counter() - started
            state["wall_s"] += step_s
            tb, k, epoch, tbe = plan.where(step)
            stats = _all_reduce(torch.tensor(
                [sum(t["entropy_sum"] for t in tensors), sum(t["argmax_sum"] for t in tensors),
                 sum(t["n_response"] for t in tensors), sum(int(mb["attention_mask"].sum()) for mb in micro),
                 sum(float(t["mask"].sum()) for t in tensors)], dtype=torch.float64))  # fmt: skip
            row = {
                "step": step + 1,
                "train_batch": tb + (k + 1) / plan.steps_per_train_batch,
                "epoch": epoch + (tbe + (k + 1) / plan.steps_per_train_batch) / plan.batches_per_epoch,
                **_aggregate(parts),
                "entropy": float(stats[0] / max(stats[2], 1.0)),
                "token_accuracy": float(stats[1] / max(stats[2], 1.0)),
                "grad_norm": grad_norm,
                "lr": lr_at(step),
                "tokens": int(stats[3]),
                "response_tokens": int(stats[2]),
                "trained_tokens": int(stats[4]),
                "tokens_per_s": float(stats[3]) / max(step_s, 1e-9),
                "wall_s": state["wall_s"],
            }
            row = {key: row[key] for key in METRIC_KEYS if key in row}
            if not all(math.isfinite(v) for v in row.values()):
                raise FloatingPointError(f"non-finite metric at step {step + 1}: {row}")
            if cfg.token_sample_rate > 0 or cfg.trace_examples > 0:
                sampled, traced = _sample_tokens(tensors, micro, idx, row, cfg, step, rank)
                state["token_rows"] += sampled
                state.setdefault("trace_rows", []).extend(traced)
            state["step"] = step + 1
            if rank == 0:
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", entropy=f"{row['entropy']:.3f}", refresh=False)
            if eval_every and (state["step"] % eval_every == 0 or state["step"] == plan.n_steps):
                run_eval(state["step"])
            if (
                cfg.checkpoint_every
                and state["step"] % cfg.checkpoint_every == 0
                and state["step"] < plan.n_steps
            ):
                _save_resume(resume_dir, rank, model, optimizer, state, cfg, len(examples))
            if fault_step and state["step"] == fault_step:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()

    if rank == 0:
        os.replace(partial, out_dir / "metrics.jsonl")
        if evaluator is not None:
            os.replace(eval_partial, out_dir / "eval.jsonl")
    for key, enabled, name in (("token_rows", cfg.token_sample_rate > 0, "tokens.parquet"),
                               ("trace_rows", cfg.trace_examples > 0, "traces.parquet")):  # fmt: skip
        rows = state.get(key, [])
        if world > 1 and enabled:
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        if rank == 0 and enabled:
            _write_tokens(out_dir / name, rows, tokenizer)
    if rank == 0 and "selected" in state:
        with atomic_write(out_dir / "selected.json") as f:
            rule = "highest mean in-domain avg@k of the in-training evaluations; ties: the later checkpoint"
            json.dump({**state["selected"], "rule": rule, "final_step": plan.n_steps}, f, indent=2)
    # under FSDP every rank takes part in gathering the weights
    if cfg.save_checkpoint and (rank == 0 or fsdp):
        _save_model(model, tokenizer, out_dir / "checkpoint", bool(cfg.lora_r), rank)
    if world > 1:
        torch.distributed.barrier()
    if resume_dir.exists() and rank == 0:
        import shutil

        shutil.rmtree(resume_dir)
    return history


def _shard(model: torch.nn.Module, bf16: bool) -> ShardedRoot:
    """FSDP2 (``fully_shard``): each decoder layer one unit, then the rest (embeddings, norm, LM head) under a
    :class:`~psftlib.logprobs.ShardedRoot`, which the log-prob functions call through. The gradient reduction sums
    instead of averaging: each rank's loss is already divided by the global token count."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mp_policy": policy} if policy is not None else {}
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    if not layers:
        raise ConfigError(f"fsdp: no *DecoderLayer modules in {type(model).__name__} to shard")
    for layer in layers:
        fully_shard(layer, **kwargs)
    root = fully_shard(ShardedRoot(model), **kwargs)
    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)
    return root


def _save_model(model: torch.nn.Module, tokenizer: Any, out: Path, lora: bool, rank: int = 0) -> None:
    """A Hugging Face checkpoint of ``model`` (LoRA adapters merged into a copy), written atomically by rank 0.
    A :class:`ShardedRoot` (FSDP) is gathered first, which every rank must call for."""
    from psftlib.world import save_pretrained_atomic

    if isinstance(model, ShardedRoot):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            full = {k.removeprefix("lm."): v for k, v in full.items()}  # ShardedRoot's prefix
            save_pretrained_atomic(model.lm, tokenizer, out, state_dict=full)
        return
    save_pretrained_atomic(copy.deepcopy(model).merge_and_unload() if lora else model, tokenizer, out)


@torch.no_grad()
def _refresh(model, reference, examples, plan: Plan, step: int, pad_id: int, device) -> dict[int, dict]:
    """Old-policy log-probs (and entropy selection) for every step of the refresh window starting at ``step``.

    The window's first step takes its old log-probs from its own forward at the same weights (exact r = 1), unless
    the old policy is the fixed initial model (``never``) or entropy selection needs every token's entropy first.
    """
    cfg = plan.cfg
    never = cfg.old_policy_refresh == "never"
    need_entropy = cfg.entropy_top_fraction is not None
    pending: dict[int, dict] = {}
    todo = []  # (step, this rank's example indices) of the window's steps that need an old-policy forward
    for s in plan.refresh_window(step):
        if s < step:
            continue
        idx = plan.indices(s)
        if s == step and not never and not need_entropy:
            pending[s] = {"old": [None] * len(range(0, len(idx), cfg.micro_batch_size)), "select": None}
            continue
        todo.append((s, idx))
    # no-grad forwards over the rows of those steps (no activations are kept, so micro-batching for memory is not
    # needed): one per mini batch, or `refresh_batch_size` rows each (fewer, fuller forwards)
    flat = [j for _, idx in todo for j in idx]  # example index of each row position
    if cfg.refresh_batch_size:
        size = cfg.refresh_batch_size
        groups = [range(a, min(a + size, len(flat))) for a in range(0, len(flat), size)]
    else:
        groups, start = [], 0
        for _, idx in todo:  # one forward per mini batch
            groups.append(range(start, start + len(idx)))
            start += len(idx)
    row_logprobs, row_entropy, row_mask = {}, {}, {}  # row position -> [T_group - 1], padded to its group
    for group in groups:
        full = {k: v.to(device) for k, v in collate([examples[flat[p]] for p in group], pad_id).items()}
        mask = full["loss_mask"][:, 1:]
        if never:
            whole = reference.logprobs(full, mask, cfg.logprob_chunk_size, with_stats=need_entropy)
        else:
            whole = _no_grad_logprobs(model, full, mask, cfg.logprob_chunk_size, need_entropy)
        for r, p in enumerate(group):
            row_logprobs[p], row_mask[p] = whole.logprobs[r], mask[r]
            if need_entropy:
                row_entropy[p] = whole.entropy[r]
    # split back into each step's micro batches, at the micro batch's own (padded) width
    entropies, masks = [], []  # per micro batch of the window, for the entropy selection
    offset = 0
    for s, idx in todo:
        olds = []
        for i in range(0, len(idx), cfg.micro_batch_size):
            rows = range(offset + i, offset + min(i + cfg.micro_batch_size, len(idx)))
            width = max(len(examples[flat[p]].input_ids) for p in rows) - 1
            olds.append(_fit_rows(row_logprobs, rows, width))  # [micro, width]
            if need_entropy:
                entropies.append(_fit_rows(row_entropy, rows, width))
                masks.append(_fit_rows(row_mask, rows, width))
        pending[s] = {"old": olds, "select": None}
        offset += len(idx)
    if need_entropy:
        # top-ρ highest-entropy response tokens of the whole window (old policy's entropy), across ranks
        threshold = _global_quantile(
            torch.cat([e[m > 0] for e, m in zip(entropies, masks, strict=True)]),
            1.0 - cfg.entropy_top_fraction,
        )
        selected = iter([((e >= threshold) & (m > 0)).float() for e, m in zip(entropies, masks, strict=True)])
        for p in pending.values():
            p["select"] = [next(selected) for _ in p["old"]]
    return pending


def _fit_rows(values: dict[int, torch.Tensor], rows: range, width: int) -> torch.Tensor:
    """Rows ``[T_group - 1]`` (each padded to its own forward's width, zeros past its tokens) as ``[len(rows), width]``."""
    return torch.stack(
        [torch.nn.functional.pad(values[p][:width], (0, max(0, width - len(values[p])))) for p in rows]
    )


def _global_quantile(values: torch.Tensor, q: float) -> float:
    world, _ = _dist()
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, values.cpu())
        values = torch.cat(gathered)
    return float(torch.quantile(values.double(), q)) if values.numel() else float("inf")


def _sample_tokens(
    tensors, micro, idx: list[int], row, cfg: TrainConfig, step: int, rank: int
) -> tuple[list[dict], list[dict]]:
    """Seeded Bernoulli sample of trained tokens for ``tokens.parquet`` (a function of seed, step, rank), and every
    trained token of the traced demonstrations (``idx``: the step's example indices, in micro-batch order)."""
    g = torch.Generator().manual_seed(cfg.seed * 7_919 + step * 104_729 + rank)
    sampled, traced = [], []
    for i, (t, mb) in enumerate(zip(tensors, micro, strict=True)):
        mask = t["mask"].cpu() > 0
        keep = mask & (torch.rand(mask.shape, generator=g) < cfg.token_sample_rate)
        examples = idx[i * cfg.micro_batch_size : (i + 1) * cfg.micro_batch_size]  # row b of this micro batch
        trace = torch.tensor([e < cfg.trace_examples for e in examples])[:, None] & mask
        for b, pos in (keep | trace).nonzero().tolist():
            lp = float(t["logprobs"][b, pos])
            old = float(t["old"][b, pos]) if t["old"] is not None else None
            ratio = math.exp(max(min(lp - old, 20.0), -20.0)) if old is not None else None
            token = {
                "step": row["step"], "train_batch": row["train_batch"], "epoch": row["epoch"],
                "token_id": int(mb["input_ids"][b, pos + 1]), "position": pos + 1, "logprob": lp,
                "old_logprob": old, "ratio": ratio,
                "clipped": bool(ratio is not None and ratio > 1.0 + cfg.clip_high),
                "entropy": float(t["entropy"][b, pos]),
            }  # fmt: skip
            if keep[b, pos]:
                sampled.append(token)
            if trace[b, pos]:
                traced.append({**token, "example": examples[b]})
    return sampled, traced


def _write_tokens(path: Path, rows: list[dict], tokenizer: Any) -> None:
    import pandas as pd

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


def _save_resume(
    resume_dir: Path, rank: int, model, optimizer, state: dict, cfg: TrainConfig, n: int
) -> None:
    resume_dir.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
               "state": state, "config": dataclasses.asdict(cfg), "n_examples": n}  # fmt: skip
    with atomic_write(resume_dir / f"state_rank{rank}.pt", "wb") as f:
        torch.save(payload, f)


# ---- profile-level entry points -----------------------------------------------------------------------------


def data_dir(profile: str, root: Path = ROOT) -> Path:
    """The folder of a profile's data files: demonstrations, held-out set, eval sets, RL prompts, preferences."""
    return root / "results" / "data" / profile


def run_paths(profile: str, run: str, root: Path = ROOT) -> dict[str, Path]:
    """Where a profile's data, base model and a run's outputs live (conventions.md)."""
    return {
        "train_data": data_dir(profile, root) / "train.jsonl",
        "base": root / "results" / "world" / profile / "base",
        "out": root / "results" / "runs" / profile / run,
    }


def train_run(
    profile: str | Path,
    run: str,
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    initial_curves: str | Path | None = None,
) -> list[dict[str, float]]:
    """Train run ``run`` of a profile from its base model and data (built by ``psftlib.world``).

    ``initial_curves``: the base model's in-training evaluation (``psftlib.eval --initial-curves``), checked
    against the base's weights and the profile, used as the curves' step 0 instead of evaluating again."""
    from transformers.utils import logging as hf_logging

    from psftlib.world import load_checkpoint

    hf_logging.disable_progress_bar()
    prof = load_profile(profile)
    cfg = prof.run_config(run, overrides)
    paths = run_paths(prof.name, run)
    if not paths["base"].exists():
        raise FileNotFoundError(f"{paths['base']}: no base model; build the world first (snakemake world)")
    model, tokenizer = load_checkpoint(paths["base"])
    examples, report = encode_all(tokenizer, read_jsonl(paths["train_data"]), cfg.max_length, cfg.truncation)
    evaluator, every, select_checkpoint, initial_scores = None, 0, None, None
    during = (prof.data.get("eval") or {}).get("during_training")
    if cfg.fsdp and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        during = None  # the in-training evaluation generates on rank 0 with the whole model: not under FSDP
        print("fsdp: no in-training evaluation (curves) in this run", file=sys.stderr)
    if during and during.get("every_train_batches", 0) > 0:
        from psftlib.eval import make_training_evaluator, selection_score

        evaluator = make_training_evaluator(prof, tokenizer)
        in_domain = prof.data["eval"]["task_sets"].get("in_domain", [])
        select_checkpoint = functools.partial(selection_score, in_domain_tasks=in_domain)
        every = (
            during["every_train_batches"] * cfg.steps_per_train_batch
        )  # same data points for every objective
        if initial_curves:
            from psftlib.eval import read_initial_curves

            initial_scores = read_initial_curves(initial_curves, prof, paths["base"])
    return train(cfg, model, examples, out_dir or paths["out"], tokenizer.pad_token_id, tokenizer=tokenizer,
                 progress=progress, encode_report=report, evaluator=evaluator, eval_every=every,
                 select_checkpoint=select_checkpoint, initial_scores=initial_scores)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one run of a profile (any objective of the paper).")
    parser.add_argument("--profile", default="mini", help="profile name (config/<name>.yaml) or a YAML path")
    parser.add_argument("--run", required=True, help="run name under runs: in the profile")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override TrainConfig fields"
    )
    parser.add_argument("--out", default=None, help="output folder (default results/runs/<profile>/<run>)")
    parser.add_argument("--initial-curves", default=None, metavar="PATH",
                        help="the base model's in-training evaluation (psftlib.eval --initial-curves): step 0")  # fmt: skip
    args = parser.parse_args(argv)
    set_threads(load_profile(args.profile)["threads"])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        # `accelerate launch` / torchrun describe the group in the environment (RANK, WORLD_SIZE, MASTER_ADDR ...)
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    train_run(args.profile, args.run, parse_overrides(args.set), args.out, initial_curves=args.initial_curves)


if __name__ == "__main__":
    main()
