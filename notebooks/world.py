# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The world: tokenizer, base model and demonstration data
#
# Builds everything a profile's training runs start from, offline: a word-level tokenizer with a chat
# template, a tiny `Qwen2ForCausalLM` (the *base model*), and train / eval demonstrations in JSONL.
# The logic is `psftlib.world`; this notebook calls it and shows what came out.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml

# %%
from psftlib.config import ROOT, load_profile
from psftlib.data import encode_all, read_jsonl
from psftlib.train import run_paths, set_threads
from psftlib.world import build_world, load_tokenizer

prof = load_profile(profile)
set_threads(prof["threads"])
paths = run_paths(prof.name, "_")
data_dir, world_dir = paths["train_data"].parent, paths["base"].parent
build_world(prof.data, data_dir, world_dir)
print((data_dir / "card.md").read_text())

# %% [markdown]
# One demonstration as the model sees it: prompt tokens carry no loss, response tokens and the final EOS do.

# %%
tokenizer = load_tokenizer(paths["base"])
rows = read_jsonl(data_dir / "train.jsonl")
example = encode_all(tokenizer, rows[:1])[0][0]
tokens = tokenizer.convert_ids_to_tokens(example.input_ids)
print(" ".join(f"[{t}]" if m else t for t, m in zip(tokens, example.loss_mask, strict=True)))
print(f"vocabulary: {len(tokenizer)}; base model: {world_dir.relative_to(ROOT) / 'base'}")
