"""The evaluation harness: any checkpoint (or in-memory model) on a named task set, through lm-eval.

Everything goes through ``lm_eval.simple_evaluate`` with ``TaskManager(include_path=psftlib/tasks)``: the small
world's tasks and our YAMLs for the paper's math benchmarks live there as data (YAML + JSONL); lm-eval's own
tasks (gpqa, arc_challenge, truthfulqa_mc1, mmlu_pro, ifeval, gsm8k, headqa_en, ...) are used by name when
``include_defaults`` is on (the paper profile). Sampling avg@k is lm-eval's ``repeats`` with all k responses
scored (``psftlib/tasks/utils.py``); answers are checked by math-verify (``psftlib.verify``).

Outputs, for ``out = results/eval/<profile>/<run>/<task_set>``::

    <out>.json            scores with standard errors, config, checkpoint, seed, wall time
    <out>.samples.jsonl   per problem: prompt, every sampled response, extracted answer, correct or not

Backends: ``hf`` (CPU or GPU, batched generation, in-memory models too) and ``vllm`` (GPU; a checkpoint
folder; dtype, tensor parallel size and memory fraction from config). vLLM is imported only when selected.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch

from psftlib.data import atomic_write, read_jsonl
from psftlib.verify import extract_answer, is_correct

TASK_DIR = Path(__file__).resolve().parent / "tasks"
SCORE_KEYS = ("avg_at_k", "pass_at_k", "maj_at_k")


class EvalError(RuntimeError):
    """A bad task, task data or backend, with the task, file or package named."""


@dataclasses.dataclass
class EvalConfig:
    """How to evaluate. The task YAML sets the defaults; these override them for every task of a set."""

    backend: str = "hf"  # "hf" | "vllm"
    batch_size: int = 16  # fixed: with sampling, the batch make-up changes the random stream
    repeats: int | None = None  # k of avg@k; None: the task's own
    temperature: float | None = None  # None: the task's own (paper: 0.7)
    top_p: float | None = None  # None: the task's own (paper: 0.95)
    max_gen_toks: int | None = None  # None: the task's own (paper: 10,240; IFEval 4,096)
    do_sample: bool | None = None  # False: greedy
    seed: int = 0
    limit: int | None = None  # first n problems of each task (in-training evals)
    system_instruction: str | None = None
    apply_chat_template: bool = True
    max_length: int | None = None  # context length for HF (default: the model's max_position_embeddings)
    include_defaults: bool = False  # also index lm-eval's own tasks (slow: ~13 s; needed for the paper's)
    vllm_dtype: str = "bfloat16"
    vllm_tensor_parallel_size: int = 1
    vllm_gpu_memory_utilization: float = 0.85

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvalConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EvalError(f"eval config: unknown key(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**values)
        if cfg.backend not in ("hf", "vllm"):
            raise EvalError(f"eval config: backend {cfg.backend!r} is not 'hf' or 'vllm'")
        return cfg


# ---- tasks ----------------------------------------------------------------------------------------------------


def task_yaml(name: str) -> tuple[dict[str, Any], Path] | tuple[None, None]:
    """The YAML of one of our tasks (``!function`` tags unresolved) and its path, or (None, None)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for path in sorted(TASK_DIR.glob("*.yaml")):
        data = load_yaml(path, resolve_func=False)
        if data.get("task") == name:
            return data, path
    return None, None


def check_task_data(path: Path, required: list[str]) -> int:
    """Refuse a missing, empty or malformed JSONL task file, naming the file and line. Returns the row count."""
    return len(read_jsonl(path, required=tuple(required)))


