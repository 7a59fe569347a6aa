"""The small world (work in progress): base skills, format instructions, and a long-CoT target domain.

Deterministic generators (seeded ``random.Random``) for the world on which the paper's questions are asked on a
CPU. Every item is a chat record ``{"id", "skill", "system", "prompt", "response", "answer"}``; checkers decide
whether a model's response solves an item, by rule:

- five **base skills** (the paper's out-of-domain abilities): ``reverse`` a list of letters, ``sort`` numbers,
  ``compare`` two numbers, ``add`` two numbers (arithmetic facts), ``count`` items;
- **format instructions** (our IFEval): a base-skill prompt plus an instruction (answer in brackets, repeat the
  answer n times, end with the word done, start with the word answer); checked on format *and* content;
- the **target domain**: 3-5 term addition/subtraction chains the base model has not been taught, solved by long
  demonstrations with per-example variety (opening, step phrasing, reflective asides drawn at random) so that
  over-training can only memorise them, ending in ``\\boxed{ N }``; graded eval sets by number of terms.

Not yet wired into a profile: the calibration study (base >= 90 % per skill, <= 30 % on the target, SFT +30
points) decides the sizes before ``mini`` switches to it.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

SYSTEM_PROMPT = "please reason step by step , and put your final answer within \\boxed{ } ."
SKILL_SYSTEM = "you are a helpful assistant ."
LETTERS = list(string.ascii_lowercase)
REFLECTIVE = ["wait", "alternatively", "hmm", "verify", "recheck"]  # §5.1's thinking-pattern words

# ---- base skills ----------------------------------------------------------------------------------------------


def _reverse(rng: random.Random) -> tuple[str, str]:
    items = rng.sample(LETTERS, rng.randint(3, 6))
    return f"reverse the list : {' '.join(items)}", " ".join(reversed(items))


def _sort(rng: random.Random) -> tuple[str, str]:
    nums = rng.sample(range(0, 50), rng.randint(3, 5))
    return f"sort the numbers : {' '.join(map(str, nums))}", " ".join(map(str, sorted(nums)))


def _compare(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(range(0, 100), 2)
    return f"which is larger : {a} or {b}", str(max(a, b))


def _add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 40), rng.randint(0, 20)
    return f"what is {a} + {b}", str(a + b)


def _count(rng: random.Random) -> tuple[str, str]:
    items = [rng.choice(LETTERS) for _ in range(rng.randint(2, 9))]
    return f"how many items : {' '.join(items)}", str(len(items))


SKILLS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "reverse": _reverse, "sort": _sort, "compare": _compare, "add": _add, "count": _count,
}  # fmt: skip

# ---- format instructions (our IFEval) -------------------------------------------------------------------------

INSTRUCTIONS = {
    "brackets": ("answer in brackets", lambda ans, n: f"[ {ans} ]"),
    "repeat": ("repeat your answer {n} times", lambda ans, n: " ; ".join([ans] * n)),
    "end_done": ("end your answer with the word done", lambda ans, n: f"{ans} done"),
    "start_answer": ("start your answer with the word answer", lambda ans, n: f"answer {ans}"),
}


def check_format(instruction: str, n: int, response: str, answer: str) -> bool:
    """Rule check of an instruction-following response: the format is obeyed and the content is right."""
    r = " ".join(response.split())
    if instruction == "brackets":
        return r == f"[ {answer} ]"
    if instruction == "repeat":
        return r == " ; ".join([answer] * n)
    if instruction == "end_done":
        return r.endswith(" done") and r[: -len(" done")].strip() == answer
    if instruction == "start_answer":
        return r.startswith("answer ") and r[len("answer ") :].strip() == answer
    raise ValueError(f"unknown instruction {instruction!r}")


def make_skill_item(rng: random.Random, skill: str) -> dict[str, Any]:
    prompt, answer = SKILLS[skill](rng)
    return {"skill": skill, "system": SKILL_SYSTEM, "prompt": prompt, "response": answer, "answer": answer}


def make_format_item(rng: random.Random) -> dict[str, Any]:
    skill = rng.choice(list(SKILLS))
    prompt, answer = SKILLS[skill](rng)
    kind = rng.choice(list(INSTRUCTIONS))
    n = rng.randint(2, 3)
    text, render = INSTRUCTIONS[kind]
    return {"skill": "format", "system": SKILL_SYSTEM, "prompt": f"{prompt} ; {text.format(n=n)}",
            "response": render(answer, n), "answer": answer, "instruction": kind, "n": n}  # fmt: skip


def check_skill(item: dict[str, Any], response: str) -> bool:
    """Whether ``response`` solves a base-skill or format item (exact, whitespace-normalised)."""
    if item["skill"] == "format":
        return check_format(item["instruction"], item["n"], response, item["answer"])
    return " ".join(response.split()) == item["answer"]


# ---- target domain: long chain-of-thought arithmetic ------------------------------------------------------------

OPENINGS = [
    "let me work through this step by step .",
    "okay , i will combine the numbers from left to right .",
    "first , i need to handle each term in order .",
    "i will keep a running total .",
]
STEP_FORMS = [
    "{a} {op} {b} = {c} .",
    "{a} {op} {b} gives {c} .",
    "now {a} {op} {b} is {c} .",
    "next , {a} {op} {b} = {c} .",
    "the running total becomes {a} {op} {b} = {c} .",
]
ASIDES = [
    "wait , let me check : {a} {op} {b} = {c} .",
    "alternatively , recompute : {a} {op} {b} = {c} .",
    "hmm , verify that : {a} {op} {b} is {c} .",
    "let me recheck the last step : {c} is right .",
]


def make_target_item(
    rng: random.Random, n_terms: int, aside_prob: float, max_value: int = 60
) -> dict[str, Any]:
    """One chain of ``n_terms`` terms joined by + / -, every partial result kept in [0, max_value]."""
    total = rng.randint(0, 30)
    terms, ops, steps = [total], [], []
    for _ in range(n_terms - 1):
        if total >= 15 and rng.random() < 0.5:
            op, b = "-", rng.randint(1, min(total, 20))
        else:
            op, b = "+", rng.randint(1, min(20, max_value - total) or 1)
        new = total + b if op == "+" else total - b
        form = rng.choice(STEP_FORMS)
        steps.append(form.format(a=total, op=op, b=b, c=new))
        if rng.random() < aside_prob:
            steps.append(rng.choice(ASIDES).format(a=total, op=op, b=b, c=new))
        terms.append(b)
        ops.append(op)
        total = new
    expr = str(terms[0]) + "".join(f" {o} {t}" for o, t in zip(ops, terms[1:], strict=True))
    response = " ".join([rng.choice(OPENINGS), *steps, f"so the answer is \\boxed{{ {total} }}"])
    return {"skill": "target", "system": SYSTEM_PROMPT, "prompt": f"compute {expr}", "response": response,
            "answer": str(total), "n_terms": n_terms}  # fmt: skip


def vocabulary_corpus(max_value: int = 100) -> list[str]:
    """Every word the generators can emit, so the tokenizer has no unknowns (numbers 0..max_value as words)."""
    words = [SYSTEM_PROMPT, SKILL_SYSTEM, " ".join(LETTERS), " ".join(str(i) for i in range(max_value + 1)),
             "reverse the list sort the numbers which is larger or what is + - = how many items ; [ ] done answer",
             *OPENINGS, *(f.format(a=1, op="+", b=1, c=2) for f in STEP_FORMS + ASIDES),
             "so the answer is \\boxed{ } compute repeat your answer times answer in brackets end with the word",
             "start system user assistant"]  # fmt: skip
    words += [text.format(n=2) for text, _ in INSTRUCTIONS.values()]
    return words


# ---- building the datasets ------------------------------------------------------------------------------------


def make_datasets(world: dict[str, Any], seed: int) -> dict[str, list[dict[str, Any]]]:
    """Every split of the small world, pairwise disjoint by prompt, deterministic in ``seed``.

    ``pretrain``: the base model's corpus (each skill, format items, and a few 2-term target-style chains whose
    reflective asides are rare, ``pretrain_aside_prob``); ``train``: target demonstrations (3-5 terms, asides at
    ``aside_prob``); ``eval_target_<n>``: in-domain eval by number of terms (graded difficulty);
    ``eval_<skill>`` and ``eval_format``: out-of-domain evals; ``rl``: target prompts with answers.
    """
    rng = random.Random(seed)
    seen: set[str] = set()

    def draw(make: Callable[[], dict[str, Any]], n: int, tag: str) -> list[dict[str, Any]]:
        out, attempts = [], 0
        while len(out) < n:
            attempts += 1
            if attempts > 200 * n + 1000:
                raise ValueError(f"small world: cannot draw {n} distinct {tag} items; lower the size")
            item = make()
            if item["prompt"] in seen:
                continue
            seen.add(item["prompt"])
            out.append({"id": f"{tag}-{len(out):05d}", **item})
        return out

    levels = world.get("levels", [3, 4, 5])
    sets: dict[str, list[dict[str, Any]]] = {}
    # eval splits first, so the training splits can never contain an eval prompt
    for skill in SKILLS:
        sets[f"eval_{skill}"] = draw(
            lambda s=skill: make_skill_item(rng, s), world["n_eval_skill"], f"eval-{skill}"
        )
    sets["eval_format"] = draw(lambda: make_format_item(rng), world["n_eval_skill"], "eval-format")
    for n in levels:
        sets[f"eval_target_{n}"] = draw(lambda n=n: make_target_item(rng, n, world["aside_prob"]), world["n_eval_target"],
                                        f"eval-target{n}")  # fmt: skip
    pretrain = []
    for skill in SKILLS:
        pretrain += draw(
            lambda s=skill: make_skill_item(rng, s), world["n_pretrain_per_skill"], f"pre-{skill}"
        )
    pretrain += draw(lambda: make_format_item(rng), world["n_pretrain_format"], "pre-format")
    pretrain += draw(lambda: make_target_item(rng, 2, world["pretrain_aside_prob"]), world["n_pretrain_target"],
                     "pre-target")  # fmt: skip
    rng.shuffle(pretrain)
    sets["pretrain"] = pretrain
    sets["train"] = draw(lambda: make_target_item(rng, rng.choice(levels), world["aside_prob"]), world["n_train"],
                         "train")  # fmt: skip
    rl = draw(lambda: make_target_item(rng, rng.choice(levels), 0.0), world.get("n_rl", 0), "rl")
    sets["rl"] = [{k: r[k] for k in ("id", "system", "prompt", "answer")} for r in rl]
    return sets
