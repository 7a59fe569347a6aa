"""GPU-hours of the paper DAG on paper scale (issue 21, item 7): every rule instance of ``config/paper.yaml``
(train per run, grpo / dpo per cold start, eval per (run, task set), judge per judged run), estimated from a GPU
check's measured tokens/s (``benchmarks/gpu_check.py`` -> ``benchmarks/results/<date>_<device>.json``).

    python benchmarks/gpu_hours.py                       # the newest GPU result under benchmarks/results/
    python benchmarks/gpu_hours.py --benchmark benchmarks/results/2026-12-01_NVIDIA-H200.json

Each row: tokens processed / (measured tokens/s on one GPU, scaled to the run's model) / 3600 = GPU-hours. How:

- **training** (train, the update half of GRPO, DPO): the check's ``sft`` row for objectives without a second
  model (SFT, DFT), its ``psft`` row (one extra no-grad forward per mini batch, measured) for those with one (PSFT,
  SFT-KL, iw-SFT; GRPO's old policy; DPO's reference);
- **generation** (eval, GRPO rollouts, the judge, Figure 3's in-training curves): the check's generation test
  (vLLM tokens/s if it ran, else HF ``generate``); without one the row says "needs a generation throughput";
- **model size**: tokens/s scaled by the ratio of FLOPs per token, 6N (decoding: 2N; the same ratio), N the matmul
  parameters (:data:`MODELS`, from each model's config.json; checked against its model card's total in the tests);
  attention FLOPs (12·L·H·T per token) are left out on both sides;
- **GPUs**: the benchmark measures one GPU; a rule's G GPUs (``paper.resources``) are taken to scale linearly, an
  upper bound of efficiency: wall = GPU-hours / G. Figure 3's curves are evaluated on rank 0 while the other
  ranks wait, so they cost G × their generation time;
- **tokens**: measured from ``results/data/paper/<dataset>.jsonl`` when the world rule has written it (the
  dataset's tokenizer when it loads, else bytes / 4), else the named assumptions of :data:`ASSUMED_DATA`; generated
  tokens = prompts x samples x half the maximum length; prompt prefill and multiple-choice (log-likelihood)
  tasks are not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from psftlib.config import Profile, load_profile  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TASK_DIR = ROOT / "psftlib" / "eval" / "tasks"
BYTES_PER_TOKEN = 4  # English / math text with the Qwen and Llama BPE vocabularies: ~4 bytes per token


@dataclass(frozen=True)
class Arch:
    """A model's shape (config.json); ``experts`` > 0: a mixture of experts, ``active`` of them per token."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    card_total: float  # total parameters the model card states (a test checks the shape against it)
    source: str
    experts: int = 0
    active: int = 0


MODELS: dict[str, Arch] = {  # paper.models roles
    # huggingface.co/Qwen/Qwen2.5-7B-Instruct: card "7.61B, non-embedding 6.53B"; config.json hidden 3584, 28 layers,
    # 28 / 4 heads, intermediate 18944, vocab 152064, tie_word_embeddings false
    "qwen25_7b": Arch(3584, 28, 28, 4, 128, 18944, 152064, False, 7.61e9, "Qwen2.5-7B-Instruct card / config.json"),
    # huggingface.co/meta-llama/Llama-3.1-8B-Instruct: 8.03B (the hub's safetensors count; card "8B"); config.json
    # hidden 4096, 32 layers, 32 / 8 heads, intermediate 14336, vocab 128256, untied
    "llama31_8b": Arch(4096, 32, 32, 8, 128, 14336, 128256, False, 8.03e9, "Llama-3.1-8B-Instruct config.json"),
    # huggingface.co/Qwen/Qwen3-4B-Base: card "4.0B, non-embedding 3.6B"; hidden 2560, 36 layers, 32 / 8 heads of 128,
    # intermediate 9728, vocab 151936, tied embeddings
    "qwen3_4b_base": Arch(2560, 36, 32, 8, 128, 9728, 151936, True, 4.0e9, "Qwen3-4B-Base card / config.json"),
    # huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct: its language model has Qwen2.5-7B's shape (config.json); the ~0.67B
    # vision tower is frozen and runs on image tokens only (Geometry-3k's GRPO prompts): not counted
    "qwen25_vl_7b": Arch(3584, 28, 28, 4, 128, 18944, 152064, False, 7.61e9, "Qwen2.5-VL-7B-Instruct config.json "
                         "(language model; card 8.29B with the vision tower)"),
    # huggingface.co/Qwen/Qwen3-30B-A3B-Instruct-2507: card "30.5B in total, 3.3B activated, non-embedding 29.9B";
    # hidden 2048, 48 layers, 32 / 4 heads of 128, 128 experts of intermediate 768, 8 per token, vocab 151936, untied.
    # FLOPs count the 8 active experts: ~3.0B matmul parameters per token (the card's 3.3B less the embedding lookup)
    "qwen3_30b_a3b": Arch(2048, 48, 32, 4, 128, 768, 151936, False, 30.5e9, "Qwen3-30B-A3B-Instruct-2507 card / "
                          "config.json (active 8 of 128 experts for FLOPs)", experts=128, active=8),
}  # fmt: skip

