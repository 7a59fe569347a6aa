"""The fine-tuning loop for every objective of the paper, with PSFT's train-batch / mini-batch / old-policy structure.

For every *train batch* (paper: 256 sequences) the old policy π_θold is the current weights: their
log-probabilities of the batch's dataset tokens (``old_logprobs``) are taken once, with no grad, before the
first update (:mod:`psftlib.train.refresh`). Then one optimizer step is taken per *mini batch* (paper: 32
sequences, so 8 steps per refresh), each accumulated over *micro batches* (:mod:`psftlib.train.step`: memory only,
the loss is divided by the mini batch's token count summed over ranks). SFT and the baselines run through the same
loop; the paper's SFT uses mini batch = train batch (one step per 256 sequences). With one mini batch per train
batch PSFT has r = 1 everywhere and is plain SFT, parameter for parameter (tests check this).

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
    resume/         while running, if ``checkpoint_every`` > 0 (:mod:`psftlib.train.resume`)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from psftlib.config import ConfigError, TrainConfig
from psftlib.data import EncodeReport, Example
from psftlib.objectives import OBJECTIVES
from psftlib.runtime import all_reduce, device_for, dist
from psftlib.train.curves import Curves
from psftlib.train.plan import Plan, micro_batches
from psftlib.train.refresh import refresh
from psftlib.train.resume import RunFiles, inject_fault
from psftlib.train.shard import Unsharded, apply_lora, save_model, shard
from psftlib.train.step import Reference, backward_mini_batch, needs_reference
from psftlib.train.telemetry import gather_rows, sample_tokens, step_row, write_tokens


def train(
    cfg: TrainConfig,
    model: torch.nn.Module,
    examples: Sequence[Example],
    out_dir: str | Path,
    pad_token_id: int,
    tokenizer: Any = None,
    progress: bool = True,
    encode_report: EncodeReport | None = None,
    evaluator: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int = 0,
    select_checkpoint: Callable[[dict[str, float]], float | None] | None = None,
    initial_scores: dict[str, float] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` (at its initial weights) on ``examples`` with ``cfg``; write outputs; return the metrics.

    ``evaluator(model) -> {name: score}`` (e.g. :func:`psftlib.eval.make_training_evaluator`) runs before the
    first step, every ``eval_every`` optimizer steps and after the last, appending a line to ``eval.jsonl``
    (Figures 3, 5, 11, 12). With ``select_checkpoint(scores) -> float | None`` (e.g.
    :func:`psftlib.eval.selection_score`) the best checkpoint after step 0 is kept in ``out_dir/selected``
    (Table 1's checkpoint selection). ``initial_scores``: the evaluator's scores of the initial weights when already
    known (the base model's, :func:`psftlib.eval.write_initial_curves`), written for step 0 instead.

    If ``out_dir/resume`` holds a state from an earlier, interrupted call with the same arguments, training
    continues from it and ends exactly as an uninterrupted run would.
    """
    cfg.validate()
    out_dir = Path(out_dir)
    world, rank = dist()
    plan = Plan(cfg, len(examples), world, rank)
    device = device_for(model)
    model.to(device)
    bf16 = cfg.bf16 and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else None
    torch.manual_seed(cfg.seed)
    model, reference, unshard = _prepare(model, cfg, plan, bf16, with_curves=evaluator is not None)
    fsdp = cfg.fsdp and world > 1
    if fsdp:
        autocast = None  # the sharding's mixed-precision policy casts instead
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _adamw(params, cfg)
    files = RunFiles(out_dir, rank, with_curves=evaluator is not None)
    state = files.load_state(model, optimizer, cfg, len(examples))
    files.check_ranks_agree(state["step"])
    history = files.start(cfg, plan, encode_report, state["step"])
    curves = Curves(evaluator, eval_every, select_checkpoint, initial_scores, plan, files, tokenizer,
                    bool(cfg.lora_r), world, rank, unshard)  # fmt: skip

    model.train()
    bar = tqdm(total=plan.n_steps, initial=state["step"], desc=cfg.objective, disable=not progress or rank != 0,
               mininterval=5, file=sys.stderr)  # fmt: skip
    try:
        if state["step"] == 0:
            curves(model, state, 0)
        for step in range(state["step"], plan.n_steps):
            started = time.perf_counter()
            objective = plan.objective(step)
            idx = plan.indices(step)  # this rank's example indices (the epoch's seeded order, sliced)
            micro = micro_batches(examples, idx, cfg, pad_token_id, device)
            old, select = None, None
            if OBJECTIVES[objective].needs_old_policy:
                if step not in state["pending"]:  # a new refresh window: take the old policy's log-probs
                    state["pending"] = refresh(
                        model, reference, examples, plan, step, pad_token_id, device, autocast
                    )
                pending = state["pending"].pop(step)
                old, select = pending["old"], pending["select"]

            optimizer.zero_grad(set_to_none=True)
            for group in optimizer.param_groups:
                group["lr"] = plan.lr(step)
            parts, tensors = backward_mini_batch(
                model, micro, objective, cfg, old, select, reference, autocast
            )
            grad_norm = _reduce_and_clip(params, cfg.max_grad_norm, sum_over_ranks=world > 1 and not fsdp)
            optimizer.step()

            step_s = time.perf_counter() - started
            state["wall_s"] += step_s
            row = step_row(
                plan, step, parts, tensors, micro, grad_norm, plan.lr(step), step_s, state["wall_s"]
            )
            if cfg.token_sample_rate > 0 or cfg.trace_examples > 0:
                sampled, traced = sample_tokens(tensors, micro, idx, row, cfg, step, rank)
                state["token_rows"] += sampled
                state.setdefault("trace_rows", []).extend(traced)
            state["step"] = step + 1
            if rank == 0:
                files.log(row)
                history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", entropy=f"{row['entropy']:.3f}", refresh=False)
            if curves.due(state["step"]):
                curves(model, state, state["step"])
            if (
                cfg.checkpoint_every
                and state["step"] % cfg.checkpoint_every == 0
                and state["step"] < plan.n_steps
            ):
                files.save_state(model, optimizer, state, cfg, len(examples))
                if world > 1:  # no rank goes on (or is killed) before every rank's state is on disk
                    torch.distributed.barrier()
            inject_fault(state["step"])
        _finish(model, tokenizer, cfg, state, files, curves, fsdp, world, rank)
    finally:
        bar.close()
        files.close()
    return history


