"""The small world: base skills, format instructions, and a long-CoT target domain, generated offline.

Deterministic generators (seeded ``random.Random``) for the world on which the paper's questions are asked on a
CPU. Every item is a chat record ``{"id", "skill", "system", "prompt", "response", "answer"}``; checkers decide
whether a model's response solves an item, by rule:

- five **base skills** (the paper's out-of-domain abilities): ``reverse`` a list of letters, ``sort`` numbers,
  ``compare`` two numbers (numbers in 0..``max_value``), ``arith`` (one addition or subtraction fact), ``count`` items;
- **format instructions** (our IFEval): a base-skill prompt plus an instruction (answer in brackets, repeat the
  answer n times, end with the word done, start with the word answer); checked on format *and* content;
- the **target domain** (our long-CoT math): chains of ``n_terms`` numbers joined by + / -. The base model has
  only ever seen *one-step* chains (``compute a + b``) in that style, with reflective asides rare; the target
  asks for 3-5 terms, every step a fact the base knows. Demonstrations carry per-example variety (opening, step
  phrasing, reflective asides, closing drawn at random) that can only be memorised, and end in ``\\boxed{ N }``;
  eval sets are graded by number of terms (our AIME / AMC / MATH-500 analogs);
- **RL prompts** (our DAPO-Math analog) and **preference pairs** (our UltraFeedback analog: chosen = correct and
  well-formed, rejected = wrong content or an ignored instruction).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

SYSTEM_PROMPT = "please reason step by step , and put your final answer within \\boxed{ } ."
SKILL_SYSTEM = ""  # base skills come without a system prompt (the target has one)
LETTERS = list(string.ascii_lowercase)
REFLECTIVE = ["wait", "alternatively", "hmm", "verify", "recheck"]  # §5.1's thinking-pattern words
MAX_NUMBER = 99  # every number word 0..99 is in the vocabulary

# ---- base skills ----------------------------------------------------------------------------------------------


def _reverse(rng: random.Random, w: dict[str, Any]) -> tuple[str, str]:
    items = rng.sample(LETTERS, rng.randint(3, 5))
    return f"reverse the list : {' '.join(items)}", " ".join(reversed(items))


def _sort(rng: random.Random, w: dict[str, Any]) -> tuple[str, str]:
    nums = rng.sample(range(0, w["max_value"] + 1), rng.randint(3, 5))
    return f"sort the numbers : {' '.join(map(str, nums))}", " ".join(map(str, sorted(nums)))


def _compare(rng: random.Random, w: dict[str, Any]) -> tuple[str, str]:
    a, b = rng.sample(range(0, w["max_value"] + 1), 2)
    return f"which is larger : {a} or {b}", str(max(a, b))


def arith_fact(rng: random.Random, total: int, w: dict[str, Any]) -> tuple[str, int]:
    """One step from ``total``: (+ or -, operand), every result kept in [0, max_value]."""
    up = min(w["max_operand"], w["max_value"] - total)
    down = min(w["max_operand"], total)
    if down >= 1 and (up < 1 or rng.random() < 0.5):
        return "-", rng.randint(1, down)
    return "+", rng.randint(1, up)


def _arith(rng: random.Random, w: dict[str, Any]) -> tuple[str, str]:
    a = rng.randint(0, w["max_value"])
    op, b = arith_fact(rng, a, w)
    return f"what is {a} {op} {b}", str(a + b if op == "+" else a - b)


def arith_facts(world: dict[str, Any], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` ``arith`` items cycling through every fact of the world (each fact ``n // facts`` times or one more)."""
    w = {**DEFAULT_WORLD, **world}
    facts = [(a, "+", b) for a in range(w["max_value"] + 1) for b in range(1, w["max_operand"] + 1)
             if a + b <= w["max_value"]]  # fmt: skip
    facts += [(a, "-", b) for a in range(w["max_value"] + 1) for b in range(1, min(a, w["max_operand"]) + 1)]
    order = [facts[i % len(facts)] for i in range(n)]
    rng.shuffle(order)
    return [{"skill": "arith", "system": SKILL_SYSTEM, "prompt": f"what is {a} {op} {b}",
             "response": str(a + b if op == "+" else a - b), "answer": str(a + b if op == "+" else a - b)}
            for a, op, b in order]  # fmt: skip


def _count(rng: random.Random, w: dict[str, Any]) -> tuple[str, str]:
    items = [rng.choice(LETTERS) for _ in range(rng.randint(2, 9))]
    return f"how many items : {' '.join(items)}", str(len(items))


SKILLS: dict[str, Callable[[random.Random, dict[str, Any]], tuple[str, str]]] = {
    "reverse": _reverse, "sort": _sort, "compare": _compare, "arith": _arith, "count": _count,
}  # fmt: skip
DEFAULT_WORLD = {"max_value": 19, "max_operand": 9}

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


