"""Judge-based alignment scores for Table 3 (App. C.7.3): MT-Bench 1-/2-turn, AlpacaEval 2 LC/WR, Arena-Hard WR.

One judge model (paper: Qwen3-30B-A3B-Instruct-2507) served by vLLM (:class:`VLLMChat`, imported only when used)
or by transformers (:class:`HFChat`, any in-memory model: tests use a tiny random one). The same classes also
generate the judged model's answers with Table 15's sampling. Templates are data (the profile's
``paper.judge.templates``, default ``psftlib/eval/judge_templates.yaml``; see its header for provenance). This
module asks the judge and parses its verdicts; :mod:`psftlib.eval.judge_scores` turns them into scores with each
benchmark's published scorer:

- **MT-Bench**: FastChat's single-answer grading prompts (single-v1, single-math-v1 and their multi-turn variants,
  verbatim), a 1-10 ``[[rating]]`` per turn (the second turn judged in the context of the first; math, reasoning
  and coding questions against FastChat's GPT-4 reference answers), parsed as FastChat does.
- **Arena-Hard**: arena-hard-auto v0.1's judge prompt (verbatim), pairwise verdicts ``[[A>>B]]`` ... ``[[B>>A]]``
  against the baseline's answers, two games with the positions swapped, a second attempt when a judgment has no
  verdict; Bradley-Terry win rate with a bootstrap interval as arena-hard-auto v0.1.
- **AlpacaEval 2**: AlpacaEval's own judge prompt (``weighted_alpaca_eval_gpt4_turbo``, read from the installed
  ``alpaca_eval`` package): the judge names the better output with one token, ``m`` (output_1) or ``M``
  (output_2), outputs in random order; the preference is the renormalised probability of the model's token. LC:
  the official ``alpaca_eval`` GLM (:func:`psftlib.eval.judge_scores.alpaca_eval_scores`).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from psftlib.data import atomic_write
from psftlib.eval import judge_scores
from psftlib.eval.judge_chat import Chat, HFChat, JudgeError, Messages, VLLMChat  # noqa: F401 - this module's interface
from psftlib.worlds.rows import load_rows

# torch and vllm are imported by the chat backend that uses them: parsing and scoring need neither

TEMPLATES_PATH = Path(__file__).resolve().with_name("judge_templates.yaml")
# FastChat llm_judge/common.py: one_score_pattern, one_score_pattern_backup (the first match counts); the templates'
# mt_bench.rating_patterns hold the same two
RATING_PATTERNS = (r"\[\[(\d+\.?\d*)\]\]", r"\[(\d+\.?\d*)\]")
# arena-hard-auto v0.1 config/judge_config.yaml regex_pattern (the templates' arena_hard.regex_pattern)
VERDICT_PATTERN = r"\[\[([AB<>=]+)\]\]"

# ---- templates ------------------------------------------------------------------------------------------------


def load_templates(path: str | Path | None = None) -> dict[str, Any]:
    """The judge templates (``psftlib/eval/judge_templates.yaml`` or a YAML of the same shape)."""
    path = Path(path) if path else TEMPLATES_PATH
    if not path.exists():
        raise JudgeError(f"{path}: no such template file")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for bench_templates in data.values():
        for kind, tpl in (bench_templates or {}).items() if isinstance(bench_templates, dict) else ():
            if isinstance(tpl, dict) and "from_package" in tpl:
                bench_templates[kind] = {
                    **tpl,
                    **_package_template(tpl["from_package"], tpl.get("rename", {})),
                }
    for bench, kinds in (("mt_bench", tuple(FASTCHAT_NAMES.values())), ("arena_hard", ("pairwise",)),
                         ("alpaca_eval", ("preference",))):  # fmt: skip
        for kind in kinds:
            tpl = (data.get(bench) or {}).get(kind)
            if not isinstance(tpl, dict) or "prompt" not in tpl:
                raise JudgeError(f"{path}: {bench}.{kind}.prompt: missing")
    return data


def _package_template(spec: str, rename: dict[str, str]) -> dict[str, str]:
    """A prompt shipped inside an installed package, ``"<package>:<path in it>"`` in AlpacaEval's chat format
    (``<|im_start|>system ... <|im_end|>``, then user), as ``{"system", "prompt"}``; the prompt's literal braces are
    escaped and its placeholders renamed by ``rename`` (``{"output_1": "output_m"}``), so ``str.format`` fills it.
    The package is located, not imported."""
    package, _, rel = spec.partition(":")
    found = importlib.util.find_spec(package)
    if found is None or not found.origin:
        raise JudgeError(f"template {spec!r}: package {package!r} is not installed (requirements.lock)")
    path = Path(found.origin).parent / rel
    if not path.exists():
        raise JudgeError(f"template {spec!r}: no file {path}")
    parts = dict(
        re.findall(r"<\|im_start\|>(\w+)\n(.*?)\n?<\|im_end\|>", path.read_text(encoding="utf-8"), re.S)
    )
    if "user" not in parts:
        raise JudgeError(f"{path}: no <|im_start|>user ... <|im_end|> block")
    prompt = parts["user"].replace("{", "{{").replace("}", "}}")
    for old, new in rename.items():
        prompt = prompt.replace("{{" + old + "}}", "{" + new + "}")
    return {"system": parts.get("system", "").strip(), "prompt": prompt}


# FastChat judge_prompts.jsonl row name -> our template key under mt_bench
FASTCHAT_NAMES = {"single-v1": "single", "single-math-v1": "single_reference",
                  "single-v1-multi-turn": "multi_turn", "single-math-v1-multi-turn": "multi_turn_reference"}  # fmt: skip


def templates_from_fastchat(path: str | Path) -> dict[str, dict[str, str]]:
    """MT-Bench templates from FastChat's ``judge_prompts.jsonl`` (fields name, system_prompt, prompt_template,
    output_format), unchanged: ``{"single", "single_reference", "multi_turn", "multi_turn_reference"}`` as under
    ``mt_bench`` in ``judge_templates.yaml`` (which holds them, copied from FastChat; this reads a newer file)."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("name") in FASTCHAT_NAMES:
            out[FASTCHAT_NAMES[row["name"]]] = {"name": row["name"], "system": row.get("system_prompt", ""),
                                                "prompt": row["prompt_template"],
                                                "output_format": row.get("output_format")}  # fmt: skip
    if set(out) != set(FASTCHAT_NAMES.values()):
        raise JudgeError(
            f"{path}: missing FastChat templates {sorted(set(FASTCHAT_NAMES.values()) - set(out))}"
        )
    return out


