"""Judge-based alignment scores for Table 3 (App. C.7.3): MT-Bench 1-/2-turn, AlpacaEval 2 LC/WR, Arena-Hard WR.

One judge model (paper: Qwen3-30B-A3B-Instruct-2507) served by vLLM (:class:`VLLMChat`, imported only when used)
or by transformers (:class:`HFChat`, any in-memory model: tests use a tiny random one). The same classes also
generate the judged model's answers with Table 15's sampling. Templates are data
(``psftlib/eval/judge_templates.yaml``, see its header for provenance); parsing and scoring are here:

- **MT-Bench**: single-answer grading, a 1-10 ``[[rating]]`` per turn (the second turn judged in the context of
  the first; math/reasoning/coding questions against their reference answers). Score: mean rating per turn.
- **Arena-Hard**: pairwise verdicts ``[[A>>B]]`` ... ``[[B>>A]]`` against the baseline's answers, two games with
  the positions swapped. WR: mean score of the model (win 1, slight win 0.75 ... loss 0; a game without a
  verdict is left out). The official leaderboard fits a Bradley-Terry model with bootstrapped intervals; with one
  model against one baseline the two agree up to that fit.
- **AlpacaEval 2**: the judge names the better output (``m`` or ``M``, model position randomised per instruction);
  the preference is the probability of the model's identifier among the two tokens. WR: mean preference.
  LC: the length-controlled win rate of AlpacaEval's GLM ``logit p = a + b * tanh(len_diff / std)`` with the
  length term removed, ``sigmoid(a)``, *without* its instruction-difficulty term (that needs AlpacaEval's
  precomputed difficulties); :func:`write_alpaca_annotations` writes the annotations for the official tool.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from psftlib.data import atomic_write
from psftlib.worlds.loaders import read_table

# torch and vllm are imported by the chat backend that uses them: parsing and scoring need neither

TEMPLATES_PATH = Path(__file__).resolve().with_name("judge_templates.yaml")
RATING_RE = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
RATING_FALLBACK_RE = re.compile(r"\[(\d+(?:\.\d+)?)\]")
VERDICT_RE = re.compile(r"\[\[([AB<>=]+)\]\]")
# Arena-Hard's verdict of a game with the baseline as A and the model as B -> the model's score
MODEL_AS_B = {"A>>B": 0.0, "A>B": 0.25, "A=B": 0.5, "B=A": 0.5, "B>A": 0.75, "B>>A": 1.0}
MODEL_AS_A = {"A>>B": 1.0, "A>B": 0.75, "A=B": 0.5, "B=A": 0.5, "B>A": 0.25, "B>>A": 0.0}

Messages = list[dict[str, str]]


class JudgeError(RuntimeError):
    """A bad template, question file or backend; names the file, benchmark or field."""


# ---- templates ------------------------------------------------------------------------------------------------


def load_templates(path: str | Path | None = None) -> dict[str, Any]:
    """The judge templates (``psftlib/eval/judge_templates.yaml`` or a YAML of the same shape)."""
    path = Path(path) if path else TEMPLATES_PATH
    if not path.exists():
        raise JudgeError(f"{path}: no such template file")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for bench, kinds in (("mt_bench", ("single", "multi_turn")), ("arena_hard", ("pairwise",)),
                         ("alpaca_eval", ("preference",))):  # fmt: skip
        for kind in kinds:
            tpl = (data.get(bench) or {}).get(kind)
            if not isinstance(tpl, dict) or "prompt" not in tpl:
                raise JudgeError(f"{path}: {bench}.{kind}.prompt: missing")
    return data


def templates_from_fastchat(path: str | Path) -> dict[str, dict[str, str]]:
    """MT-Bench templates from FastChat's ``judge_prompts.jsonl`` (fields name, system_prompt, prompt_template).

    Returns ``{"single", "single_reference", "multi_turn", "multi_turn_reference"}`` to put under ``mt_bench``;
    FastChat's placeholders (``{question}``, ``{answer}``, ``{ref_answer_1}`` ...) are renamed to ours.
    """
    names = {"single-v1": "single", "single-math-v1": "single_reference",
             "single-v1-multi-turn": "multi_turn", "single-math-v1-multi-turn": "multi_turn_reference"}  # fmt: skip
    rename = {"{ref_answer_1}": "{reference_1}", "{ref_answer_2}": "{reference_2}"}
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("name") in names:
            prompt = row["prompt_template"]
            for old, new in rename.items():
                prompt = prompt.replace(old, new)
            if names[row["name"]] == "single_reference":
                prompt = prompt.replace("{reference_1}", "{reference}")
            out[names[row["name"]]] = {"system": row.get("system_prompt", ""), "prompt": prompt}
    if set(out) != set(names.values()):
        raise JudgeError(f"{path}: missing FastChat templates {sorted(set(names.values()) - set(out))}")
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


def parse_rating(text: str) -> float | None:
    """MT-Bench rating: the last ``[[x]]`` (else the last ``[x]``) with 1 <= x <= 10, else None."""
    for pattern in (RATING_RE, RATING_FALLBACK_RE):
        found = pattern.findall(text or "")
        if found:
            value = float(found[-1])
            return value if 1.0 <= value <= 10.0 else None
    return None


def parse_verdict(text: str) -> str | None:
    """Arena-Hard verdict label: the single distinct ``[[...]]`` label of the judgment, else None."""
    labels = {m for m in VERDICT_RE.findall(text or "") if m}
    if len(labels) != 1:
        return None
    label = labels.pop()
    return label if label in MODEL_AS_B else None


# ---- backends -------------------------------------------------------------------------------------------------


class Chat(Protocol):
    def chat(
        self, conversations: Sequence[Messages], temperature: float, top_p: float | None, max_new_tokens: int
    ) -> list[str]: ...

    def choice_probs(
        self, conversations: Sequence[Messages], options: Sequence[str]
    ) -> list[dict[str, float]]: ...


class HFChat:
    """A transformers model + tokenizer with a chat template; greedy when ``temperature == 0``."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, seed: int = 0):
        self.model, self.tokenizer, self.batch_size, self.seed = model, tokenizer, batch_size, seed

    def _prompt_ids(self, messages: Messages) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def _batch(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding for generation
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        device = next(self.model.parameters()).device
        return ids.to(device), mask.to(device)

    def chat(self, conversations, temperature=0.0, top_p=None, max_new_tokens=512) -> list[str]:
        import torch

        torch.manual_seed(self.seed)
        out: list[str] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for s in range(0, len(conversations), self.batch_size):
                rows = [self._prompt_ids(m) for m in conversations[s : s + self.batch_size]]
                ids, mask = self._batch(rows)
                sample = temperature > 0
                kwargs = {"do_sample": sample, "max_new_tokens": max_new_tokens,
                          "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}  # fmt: skip
                if sample:
                    kwargs.update(temperature=temperature, top_p=top_p if top_p is not None else 1.0)
                with torch.no_grad():
                    gen = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
                out += self.tokenizer.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True)
        finally:
            self.model.train(was_training)
        return out

    def choice_probs(self, conversations, options) -> list[dict[str, float]]:
        """Next-token probabilities of each option's first token, renormalised over the options."""
        import torch

        option_ids = [self.tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in options]
        if len(set(option_ids)) != len(options):
            raise JudgeError(f"options {list(options)} do not start with distinct tokens")
        out = []
        with torch.no_grad():
            for s in range(0, len(conversations), self.batch_size):
                ids, mask = self._batch([self._prompt_ids(m) for m in conversations[s : s + self.batch_size]])
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
                probs = torch.softmax(logits[:, option_ids], dim=-1)
                out += [dict(zip(options, map(float, row), strict=True)) for row in probs]
        return out


class VLLMChat:
    """A model served by vLLM in this process (GPU); ``vllm`` is imported here only."""

    def __init__(self, model_id: str, tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.85, seed: int = 0):  # fmt: skip
        try:
            from vllm import LLM
        except ImportError as err:
            raise JudgeError("the vllm backend needs the 'vllm' package (requirements-gpu.lock)") from err
        self.llm = LLM(model=model_id, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, seed=seed, dtype="bfloat16")  # fmt: skip
        self.seed = seed

    def chat(self, conversations, temperature=0.0, top_p=None, max_new_tokens=512) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=temperature, top_p=top_p if top_p else 1.0,
                                max_tokens=max_new_tokens, seed=self.seed)  # fmt: skip
        return [o.outputs[0].text for o in self.llm.chat(list(conversations), params, use_tqdm=False)]

    def choice_probs(self, conversations, options) -> list[dict[str, float]]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=20)
        out = []
        for o in self.llm.chat(list(conversations), params, use_tqdm=False):
            top = o.outputs[0].logprobs[0] if o.outputs[0].logprobs else {}
            by_text = {lp.decoded_token.strip(): math.exp(lp.logprob) for lp in top.values()}
            raw = {opt: by_text.get(opt, 0.0) for opt in options}
            total = sum(raw.values())
            out.append({k: (v / total if total else 1.0 / len(options)) for k, v in raw.items()})
        return out


