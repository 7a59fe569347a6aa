"""The evaluation harness: any checkpoint (or in-memory model) on a named task set, through lm-eval.

Everything goes through ``lm_eval.simple_evaluate`` with ``TaskManager(include_path=psftlib/eval/tasks)``: the small
world's tasks and our YAMLs for the paper's math benchmarks live there as data (YAML + JSONL); lm-eval's own
tasks (gpqa, arc_challenge, truthfulqa_mc1, mmlu_pro, ifeval, gsm8k, headqa_en, ...) are used by name when
``include_defaults`` is on (the paper profile). Sampling avg@k is lm-eval's ``repeats`` with all k responses
scored (``psftlib/eval/tasks/utils.py``); answers are checked by math-verify (``psftlib.eval.verify``).

Outputs, for ``out = results/eval/<profile>/<run>/<task_set>``::

    <out>.json            scores with standard errors, config, checkpoint, seed, wall time
    <out>.samples.jsonl   per problem: prompt, every sampled response, extracted answer, correct or not

Backends: ``hf`` (CPU or GPU, batched generation, in-memory models too) and ``vllm`` (GPU; a checkpoint
folder; dtype, tensor parallel size and memory fraction from config). vLLM is imported only when selected.
An in-memory model goes to vLLM through :func:`evaluate_saved`: its weights saved to a temporary folder, evaluated
in a child process (``python -m psftlib.eval.harness <request.json>``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from psftlib.data import atomic_write, read_jsonl
from psftlib.eval.multimodal import VisionModelError, image_lm
from psftlib.eval.task_index import task_manager
from psftlib.eval.verify import extract_answer, is_correct
from psftlib.worlds.build import load_checkpoint, save_pretrained_atomic

# lm-eval (and vLLM, when selected) are imported where they are used: `import psftlib.eval` stays light for the
# training loop, which only calls the harness when it evaluates
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

    for path in sorted(TASK_DIR.rglob("*.yaml")):  # images/: the image-text tasks
        data = load_yaml(path, resolve_func=False)
        if data.get("task") == name:
            return data, path
    return None, None


def check_task_data(path: Path, required: list[str]) -> int:
    """Refuse a missing, empty or malformed JSONL task file, naming the file and line. Returns the row count."""
    return len(read_jsonl(path, required=tuple(required)))


def task_spec(name: str, data_dir: Path | None = None, fixture: Path | None = None, cfg: EvalConfig | None = None,
              task_manager: Any = None):  # fmt: skip
    """An lm-eval task spec (name, or dict with overrides) for task ``name``.

    Local JSONL tasks have their ``data_files`` resolved against ``data_dir`` (the profile's data folder) and
    checked. ``fixture`` replaces a hub dataset by a local JSONL file of the same schema (tests, offline use).
    ``cfg.repeats`` applies to our tasks and to lm-eval's own generative tasks (their YAML in ``task_manager``'s
    index), not to lm-eval's groups (their subtasks keep their own) nor to its log-likelihood tasks (one answer).
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
    from lm_eval.tasks._yaml_loader import load_yaml

    if raw is None and (yaml_path := _generative_yaml(name, task_manager)) is None:
        return name
    # an inline dict replaces, not updates, a registered config (lm-eval 0.4.13): the whole YAML + overrides
    return {**load_yaml(yaml_path, resolve_func=True), **overrides}