def render(template: dict[str, Any], **fields: str) -> Messages:
    """Chat messages (system + user) of a template filled with ``fields``; a missing field is named."""
    try:
        user = template["prompt"].format(**fields)
    except KeyError as err:
        raise JudgeError(f"template needs field {err.args[0]!r}; got {sorted(fields)}") from None
    system = template.get("system")
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


# ---- parsing --------------------------------------------------------------------------------------------------


def parse_rating(text: str, patterns: Sequence[str] = RATING_PATTERNS) -> float | None:
    """MT-Bench rating as FastChat's ``run_judge_single``: the first ``[[x]]``, else the first ``[x]``; None (FastChat:
    -1, dropped from the means) when there is neither."""
    for pattern in patterns:
        found = re.search(pattern, text or "")
        if found:
            return float(ast.literal_eval(found.group(1)))
    return None


def verdict_of(text: str, pattern: str = VERDICT_PATTERN) -> tuple[str | None, bool]:
    """arena-hard-auto v0.1 ``gen_judgment.get_score`` (pairwise): ``(label, False)`` when the judgment holds one
    distinct verdict label, ``(None, False)`` when it holds several, ``(None, True)`` (ask again) when none."""
    labels = [m for m in re.findall(pattern, text or "") if m != ""]
    if not labels:
        return None, True
    if len(set(labels)) == 1:
        return labels[0].strip("\n"), False
    return None, False


def parse_verdict(text: str, pattern: str = VERDICT_PATTERN) -> str | None:
    """Arena-Hard verdict label as arena-hard-auto v0.1 records it (any single distinct ``[[...]]`` label, even one
    its scorer then drops, like ``B=A``), else None."""
    return verdict_of(text, pattern)[0]


# ---- questions --------------------------------------------------------------------------------------------------