def make_skill_item(rng: random.Random, skill: str, world: dict[str, Any] | None = None) -> dict[str, Any]:
    """One base-skill item; the response is the bare answer."""
    prompt, answer = SKILLS[skill](rng, {**DEFAULT_WORLD, **(world or {})})
    return {"skill": skill, "system": SKILL_SYSTEM, "prompt": prompt, "response": answer, "answer": answer}


def make_format_item(rng: random.Random, world: dict[str, Any] | None = None) -> dict[str, Any]:
    """A base-skill prompt with a format instruction appended; the response obeys it."""
    skill = rng.choice(list(SKILLS))
    prompt, answer = SKILLS[skill](rng, {**DEFAULT_WORLD, **(world or {})})
    kind = rng.choice(list(INSTRUCTIONS))
    n = rng.randint(2, 3)
    text, render = INSTRUCTIONS[kind]
    return {"skill": "format", "system": SKILL_SYSTEM, "prompt": f"{prompt} ; {text.format(n=n)}",
            "response": render(answer, n), "answer": answer, "instruction": kind, "n": n, "base_skill": skill}  # fmt: skip


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
    "let me think about this carefully .",
    "alright , one operation at a time .",
]
STEP_FORMS = [
    "{a} {op} {b} = {c} .",
    "{a} {op} {b} gives {c} .",
    "now {a} {op} {b} is {c} .",
    "next , {a} {op} {b} = {c} .",
    "the running total becomes {a} {op} {b} = {c} .",
    "then {a} {op} {b} makes {c} .",
]
ASIDES = [
    "wait , let me check : {a} {op} {b} = {c} .",
    "alternatively , recompute : {a} {op} {b} = {c} .",
    "hmm , verify that : {a} {op} {b} is {c} .",
    "let me recheck the last step : {c} is right .",
    "wait , is {c} right ? yes .",
    "hmm , {c} seems right .",
]
CLOSINGS = [
    "so the answer is \\boxed{{ {c} }}",
    "therefore the final answer is \\boxed{{ {c} }}",
    "the result is \\boxed{{ {c} }}",
]