# Datasets before the world rule has loaded them: (examples, mean tokens per example, where the numbers come from).
# Sequence = system + prompt + response; for preference pairs prompt + chosen + prompt + rejected.
ASSUMED_DATA: dict[str, tuple[int, int, str]] = {
    "openr1_math_8192": (46_000, 4096, "46k: the public OpenR1-Math <= 8,192-token subset the paper's name follows "
                         "(LUFFY's Openr1-Math-46k-8192; the paper states no count); mean: half the 8,192 cutoff"),
    "openr1_math_4096": (23_000, 2048, "not stated: half the <= 8,192 set's 46k; mean: half the 4,096 cutoff"),
    "openr1_code_8192": (13_000, 4096, "13k: App. C.6 ('composing the 13k dataset'); mean: half the 8,192 cutoff"),
    "ultrafeedback_sft": (61_135, 553, "61,135 train_prefs rows (ultrafeedback_binarized card); 405,688,662 bytes "
                          "/ 61,135 rows hold 4 prompts + 2 chosen + 1 rejected: prompt + chosen <= 2,212 bytes / 4"),
    "ultrafeedback_prefs": (61_135, 1106, "61,135 pairs (same card); 2 x (prompt + response) = 2 x 553 tokens"),
}  # fmt: skip

# Final-evaluation tasks: (prompts, "gen" | "mc", source). Repeats come from our task YAMLs (else 1).
TASKS: dict[str, tuple[int, str, str]] = {
    "paper_aime24": (30, "gen", "AIME 2024"), "paper_aime25": (30, "gen", "AIME 2025"),
    "paper_amc": (83, "gen", "AI-MO/aimo-validation-amc"), "paper_math500": (500, "gen", "MATH-500"),
    "paper_minerva": (272, "gen", "math-ai/minervamath"), "paper_olympiadbench": (675, "gen", "OE_TO_maths_en_COMP"),
    "paper_supergpqa": (26_529, "gen", "m-a-p/SuperGPQA train"), "paper_livecodebench": (1_055, "gen", "LCB v6"),
    "gpqa_diamond_cot_zeroshot": (198, "gen", "GPQA diamond"), "gpqa_main_cot_n_shot": (448, "gen", "GPQA main"),
    "mmlu_pro": (12_032, "gen", "MMLU-Pro test"), "ifeval": (541, "gen", "IFEval"), "gsm8k_cot": (1_319, "gen", "GSM8K"),
    "mmlu_flan_n_shot_generative": (14_042, "gen", "MMLU test"), "mmlu": (14_042, "mc", "MMLU test"),
    "arc_challenge": (1_172, "mc", "ARC-C test"), "truthfulqa_mc1": (817, "mc", "TruthfulQA"),
    "headqa_en": (2_742, "mc", "HEAD-QA test"), "cmmlu": (11_582, "mc", "CMMLU test"),
    "paper_geo3k": (601, "gen", "Geometry3K test"), "paper_mathverse": (3_940, "gen", "MathVerse testmini, 5 versions"),
    "paper_mathvista": (1_000, "gen", "MathVista testmini"), "paper_mmmu": (900, "gen", "MMMU validation"),
    "paper_mmmu_pro": (1_730, "gen", "MMMU-Pro standard (10 options)"),
}  # fmt: skip
MAX_GEN = {"ifeval": 4096}  # §4.1: "10,240 tokens (4,096 for IFEval)"
# Table 3's judge benchmarks: (questions, answers per question, judgments per question); paper.yaml's comments
JUDGE_SIZES = {"mt_bench": (80, 2, 2), "alpaca_eval": (805, 1, 1), "arena_hard": (500, 1, 2)}


