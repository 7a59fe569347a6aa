"""Demonstration data: JSONL records -> token ids with a response-only loss mask -> padded batches.

A record is one JSON object per line with ``prompt`` (user text), ``response`` (the demonstration) and
optionally ``system`` and ``answer``. The chat template is applied to the prompt; the response is tokenized
on its own and followed by the EOS token (``<|im_end|>``), so the model learns to stop. Only response tokens
and that EOS carry loss.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is loaded by collate only: the figure notebooks read data without it
    import torch


class DataError(ValueError):
    """A file that cannot be read as what it should hold (records, JSON, weights, a tokenizer); the message names
    the file, and the line where there is one."""


REQUIRED_FIELDS = ("prompt", "response")
TEXT_FIELDS = ("system", "prompt", "response", "chosen", "rejected")  # tokenized as text when present
DEFAULT_MAX_UNK_RATE = 0.001  # share of a dataset's tokens that may be the tokenizer's unknown token


def json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of a JSONL file; a line that is not UTF-8 or not JSON is
    refused with the file and line (and the column of a bad byte)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                ) from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg}, column {err.colno})") from None


def read_json(path: str | Path, what: str = "a JSON file") -> Any:
    """The value of a JSON file; a missing, non-UTF-8 or malformed (e.g. truncated) one is refused with the file,
    the line and ``what`` it should have been."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file ({what})")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); expected {what}") from None
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno}); expected {what} "
            "(a truncated file: write it again)"
        ) from None


def read_jsonl(path: str | Path, required: tuple[str, ...] = REQUIRED_FIELDS) -> list[dict[str, Any]]:
    """Read a JSONL file of records, refusing empty or malformed ones with file and line: each record an object,
    the ``required`` fields present and not empty, the text fields (:data:`TEXT_FIELDS`) strings where present."""
    path = Path(path)
    rows = []
    for lineno, row in json_lines(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        for key in required:
            value = row.get(key)
            if value is None or value == [] or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{path}:{lineno}: field {key!r} is missing or empty")
        for key in TEXT_FIELDS:
            if row.get(key) is not None and not isinstance(row[key], str):
                raise DataError(
                    f"{path}:{lineno}: field {key!r} is {type(row[key]).__name__} {row[key]!r:.40}, expected a string"
                )
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no records")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows atomically (temp file in the same folder, then rename)."""
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


class atomic_write:
    """``with atomic_write(path) as f:`` writes to a temp file beside ``path`` and renames it on success."""

    def __init__(self, path: str | Path, mode: str = "w"):
        self.path = Path(path)
        self.mode = mode

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.f = os.fdopen(fd, self.mode, encoding=None if "b" in self.mode else "utf-8")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)
        return False


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[int]  # 1 on response tokens (and the EOS after them)


def encode(tokenizer: Any, row: dict[str, Any]) -> Example:
    """Chat-template the prompt, append the response and EOS; mask = response + EOS."""
    messages = []
    if row.get("system"):
        messages.append({"role": "system", "content": row["system"]})
    messages.append({"role": "user", "content": row["prompt"]})
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(prompt_ids, "keys"):  # transformers 5 returns a BatchEncoding
        prompt_ids = prompt_ids["input_ids"]
    response_ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
    response_ids = [*response_ids, tokenizer.eos_token_id]
    return Example(
        input_ids=list(prompt_ids) + response_ids,
        loss_mask=[0] * len(prompt_ids) + [1] * len(response_ids),
    )


@dataclass
class EncodeReport:
    """What the length policy did; written into the run's config.json."""

    n_records: int = 0
    n_kept: int = 0
    n_dropped: int = 0  # longer than max_length, policy "drop"
    n_truncated: int = 0  # longer than max_length, policy "truncate" (response cut, no EOS)
    n_no_response_left: int = 0  # truncation would leave no response token: dropped


def encode_all(
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    max_length: int | None = None,
    truncation: str = "drop",
) -> tuple[list[Example], EncodeReport]:
    """Encode every row under a stated length policy.

    A sequence longer than ``max_length`` is either dropped (``"drop"``, the default: a cut demonstration
    teaches the model to stop mid-thought, and there is no EOS to learn) or truncated from the right
    (``"truncate"``: the response is cut, without EOS). Both are counted in the returned report.
    """
    if truncation not in ("drop", "truncate"):
        raise ValueError(f"truncation: {truncation!r} is not 'drop' or 'truncate'")
    report = EncodeReport(n_records=len(rows))
    out = []
    for row in rows:
        ex = encode(tokenizer, row)
        if max_length is not None and len(ex.input_ids) > max_length:
            if truncation == "drop":
                report.n_dropped += 1
                continue
            if sum(ex.loss_mask[:max_length]) == 0:
                report.n_no_response_left += 1
                continue
            ex = Example(ex.input_ids[:max_length], ex.loss_mask[:max_length])
            report.n_truncated += 1
        out.append(ex)
    report.n_kept = len(out)
    if not out:
        raise DataError(f"no record fits max_length {max_length} (policy {truncation!r})")
    return out, report


def text_token_ids(tokenizer: Any, rows: Sequence[dict[str, Any]]) -> list[list[int]]:
    """The token ids of every text field (:data:`TEXT_FIELDS`) of ``rows``, as the tokenizer splits them (no special
    tokens): what :func:`check_unknown_rate` measures on data that is not demonstrations (eval prompts, pairs)."""
    texts = [row[k] for row in rows for k in TEXT_FIELDS if isinstance(row.get(k), str) and row[k]]
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else []


def unknown_tokens(tokenizer: Any, sequences: Iterable[Sequence[int]]) -> tuple[int, int, int]:
    """(unknown tokens, tokens, sequences holding one) over ``sequences`` of token ids; no unknown tokens for a
    tokenizer without an unknown token (byte-level BPE)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    n_unk = n_tokens = n_seqs = 0
    for ids in sequences:
        k = 0 if unk is None else list(ids).count(unk)
        n_unk, n_tokens, n_seqs = n_unk + k, n_tokens + len(ids), n_seqs + (k > 0)
    return n_unk, n_tokens, n_seqs


def check_unknown_rate(
    tokenizer: Any, sequences: Iterable[Sequence[int]], source: str, max_rate: float = DEFAULT_MAX_UNK_RATE
) -> float:
    """The share of ``source``'s tokens that are the tokenizer's unknown token (words outside the vocabulary, which
    would be trained on as ``<unk>``); above ``max_rate`` the data is refused with the counts named."""
    n_unk, n_tokens, n_seqs = unknown_tokens(tokenizer, sequences)
    rate = n_unk / max(n_tokens, 1)
    if rate > max_rate:
        raise DataError(
            f"{source}: {n_unk} of {n_tokens} tokens ({rate:.3%}, in {n_seqs} sequences) are the tokenizer's unknown "
            f"token {tokenizer.unk_token!r}, above the limit of {max_rate:.3%}: the text holds words outside the "
            "vocabulary; fix the data or the tokenizer"
        )
    return rate


def collate(examples: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example. Returns ``input_ids``, ``attention_mask``, ``loss_mask``: ``[B, T]``."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), width), dtype=torch.float32)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        attention_mask[i, :n] = 1
        loss_mask[i, :n] = torch.tensor(e.loss_mask, dtype=torch.float32)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}