def make_target_item(
    rng: random.Random, n_terms: int, aside_prob: float, world: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One chain of ``n_terms`` numbers joined by + / -, every partial result a fact of the ``arith`` skill."""
    w = {**DEFAULT_WORLD, **(world or {})}
    total = rng.randint(0, w["max_value"])
    terms, ops, steps = [total], [], []
    for _ in range(n_terms - 1):
        op, b = arith_fact(rng, total, w)
        new = total + b if op == "+" else total - b
        steps.append(rng.choice(STEP_FORMS).format(a=total, op=op, b=b, c=new))
        if rng.random() < aside_prob:
            steps.append(rng.choice(ASIDES).format(a=total, op=op, b=b, c=new))
        terms.append(b)
        ops.append(op)
        total = new
    expr = str(terms[0]) + "".join(f" {o} {t}" for o, t in zip(ops, terms[1:], strict=True))
    response = " ".join([rng.choice(OPENINGS), *steps, rng.choice(CLOSINGS).format(c=total)])
    return {"skill": "target", "system": SYSTEM_PROMPT, "prompt": f"compute {expr}", "response": response,
            "answer": str(total), "n_terms": n_terms}  # fmt: skip


def vocabulary_corpus() -> list[str]:
    """Every word the generators can emit, so the tokenizer has no unknowns (numbers 0..99 as words)."""
    fill = {"a": 1, "op": "+ -", "b": 1, "c": 2}
    words = [SYSTEM_PROMPT, SKILL_SYSTEM, " ".join(LETTERS), " ".join(str(i) for i in range(MAX_NUMBER + 1)),
             "reverse the list sort the numbers which is larger or what is + - = how many items ; [ ] done answer",
             *OPENINGS, *(f.format(**fill) for f in STEP_FORMS + ASIDES + CLOSINGS),
             "compute repeat your answer times answer in brackets end with the word",
             "start system user assistant"]  # fmt: skip
    words += [text.format(n=2) for text, _ in INSTRUCTIONS.values()]
    return words


# ---- preference pairs (our UltraFeedback analog) ---------------------------------------------------------------


def preference_pair(item: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """chosen = the item's correct, well-formed response; rejected = a wrong answer or an ignored instruction."""
    answer = item["answer"]
    if item["skill"] == "format" and rng.random() < 0.5:
        rejected, kind = answer, "ignored_instruction"  # right content, instruction not followed
    else:
        words = answer.split()
        if all(w.isdigit() for w in words) and len(words) == 1:
            wrong = str(max(0, int(answer) + rng.choice([-2, -1, 1, 2])) if answer != "0" else 1)
            wrong = wrong if wrong != answer else str(int(answer) + 1)
        else:  # lists: swap two neighbours
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
            wrong = " ".join(words)
        if item["skill"] == "target":
            rejected = item["response"].replace(f"\\boxed{{ {answer} }}", f"\\boxed{{ {wrong} }}")
        elif item["skill"] == "format":
            rejected = INSTRUCTIONS[item["instruction"]][1](wrong, item["n"])
        else:
            rejected = wrong
        kind = "wrong_answer"
    checks = {
        k: item[k] for k in ("instruction", "n") if k in item
    }  # what check_skill needs for format items
    return {"id": item["id"], "skill": item["skill"], "system": item["system"], "prompt": item["prompt"],
            "chosen": item["response"], "rejected": rejected, "answer": answer, "rejected_kind": kind, **checks}  # fmt: skip


# ---- building the datasets ------------------------------------------------------------------------------------


def make_datasets(world: dict[str, Any], seed: int) -> dict[str, list[dict[str, Any]]]:
    """Every split of the small world, pairwise disjoint by prompt, deterministic in ``seed``.

    ``pretrain``: the base model's corpus (each skill, format items, and one-step target-style chains whose
    reflective asides are rare, ``pretrain_aside_prob``); ``train``: target demonstrations (``levels`` terms,
    asides at ``aside_prob``); ``heldout``: more demonstrations of the same kind, never trained on (held-out NLL);
    ``eval_target_<n>``: in-domain eval by number of terms; ``eval_<skill>`` and ``eval_format``: out-of-domain
    evals; ``rl``: target prompts with answers; ``prefs``: preference pairs over format and target prompts.
    """
    rng = random.Random(seed)
    seen: set[str] = set()

    def draw(
        make: Callable[[], dict[str, Any]], n: int, tag: str, repeats: bool = False
    ) -> list[dict[str, Any]]:
        """``n`` items whose prompts no earlier split holds; ``repeats``: may repeat among themselves (a corpus)."""
        out, mine, attempts = [], set(), 0
        while len(out) < n:
            attempts += 1
            if attempts > 200 * n + 1000:
                raise ValueError(f"small world: cannot draw {n} distinct {tag} items; lower world.n_* or raise "
                                 "world.max_value")  # fmt: skip
            item = make()
            if item["prompt"] in seen or (item["prompt"] in mine and not repeats):
                continue
            mine.add(item["prompt"])
            out.append({"id": f"{tag}-{len(out):05d}", **item})
        seen.update(mine)
        return out

    levels = world["levels"]
    sets: dict[str, list[dict[str, Any]]] = {}
    # eval splits first, so the training splits can never contain an eval prompt
    for skill in SKILLS:
        sets[f"eval_{skill}"] = draw(lambda s=skill: make_skill_item(rng, s, world), world["n_eval_skill"],
                                     f"eval-{skill}")  # fmt: skip
    sets["eval_format"] = draw(lambda: make_format_item(rng, world), world["n_eval_skill"], "eval-format")
    for n in levels:
        sets[f"eval_target_{n}"] = draw(lambda n=n: make_target_item(rng, n, world["aside_prob"], world),
                                        world["n_eval_target"], f"eval-target{n}")  # fmt: skip
    pretrain = []
    for skill in SKILLS:
        n = int(world["n_pretrain_per_skill"] * world.get("pretrain_weights", {}).get(skill, 1))
        if (
            skill == "arith"
        ):  # knowledge, not an algorithm: every fact is taught, eval_arith asks a sample of them
            pretrain += [
                {"id": f"pre-arith-{i:05d}", **it} for i, it in enumerate(arith_facts(world, n, rng))
            ]
        else:
            pretrain += draw(lambda s=skill: make_skill_item(rng, s, world), n, f"pre-{skill}", repeats=True)
    pretrain += draw(
        lambda: make_format_item(rng, world), world["n_pretrain_format"], "pre-format", repeats=True
    )
    # one-step chains: only a few hundred distinct prompts, so repeats are allowed (eval chains have 3+ terms)
    pretrain += [{"id": f"pre-target-{i:05d}", **make_target_item(rng, 2, world["pretrain_aside_prob"], world)}
                 for i in range(world["n_pretrain_target"])]  # fmt: skip
    rng.shuffle(pretrain)
    sets["pretrain"] = pretrain

    def demo() -> dict[str, Any]:
        return make_target_item(rng, rng.choice(levels), world["aside_prob"], world)

    sets["train"] = draw(demo, world["n_train"], "train")
    sets["heldout"] = draw(demo, world["n_heldout"], "heldout")
    rl = draw(lambda: make_target_item(rng, rng.choice(levels), 0.0, world), world.get("n_rl", 0), "rl")
    sets["rl"] = [{k: r[k] for k in ("id", "system", "prompt", "answer")} for r in rl]
    n_pref = world.get("n_pref", 0)
    pref_items = draw(lambda: make_format_item(rng, world) if rng.random() < 0.5 else demo(), n_pref, "pref")
    sets["prefs"] = [preference_pair(it, rng) for it in pref_items]
    return sets
