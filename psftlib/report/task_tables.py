"""Per-benchmark tables of the paper's appendix experiments (Tables 4, 5, 8, App. C.6, Table 1's Llama rows): one
column per task of the profile's task sets, rows the runs, beside the paper's numbers of one model.

:func:`psftlib.report.analysis.scores_table` shows the in-domain / out-of-domain task sets of the main experiment;
these tables pick any task sets (``vlm_text_ood``, a code set, ``ifeval``) and score an lm-eval task group (``mmlu``:
its subtasks ``mmlu_abstract_algebra`` ...) as the mean over its subtasks weighted by their number of problems.
Reads ``results/eval/<profile>/<run>/<task_set>.json``; never trains or evaluates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psftlib.config import load_profile
from psftlib.data import DataError, read_json
from psftlib.layout import ROOT, Layout
from psftlib.report.analysis import column_label, markdown_table, paper_sections
from psftlib.report.paper import load_paper_table

PERCENT_NOTE = (
    "*Accuracy in % (avg@k of the task; an lm-eval group: its subtasks' mean weighted by their size).*"
)


def owner(key: str, tasks: list[str]) -> str | None:
    """The task of ``tasks`` a score key belongs to: itself, or the longest task it is a subtask of (``mmlu_pro_law``
    belongs to ``mmlu_pro``, not ``mmlu``); None when it belongs to none."""
    matches = [t for t in tasks if key == t or key.startswith(f"{t}_")]
    return max(matches, key=len) if matches else None


def task_scores(profile: str, run: str, task_set: str, root: Path = ROOT) -> dict[str, float]:
    """``{task: avg@k}`` for every task of ``eval.task_sets.<task_set>`` from a run's final evaluation; a group's
    score is its subtasks' mean weighted by their ``n``. A task the file does not score is an error naming both."""
    tasks = load_profile(profile).task_sets.get(task_set)
    if not tasks:
        raise KeyError(f"{profile}: eval.task_sets.{task_set}: no such task set")
    path = Layout(profile, root).eval(run, task_set)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (snakemake {path.relative_to(root)})")
    scores = read_json(path, "an evaluation summary").get("scores") or {}
    parts: dict[str, list[tuple[float, float]]] = {t: [] for t in tasks}
    for key, s in scores.items():
        if (task := owner(key, tasks)) is not None and "avg_at_k" in s:
            parts[task].append((float(s["avg_at_k"]), float(s.get("n") or 1)))
    missing = [t for t, p in parts.items() if not p]
    if missing:
        raise DataError(f"{path}: no score for task(s) {missing} of task set {task_set!r}; evaluate again")
    return {t: float(np.average([v for v, _ in p], weights=[n for _, n in p])) for t, p in parts.items()}


def task_table(profile: str, runs: list[str], task_sets: list[str], root: Path = ROOT) -> pd.DataFrame:
    """Rows ``runs``; columns every task of ``task_sets`` in their order (0-1), each set of several tasks followed by
    ``<task_set>_mean``, the mean over its tasks."""
    rows = {}
    for run in runs:
        row: dict[str, float] = {}
        for task_set in task_sets:
            scores = task_scores(profile, run, task_set, root)
            row.update(scores)
            if len(scores) > 1:
                row[f"{task_set}_mean"] = float(np.mean(list(scores.values())))
        rows[run] = row
    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    return pd.DataFrame.from_dict(rows, orient="index")[columns]


def evaluated(profile: str, runs: list[str], task_sets: list[str], root: Path = ROOT) -> list[str]:
    """The runs of ``runs`` whose final evaluation has every task set (the others not yet run, or never: a base model
    the profile does not evaluate)."""
    lay = Layout(profile, root)
    return [r for r in runs if all(lay.eval(r, s).exists() for s in task_sets)]


def percent_markdown(table: pd.DataFrame, index_name: str = "run") -> str:
    """A :func:`task_table` as Markdown in % with two decimals, as the paper prints (the CSV keeps 0-1)."""
    label = {c: f"mean {column_label(c.removesuffix('_mean'))}" if c.endswith("_mean") else column_label(c)
             for c in table.columns}  # fmt: skip
    shown = (100 * table.astype(float)).rename(columns=label)
    return "\n".join([PERCENT_NOTE, "", markdown_table(shown, index_name)])


def paper_rows(
    table_name: str, label: str, model: str | None = None, setting: str | None = None
) -> list[str]:
    """The paper's numbers of one table (``results/paper/<table_name>.csv``) as Markdown: methods x benchmarks, for
    one ``model`` (every model when None) and one ``setting`` (Table 4 / 5: ``text_only`` / ``text_image``)."""
    paper = load_paper_table(table_name)
    if model is not None and model not in set(paper["model"]):
        raise KeyError(
            f"results/paper/{table_name}.csv: no model {model!r}; models: {sorted(set(paper['model']))}"
        )

    def rows_of(table: pd.DataFrame) -> pd.DataFrame:
        table = table[table["model"] == model] if model is not None else table
        return table[table["setting"] == setting] if setting is not None else table

    return paper_sections(table_name, label, rows_of, columns="benchmark")


def cases(profile: str, runs: list[str], task_set: str, per_run: int = 2, chars: int = 1500,
          root: Path = ROOT) -> pd.DataFrame:  # fmt: skip
    """Case studies (Figures 19-20): for each run, the first ``per_run`` problems of ``task_set`` that the run answered
    correctly in its first sample, else its first problems; prompt and response cut to ``chars`` characters."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        path = Layout(profile, root).eval(run, task_set).with_suffix(".samples.jsonl")
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: missing (written with {path.with_suffix('').with_suffix('.json')})"
            )
        docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        docs = [d for d in docs if d.get("samples")]
        chosen = [d for d in docs if d["samples"][0].get("correct")][:per_run] or docs[:per_run]
        for d in chosen:
            first = d["samples"][0]
            rows.append({"run": run, "task": d["task"], "doc_id": d["doc_id"], "target": d.get("target"),
                         "extracted": first.get("extracted"), "correct": bool(first.get("correct")),
                         "prompt": _cut(d["prompt"], chars), "response": _cut(first["response"], chars)})  # fmt: skip
    columns = ["run", "task", "doc_id", "target", "extracted", "correct", "prompt", "response"]
    return pd.DataFrame(rows, columns=columns).set_index("run")


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else f"{text[: chars // 2]} [...] {text[-chars // 2 :]}"


def case_lines(frame: pd.DataFrame) -> list[str]:
    """Case studies as Markdown: per case a heading (run, task, problem, verdict), the prompt and the response."""
    lines: list[str] = []
    for run, c in frame.iterrows():
        verdict = (
            "correct" if c["correct"] else f"wrong (answered {c['extracted']!r}, expected {c['target']!r})"
        )
        lines += [f"### `{run}` on `{c['task']}` problem {c['doc_id']}: {verdict}", "", "Prompt:", "", "```",
                  c["prompt"].replace("```", "'''"), "```", "", "Response:", "", "```",
                  c["response"].replace("```", "'''"), "```", ""]  # fmt: skip
    return lines