# ---- questions --------------------------------------------------------------------------------------------------


def read_questions(benchmark: str, path: str | Path) -> list[dict[str, Any]]:
    """Questions of a benchmark from a local JSONL, normalised to ``{"id", "turns", "category", "reference",
    "baseline"}``. Accepts FastChat/Arena-Hard ``question.jsonl`` (question_id, category, turns as strings or
    ``{"content"}``, reference), HuggingFaceH4/mt_bench_prompts (prompt_id, prompt, reference) and AlpacaEval
    (instruction, output = the baseline's answer)."""

    rows = read_table(path)
    out = []
    for i, r in enumerate(rows):
        turns = r.get("turns") or r.get("prompt") or ([r["instruction"]] if r.get("instruction") else None)
        if isinstance(turns, str):
            turns = [turns]
        if not turns:
            raise JudgeError(f"{path}: row {i}: no 'turns', 'prompt' or 'instruction' field ({benchmark})")
        turns = [t["content"] if isinstance(t, dict) else t for t in turns]
        qid = r.get("question_id", r.get("prompt_id", r.get("uid", i)))
        out.append({"id": str(qid), "turns": turns, "category": r.get("category") or r.get("cluster"),
                    "reference": r.get("reference") or None, "baseline": r.get("output")})  # fmt: skip
    return out


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