def task_spec(
    name: str, data_dir: Path | None = None, fixture: Path | None = None, cfg: EvalConfig | None = None
):
    """An lm-eval task spec (name, or dict with overrides) for task ``name``.

    Local JSONL tasks have their ``data_files`` resolved against ``data_dir`` (the profile's data folder) and
    checked. ``fixture`` replaces a hub dataset by a local JSONL file of the same schema (tests, offline use).
    """
    raw, yaml_path = task_yaml(name)
    overrides: dict[str, Any] = {}
    if raw is not None:
        required = (raw.get("metadata") or {}).get("required_fields", [])
        split = raw.get("test_split", "test")
        if fixture is not None:
            check_task_data(Path(fixture), required)
            overrides.update(dataset_path="json", dataset_name=None,
                             dataset_kwargs={"data_files": {split: str(Path(fixture).resolve())}})  # fmt: skip
        elif raw.get("dataset_path") == "json":
            files = (raw.get("dataset_kwargs") or {}).get("data_files", {})
            if data_dir is None:
                raise EvalError(
                    f"task {name}: local data ({files}) needs the profile's data folder (data_dir)"
                )
            resolved = {}
            for split_name, rel in files.items():
                path = (Path(data_dir) / rel).resolve()
                check_task_data(path, required)
                resolved[split_name] = str(path)
            overrides["dataset_kwargs"] = {"data_files": resolved}
    elif fixture is not None:
        raise EvalError(f"task {name}: a fixture can replace the data of psftlib's own tasks only")
    if cfg is not None and cfg.repeats is not None:
        overrides["repeats"] = cfg.repeats
    if not overrides:
        return name
    if raw is None:
        return {
            "task": name,
            **overrides,
        }  # lm-eval's own task: it merges overrides into its registered config
    # an inline dict replaces (not updates) the registered config, so give lm-eval the whole YAML + overrides
    from lm_eval.tasks._yaml_loader import load_yaml

    return {**load_yaml(yaml_path, resolve_func=True), **overrides}


# ---- backends -------------------------------------------------------------------------------------------------


def _lm(model: Any, tokenizer: Any, cfg: EvalConfig):
    if cfg.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise EvalError(
                "eval backend 'vllm' needs the vllm package, which is not installed (it has no CPU build). "
                "Install the GPU lock (requirements-gpu.lock) on a GPU machine, or set eval.backend: hf."
            ) from None
        if not isinstance(model, (str, Path)):
            raise EvalError("eval backend 'vllm' evaluates a saved checkpoint folder, not an in-memory model")
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=str(model), dtype=cfg.vllm_dtype, tensor_parallel_size=cfg.vllm_tensor_parallel_size,
                    gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, seed=cfg.seed,
                    batch_size="auto")  # fmt: skip
    from lm_eval.models.huggingface import HFLM

    if isinstance(model, (str, Path)):
        from psftlib.world import load_checkpoint

        try:
            model, loaded = load_checkpoint(model)
        except FileNotFoundError as err:
            raise EvalError(str(err)) from None
        tokenizer = tokenizer or loaded
        if torch.cuda.is_available():
            model.to("cuda")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    kw = {"max_length": cfg.max_length} if cfg.max_length else {}
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, **kw)


# ---- evaluate -------------------------------------------------------------------------------------------------


def _gen_kwargs(cfg: EvalConfig) -> dict[str, Any] | None:
    kw = {k: v for k, v in (("temperature", cfg.temperature), ("top_p", cfg.top_p),
                            ("max_gen_toks", cfg.max_gen_toks), ("do_sample", cfg.do_sample)) if v is not None}  # fmt: skip
    return kw or None


def _skip_env_info() -> None:
    """lm-eval records the environment on every ``simple_evaluate`` call through torch's ``collect_env``, which runs
    a dozen subprocesses (~1.1 s per process on our CPU, paid by every training and evaluation job). Our summaries
    never keep that record (the report's provenance lists the package versions), so it is not collected."""
    import lm_eval.evaluator as ev

    ev.add_env_info = lambda storage: None