class BenchmarkError(Exception):
    """The benchmark JSON is missing, unreadable or no GPU result."""


@dataclass
class Row:
    rule: str
    instance: str
    model: str
    tokens: float
    source: str  # where the throughput comes from
    gpus: int
    hours: float | None  # GPU-hours; None: no throughput for it
    note: str = ""


def matmul_params(a: Arch) -> float:
    """Parameters in matmuls per token: attention, MLP (active experts and router), the LM head (an untied input
    embedding is a lookup, not counted)."""
    attn = a.hidden * a.heads * a.head_dim * 2 + a.hidden * a.kv_heads * a.head_dim * 2
    mlp = 3 * a.hidden * a.intermediate * (a.active or 1) + a.hidden * a.experts
    return a.layers * (attn + mlp) + a.vocab * a.hidden


def total_params(a: Arch) -> float:
    """All parameters (every expert, embedding and head), for the check against the model card."""
    attn = a.hidden * a.heads * a.head_dim * 2 + a.hidden * a.kv_heads * a.head_dim * 2
    mlp = 3 * a.hidden * a.intermediate * (a.experts or 1) + a.hidden * a.experts
    return a.layers * (attn + mlp) + a.vocab * a.hidden * (1 if a.tied else 2)


def bench_params(shape: dict[str, int]) -> float:
    """The GPU check's Qwen2 (tied embeddings, head dim hidden / heads)."""
    hd = shape["hidden"] // shape["heads"]
    arch = Arch(shape["hidden"], shape["layers"], shape["heads"], shape["kv_heads"], hd, shape["intermediate"],
                shape["vocab"], True, 0.0, "benchmark")  # fmt: skip
    return matmul_params(arch)


def newest_gpu_benchmark(folder: Path | None = None) -> Path:
    """The newest ``*.json`` in ``folder`` (default ``benchmarks/results``) with ``"gpu_result": true`` (by name:
    ``<date>_<device>``)."""
    folder = folder or RESULTS
    for path in sorted(folder.glob("*.json"), reverse=True):
        try:
            if json.loads(path.read_text()).get("gpu_result") is True:
                return path
        except (OSError, json.JSONDecodeError):
            continue
    raise BenchmarkError(f"{folder}: no GPU check result (*.json with \"gpu_result\": true); run "
                         "benchmarks/gpu_check.sh on a GPU first")  # fmt: skip


def load_benchmark(path: Path) -> dict[str, Any]:
    """The GPU check's summary; refuses a missing file, a CPU run and one without a ``sft`` / ``psft`` rate."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such benchmark file")
    try:
        bench = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BenchmarkError(f"{path}: not JSON: {err}") from None
    if bench.get("gpu_result") is not True:
        raise BenchmarkError(f"{path}: \"gpu_result\" is {bench.get('gpu_result')!r}: CPU timings are no GPU "
                             "result; run benchmarks/gpu_check.py on a GPU")  # fmt: skip
    for row in ("sft", "psft"):
        if not (bench.get("rows", {}).get(row) or {}).get("tokens_per_s"):
            raise BenchmarkError(f"{path}: rows.{row}.tokens_per_s: missing (the row failed or was not run)")
    return bench


@dataclass
class Rates:
    """Tokens/s on one GPU at the benchmark's shape, and how to scale them to a model."""

    sft: float
    psft: float
    gen: float | None
    gen_source: str
    n_bench: float

    @classmethod
    def of(cls, bench: dict[str, Any]) -> Rates:
        ev = bench.get("eval") or {}
        key = next((k for k in ("vllm_tokens_per_s", "hf_tokens_per_s") if ev.get(k)), None)
        return cls(bench["rows"]["sft"]["tokens_per_s"], bench["rows"]["psft"]["tokens_per_s"],
                   ev[key] if key else None, f"eval.{key}" if key else "", bench_params(bench["shape"]))  # fmt: skip

    def scaled(self, rate: float, role: str) -> float:
        return rate * self.n_bench / matmul_params(MODELS[role])


