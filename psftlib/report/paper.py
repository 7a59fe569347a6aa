"""The paper's OWN numbers, transcribed from its text into ``results/paper/<name>.csv`` (never our results).

Every table is long/tidy: one row per printed cell, with the columns ``model, method, method_id, benchmark,
benchmark_id, domain, setting, value, source_line, note``. ``method`` and ``benchmark`` are the paper's labels
as printed; ``method_id`` / ``benchmark_id`` are the normalised names used across the project (``sft``,
``psft``, ``psft+grpo``, ``aime24``, ...). ``source_line`` is the line of ``/work/shared/paper/psft.txt`` the
number was read from. Hyperparameter tables (``domain == "hyperparameter"``) add ``parameter``,
``parameter_id`` and ``value_text`` (the cell exactly as printed; ``value`` is empty where the print is not a
plain number, e.g. ``10k``). ``results/paper/README.md`` says where each table comes from and what was
ambiguous.

>>> t = load_paper_table("table1_sft_main")
>>> t.query("model == 'Qwen2.5-7B-Instruct' and method_id == 'psft' and benchmark_id == 'ifeval'").value.item()
73.03
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from psftlib.layout import PAPER_DIR

__all__ = ["PAPER_DIR", "load_paper_table"]

_INT_COLUMNS = ("source_line",)
_FLOAT_COLUMNS = ("value",)


def _available(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.csv"))


def load_paper_table(name: str) -> pd.DataFrame:
    """Read ``results/paper/<name>.csv`` (``name`` with or without ``.csv``) as a DataFrame.

    Text columns stay strings (empty cells are ``""``, not NaN); ``value`` is float (NaN only for a
    hyperparameter printed as something other than a plain number) and ``source_line`` is int.

    Raises:
        FileNotFoundError: the table does not exist; the message names the file and lists the tables there are.
    """
    stem = name[: -len(".csv")] if name.endswith(".csv") else name
    path = PAPER_DIR / f"{stem}.csv"
    if not path.is_file():
        tables = ", ".join(_available(PAPER_DIR)) or "(none)"
        raise FileNotFoundError(f"no paper table {path}; available tables in {PAPER_DIR}: {tables}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in _FLOAT_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col].replace("", None), errors="raise").astype(float)
    for col in _INT_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(int)
    return df