def evaluate(
    model: Any,
    tasks: list[str],
    cfg: EvalConfig | None = None,
    tokenizer: Any = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    fixtures: dict[str, Path] | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (checkpoint folder or in-memory model + ``tokenizer``) on ``tasks``.

    Returns ``{"scores": {task: {metric: value, metric_stderr: value, "n": problems, "k": samples}}, ...}`` and,
    if ``out`` is given, writes ``<out>.json`` and ``<out>.samples.jsonl`` atomically.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    cfg = cfg or EvalConfig()
    started = time.perf_counter()
    _skip_env_info()
    specs = [task_spec(t, Path(data_dir) if data_dir else None, (fixtures or {}).get(t), cfg) for t in tasks]
    was_training = getattr(model, "training", None)  # HFLM puts an in-memory model in eval mode
    lm = _lm(model, tokenizer, cfg)
    tm = TaskManager(include_path=str(TASK_DIR), include_defaults=cfg.include_defaults)
    rng = (random.getstate(), torch.get_rng_state())  # lm-eval reseeds the global RNGs; give them back after
    try:
        res = lm_eval.simple_evaluate(
            model=lm, tasks=specs, task_manager=tm, apply_chat_template=cfg.apply_chat_template,
            system_instruction=cfg.system_instruction, gen_kwargs=_gen_kwargs(cfg), limit=cfg.limit,
            log_samples=True, bootstrap_iters=0, random_seed=cfg.seed, numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed, verbosity="ERROR",
        )  # fmt: skip
    finally:
        random.setstate(rng[0])
        torch.set_rng_state(rng[1])
    if was_training is not None:
        model.train(was_training)
    samples, scores = _samples_and_scores(res)
    summary = {
        "tasks": tasks,
        "scores": scores,
        "checkpoint": checkpoint or (str(model) if isinstance(model, (str, Path)) else None),
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "generation": {t: res["configs"][t].get("generation_kwargs") for t in res.get("configs", {})},
        "lm_eval_version": res.get("lm_eval_version"),
        "wall_s": time.perf_counter() - started,
    }
    if out is not None:
        out = Path(out)
        with atomic_write(out.with_suffix(".json")) as f:
            json.dump(summary, f, indent=2, default=str)
        with atomic_write(out.with_suffix(".samples.jsonl")) as f:
            for row in samples:
                f.write(json.dumps(row, default=str) + "\n")
    return summary


def _samples_and_scores(res: dict[str, Any]) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Per-sample rows (responses re-scored by the same functions) and per-task scores with standard errors."""
    rows, scores = [], {}
    for task, entries in res.get("samples", {}).items():
        per_metric: dict[str, list[float]] = {}
        k = 0
        for s in entries:
            if s.get("filter") not in ("all", "none"):
                continue
            responses = s["resps"][0] if s["resps"] else []
            k = max(k, len(responses))
            gold = str(s.get("target", ""))
            extracted = [extract_answer(r) for r in responses]
            rows.append({
                "task": task, "doc_id": s["doc_id"], "id": s["doc"].get("id"), "prompt": s["arguments"][0][0],
                "target": gold,
                "samples": [{"response": r, "extracted": e, "correct": is_correct(e, gold)}
                            for r, e in zip(responses, extracted, strict=True)],
                **{m: s[m] for m in SCORE_KEYS if m in s},
            })  # fmt: skip
            for m in SCORE_KEYS:
                if m in s:
                    per_metric.setdefault(m, []).append(float(s[m]))
        task_scores: dict[str, float] = {"n": len(next(iter(per_metric.values()), [])), "k": k}
        for m, values in per_metric.items():
            n = len(values)
            mean = sum(values) / n
            var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
            task_scores[m] = mean
            task_scores[f"{m}_stderr"] = math.sqrt(var / n)
        scores[task] = task_scores
    return rows, scores


@torch.no_grad()
def teacher_forced_stats(
    model: Any, examples: list[Any], pad_token_id: int, batch_size: int = 16
) -> dict[str, float]:
    """Mean NLL and entropy of the policy on the response tokens of ``examples`` (teacher forcing).

    The train-minus-held-out NLL gap measures memorisation; entropy on held-out text is Figure 1's quantity on
    text the model never trained on. The model's train/eval mode is restored.
    """
    from psftlib.data import collate
    from psftlib.logprobs import token_logprobs

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
    ev.pop("during_training", None)
    return dataclasses.replace(EvalConfig.from_dict(ev), **changes), task_sets


def make_training_evaluator(profile: Any, tokenizer: Any):
    """``evaluator(model) -> {"<task>/<metric>": value}`` on the profile's in-training subset (``eval.during_training``:
    ``task_set``, ``limit`` problems per task, optional ``repeats``), for the training loop's ``eval.jsonl``."""
    from psftlib.train import data_dir

    during = profile.data["eval"]["during_training"]
    changes = {"limit": during.get("limit")}
    if during.get("repeats"):
        changes["repeats"] = during["repeats"]
    cfg, task_sets = profile_eval_config(profile, **changes)
    tasks = task_sets[during["task_set"]]
    folder = data_dir(profile.name)
    scored: dict[str, list[Any]] = {}
    if during.get("teacher_forced") and (folder / "heldout.jsonl").exists():
        from psftlib.data import encode_all

        heldout = read_jsonl(folder / "heldout.jsonl")
        train_rows = read_jsonl(folder / "train.jsonl")[: len(heldout)]  # the same number of trained demos
        scored = {"heldout": encode_all(tokenizer, heldout)[0], "train": encode_all(tokenizer, train_rows)[0]}

    def evaluator(model: Any) -> dict[str, float]:
        summary = evaluate(model, tasks, cfg, tokenizer=tokenizer, data_dir=folder)
        out = {f"{t}/{m}": v for t, scores in summary["scores"].items() for m, v in scores.items()
               if m in SCORE_KEYS}  # fmt: skip
        for name, examples in scored.items():
            stats = teacher_forced_stats(model, examples, tokenizer.pad_token_id)
            out.update({f"{name}_nll": stats["nll"], f"{name}_entropy": stats["entropy"]})
        return out

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
    info = json.loads(info_path.read_text())
    if info.get("step") != info.get("final_step"):
        return False
    for name in task_sets:
        src, dst = Path(final_dir) / name, Path(out_dir) / name
        for suffix in (".json", ".samples.jsonl"):
            if not Path(f"{src}{suffix}").exists():
                raise EvalError(f"{src}{suffix}: missing; the final checkpoint's evaluation must run first")
        summary = json.loads(Path(f"{src}.json").read_text())
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
    import hashlib

    from psftlib.train import data_dir

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    folder = data_dir(profile.name)
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
    from psftlib.world import load_checkpoint

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
    record = json.loads(path.read_text())
    if record.get("fingerprint") != curves_fingerprint(profile, checkpoint):
        raise EvalError(
            f"{path}: made for other weights, eval settings or data than {checkpoint} with profile "
            f"{profile.name}; rebuild it (psftlib.eval --initial-curves)"
        )
    return record["scores"]


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on task sets of a profile.")
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--checkpoint", required=True, help="a Hugging Face checkpoint folder")
    parser.add_argument("--task-sets", nargs="+", help="names under eval.task_sets in the profile")
    parser.add_argument("--out-dir", help="writes <out-dir>/<task set>.json and .samples.jsonl")
    parser.add_argument(
        "--initial-curves",
        default=None,
        metavar="PATH",
        help="instead: evaluate the in-training subset (eval.during_training) and write it to PATH, the step-0 "
        "point every run from this checkpoint (the base model) reads instead of evaluating it again",
    )
    parser.add_argument(
        "--reuse-final",
        default=None,
        metavar="DIR",
        help="for a run's selected checkpoint: if its selected.json names the final step, copy the final "
        "checkpoint's evaluation from DIR instead of running it again (same weights, same seed)",
    )
    args = parser.parse_args(argv)
    if args.initial_curves:
        from psftlib.config import load_profile
        from psftlib.train import set_threads

        prof = load_profile(args.profile)
        set_threads(prof["threads"])
        write_initial_curves(prof, args.checkpoint, args.initial_curves)
        return
    if not (args.task_sets and args.out_dir):
        parser.error("--task-sets and --out-dir are required (or --initial-curves PATH)")
    if args.reuse_final and reuse_final_eval(args.checkpoint, args.reuse_final, args.task_sets, args.out_dir):
        print(f"{args.checkpoint} is the final checkpoint: copied its evaluation from {args.reuse_final}")
        return
    from psftlib.config import load_profile
    from psftlib.train import data_dir, set_threads

    prof = load_profile(args.profile)
    set_threads(prof["threads"])
    cfg, task_sets = profile_eval_config(prof)
    for name in args.task_sets:
        if name not in task_sets:
            raise EvalError(f"{prof.path}: eval.task_sets.{name}: no such task set; have {sorted(task_sets)}")
    from psftlib.world import load_checkpoint

    model, tokenizer = load_checkpoint(args.checkpoint)  # once for every task set: one process, one load
    data = data_dir(prof.name)
    for name in args.task_sets:
        out = Path(args.out_dir) / name
        evaluate(
            model,
            task_sets[name],
            cfg,
            tokenizer=tokenizer,
            data_dir=data,
            out=out,
            checkpoint=args.checkpoint,
        )


if __name__ == "__main__":
    main()