def dataset_tokens(prof: Profile, name: str) -> tuple[int, float, str]:
    """(examples, tokens, provenance) of ``paper.datasets.<name>``: counted in the world rule's output when it exists
    (its tokenizer; without one, bytes / 4), else :data:`ASSUMED_DATA`."""
    path = prof.layout.data / f"{name}.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        texts = [" ".join(str(r.get(k) or "") for k in ("system", "prompt", "response", "chosen")) +
                 (" " + str(r.get("prompt") or "") + " " + str(r["rejected"]) if "rejected" in r else "")
                 for r in rows]  # fmt: skip
        spec = (prof.data.get("paper") or {}).get("datasets", {}).get(name, {})
        try:
            from transformers import AutoTokenizer

            role = spec.get("tokenizer") or next(
                iter(prof["paper"]["models"])
            )  # RL prompts: the main model's
            tok = AutoTokenizer.from_pretrained(prof["paper"]["models"][role])
            tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
            return len(rows), float(tokens), f"measured: {path.name}, {role} tokenizer"
        except Exception:  # no tokenizer offline, or none named: the file's size
            size = sum(len(t.encode()) for t in texts)
            return len(rows), size / BYTES_PER_TOKEN, f"measured: {path.name}, bytes / {BYTES_PER_TOKEN}"
    if name not in ASSUMED_DATA:
        raise KeyError(f"paper.datasets.{name}: not loaded ({path}) and no assumption in ASSUMED_DATA")
    n, per, why = ASSUMED_DATA[name]
    return n, float(n * per), f"assumed: {why}"


def model_role(prof: Profile, run: str) -> str:
    """The paper.models role a run (a base model, a post-training run, ``<run>@selected``) uses."""
    origin = run.split("+")[0].split("@")[0]
    bases = (prof.data.get("paper") or {}).get("base_models") or {}
    return bases[origin]["model"] if origin in bases else prof.run_source(origin)["model"]


def task_repeats(task: str) -> int:
    """``repeats:`` of our task YAML (lm-eval's tags such as ``!function`` keep it from plain YAML); 1 otherwise."""
    path = next(TASK_DIR.rglob(f"{task}.yaml"), None)  # psftlib/eval/tasks/ and its images/ folder
    found = re.search(r"^repeats:\s*(\d+)", path.read_text(), re.M) if path else None
    return int(found.group(1)) if found else 1


def generated(prof: Profile, tasks: list[str], repeats: int | None = None) -> tuple[float, list[str]]:
    """Tokens generated for ``tasks`` (prompts x repeats x half the maximum length) and the tasks not counted."""
    total, left = 0.0, []
    for task in tasks:
        prompts, kind, _ = TASKS.get(task, (0, "unknown", ""))
        if kind != "gen":
            left.append(f"{task} ({'log-likelihood' if kind == 'mc' else 'size unknown'})")
            continue
        length = MAX_GEN.get(task, prof["eval"]["max_gen_toks"])
        total += prompts * (repeats or task_repeats(task)) * length / 2
    return total, left