def _generative_yaml(name: str, task_manager: Any) -> Path | None:
    """The YAML of lm-eval's own task ``name`` when it is one generative task (not a group, tag or Python task)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = task_manager.task_index.get(name) if task_manager is not None else None
    if entry is None or entry.kind.name != "TASK" or entry.yaml_path is None:
        return None
    own = load_yaml(entry.yaml_path, resolve_func=False)
    return entry.yaml_path if own.get("output_type") == "generate_until" else None


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
            raise EvalError(
                "eval backend 'vllm' evaluates a saved checkpoint folder, not an in-memory model "
                "(evaluate_saved saves one and evaluates it in a child process)"
            )
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=str(model), dtype=cfg.vllm_dtype, tensor_parallel_size=cfg.vllm_tensor_parallel_size,
                    gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, seed=cfg.seed,
                    batch_size="auto")  # fmt: skip
    from lm_eval.models.huggingface import HFLM

    if isinstance(model, (str, Path)):
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


def evaluate(model: Any, tasks: list[str], cfg: EvalConfig | None = None, tokenizer: Any = None,
             data_dir: str | Path | None = None, out: str | Path | None = None, fixtures: dict[str, Path] | None = None,
             checkpoint: str | None = None, processor: Any = None) -> dict[str, Any]:  # fmt: skip
    """Evaluate ``model`` (checkpoint folder or in-memory model + ``tokenizer``) on ``tasks``; image-text tasks through
    :func:`psftlib.eval.multimodal.image_lm` (a VLM's ``processor``: by default the checkpoint's).

    Returns ``{"scores": {task: {metric: value, metric_stderr: value, "n": problems, "k": samples}}, ...}`` and,
    if ``out`` is given, writes ``<out>.json`` and ``<out>.samples.jsonl`` atomically.
    """
    import lm_eval

    cfg = cfg or EvalConfig()
    started = time.perf_counter()
    _skip_env_info()
    own = [t for t in tasks if task_yaml(t)[0] is None] if cfg.include_defaults else []  # lm-eval's own tasks
    tm = task_manager(TASK_DIR, own)  # their folders of lm-eval's index only (psftlib.eval.task_index)
    specs = [task_spec(t, Path(data_dir) if data_dir else None, (fixtures or {}).get(t), cfg, tm)
             for t in tasks]  # fmt: skip
    was_training = getattr(model, "training", None)  # HFLM puts an in-memory model in eval mode
    try:  # a set of image-text tasks: lm-eval's multimodal backend (a set mixing both is refused)
        lm = image_lm(model, cfg, tasks, specs, tm, processor, checkpoint) or _lm(model, tokenizer, cfg)
    except VisionModelError as err:
        raise EvalError(str(err)) from None
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
    # lm-eval returns the results on local rank 0 only; another rank ran the same evaluation (an in-memory model
    # under accelerate launch: every rank's forward)
    if res is None:
        return {"tasks": tasks, "scores": {}}
    samples, scores = _samples_and_scores(res)
    summary = {
        "tasks": tasks,
        "scores": scores,
        "checkpoint": checkpoint or (str(model) if isinstance(model, (str, Path)) else None),
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "generation": {t: res["configs"][t].get("generation_kwargs") for t in res.get("configs", {})},
        "lm_eval_metrics": {r["task"]: r["metric"] for r in samples if "metric" in r},  # lm-eval's own tasks
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


def evaluate_saved(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    cfg: EvalConfig,
    data_dir: str | Path | None = None,
    scratch: str | Path | None = None,
) -> dict[str, Any]:
    """:func:`evaluate`'s summary of an in-memory ``model`` through a backend that reads checkpoint folders (vLLM):
    its current weights are saved into a temporary folder (under ``scratch``; default the system's, ``TMPDIR``) and
    evaluated in a child Python process, then the folder is removed.

    A child, not this process: a vLLM engine built inside a training process would share its CUDA context, its
    torch.distributed state and the parallel groups of TRL's colocated rollout engine, and would keep its GPU memory
    after use; the child's engine takes ``cfg.vllm_gpu_memory_utilization`` of the GPU beside the training state and
    gives everything back when it exits. A sharded model (FSDP, DeepSpeed ZeRO-3) is refused, not saved in pieces:
    with several processes, every rank gathers the weights and one saves them
    (:func:`psftlib.eval.training.make_training_evaluator`'s ``state_dict``).
    """
    if is_sharded(model):
        raise EvalError(
            f"in-training evaluation through a saved checkpoint ({cfg.backend} backend): the model's weights are "
            "sharded over processes; gather them first (every rank) and pass the whole state dict"
        )
    with tempfile.TemporaryDirectory(prefix="psft-eval-", dir=scratch) as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        save_pretrained_atomic(model, tokenizer, checkpoint)
        return evaluate_in_child(checkpoint, tasks, cfg, data_dir, Path(tmp) / "eval")


def is_sharded(model: Any) -> bool:
    """Whether ``model``'s parameters are shards of a model spread over processes (FSDP2's DTensors, FSDP1's flat
    parameters, DeepSpeed ZeRO-3's partitioned ones), so that it cannot be saved or run whole in one process."""
    if type(model).__name__ == "FullyShardedDataParallel":
        return True
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed support
        DTensor = ()
    return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in model.parameters())


# what ``torchrun`` / ``accelerate launch`` set for the processes of one job (a child evaluation is not one of them)
_LAUNCH_VARS = frozenset({"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                          "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
                          "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"})  # fmt: skip


def evaluate_in_child(
    checkpoint: Path, tasks: list[str], cfg: EvalConfig, data_dir: str | Path | None, out: Path
) -> dict[str, Any]:
    """:func:`evaluate` of the ``checkpoint`` folder in a child Python process; its summary (``<out>.json``)."""
    request = out.with_suffix(".request.json")
    request.parent.mkdir(parents=True, exist_ok=True)
    request.write_text(json.dumps({"checkpoint": str(checkpoint), "tasks": tasks, "config": dataclasses.asdict(cfg),
                                   "data_dir": str(data_dir) if data_dir else None, "out": str(out)}))  # fmt: skip
    # the child is a single process: without the launcher's variables (RANK, MASTER_PORT ...) lm-eval's or vLLM's
    # own distributed setup would join, or wait for, the training job's process group
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS and not k.startswith("TORCHELASTIC_")}
    done = subprocess.run([sys.executable, "-m", "psftlib.eval.harness", str(request)], check=False, env=env)
    if done.returncode:
        raise EvalError(
            f"evaluation of {checkpoint} ({cfg.backend} backend) in a child process failed with exit code "
            f"{done.returncode}; its error is in the log above"
        )
    return json.loads(out.with_suffix(".json").read_text())


