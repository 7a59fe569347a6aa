"""Rows of the paper's datasets: a hub dataset by id (``datasets.load_dataset``, imported only then) or a local
JSONL / JSON / Parquet file of the same columns; checked fields, filter counts and JSONL output for the loaders
(:mod:`psftlib.worlds.loaders`). Errors name the source (file or hub id), the row and the field."""

from __future__ import annotations

import collections
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psftlib.data import DataError, json_lines, read_json, write_jsonl

# datasets and pyarrow are imported where a hub dataset or a Parquet file is read (optional, heavy)

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")

TokenCounter = Callable[[str], int]


class LoaderError(DataError):
    """A missing file, a malformed row or a missing field; the message names the source, row and field."""


@dataclass
class Loaded:
    """Records in our schema, the source they came from, and how many rows each filter dropped."""

    records: list[dict[str, Any]]
    source: str
    rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        return f"{self.source}: {self.rows_read} rows read, {len(self.records)} kept; dropped ({drops})"


# ---- reading ------------------------------------------------------------------------------------------------


def is_local(source: str | Path) -> bool:
    """A path to a local file (by suffix or existence), as opposed to a hub id like ``org/name``."""
    p = Path(source)
    return p.suffix in LOCAL_SUFFIXES or p.exists()


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local JSONL, JSON (a list of objects) or Parquet file; a file that cannot be read is refused with
    its name (and line)."""
    path = Path(path)
    if not path.exists():
        raise LoaderError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                return pq.read_table(path).to_pylist()
            except Exception as err:  # pyarrow's errors do not name the file
                raise LoaderError(f"{path}: not a readable Parquet file ({err})") from None
        if path.suffix == ".json":
            rows = read_json(path, "a JSON list of objects")
            if not isinstance(rows, list):
                raise LoaderError(f"{path}: expected a JSON list of objects")
            return rows
        return [row for _, row in json_lines(path)]
    except DataError as err:
        if isinstance(err, LoaderError):
            raise
        raise LoaderError(str(err)) from None


def load_rows(source: str | Path, config: str | None = None, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a local file, or of split ``split`` of hub dataset ``source`` (needs network or the HF cache)."""
    if is_local(source):
        return read_table(source)
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is in the lock
        raise LoaderError(f"{source}: loading a hub dataset needs the 'datasets' package") from err
    ds = datasets.load_dataset(str(source), config, split=split)
    return [dict(row) for row in ds]


def token_counter(tokenizer: Any) -> TokenCounter:
    """``text -> number of tokens`` for a Hugging Face tokenizer (no special tokens)."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def _rows(rows: Iterable[dict[str, Any]], source: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise LoaderError(f"{source}: row {i}: expected an object, got {type(row).__name__}")
        yield i, row


def _field(row: dict[str, Any], name: str, source: str, i: int, kind: type | tuple[type, ...] = str) -> Any:
    value = row.get(name)
    if value is None or (isinstance(value, str | list) and len(value) == 0):
        raise LoaderError(f"{source}: row {i}: field {name!r} is missing or empty (columns: {sorted(row)})")
    if not isinstance(value, kind):
        raise LoaderError(
            f"{source}: row {i}: field {name!r} has type {type(value).__name__}, expected {kind}"
        )
    return value


def _message_content(messages: Any, role: str, source: str, i: int, name: str) -> str | None:
    """Content of the last message with ``role`` in a ``[{"role", "content"}]`` list (None if there is none)."""
    if messages is None:
        return None
    if not isinstance(messages, list):
        raise LoaderError(f"{source}: row {i}: field {name!r} must be a list of {{role, content}} messages")
    for m in reversed(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise LoaderError(f"{source}: row {i}: field {name!r} holds a message without role/content")
        if m["role"] == role:
            return m["content"]
    return None


class _Filter:
    """Counts why rows are dropped; checks the token budget."""

    def __init__(self, max_tokens: int | None, count_tokens: TokenCounter | None, source: str):
        if max_tokens is not None and count_tokens is None:
            raise LoaderError(f"{source}: max_tokens={max_tokens} needs a token counter (count_tokens=...)")
        self.max_tokens, self.count, self.dropped = max_tokens, count_tokens, collections.Counter()

    def fits(self, *texts: str) -> bool:
        if self.max_tokens is None:
            return True
        if sum(self.count(t) for t in texts if t) > self.max_tokens:
            self.dropped[f"longer than {self.max_tokens} tokens"] += 1
            return False
        return True

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


def _done(records: list[dict], source: str, n: int, flt: _Filter, limit: int | None) -> Loaded:
    if limit is not None:
        records = records[:limit]
    return Loaded(records, source, n, dict(flt.dropped))


# ---- the paper's datasets -----------------------------------------------------------------------------------


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write records as JSONL (atomic); images that are not paths are saved as PNGs in ``<path>.images/``."""
    path = Path(path)
    image_dir = path.with_name(path.name + ".images")

    def as_path(image: Any, name: str) -> str:
        if isinstance(image, str):
            return image
        image_dir.mkdir(parents=True, exist_ok=True)
        target = image_dir / f"{name}.png"
        if isinstance(image, dict):
            target.write_bytes(image["bytes"])
        else:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            target.write_bytes(buf.getvalue())
        return str(target.relative_to(path.parent))

    def rows() -> Iterable[dict[str, Any]]:
        for r in records:
            if "images" in r:
                r = {**r, "images": [as_path(im, f"{r['id']}-{k}") for k, im in enumerate(r["images"])]}
            yield r

    write_jsonl(path, rows())