def estimate(prof: Profile, rates: Rates, datasets: dict[str, str] | None = None) -> list[Row]:
    """Every rule instance of the profile's DAG with its tokens and GPU-hours; ``datasets`` collects each dataset's
    size and where it comes from."""
    datasets = {} if datasets is None else datasets
    res = {k: v.get("gpu", 0) for k, v in (prof["paper"].get("resources") or {}).items()}
    rows: list[Row] = []

    def gen_row(rule: str, inst: str, role: str, tokens: float, gpus: int, note: str, idle: int = 1) -> Row:
        if rates.gen is None:
            return Row(rule, inst, role, tokens, "needs a generation throughput", gpus, None, note)
        r = rates.scaled(rates.gen, role)
        return Row(
            rule,
            inst,
            role,
            tokens,
            f"{rates.gen_source} -> {r:,.0f}/s",
            gpus,
            tokens / r / 3600 * idle,
            note,
        )

    def train_row(
        rule: str, inst: str, role: str, tokens: float, second_model: bool, gpus: int, note: str
    ) -> Row:
        key = "psft" if second_model else "sft"
        r = rates.scaled(getattr(rates, key), role)
        return Row(rule, inst, role, tokens, f"rows.{key} -> {r:,.0f}/s", gpus, tokens / r / 3600, note)

    from psftlib.objectives import OBJECTIVES

    during = (prof["eval"].get("during_training") or {}) if prof.curves_task_set else {}
    for run in prof.runs:
        cfg, role = prof.run_config(run), model_role(prof, run)
        n, tokens, why = dataset_tokens(prof, prof.run_source(run)["data"])
        obj, data_name = OBJECTIVES[cfg.objective], prof.run_source(run)["data"]
        datasets[data_name] = f"{n:,} examples, {tokens:,.0f} tokens ({why})"
        rows.append(train_row("train", run, role, tokens * cfg.epochs, obj.needs_reference or obj.needs_old_policy,
                              res.get("train", 1), f"{cfg.objective}, {cfg.epochs:g} epochs of {data_name}"))  # fmt: skip
        if during.get("every_train_batches"):
            evals = math.ceil(n * cfg.epochs / cfg.train_batch_size) // during["every_train_batches"]
            toks, _ = generated(prof, prof.task_sets[prof.curves_task_set], during.get("repeats"))
            rows.append(gen_row("train", f"{run} (curves)", role, toks * evals, res.get("train", 1),
                                f"{evals} in-training evaluations on rank 0, the other GPUs waiting",
                                idle=res.get("train", 1)))  # fmt: skip
    for stage in ("grpo", "dpo"):
        for cold in prof.cold_starts(stage):
            settings, data = prof.post_stage(stage, cold)
            role, inst, gpus = model_role(prof, cold), f"{cold}+{stage}", res.get(stage, 1)
            if stage == "grpo":
                seqs = settings["train_batches"] * settings["train_batch_size"] * settings["num_generations"]
                resp, prompt = settings["max_completion_length"] / 2, settings["max_prompt_length"] / 2
                if data.exists():  # measured prompts (system + prompt) in place of half the maximum
                    n, tokens, why = dataset_tokens(prof, data.stem)
                    prompt, datasets[data.stem] = tokens / n, f"{n:,} prompts, {tokens:,.0f} tokens ({why})"
                else:
                    datasets[data.stem] = (
                        f"not loaded: {prompt:,.0f} prompt tokens assumed (half max_prompt_length)"
                    )
                rows.append(gen_row("grpo", f"{inst} (rollouts)", role, seqs * resp, gpus,
                                    f"{seqs:,} responses x {resp:,.0f} tokens ({data.stem})"))  # fmt: skip
                rows.append(train_row("grpo", f"{inst} (update)", role, seqs * (prompt + resp), True, gpus,
                                      f"{seqs:,} x ({prompt:,.0f} prompt + {resp:,.0f} response) tokens"))  # fmt: skip
            else:
                n, tokens, why = dataset_tokens(prof, data.stem)
                datasets[data.stem] = f"{n:,} pairs, {tokens:,.0f} tokens ({why})"
                rows.append(train_row("dpo", inst, role, tokens * settings["epochs"], True, gpus,
                                      f"{settings['epochs']:g} epoch of {data.stem}, with the reference forward"))  # fmt: skip
    for run, task_set in prof.evaluations(prof.all_runs + prof.selected_runs):
        toks, left = generated(prof, prof.task_sets[task_set])
        rows.append(gen_row("eval", f"{run} / {task_set}", model_role(prof, run), toks, res.get("eval", 1),
                            "not counted: " + ", ".join(left) if left else ""))  # fmt: skip
    judge = prof["paper"].get("judge") or {}
    judge_role = next((r for r, i in prof["paper"]["models"].items() if i == judge.get("model")), None)
    for run in [*prof.cold_starts("dpo"), *(f"{c}+dpo" for c in prof.cold_starts("dpo"))] if judge else []:
        answers = sum(JUDGE_SIZES[b][0] * JUDGE_SIZES[b][1] * spec.get("max_new_tokens", 4096) / 2
                      for b, spec in judge.get("benchmarks", {}).items())  # fmt: skip
        verdicts = sum(JUDGE_SIZES[b][0] * JUDGE_SIZES[b][2] for b in judge.get("benchmarks", {}))
        verdicts *= judge.get("max_judge_tokens", 4096) / 2
        gpus = res.get("judge", 1)
        a, v = gen_row("judge", run, model_role(prof, run), answers, gpus, "answers"), None
        if judge_role:
            v = gen_row("judge", run, judge_role, verdicts, gpus, "judgments")
        hours = None if a.hours is None or v is None or v.hours is None else a.hours + v.hours
        source = (
            a.source if v is None or rates.gen is None else f"{a.source}; judge {v.source.split(' -> ')[1]}"
        )
        rows.append(Row("judge", run, f"{a.model} + {judge_role}", answers + verdicts, source, gpus, hours,
                        f"{answers:,.0f} answer + {verdicts:,.0f} judgment tokens"))  # fmt: skip
    return rows