def read_questions(benchmark: str, path: str | Path, config: str | None = None,
                   split: str = "train") -> list[dict[str, Any]]:  # fmt: skip
    """Questions of a benchmark from a local JSONL/JSON/Parquet or a hub dataset (``config``, ``split``), normalised
    to ``{"id", "index", "turns", "category", "reference", "baseline"}`` (``index``: the row's position, AlpacaEval's
    instruction index). Accepts FastChat/Arena-Hard ``question.jsonl`` (question_id, category, turns as strings or
    ``{"content"}``, reference), HuggingFaceH4/mt_bench_prompts (prompt_id, prompt, reference) and AlpacaEval
    (instruction, output = the baseline's answer)."""

    rows = load_rows(path, config, split)
    out = []
    for i, r in enumerate(rows):
        turns = r.get("turns") or r.get("prompt") or ([r["instruction"]] if r.get("instruction") else None)
        if isinstance(turns, str):
            turns = [turns]
        if not turns:
            raise JudgeError(f"{path}: row {i}: no 'turns', 'prompt' or 'instruction' field ({benchmark})")
        turns = [t["content"] if isinstance(t, dict) else t for t in turns]
        qid = r.get("question_id", r.get("prompt_id", r.get("uid", i)))
        out.append({"id": str(qid), "index": i, "turns": turns, "category": r.get("category") or r.get("cluster"),
                    "reference": r.get("reference") or None, "baseline": r.get("output")})  # fmt: skip
    return out


def read_answer_turns(path: str | Path) -> dict[str, list[str]]:
    """Answers by question id, turn by turn: FastChat / arena-hard-auto model-answer JSONL (question_id,
    ``choices[0].turns`` as strings or ``{"content"}``; FastChat's ``reference_answer/gpt-4.jsonl`` too) or rows
    with ``question_id`` and ``answer`` (one turn)."""
    out = {}
    for i, r in enumerate(load_rows(path)):
        try:
            turns = [r["answer"]] if "answer" in r else r["choices"][0]["turns"]
            out[str(r["question_id"])] = [t["content"] if isinstance(t, dict) else t for t in turns]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"{path}: row {i}: needs question_id and answer (or choices[0].turns)") from None
        if not out[str(r["question_id"])]:
            raise JudgeError(f"{path}: row {i}: no turns")
    return out


def read_answers(path: str | Path) -> dict[str, str]:
    """A baseline's answers by question id (the first turn of :func:`read_answer_turns`): arena-hard-auto
    ``model_answer/<model>.jsonl`` or rows with ``question_id`` and ``answer``."""
    return {qid: turns[0] for qid, turns in read_answer_turns(path).items()}


def answer_questions(
    model: Chat, questions: list[dict], temperature: float, top_p: float | None, max_new_tokens: int,
    system: str | None = None,
) -> list[list[str]]:  # fmt: skip
    """The judged model's answers, turn by turn (MT-Bench's second turn sees the first answer)."""
    answers: list[list[str]] = [[] for _ in questions]
    convs: list[Messages] = [([{"role": "system", "content": system}] if system else []) for _ in questions]
    for t in range(max(len(q["turns"]) for q in questions)):
        idx = [i for i, q in enumerate(questions) if t < len(q["turns"])]
        for i in idx:
            convs[i] = [*convs[i], {"role": "user", "content": questions[i]["turns"][t]}]
        replies = model.chat([convs[i] for i in idx], temperature, top_p, max_new_tokens)
        for i, reply in zip(idx, replies, strict=True):
            answers[i].append(reply)
            convs[i] = [*convs[i], {"role": "assistant", "content": reply}]
    return answers


# ---- judging ------------------------------------------------------------------------------------------------------