# ---- scores -------------------------------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def mt_bench(
    judge: Chat, questions: list[dict], answers: list[list[str]], templates: dict | None = None,
    max_judge_tokens: int = 2048,
) -> dict[str, Any]:  # fmt: skip
    """MT-Bench 1-turn and 2-turn scores (mean 1-10 ratings), per-question ratings and unparsed counts."""
    t = (templates or load_templates())["mt_bench"]
    ref_cats = set(t.get("reference_categories", []))
    convs, where = [], []
    for qi, (q, a) in enumerate(zip(questions, answers, strict=True)):
        use_ref = q.get("category") in ref_cats and q.get("reference")
        ref = q.get("reference") or []
        convs.append(render(t["single_reference"], question=q["turns"][0], answer=a[0], reference=ref[0])
                     if use_ref else render(t["single"], question=q["turns"][0], answer=a[0]))  # fmt: skip
        where.append((qi, 1))
        if len(q["turns"]) > 1 and len(a) > 1:
            fields = {
                "question_1": q["turns"][0],
                "answer_1": a[0],
                "question_2": q["turns"][1],
                "answer_2": a[1],
            }
            if use_ref and len(ref) > 1:
                convs.append(
                    render(t["multi_turn_reference"], reference_1=ref[0], reference_2=ref[1], **fields)
                )
            else:
                convs.append(render(t["multi_turn"], **fields))
            where.append((qi, 2))
    judgments = judge.chat(convs, 0.0, None, max_judge_tokens)
    per_q: dict[str, dict[str, float | None]] = {q["id"]: {} for q in questions}
    by_turn: dict[int, list[float]] = {1: [], 2: []}
    unparsed = {1: 0, 2: 0}
    for (qi, turn), text in zip(where, judgments, strict=True):
        rating = parse_rating(text)
        per_q[questions[qi]["id"]][f"turn{turn}"] = rating
        if rating is None:
            unparsed[turn] += 1
        else:
            by_turn[turn].append(rating)
    return {"turn1": _mean(by_turn[1]), "turn2": _mean(by_turn[2]), "unparsed_turn1": unparsed[1],
            "unparsed_turn2": unparsed[2], "per_question": per_q, "judgments": judgments}  # fmt: skip