def render(
    rows: list[Row], bench_path: Path, bench: dict[str, Any], rates: Rates, datasets: dict[str, str]
) -> str:
    """The Markdown table, the total and the assumptions."""
    lines = [f"# GPU-hours of the paper DAG, estimated from `{bench_path.name}`", "",
             f"Measured on {bench.get('device')} ({bench.get('preset')} shape, {rates.n_bench / 1e9:.2f}B matmul "
             f"parameters): SFT {rates.sft:,.0f} tokens/s, PSFT {rates.psft:,.0f} tokens/s, generation "
             + (f"{rates.gen:,.0f} tokens/s ({rates.gen_source})" if rates.gen else "not measured") + " on one GPU.",
             "", "| rule | instance | model | tokens | throughput (per GPU, scaled) | GPUs | wall h | GPU-hours | basis |",
             "|---|---|---|---:|---|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        hours = "—" if r.hours is None else f"{r.hours:,.1f}"
        wall = "—" if r.hours is None else f"{r.hours / max(r.gpus, 1):,.1f}"
        lines.append(f"| {r.rule} | {r.instance} | {r.model} | {r.tokens:,.0f} | {r.source} | {r.gpus} | {wall} | "
                     f"{hours} | {r.note} |")  # fmt: skip
    known = [r for r in rows if r.hours is not None]
    lines += ["", f"**Total: {sum(r.hours for r in known):,.0f} GPU-hours** over {len(known)} of {len(rows)} rows"
              + (f"; {len(rows) - len(known)} rows need a generation throughput" if len(known) < len(rows) else "")
              + ".", "", "Assumptions (benchmarks/gpu_hours.py): tokens/s scale with 1/(6N), N the matmul parameters "
              "(MoE: the 8 active experts), attention FLOPs left out; a rule's GPUs scale linearly (an upper bound of "
              "efficiency; FSDP communication not counted); generated tokens = prompts x samples x half the maximum "
              "length, prompt prefill and log-likelihood tasks not counted; the check's generation test (8 prompts) "
              "under-uses a GPU, so generation hours are upper bounds; GRPO / DPO in-training evaluations not counted; "
              "dataset sizes:", ""]  # fmt: skip
    lines += [f"- `{name}`: {what}" for name, what in sorted(datasets.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", type=Path, default=None,
                        help="a gpu_check JSON (default: the newest benchmarks/results/*.json with a GPU result)")  # fmt: skip
    parser.add_argument("--gen-tokens-per-s", type=float, default=None,
                        help="generation tokens/s on one GPU at the benchmark's shape, in place of the check's")  # fmt: skip
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown output (default: benchmarks/results/gpu_hours_<benchmark stem>.md)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        path = args.benchmark or newest_gpu_benchmark()
        bench = load_benchmark(path)
    except BenchmarkError as err:
        print(f"gpu_hours: {err}", file=sys.stderr)
        return 2
    rates, datasets = Rates.of(bench), {}
    if args.gen_tokens_per_s:
        rates.gen, rates.gen_source = args.gen_tokens_per_s, "--gen-tokens-per-s"
    rows = estimate(load_profile(args.profile), rates, datasets)
    text = render(rows, path, bench, rates, datasets)
    out = args.out or RESULTS / f"gpu_hours_{path.stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
