"""The evaluation the training loop and the post-training stages run: the in-training subset (curves), teacher-forced
NLL and entropy, Table 1's checkpoint selection, and the base model's step-0 point shared by every run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from psftlib.data import atomic_write, check_unknown_rate, collate, encode_all, read_json, read_jsonl
from psftlib.eval.harness import (
    SCORE_KEYS,
    EvalConfig,
    EvalError,
    evaluate,
    evaluate_in_child,
    evaluate_saved,
)
from psftlib.logprobs import token_logprobs
from psftlib.worlds.build import load_checkpoint, save_pretrained_atomic


@torch.no_grad()
def teacher_forced_stats(
    model: Any, examples: list[Any], pad_token_id: int, batch_size: int = 16
) -> dict[str, float]:
    """Mean NLL and entropy of the policy on the response tokens of ``examples`` (teacher forcing).

    The train-minus-held-out NLL gap measures memorisation; entropy on held-out text is Figure 1's quantity on
    text the model never trained on. The model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll = ent = n = 0.0
    # batches of similar lengths (little padding); small batches ran faster on CPU (1 thread: 16 rows 1.1 s, 32 rows
    # unsorted 1.6 s for 128 demonstrations)
    examples = sorted(examples, key=lambda e: len(e.input_ids))
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i : i + batch_size], pad_token_id).items()}
        mask = batch["loss_mask"][:, 1:]  # [B, T-1]: positions predicting a response token
        out = token_logprobs(
            model, batch["input_ids"], batch["attention_mask"], score_mask=mask, chunk_size=1024
        )
        nll -= float((out.logprobs * mask).sum())
        ent += float((out.entropy * mask).sum())
        n += float(mask.sum())
    model.train(was_training)
    return {"nll": nll / max(n, 1.0), "entropy": ent / max(n, 1.0)}


def profile_eval_config(profile: Any, **changes: Any) -> tuple[EvalConfig, dict[str, list[str]]]:
    """The profile's ``eval:`` section as an EvalConfig (plus ``changes``) and its task sets."""
    ev = dict(profile.data.get("eval") or {})
    task_sets = ev.pop("task_sets", {})
    for key in (
        "during_training",
        "task_set_runs",
        "allow_code_execution",
    ):  # the DAG's (rules/hub.smk), not a run's
        ev.pop(key, None)
    return dataclasses.replace(EvalConfig.from_dict(ev), **changes), task_sets


def make_training_evaluator(profile: Any, tokenizer: Any, scratch: str | Path | None = None):
    """``evaluator(model) -> {"<task>/<metric>": value}`` on the profile's in-training subset (``eval.during_training``:
    ``task_set``, ``limit`` problems per task, optional ``repeats``), for the training loop's ``eval.jsonl``.

    Backend: ``eval.during_training.backend``, default ``eval.backend``. ``hf`` evaluates the in-memory model;
    ``vllm`` (which reads checkpoint folders only) evaluates the current weights saved into a temporary folder under
    ``scratch`` by a child process (:func:`psftlib.eval.harness.evaluate_saved`), its engine taking
    ``eval.during_training.vllm_gpu_memory_utilization`` (default ``eval``'s) of the GPU beside training. The
    teacher-forced statistics use the in-memory model.

    With several processes, ``evaluator(model, state_dict)`` (on one rank: the caller gathers the weights on every
    rank, calls it on rank 0, and the others wait) saves ``state_dict`` (the whole model's weights) with ``model``'s
    config and the tokenizer into a temporary folder and evaluates it in a child process, whichever the backend; the
    teacher-forced statistics then use the saved weights."""
    during = profile.data["eval"]["during_training"]
    changes = {"limit": during.get("limit")}
    if during.get("repeats"):
        changes["repeats"] = during["repeats"]
    for key in ("backend", "vllm_gpu_memory_utilization"):
        if during.get(key) is not None:
            changes[key] = during[key]
    cfg, task_sets = profile_eval_config(profile, **changes)
    tasks = task_sets[during["task_set"]]
    folder = profile.layout.data
    scored: dict[str, list[Any]] = {}
    if during.get("teacher_forced") and (folder / "heldout.jsonl").exists():
        heldout = read_jsonl(folder / "heldout.jsonl")
        train_rows = read_jsonl(folder / "train.jsonl")[: len(heldout)]  # the same number of trained demos
        scored = {"heldout": encode_all(tokenizer, heldout)[0], "train": encode_all(tokenizer, train_rows)[0]}
        check_unknown_rate(tokenizer, (e.input_ids for e in scored["heldout"]), str(folder / "heldout.jsonl"))

    def scores_of(summary: dict[str, Any], model: Any) -> dict[str, float]:
        out = {f"{t}/{m}": v for t, scores in summary["scores"].items() for m, v in scores.items()
               if m in SCORE_KEYS}  # fmt: skip
        for name, examples in scored.items():
            stats = teacher_forced_stats(model, examples, tokenizer.pad_token_id)
            out.update({f"{name}_nll": stats["nll"], f"{name}_entropy": stats["entropy"]})
        return out

    def evaluator(model: Any, state_dict: dict[str, Any] | None = None) -> dict[str, float]:
        if state_dict is not None:  # several processes: the weights all ranks gathered, evaluated once
            with tempfile.TemporaryDirectory(prefix="psft-eval-", dir=scratch) as tmp:
                checkpoint = Path(tmp) / "checkpoint"
                save_pretrained_atomic(model, tokenizer, checkpoint, state_dict)
                summary = evaluate_in_child(checkpoint, tasks, cfg, folder, Path(tmp) / "eval")
                return scores_of(summary, load_checkpoint(checkpoint)[0] if scored else None)
        if cfg.backend == "vllm":
            summary = evaluate_saved(model, tokenizer, tasks, cfg, data_dir=folder, scratch=scratch)
        else:
            summary = evaluate(model, tasks, cfg, tokenizer=tokenizer, data_dir=folder)
        return scores_of(summary, model)

    return evaluator