def mt_bench(
    judge: Chat, questions: list[dict], answers: list[list[str]], templates: dict | None = None,
    max_judge_tokens: int = 2048,
) -> dict[str, Any]:  # fmt: skip
    """MT-Bench 1-turn and 2-turn scores (mean 1-10 ratings), per-question ratings and unparsed counts, as FastChat's
    ``gen_judgment.py --mode single``: questions of ``reference_categories`` are judged with the reference prompts
    (``single-math-v1``, ``single-math-v1-multi-turn``) against ``q["reference"]`` (FastChat's GPT-4 reference
    answers, one per turn; a missing one is an error, as FastChat's ``check_data``), the others with ``single-v1`` /
    ``single-v1-multi-turn``."""
    t = (templates or load_templates())["mt_bench"]
    ref_cats = set(t.get("reference_categories", []))
    patterns = t.get("rating_patterns", RATING_PATTERNS)
    need = [q["id"] for q, a in zip(questions, answers, strict=True) if q.get("category") in ref_cats
            and len(q.get("reference") or []) < min(len(q["turns"]), len(a), 2)]  # fmt: skip
    if need:
        raise JudgeError(f"mt_bench: no reference answer for question(s) {need[:5]} of categories {sorted(ref_cats)} "
                         "(paper.judge.benchmarks.mt_bench.reference_answers: FastChat's gpt-4.jsonl)")  # fmt: skip
    convs, where = [], []
    for qi, (q, a) in enumerate(zip(questions, answers, strict=True)):
        ref = q.get("reference") if q.get("category") in ref_cats else None
        refs = {f"ref_answer_{i + 1}": r for i, r in enumerate((ref or [])[:2])}
        convs.append(
            render(t["single_reference"] if ref else t["single"], question=q["turns"][0], answer=a[0], **refs)
        )
        where.append((qi, 1))
        if len(q["turns"]) > 1 and len(a) > 1:
            fields = {
                "question_1": q["turns"][0],
                "answer_1": a[0],
                "question_2": q["turns"][1],
                "answer_2": a[1],
            }
            convs.append(
                render(t["multi_turn_reference"], **fields, **refs)
                if ref
                else render(t["multi_turn"], **fields)
            )
            where.append((qi, 2))
    judgments = judge.chat(convs, 0.0, None, max_judge_tokens)
    per_q: dict[str, dict[str, float | None]] = {q["id"]: {} for q in questions}
    for (qi, turn), text in zip(where, judgments, strict=True):
        per_q[questions[qi]["id"]][f"turn{turn}"] = parse_rating(text, patterns)
    return {**judge_scores.mt_bench_scores(per_q), "per_question": per_q, "judgments": judgments}


def judge_with_attempts(judge: Chat, convs: list[Messages], max_judge_tokens: int, attempts: int = 1,
                        continue_prompt: str = "", pattern: str = VERDICT_PATTERN) -> list[str]:  # fmt: skip
    """arena-hard-auto v0.1 ``gen_judgment.judgment``: ask the judge (temperature 0); while a judgment has no verdict
    label and attempts remain, append its reply and ``continue_prompt`` and ask again. Each returned judgment is the
    replies joined as upstream (``"\\n" + reply`` per attempt)."""
    convs = [list(c) for c in convs]
    texts = [""] * len(convs)
    pending = list(range(len(convs)))
    for attempt in range(max(1, attempts)):
        replies = judge.chat([list(convs[i]) for i in pending], 0.0, None, max_judge_tokens)
        again = []
        for i, reply in zip(pending, replies, strict=True):
            texts[i] += "\n" + reply
            convs[i].append({"role": "assistant", "content": reply})
            if verdict_of(texts[i], pattern)[1] and attempt + 1 < attempts:
                convs[i].append({"role": "user", "content": continue_prompt})
                again.append(i)
        pending = again
        if not pending:
            break
    return texts