def _evaluate_request(path: str) -> None:
    """The child process of :func:`evaluate_in_child`: evaluate what the request file names, write ``<out>.json``."""
    request = json.loads(Path(path).read_text())
    evaluate(request["checkpoint"], request["tasks"], EvalConfig.from_dict(request["config"]),
             data_dir=request["data_dir"], out=request["out"])  # fmt: skip


def _samples_and_scores(res: dict[str, Any]) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Per-sample rows (responses re-scored by the same functions) and per-task scores with standard errors."""
    rows, scores = [], {}
    for task, entries in res.get("samples", {}).items():
        if not any(m in s for s in entries for m in SCORE_KEYS):  # lm-eval's own task: its metric, not ours
            rows_of, scores[task] = _lm_eval_scores(task, entries, res.get("configs", {}).get(task, {}))
            rows += rows_of
            continue
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


def lm_eval_metric(config: dict[str, Any]) -> tuple[str, str]:
    """(metric, filter) that scores lm-eval's own task of ``config``: the first of its ``metric_list`` under the first
    of its ``filter_list`` (lm-eval's reported first: gsm8k_cot's ``exact_match,strict-match``, arc's ``acc,none``)."""
    metrics = [m["metric"] for m in config.get("metric_list") or [] if isinstance(m.get("metric"), str)]
    filters = [f["name"] for f in config.get("filter_list") or []] or ["none"]
    return (metrics[0] if metrics else ""), filters[0]


def _lm_eval_scores(
    task: str, entries: list[dict], config: dict[str, Any]
) -> tuple[list[dict], dict[str, Any]]:
    """Rows and scores of lm-eval's own task: per problem its :func:`lm_eval_metric` (0-1), as ``avg_at_k`` with
    ``k = 1`` (lm-eval's filters score the first response; a log-likelihood task has one answer), so the tables read
    it as our tasks' avg@k. A task whose samples lack that metric is an error naming both."""
    metric, filt = lm_eval_metric(config)
    picked = [s for s in entries if s.get("filter") == filt]
    if not picked or any(metric not in s for s in picked):
        raise EvalError(f"task {task}: no per-sample {metric!r} under filter {filt!r} in lm-eval's samples")
    values = [float(s[metric]) for s in picked]
    rows = [{"task": task, "doc_id": s["doc_id"], "prompt": s["arguments"][0][0], "target": str(s.get("target", "")),
             "filtered": s.get("filtered_resps"), "metric": f"{metric},{filt}", "avg_at_k": v}
            for s, v in zip(picked, values, strict=True)]  # fmt: skip
    n, mean = len(values), sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return rows, {"n": n, "k": 1, "avg_at_k": mean, "avg_at_k_stderr": math.sqrt(var / n)}


if __name__ == "__main__":  # the child process of evaluate_in_child
    _evaluate_request(sys.argv[1])
