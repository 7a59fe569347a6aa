"""Documents, images and scoring of psftlib's image-text lm-eval tasks (Table 5, §4.4; ``!function scoring.<name>``
in the YAMLs beside this file).

Every dataset is normalised by a ``docs_*`` function to ``{"problem", "answer", "answers", "letters"}`` beside its
own columns (``dataset.map`` returns only these, so the image columns stay as stored); ``problem`` holds one
``<image>`` placeholder per image that the task's ``doc_to_image`` returns, in order: lm-eval's multimodal backends
put the model's image tokens there. Scoring as for the text tasks: the last ``\\boxed{}`` of each of the k
responses; multiple choice (``letters`` not empty): the boxed option letter is the gold letter (``A``, ``(A)``,
``A. text`` and ``\\text{A}`` count as ``A``); free form: math-verify (:mod:`psftlib.eval.verify`) against any of
``answers``.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from typing import Any

from psftlib.eval.verify import extract_answer, is_correct

IMAGE = "<image>"  # lm-eval's placeholder (DEFAULT_IMAGE_PLACEHOLDER of lm_eval.models.hf_vlms and vllm_vlms)
LETTERS = "ABCDEFGHIJ"
CHOICE = "Answer with the option's letter from the given choices in \\boxed{}."


class ImageTaskError(ValueError):
    """A document whose images do not fit its task: missing, not images, or not matching the prompt."""


def _doc(problem: str, answer: str, letters: str = "", answers: list[str] | None = None) -> dict[str, Any]:
    answer = str(answer).strip().strip("$")
    return {"problem": problem, "answer": answer, "answers": answers or [answer], "letters": letters}


def _placed(text: str, n: int) -> str:
    """``text`` with ``n`` image placeholders: its own when it has exactly ``n``, else ``n`` put in front of it."""
    return text if text.count(IMAGE) == n else IMAGE * n + "\n" + text.replace(IMAGE, "")


def _images(values: list[Any], where: str) -> list[Any]:
    from PIL import Image

    for v in values:
        if not isinstance(v, Image.Image):
            raise ImageTaskError(
                f"{where}: holds {type(v).__name__}, not an image; image tasks read datasets whose image columns "
                "are datasets.Image features (the hub's parquet files, or the tiny hub world's)"
            )
    return list(values)


# ---- Geometry3K (hiyouga/geometry3k): {"images": [image], "problem": "<image>...", "answer", "choices", ...} ----


def docs_geo3k(dataset):
    return dataset.map(lambda problem, answer, images: _doc(_placed(problem, len(images)), answer),
                       input_columns=["problem", "answer", "images"])  # fmt: skip


def images_geo3k(doc: dict) -> list[Any]:
    return _images(doc["images"], f"geometry3k problem {doc.get('id')!r}: field 'images'")


# ---- MathVerse (AI4Math/MathVerse, testmini): {"image", "query_cot", "answer", "question_type", ...} ------------


def docs_mathverse(dataset):
    def fn(query_cot, answer, question_type):
        choice = question_type == "multi-choice"
        return _doc(_placed(query_cot, 1), answer.strip().strip("()").upper() if choice else answer,
                    LETTERS if choice else "")  # fmt: skip

    return dataset.map(fn, input_columns=["query_cot", "answer", "question_type"])


def images_mathverse(doc: dict) -> list[Any]:
    return _images([doc["image"]], f"MathVerse sample {doc.get('sample_index')!r}: field 'image'")


# ---- MathVista (AI4Math/MathVista, testmini): {"decoded_image", "query", "choices", "answer", "question_type"} ----


def docs_mathvista(dataset):
    def fn(query, answer, choices, question_type):
        if question_type == "multi_choice":
            return _doc(_placed(query, 1), LETTERS[list(choices).index(answer)], LETTERS[: len(choices)])
        return _doc(_placed(query, 1), answer)

    return dataset.map(fn, input_columns=["query", "answer", "choices", "question_type"])


def images_mathvista(doc: dict) -> list[Any]:
    return _images([doc["decoded_image"]], f"MathVista problem {doc.get('pid')!r}: field 'decoded_image'")


# ---- MMMU (MMMU/MMMU validation, 30 subject configs) and MMMU-Pro (MMMU/MMMU_Pro, "standard (10 options)") ---------
# {"id", "question", "options": "['..', ..]", "answer", "image_1".."image_7", ["question_type"]}; the question and
# options name their images "<image 1>".."<image 7>" (an image may be named twice, the order is the text's)

_NAMED = re.compile(r"<image ([1-7])>")


def _mmmu_text(question: str, options: str) -> tuple[str, list[str]]:
    opts = ast.literal_eval(options) if options.strip() else []
    text = question + "".join(f"\n({LETTERS[i]}) {o}" for i, o in enumerate(opts))
    return text, opts


def load_mmmu(path: str, hub_configs: list[str], split: str, **_: Any):
    """One split of MMMU, all subjects: the configs ``hub_configs`` (MMMU/MMMU's 30) concatenated. lm-eval's
    ``custom_dataset``, called with the YAML's ``metadata`` as arguments."""
    import datasets

    parts = [datasets.load_dataset(path, config, split=split) for config in hub_configs]
    return datasets.DatasetDict({split: datasets.concatenate_datasets(parts)})


def docs_mmmu(dataset):
    def fn(question, options, answer, question_type=None):
        text, opts = _mmmu_text(question, options)
        if question_type == "open":
            golds = ast.literal_eval(answer) if answer.strip().startswith("[") else [answer]
            return _doc(_NAMED.sub(IMAGE, text), golds[0], answers=[str(g) for g in golds])
        return _doc(_NAMED.sub(IMAGE, text) + "\n" + CHOICE, answer.strip(), LETTERS[: len(opts)])

    columns = ["question", "options", "answer"] + (["question_type"] if "question_type" in dataset.column_names
                                                   else [])  # fmt: skip
    return dataset.map(fn, input_columns=columns)


def images_mmmu(doc: dict) -> list[Any]:
    text, _ = _mmmu_text(doc["question"], doc["options"])
    names = [f"image_{i}" for i in _NAMED.findall(text)]
    missing = [n for n in names if doc.get(n) is None]
    if missing:
        raise ImageTaskError(
            f"MMMU question {doc.get('id')!r}: its text names {missing}, which the row lacks"
        )
    return _images([doc[n] for n in names], f"MMMU question {doc.get('id')!r}")


# ---- scoring ----------------------------------------------------------------------------------------------------


def _letter(pred: str | None, letters: str) -> str | None:
    if pred is None:
        return None
    text = re.sub(r"\\text(?:bf)?\{([^}]*)\}", r"\1", pred).strip().lstrip("(").strip()
    if text[:1].upper() in letters and (len(text) == 1 or not text[1].isalnum()):
        return text[0].upper()
    return None


def process_results(doc: dict, results: list) -> dict[str, float]:
    """avg@k, pass@k and maj@k (the most common answer's correctness) of the k responses to one document."""
    responses = results[0] if not isinstance(results[0], str) else [results[0]]
    letters = doc["letters"]
    if letters:
        preds = [_letter(extract_answer(r), letters) for r in responses]
        correct = [int(p is not None and p == doc["answer"]) for p in preds]
    else:
        preds = [extract_answer(r) for r in responses]
        correct = [int(any(is_correct(p, g) for g in doc["answers"])) for p in preds]
    votes = Counter(p for p in preds if p is not None)
    maj = correct[preds.index(votes.most_common(1)[0][0])] if votes else 0
    return {"avg_at_k": sum(correct) / len(correct), "pass_at_k": float(any(correct)), "maj_at_k": float(maj)}
