"""Stand-in data for lm-eval's own tasks of the paper profile (``eval.task_sets`` of config/paper.yaml: gpqa,
arc_challenge, truthfulqa_mc1, mmlu_pro, headqa_en, gsm8k_cot and the groups mmlu, mmlu_flan_n_shot_generative and
cmmlu; ifeval), written into the tiny hub world (:mod:`psftlib.worlds.stand_ins`) under each dataset's hub id, so lm-eval's
``datasets.load_dataset(dataset_path, dataset_name)`` reads a local dataset folder offline::

    <hub id>/README.md                 a dataset card whose ``configs:`` name every config and its split files
    <hub id>/<config>/<split>.jsonl    rows made from tests/fixtures/lm_eval/<schema>.jsonl (1-2 hand-written rows)

:data:`HUB_DATA` says, per hub id, what lm-eval 0.4.13's task YAMLs read (``dataset_path``, ``dataset_name``, the
test / validation / few-shot splits, the fields of ``doc_to_text`` / ``process_docs`` / the metrics). A group's
configs (mmlu's and cmmlu's subjects) and MMLU-Pro's categories come from the installed lm-eval itself, so a subtask
lm-eval adds gets its data too.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import yaml

FIXTURES = Path(__file__).resolve().parent.parent.parent / "tests" / "fixtures" / "lm_eval"
DEFAULT = "default"  # the config name of a dataset whose tasks give no dataset_name (MMLU-Pro)
# hub id -> (fixture schema, configs, {split: rows}, question field). ``configs``: names, or "mmlu" / "cmmlu" for
# every subject of lm-eval's task folder of that name. Rows per split: 2 to evaluate (the tiny eval's limit), 5 in
# a few-shot split (lm-eval's usual 5 shots, sampler first_n).
HUB_DATA: dict[str, tuple[str, tuple[str, ...] | str, dict[str, int], str]] = {
    # gpqa_diamond_cot_zeroshot, gpqa_main_cot_n_shot: the hub has the train split only (test = validation = train)
    "Idavidrein/gpqa": ("gpqa", ("gpqa_diamond", "gpqa_main"), {"train": 5}, "Question"),
    "allenai/ai2_arc": ("ai2_arc", ("ARC-Challenge",), {"train": 5, "validation": 2, "test": 2}, "question"),
    # truthfulqa_mc1: validation only; its 6 few-shot QAs are in the task's doc_to_text
    "truthfulqa/truthful_qa": ("truthful_qa", ("multiple_choice",), {"validation": 2}, "question"),
    # mmlu_pro_<category>: one dataset, each subtask filters its category (process_docs); 5-shot from validation
    "TIGER-Lab/MMLU-Pro": ("mmlu_pro", (DEFAULT,), {"test": 2, "validation": 5}, "question"),
    "EleutherAI/headqa": ("headqa", ("en",), {"train": 2, "validation": 2, "test": 2}, "qtext"),
    # gsm8k_cot: test only; its 8 few-shot examples are in the task's fewshot_config.samples
    "openai/gsm8k": ("gsm8k", ("main",), {"test": 2}, "question"),
    # mmlu_<subject> and mmlu_flan_n_shot_generative_<subject>: one config per subject, few-shot split dev
    "cais/mmlu": ("mmlu", "mmlu", {"test": 2, "dev": 5}, "question"),
    "haonan-li/cmmlu": ("cmmlu", "cmmlu", {"test": 2, "dev": 5}, "Question"),
    # ifeval: train only (no config); its checks need nltk's punkt_tab (write_punkt_tab) and langdetect
    "google/IFEval": ("ifeval", (DEFAULT,), {"train": 2}, "prompt"),
}


class _IgnoreTags(yaml.SafeLoader):
    """A YAML loader that reads lm-eval's ``!function`` tags as plain strings."""


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))


def lm_eval_task_dir() -> Path:
    """The installed lm-eval's task folder (its YAMLs)."""
    import lm_eval

    return Path(lm_eval.__file__).resolve().parent / "tasks"


