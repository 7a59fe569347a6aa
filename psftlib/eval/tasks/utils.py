"""Scoring for psftlib's lm-eval tasks (loaded by lm-eval through ``!function utils.<name>`` in the YAMLs).

Every math task is normalised to ``{"problem", "answer"}`` by a ``process_docs`` function here, then scored the
same way: each of the k sampled responses (``repeats: k`` with the ``filter: []`` "all" filter, so all k reach
``process_results``) has its last ``\\boxed{}`` compared with the reference by math-verify.
"""

from __future__ import annotations

from collections import Counter

from psftlib.eval.verify import extract_answer, is_correct
from psftlib.worlds.small import check_skill


def score_responses(responses: list[str], gold: str) -> dict[str, float]:
    """avg@k (mean correctness over the k samples), pass@k (any correct), maj@k (the most common answer)."""
    preds = [extract_answer(r) for r in responses]
    correct = [int(is_correct(p, gold)) for p in preds]
    votes = Counter(p for p in preds if p is not None)
    maj = correct[preds.index(votes.most_common(1)[0][0])] if votes else 0
    return {"avg_at_k": sum(correct) / len(correct), "pass_at_k": float(any(correct)), "maj_at_k": float(maj)}


def process_results(doc: dict, results: list) -> dict[str, float]:
    responses = results[0]
    if isinstance(responses, str):  # a task without the "all" filter: one response
        responses = [responses]
    return score_responses(responses, str(doc["answer"]))


def _rename(dataset, problem: str, answer: str):
    def fn(doc):
        gold = doc[answer]
        if isinstance(gold, list):  # OlympiadBench stores final answers as a list of strings
            gold = gold[0] if gold else ""
        return {"problem": doc[problem], "answer": str(gold).strip().strip("$")}

    return dataset.map(fn)


def docs_world(dataset):  # small world: {"prompt", "answer", ...}
    return _rename(dataset, "prompt", "answer")


def docs_problem_answer(dataset):  # MATH-500, AIME-25, AMC (AI-MO): {"problem", "answer"}
    return _rename(dataset, "problem", "answer")


def docs_aime24(dataset):  # Maxwell-Jia/AIME_2024: {"Problem", "Answer"}
    return _rename(dataset, "Problem", "Answer")


def docs_question_answer(dataset):  # Minerva (math-ai/minervamath): {"question", "answer"}
    return _rename(dataset, "question", "answer")


def docs_olympiadbench(dataset):  # Hothan/OlympiadBench: {"question", "final_answer": [..]}
    return _rename(dataset, "question", "final_answer")


# ---- multiple choice answered by generation (SuperGPQA): the last boxed letter ---------------------------------


def docs_supergpqa(dataset):  # m-a-p/SuperGPQA: {"question", "options": [...], "answer_letter"}
    letters = "ABCDEFGHIJ"

    def fn(doc):
        options = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(doc["options"]))
        return {"problem": f"{doc['question']}\n{options}", "answer": doc["answer_letter"].strip()}

    return dataset.map(fn)


def process_results_letter(doc: dict, results: list) -> dict[str, float]:
    responses = results[0] if not isinstance(results[0], str) else [results[0]]
    correct = [int((extract_answer(r) or "").strip().upper() == doc["answer"]) for r in responses]
    return {"avg_at_k": sum(correct) / len(correct), "pass_at_k": float(any(correct))}


# ---- the small world's skills and format instructions (rule-checked, our IFEval analog) ----------------------


def process_results_skill(doc: dict, results: list) -> dict[str, float]:
    responses = results[0] if not isinstance(results[0], str) else [results[0]]
    correct = [int(check_skill(doc, r)) for r in responses]
    return {"avg_at_k": sum(correct) / len(correct), "pass_at_k": float(any(correct))}


# ---- LiveCodeBench (App. C.6): generated programs run against the problem's tests (psftlib.eval.code_exec) -------


def docs_livecodebench(dataset):  # lighteval/code_generation_lite (LCB's hub schema): the chat prompt, the id
    from psftlib.eval.code_exec import lcb_prompt, require_code_eval

    require_code_eval()  # before any generation: scoring would refuse anyway
    return dataset.map(lambda doc: {"problem": lcb_prompt(doc["question_content"], doc["starter_code"]),
                                    "id": doc["question_id"]})  # fmt: skip


def process_results_code(doc: dict, results: list) -> dict[str, float]:
    from psftlib.eval.code_exec import problem_tests, score_code_responses

    responses = results[0] if not isinstance(results[0], str) else [results[0]]
    return score_code_responses(responses, problem_tests(doc))