def arena_hard(
    judge: Chat, questions: list[dict], answers: Sequence[str], baseline_answers: Sequence[str],
    templates: dict | None = None, max_judge_tokens: int = 4096,
) -> dict[str, Any]:  # fmt: skip
    """Arena-Hard win rate (%) of the model against the baseline: two games per question, positions swapped."""
    t = (templates or load_templates())["arena_hard"]["pairwise"]
    convs = []
    for q, a, b in zip(questions, answers, baseline_answers, strict=True):
        convs.append(render(t, question=q["turns"][0], answer_a=b, answer_b=a))  # game 1: baseline is A
        convs.append(render(t, question=q["turns"][0], answer_a=a, answer_b=b))  # game 2: model is A
    judgments = judge.chat(convs, 0.0, None, max_judge_tokens)
    scores, per_q, unparsed = [], {}, 0
    for k, q in enumerate(questions):
        v1, v2 = parse_verdict(judgments[2 * k]), parse_verdict(judgments[2 * k + 1])
        s = [MODEL_AS_B[v1] if v1 else None, MODEL_AS_A[v2] if v2 else None]
        unparsed += sum(x is None for x in s)
        scores += [x for x in s if x is not None]
        per_q[q["id"]] = {"game1": v1, "game2": v2}
    wr = _mean(scores)
    return {"win_rate": None if wr is None else 100.0 * wr, "games": len(scores), "unparsed": unparsed,
            "per_question": per_q, "judgments": judgments}  # fmt: skip


def length_controlled_win_rate(prefs: Sequence[float], len_model: Sequence[int], len_base: Sequence[int],
                               l2: float = 1e-3, iters: int = 50) -> float:  # fmt: skip
    """``100 * sigmoid(a)`` of the logistic GLM ``logit p = a + b * tanh((len_m - len_b) / std)`` fitted to the
    soft preferences ``prefs`` (AlpacaEval 2's length control, without its instruction-difficulty term)."""
    diff = [m - b for m, b in zip(len_model, len_base, strict=True)]
    n = len(diff)
    mean = sum(diff) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diff) / n) or 1.0
    x = [math.tanh(d / std) for d in diff]
    a = b = 0.0
    for _ in range(iters):  # Newton's method on the L2-regularised soft-label log-loss (2 parameters)
        p = [1 / (1 + math.exp(-(a + b * xi))) for xi in x]
        ga = sum(pi - yi for pi, yi in zip(p, prefs, strict=True)) + l2 * a
        gb = sum((pi - yi) * xi for pi, yi, xi in zip(p, prefs, x, strict=True)) + l2 * b
        w = [pi * (1 - pi) for pi in p]
        haa = sum(w) + l2
        hab = sum(wi * xi for wi, xi in zip(w, x, strict=True))
        hbb = sum(wi * xi * xi for wi, xi in zip(w, x, strict=True)) + l2
        det = haa * hbb - hab * hab
        if det <= 0:
            break
        a -= (hbb * ga - hab * gb) / det
        b -= (haa * gb - hab * ga) / det
    return 100.0 / (1 + math.exp(-a))


def alpaca_eval(
    judge: Chat, questions: list[dict], outputs: Sequence[str], baseline_outputs: Sequence[str],
    templates: dict | None = None, seed: int = 0, length: Any = len,
) -> dict[str, Any]:  # fmt: skip
    """AlpacaEval 2 win rate and length-controlled win rate (%) of ``outputs`` against ``baseline_outputs``.

    ``length``: text -> length used by the length control (AlpacaEval counts characters; default ``len``)."""
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
    prefs = [p[m] if first else p[big_m] for p, first in zip(probs, model_first, strict=True)]
    lc = length_controlled_win_rate(
        prefs, [length(o) for o in outputs], [length(b) for b in baseline_outputs]
    )
    return {"win_rate": 100.0 * sum(prefs) / len(prefs), "lc_win_rate": lc, "preferences": prefs,
            "model_first": model_first}  # fmt: skip


def write_alpaca_annotations(path: str | Path, questions: list[dict], outputs: Sequence[str],
                             baseline_outputs: Sequence[str], result: dict[str, Any], generator: str) -> None:  # fmt: skip
    """Annotations in AlpacaEval's JSON shape (instruction, output_1 = baseline, output_2 = model, preference in
    [1, 2]) so ``alpaca_eval`` can compute its official GLM length-controlled win rate from our judge's votes."""

    rows = [{"instruction": q["turns"][0], "output_1": b, "output_2": o, "generator_1": "baseline",
             "generator_2": generator, "preference": 1.0 + p}
            for q, o, b, p in zip(questions, outputs, baseline_outputs, result["preferences"], strict=True)]  # fmt: skip
    with atomic_write(path) as f:
        json.dump(rows, f, indent=1)
