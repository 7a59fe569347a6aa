"""lm-eval's task index, narrowed to what an evaluation names.

``TaskManager(include_defaults=True)`` parses every YAML lm-eval ships (~15,000 files, ~6 s), once per evaluation
job. An evaluation names a few of lm-eval's tasks (``gpqa_diamond_cot_zeroshot``, ``mmlu_pro``, ...): the index is
built from the top-level folders of ``lm_eval/tasks`` whose YAMLs mention one of those names as a word (a plain text
search, ~0.5 s), plus our own tasks (``psftlib/eval/tasks``, scanned last so they win, as before). If a name, or a
task a group of the narrowed index lists, is missing from it, the whole index is built instead: narrowing can only
save time, never change which YAML a task comes from (a test compares both indexes' paths for every task the
profiles name).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any


def lm_eval_task_dir() -> Path:
    """The folder of lm-eval's own task YAMLs."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@functools.lru_cache(maxsize=32)
def folders_naming(names: tuple[str, ...]) -> tuple[Path, ...]:
    """The top-level folders of lm-eval's tasks with a YAML that mentions one of ``names`` as a whole word."""
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])")
    root = lm_eval_task_dir()
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("__")):
        if any(pattern.search(f.read_text(errors="ignore")) for f in sorted(folder.rglob("*.yaml"))):
            found.append(folder)
    return tuple(found)


def _complete(index: dict[str, Any], names: list[str]) -> bool:
    """Whether ``names`` and every task their groups list (recursively) are in ``index``."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        entry = index.get(name)
        if entry is None:
            return False
        if entry.kind.name == "GROUP":
            children = (entry.cfg or {}).get("task", [])
            for child in children if isinstance(children, list) else [children]:
                if isinstance(child, str):
                    todo.append(child)
                elif isinstance(child, dict) and isinstance(child.get("task"), str) and "group" not in child:
                    todo.append(child["task"])  # an inline task config that names an indexed task
    return True


def task_manager(ours: Path, lm_eval_names: list[str]) -> Any:
    """A ``TaskManager`` over our task folder ``ours`` and lm-eval's own tasks ``lm_eval_names`` (none: ours only)."""
    from lm_eval.tasks import TaskManager

    if not lm_eval_names:
        return TaskManager(include_path=str(ours), include_defaults=False)
    folders = folders_naming(tuple(sorted(set(lm_eval_names))))
    if folders:
        narrow = TaskManager(include_path=[*map(str, folders), str(ours)], include_defaults=False)
        if _complete(narrow.task_index, lm_eval_names):
            return narrow
    return TaskManager(include_path=str(ours), include_defaults=True)
