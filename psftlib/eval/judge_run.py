"""``python -m psftlib.eval.judge_run --profile paper --run align_psft+dpo --checkpoint <folder> --out <judge.json>``:
Table 3's judge scores of one run (the ``judge`` rule, rules/judge.smk).

Settings come from the profile's ``paper.judge``: the judge model and backend (``vllm`` on GPUs, ``hf`` =
transformers on any device), the templates file, and per benchmark (``mt_bench``, ``alpaca_eval``,
``arena_hard``) its questions (a local file or a hub dataset with ``config`` / ``split``), the judged model's
sampling (Table 15), the baseline (AlpacaEval: the questions' ``output``; Arena-Hard: ``baseline_answers``),
MT-Bench's ``reference_answers`` (FastChat's ``reference_answer/gpt-4.jsonl``, vendored as
``psftlib/eval/mt_bench_reference_gpt-4.jsonl``; without it, the questions' own ``reference`` field) and an
optional ``limit`` (first n questions; tiny worlds only). The judge's token budget per benchmark is the upstream
one (the templates' ``max_tokens``: FastChat 2048, arena-hard-auto 4096), capped by ``paper.judge.max_judge_tokens``.
The judged model answers first and is freed, then the judge model loads. Writes ``<out>`` (scores, small) and ``<out stem>.samples.json`` (answers, judgments,
AlpacaEval annotations)."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path
from typing import Any

from psftlib.config import ROOT, ConfigError, load_profile
from psftlib.eval import judge

BENCHMARKS = ("mt_bench", "alpaca_eval", "arena_hard")


def _chat(model_id: str, spec: dict[str, Any], seed: int) -> judge.Chat:
    """A chat backend for ``model_id`` (hub id or checkpoint folder): vLLM or transformers (``spec['backend']``)."""
    if spec.get("backend", "vllm") == "vllm":
        return judge.VLLMChat(model_id, tensor_parallel_size=spec.get("tensor_parallel_size", 1), seed=seed)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_id)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.bfloat16 if device == "cuda" else None)
    return judge.HFChat(model.to(device), tok, batch_size=spec.get("batch_size", 8), seed=seed)


def _free(chat: Any) -> None:
    """Drop a backend and its GPU memory before the next model loads."""
    del chat
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is in the lock
        pass


def questions_of(bench: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A benchmark's questions (``limit``: the first n), with the Arena-Hard baseline's answers attached."""
    qs = judge.read_questions(bench, spec["questions"], spec.get("config"), spec.get("split", "train"))
    qs = qs[: spec["limit"]] if spec.get("limit") else qs
    if bench == "arena_hard":
        if not spec.get("baseline_answers"):
            raise judge.JudgeError(
                "paper.judge.benchmarks.arena_hard.baseline_answers: missing (the baseline's answers)"
            )
        answers = judge.read_answers(spec["baseline_answers"])
        missing = [q["id"] for q in qs if q["id"] not in answers]
        if missing:
            raise judge.JudgeError(
                f"{spec['baseline_answers']}: no baseline answer to question(s) {missing[:5]}"
            )
        for q in qs:
            q["baseline"] = answers[q["id"]]
    elif bench == "mt_bench" and spec.get("reference_answers"):
        refs = judge.read_answer_turns(Path(ROOT, spec["reference_answers"]))
        for q in qs:  # FastChat judges against these only (its question file's "reference" field is unused)
            q["reference"] = refs.get(q["id"])
    elif bench == "alpaca_eval" and any(q["baseline"] is None for q in qs):
        raise judge.JudgeError(f"{spec['questions']}: AlpacaEval rows need the baseline's 'output'")
    return qs


def judge_run(profile: str, run: str, checkpoint: str, out: str | Path) -> dict[str, Any]:
    """Answer every benchmark with ``checkpoint``, judge the answers, score them; writes ``out`` and its samples."""
    prof = load_profile(profile)
    paper = prof["paper"]
    spec = paper.get("judge")
    if not spec:
        raise ConfigError(f"{prof.path}: paper.judge: missing (the judge model and benchmarks)")
    benches = {b: s for b, s in (spec.get("benchmarks") or {}).items() if b in BENCHMARKS}
    templates = judge.load_templates(ROOT / spec["templates"] if spec.get("templates") else None)
    system = paper["system_prompts"]["alignment"]  # §4.3's runs are trained with it (App. C.8)
    seed = int(prof.data.get("seed", 0))
    questions = {b: questions_of(b, s) for b, s in benches.items()}
    model = _chat(checkpoint, spec, seed)
    answers = {b: judge.answer_questions(model, questions[b], s["temperature"], s.get("top_p"), s["max_new_tokens"],
                                         system=system)
               for b, s in benches.items()}  # fmt: skip
    _free(model)
    judge_chat = _chat(spec["model"], spec, seed)
    cap = spec.get("max_judge_tokens", 4096)
    scores: dict[str, Any] = {}
    if "mt_bench" in benches:
        scores["mt_bench"] = judge.mt_bench(judge_chat, questions["mt_bench"], answers["mt_bench"], templates,
                                            max_judge_tokens=min(cap, templates["mt_bench"].get("max_tokens", cap)))  # fmt: skip
    if "alpaca_eval" in benches:
        qs = questions["alpaca_eval"]
        scores["alpaca_eval"] = judge.alpaca_eval(judge_chat, qs, [a[0] for a in answers["alpaca_eval"]],
                                                  [q["baseline"] for q in qs], templates, seed, generator=run,
                                                  glm_name=benches["alpaca_eval"].get("glm", "length_controlled_v1"),
                                                  gamed_csv=str(ROOT / gd) if (gd := benches["alpaca_eval"].get("glm_data")) else None)  # fmt: skip
    if "arena_hard" in benches:
        qs = questions["arena_hard"]
        scores["arena_hard"] = judge.arena_hard(judge_chat, qs, [a[0] for a in answers["arena_hard"]],
                                                [q["baseline"] for q in qs], templates,
                                                min(cap, templates["arena_hard"].get("max_tokens", cap)), model=run,
                                                baseline=benches["arena_hard"].get("baseline", "gpt-4-0314"),
                                                bootstrap_rounds=benches["arena_hard"].get("bootstrap_rounds", 100))  # fmt: skip
    _free(judge_chat)
    detail = ("judgments", "per_question", "annotations")
    result = {"run": run, "checkpoint": str(checkpoint), "judge": spec["model"],
              "scores": {b: {k: v for k, v in s.items() if k not in detail} for b, s in scores.items()}}  # fmt: skip
    samples = {
        b: {"answers": answers[b], **{k: v for k, v in s.items() if k in detail}} for b, s in scores.items()
    }
    out = Path(out)
    judge.write_json(out, result)
    judge.write_json(out.with_suffix(".samples.json"), samples)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m psftlib.eval.judge_run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", required=True)
    parser.add_argument(
        "--run", required=True, help="the run's name (AlpacaEval's generator, Arena-Hard's model)"
    )
    parser.add_argument("--checkpoint", required=True, help="the judged model: a checkpoint folder or hub id")
    parser.add_argument(
        "--out", required=True, help="the scores JSON (samples beside it: <stem>.samples.json)"
    )
    args = parser.parse_args(argv)
    res = judge_run(args.profile, args.run, args.checkpoint, args.out)
    for bench, s in res["scores"].items():
        print(bench, {k: v for k, v in s.items() if not isinstance(v, (dict, list))})


if __name__ == "__main__":
    main()