def selection_score(scores: dict[str, float], in_domain_tasks: list[str]) -> float | None:
    """The checkpoint-selection rule of Table 1 (§4.1.2: "checkpoints selected by in-domain score"): the mean
    avg@k over the in-domain tasks of an in-training evaluation (``eval.jsonl`` row). The training loop keeps the
    checkpoint with the highest score, ties going to the later one (so the final checkpoint unless an earlier one
    is strictly better). None when the in-training subset has no in-domain task (no selection)."""
    values = [scores[f"{t}/avg_at_k"] for t in in_domain_tasks if f"{t}/avg_at_k" in scores]
    return float(sum(values) / len(values)) if values else None


def reuse_final_eval(
    checkpoint: str | Path, final_dir: str | Path, task_sets: list[str], out_dir: str | Path
) -> bool:
    """Write the evaluation of a selected checkpoint (``<run>/selected``) as a copy of the final checkpoint's,
    when ``<run>/selected.json`` says the selection *is* the final step; False (nothing written) otherwise.

    The two checkpoints then hold the same weights and the evaluation is seeded, so evaluating again would only
    reproduce the same samples byte for byte (checked on the mini profile) at the cost of a full evaluation.
    The copy names the selected checkpoint and says where it came from (``reused_from``).
    """
    info_path = Path(checkpoint).parent / "selected.json"
    if not info_path.exists():
        raise EvalError(f"{info_path}: missing; --reuse-final needs the run's selection record")
    info = read_json(info_path, "the run's selection record")
    if info.get("step") != info.get("final_step"):
        return False
    for name in task_sets:
        src, dst = Path(final_dir) / name, Path(out_dir) / name
        for suffix in (".json", ".samples.jsonl"):
            if not Path(f"{src}{suffix}").exists():
                raise EvalError(f"{src}{suffix}: missing; the final checkpoint's evaluation must run first")
        summary = read_json(f"{src}.json", "an evaluation summary")
        summary.update(checkpoint=str(checkpoint), reused_from=str(final_dir))
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(Path(f"{dst}.samples.jsonl"), "wb") as f:
            f.write(Path(f"{src}.samples.jsonl").read_bytes())
        with atomic_write(Path(f"{dst}.json")) as f:
            json.dump(summary, f, indent=2, default=str)
    return True


def curves_fingerprint(profile: Any, checkpoint: str | Path) -> dict[str, Any]:
    """What an in-training evaluation (:func:`make_training_evaluator`) of ``checkpoint`` depends on: its weights,
    the profile's ``eval`` section and the world's eval / demonstration files (SHA-256 of each)."""

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    folder = profile.layout.data
    weights = sorted(Path(checkpoint).glob("*.safetensors")) or sorted(Path(checkpoint).glob("*.bin"))
    if not weights:
        raise EvalError(f"{checkpoint}: no weights (*.safetensors / *.bin)")
    files = sorted([*folder.glob("eval_*.jsonl"), folder / "heldout.jsonl", folder / "train.jsonl"])
    return {
        "weights": {p.name: sha(p) for p in weights},
        "data": {p.name: sha(p) for p in files if p.exists()},
        "eval": profile.data.get("eval"),
    }


def write_initial_curves(profile: Any, checkpoint: str | Path, out: str | Path) -> dict[str, float]:
    """Evaluate ``checkpoint`` (a run's initial weights: the base model) on the in-training subset and write the
    scores with their :func:`curves_fingerprint` to ``out``. Every SFT-stage run of a profile starts from the same
    base and its step-0 evaluation is seeded, so each would compute exactly these scores (byte-identical rows in
    mini's ``eval.jsonl``): the runs read them instead (``psftlib.train.train_run(initial_curves=...)``)."""
    model, tokenizer = load_checkpoint(checkpoint)
    scores = make_training_evaluator(profile, tokenizer)(model)
    with atomic_write(Path(out)) as f:
        record = {"checkpoint": str(checkpoint), "fingerprint": curves_fingerprint(profile, checkpoint)}
        json.dump({**record, "scores": scores}, f, indent=2)
    return scores


def read_initial_curves(path: str | Path, profile: Any, checkpoint: str | Path) -> dict[str, float]:
    """The scores :func:`write_initial_curves` wrote, after checking they were made for these weights, this eval
    section and these data files; a mismatch is refused (the file is stale: rebuild it)."""
    path = Path(path)
    if not path.exists():
        raise EvalError(f"{path}: no such file (psftlib.eval --initial-curves writes it)")
    record = read_json(path, "the base model's in-training evaluation")
    if not isinstance(record, dict) or "scores" not in record:
        raise EvalError(f"{path}: no 'scores'; not written by psftlib.eval --initial-curves: rebuild it")
    if record.get("fingerprint") != curves_fingerprint(profile, checkpoint):
        raise EvalError(
            f"{path}: made for other weights, eval settings or data than {checkpoint} with profile "
            f"{profile.name}; rebuild it (psftlib.eval --initial-curves)"
        )
    return record["scores"]
