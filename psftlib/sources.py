"""Which source files a job runs: the import graph of ``psftlib``, read from the code (never hand-copied).

The Snakefile gives each rule the files of the modules it runs (and of the notebook it executes) as inputs, so a
job re-runs when code it really uses changes, and only then. The same graph is what the layering test checks.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from psftlib.layout import ROOT

PACKAGE = ROOT / "psftlib"
# files a module loads at run time without importing them: lm-eval reads our task YAMLs (and their `!function
# utils.*` scoring) from the harness's tasks folder
DATA = {"psftlib.eval.harness": ["psftlib/eval/tasks"]}


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """``psftlib.train.loop`` -> ``psftlib/train/loop.py`` (a package: its ``__init__.py``); None outside psftlib."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def imports_of(path: Path, module: str | None = None) -> list[str]:
    """The ``psftlib`` modules a file imports (at the top or inside functions; ``from a import b`` counts as
    ``a.b`` when that is a module, else ``a``). Importing a submodule runs its package's ``__init__`` too."""
    found: list[str] = []
    for node in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [n if module_file(n) else node.module for n in names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    out = []
    for name in found:
        if not name.startswith("psftlib"):
            continue
        parts = name.split(".")
        out += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]  # parents' __init__ run first
    return [m for m in dict.fromkeys(out) if m != module and module_file(m)]


def _walk(node: ast.AST):
    """Every node, except the bodies of a module-level ``__getattr__`` (attributes loaded on first use, like
    ``psftlib.psft_loss``: importing the package does not run them)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not (isinstance(child, ast.FunctionDef) and child.name == "__getattr__"):
            yield from _walk(child)


@functools.cache
def graph() -> dict[str, tuple[str, ...]]:
    """``{module: modules it imports}`` for every module of ``psftlib`` (task scoring code included)."""
    edges = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        edges[module] = tuple(imports_of(path, module))
    return edges


def closure(modules: list[str]) -> list[str]:
    """``modules`` and every ``psftlib`` module they import, directly or not."""
    seen: dict[str, None] = {}
    todo = list(modules)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen[m] = None
        todo += graph().get(m, ())
    return sorted(seen)


def sources(*entries: str) -> list[str]:
    """The files (relative to the project root) of what ``entries`` run: modules (``psftlib.train``) or notebooks
    (``notebooks/fig1_entropy.py``), with every ``psftlib`` module they import and the data those load."""
    modules, files = [], []
    for entry in entries:
        if entry.endswith(".py"):
            files.append(entry)
            modules += imports_of(ROOT / entry)
        else:
            modules.append(entry)
    for m in closure(modules):
        files.append(str(module_file(m).relative_to(ROOT)))
        for folder in DATA.get(m, []):
            files += sorted(str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*") if p.is_file()
                            and "__pycache__" not in p.parts)  # fmt: skip
    for f in list(files):  # the scoring code in a data folder imports psftlib too
        if f.endswith(".py") and "/tasks/" in f:
            files += [str(module_file(m).relative_to(ROOT)) for m in closure(imports_of(ROOT / f))]
    return sorted(set(files))
