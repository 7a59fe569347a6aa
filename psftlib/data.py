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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is loaded by collate only: the figure notebooks read data without it
    import torch


class DataError(ValueError):
    """A malformed data file; the message names the file and line."""


REQUIRED_FIELDS = ("prompt", "response")


def read_jsonl(path: str | Path, required: tuple[str, ...] = REQUIRED_FIELDS) -> list[dict[str, Any]]:
    """Read a JSONL file of records, refusing empty or malformed ones (``required`` string fields) with file and line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for key in required:
                value = row.get(key)
                if value is None or value == [] or (isinstance(value, str) and not value.strip()):
                    raise DataError(f"{path}:{lineno}: field {key!r} is missing or empty")
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