@functools.cache
def subjects(folder: str) -> tuple[str, ...]:
    """The ``dataset_name`` of every ``<folder>_*.yaml`` task of lm-eval's task folder ``folder`` (mmlu's default
    tasks, cmmlu): the hub configs its group's subtasks load."""
    tasks = lm_eval_task_dir() / folder
    paths = sorted((tasks / "default" if (tasks / "default").is_dir() else tasks).glob(f"{folder}_*.yaml"))
    names = {yaml.load(p.read_text(), Loader=_IgnoreTags).get("dataset_name") for p in paths}
    if not names - {None}:
        raise FileNotFoundError(
            f"{tasks}: no {folder}_*.yaml task naming a dataset_name (lm-eval's layout changed?)"
        )
    return tuple(sorted(names - {None}))


@functools.cache
def mmlu_pro_categories() -> tuple[str, ...]:
    """MMLU-Pro's categories, as lm-eval's ``mmlu_pro`` subtasks filter them (``utils.process_<category>``)."""
    from lm_eval.tasks.mmlu_pro import utils

    found = [f.keywords["subject"] for name, f in sorted(vars(utils).items())
             if name.startswith("process_") and isinstance(f, functools.partial)]  # fmt: skip
    if not found:
        raise ValueError(
            f"{utils.__file__}: no process_<category> partials (lm-eval's mmlu_pro layout changed?)"
        )
    return tuple(found)


def configs(hub_id: str) -> tuple[str, ...]:
    """The configs of ``hub_id`` that lm-eval's tasks load (see :data:`HUB_DATA`)."""
    names = HUB_DATA[hub_id][1]
    return subjects(names) if isinstance(names, str) else names


def fixture_rows(schema: str) -> list[dict[str, Any]]:
    """The hand-written rows of ``tests/fixtures/lm_eval/<schema>.jsonl``."""
    path = FIXTURES / f"{schema}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def make_rows(hub_id: str, config: str, split: str) -> list[dict[str, Any]]:
    """The stand-in rows of one config and split: the schema's rows in turn, each question marked with its config,
    split and number (distinct questions; a subject or category field set to the config's)."""
    schema, _, splits, field = HUB_DATA[hub_id]
    base = fixture_rows(schema)
    groups = mmlu_pro_categories() if hub_id == "TIGER-Lab/MMLU-Pro" else (None,)
    rows = []
    for group in groups:  # MMLU-Pro: every category in the one config (its subtasks filter by category)
        for i in range(splits[split]):
            row = copy.deepcopy(base[i % len(base)])
            row[field] = f"{row[field]} [{group or config} {split} {i}]"
            if group is not None:
                row["category"] = group
            if "subject" in row:
                row["subject"] = config
            rows.append(row)
    return rows


def write_lm_eval_datasets(root: Path) -> list[str]:
    """Every dataset of :data:`HUB_DATA` as a local dataset folder ``root/<hub id>`` (a card naming each config's
    split files); returns the files written, relative to ``root``."""
    written = []
    for hub_id, (_, _, splits, _) in HUB_DATA.items():
        folder = root / hub_id
        card = []
        for config in configs(hub_id):
            (folder / config).mkdir(parents=True, exist_ok=True)
            files = []
            for split in splits:
                rows = make_rows(hub_id, config, split)
                (folder / config / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))  # fmt: skip
                files.append({"split": split, "path": f"{config}/{split}.jsonl"})
                written.append(f"{hub_id}/{config}/{split}.jsonl")
            card.append({"config_name": config, "data_files": files})
        (folder / "README.md").write_text(
            "---\n" + yaml.safe_dump({"configs": card}, sort_keys=False) + "---\n"
        )
    return written


NLTK_DATA = "nltk_data"  # under the stand-in root; the DAG's jobs get NLTK_DATA=<root>/nltk_data
PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def write_punkt_tab(root: Path) -> str:
    """An untrained English Punkt model (no abbreviations, collocations or sentence starters) as nltk's
    ``tokenizers/punkt_tab/english`` under ``root/nltk_data``: what IFEval's sentence counting loads (lm-eval
    downloads nltk's trained one when it imports the task unless ``NLTK_DATA`` holds one; nothing is downloaded here).
    Returns the folder written, relative to ``root``."""
    folder = Path(NLTK_DATA) / "tokenizers" / "punkt_tab" / "english"
    (root / folder).mkdir(parents=True, exist_ok=True)
    for name in PUNKT_FILES:  # what nltk's load_punkt_params reads; empty: no learned parameters
        (root / folder / name).write_text("")
    return str(folder)