def arena_hard(
    judge: Chat, questions: list[dict], answers: Sequence[str], baseline_answers: Sequence[str],
    templates: dict | None = None, max_judge_tokens: int = 4096, model: str = "model",
    baseline: str = judge_scores.ARENA_BASELINE, bootstrap_rounds: int = 100,
) -> dict[str, Any]:  # fmt: skip
    """Arena-Hard win rate (%) of the model against the baseline, with its bootstrap 95% interval: two games per
    question, positions swapped (game 1: baseline is A), each with up to ``number_of_judgment_attempts`` asks
    (:func:`judge_with_attempts`), scored by :func:`judge_scores.arena_hard_scores`."""
    spec = (templates or load_templates())["arena_hard"]
    t, pattern = spec["pairwise"], spec.get("regex_pattern", VERDICT_PATTERN)
    convs = []
    for q, a, b in zip(questions, answers, baseline_answers, strict=True):
        convs.append(render(t, question_1=q["turns"][0], answer_1=b, answer_2=a))  # game 1: baseline is A
        convs.append(render(t, question_1=q["turns"][0], answer_1=a, answer_2=b))  # game 2: model is A
    judgments = judge_with_attempts(judge, convs, max_judge_tokens, spec.get("number_of_judgment_attempts", 1),
                                    spec.get("continue_prompt", ""), pattern)  # fmt: skip
    verdicts = [
        (parse_verdict(judgments[2 * k], pattern), parse_verdict(judgments[2 * k + 1], pattern))
        for k in range(len(questions))
    ]
    battles = judge_scores.arena_hard_battles(verdicts, model, baseline, weight=spec.get("weight", 3))
    scores = judge_scores.arena_hard_scores(battles, model, baseline, num_rounds=bootstrap_rounds)
    return {**scores, "unparsed": sum(v is None for pair in verdicts for v in pair),
            "per_question": {q["id"]: {"game1": v1, "game2": v2} for q, (v1, v2) in zip(questions, verdicts, strict=True)},
            "judgments": judgments}  # fmt: skip


def alpaca_annotations(
    judge: Chat, questions: list[dict], outputs: Sequence[str], baseline_outputs: Sequence[str],
    templates: dict | None = None, seed: int = 0, generator: str = "model", baseline: str = "baseline",
) -> list[dict[str, Any]]:  # fmt: skip
    """The judge's AlpacaEval annotations (AlpacaEval's JSON shape: ``index``, ``instruction``, ``output_1`` =
    baseline, ``output_2`` = model, ``generator_1/2``, ``preference`` in [1, 2], 2 = the model is preferred). The
    judge sees the two outputs in a random order per instruction (``seed``; AlpacaEval's is_randomize_output_order)
    and ``preference = 1 + P(the model's identifier)`` over the two identifiers (its ``logprob_parser``)."""
    t = (templates or load_templates())["alpaca_eval"]["preference"]
    m, big_m = t.get("options", ["m", "M"])
    rng = random.Random(seed)
    convs, model_first = [], []
    for q, out, base in zip(questions, outputs, baseline_outputs, strict=True):
        first = rng.random() < 0.5  # the model's output in position m (first) or M (second)
        model_first.append(first)
        om, oM = (out, base) if first else (base, out)
        convs.append(render(t, instruction=q["turns"][0], output_m=om, output_big_m=oM))
    probs = judge.choice_probs(convs, [m, big_m])
    return [{"index": q.get("index", i), "instruction": q["turns"][0], "output_1": b, "output_2": o,
             "generator_1": baseline, "generator_2": generator, "model_first": first,
             "preference": 1.0 + (p[m] if first else p[big_m])}
            for i, (q, o, b, p, first) in enumerate(zip(questions, outputs, baseline_outputs, probs, model_first,
                                                        strict=True))]  # fmt: skip


def alpaca_eval(
    judge: Chat, questions: list[dict], outputs: Sequence[str], baseline_outputs: Sequence[str],
    templates: dict | None = None, seed: int = 0, generator: str = "model", glm_name: str = "length_controlled_v1",
    gamed_csv: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """AlpacaEval 2 win rate and length-controlled win rate (%) of ``outputs`` against ``baseline_outputs``: the
    judge's annotations (:func:`alpaca_annotations`) scored by the official ``alpaca_eval`` GLM (``glm_name``;
    ``gamed_csv``: a local copy of its precomputed data, see :func:`judge_scores.alpaca_eval_scores`)."""
    ann = alpaca_annotations(judge, questions, outputs, baseline_outputs, templates, seed, generator)
    metrics = judge_scores.alpaca_eval_scores(ann, glm_name, gamed_csv)
    return {"win_rate": metrics["win_rate"], "lc_win_rate": metrics["length_controlled_winrate"],
            "lc_standard_error": metrics["lc_standard_error"], "metrics": metrics, "annotations": ann}  # fmt: skip


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically (a judge result, AlpacaEval annotations)."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=1, allow_nan=False)