def _prepare(
    model: torch.nn.Module, cfg: TrainConfig, plan: Plan, bf16: bool, with_curves: bool
) -> tuple[torch.nn.Module, Reference | None, Unsharded | None]:
    """LoRA, gradient checkpointing, the reference model (when an objective of the run needs it), FSDP sharding;
    returns (model, reference, rank 0's unsharded copy for in-training evaluation under FSDP)."""
    if cfg.lora_r:
        model = apply_lora(model, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    used = {plan.objective(s) for s in (0, plan.n_steps - 1)}
    reference = Reference(model, bool(cfg.lora_r)) if needs_reference(used, cfg) else None
    unshard = None
    if cfg.fsdp and plan.world > 1:
        if cfg.lora_r:
            raise ConfigError("fsdp: not supported with lora_r > 0 (LoRA adapters are small: leave fsdp off)")
        if with_curves:  # evaluated on rank 0 with the whole model, gathered at each evaluation
            unshard = Unsharded(model, plan.rank)
        model = shard(model, bf16)
        if reference is not None:
            reference.model = shard(reference.model, bf16)
    return model, reference, unshard


def _adamw(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the run's settings; fused (one kernel: the optimizer step alone ~5x faster than foreach on CPU)
    except under FSDP."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, fused=not cfg.fsdp)  # fmt: skip


def _reduce_and_clip(params: list[torch.nn.Parameter], max_norm: float, sum_over_ranks: bool) -> float:
    """The exact global gradient, clipped to ``max_norm``; returns its norm before clipping. Each rank's loss is
    already divided by the global token count, so the ranks' gradients are summed (under FSDP the sharding
    reduce-scatters them instead)."""
    if sum_over_ranks:
        for p in params:
            if p.grad is not None:
                all_reduce(p.grad)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)


def _finish(model, tokenizer, cfg: TrainConfig, state: dict, files: RunFiles, curves: Curves, fsdp: bool,
            world: int, rank: int) -> None:  # fmt: skip
    """The token Parquet files, the selection record and the final checkpoint; then the streams under their real
    names; then the resume state goes. A kill between any two of these is recovered by running again
    (:mod:`psftlib.train.resume`)."""
    for key, enabled, name in (("token_rows", cfg.token_sample_rate > 0, "tokens.parquet"),
                               ("trace_rows", cfg.trace_examples > 0, "traces.parquet")):  # fmt: skip
        if enabled:
            rows = gather_rows(state.get(key, []), world)
            if rank == 0:
                write_tokens(files.out_dir / name, rows, tokenizer)
    curves.write_selection(state)
    # under FSDP every rank takes part in gathering the weights
    if cfg.save_checkpoint and (rank == 0 or fsdp):
        save_model(model, tokenizer, files.out_dir / "checkpoint", bool(cfg.lora_r), rank)
    if world > 1:
        torch.distributed.barrier()
    inject_fault("finish:outputs")
    files.publish_streams()
    inject_fault("finish:streams")
    files.remove_resume_state()
