"""Shared set-up for benchmarks: a world, a model of a chosen size, encoded examples."""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import torch

from psftlib.config import load_profile
from psftlib.data import encode_all, read_jsonl
from psftlib.runtime import set_threads
from psftlib.worlds.build import build_model, build_world, load_tokenizer


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def setup(profile: str = "mini", hidden: int | None = None, layers: int | None = None):
    """(profile, tokenizer, model, examples, rows); a bigger model than the profile's if hidden/layers given."""
    prof = load_profile(profile)
    set_threads(prof["threads"])
    base, data = prof.layout.base, prof.layout.data / "train.jsonl"
    if not base.exists():
        tmp = Path(tempfile.mkdtemp())
        build_world(prof.data, tmp / "data", tmp / "world")
        base, data = tmp / "world" / "base", tmp / "data" / "train.jsonl"
    tok = load_tokenizer(base)
    model_cfg = dict(prof["model"])
    if hidden:
        model_cfg.update(hidden_size=hidden, intermediate_size=3 * hidden, num_attention_heads=max(4, hidden // 64),
                         num_key_value_heads=max(2, hidden // 128))  # fmt: skip
    if layers:
        model_cfg["num_hidden_layers"] = layers
    model = build_model(model_cfg, tok, prof["seed"])
    rows = read_jsonl(data)
    examples, _ = encode_all(tok, rows)
    return prof, tok, model, examples, rows
