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
# # The small world: data, tokenizer and a pretrained base model
#
# Builds everything a profile's training runs start from, offline (`psftlib.worlds.small` generates, `psftlib.worlds.build`
# builds, `psftlib.worlds.pretrain` pretrains): five base skills and format instructions (the paper's out-of-domain
# abilities and IFEval), a long chain-of-thought target domain the base has only seen in one-step form, RL prompts
# and preference pairs; a word-level tokenizer; a tiny `Qwen2ForCausalLM` pretrained on the base corpus. How good
# the base is, and how learnable the target, is measured by the eval harness and the calibration study
# (`notebooks/world_calibration.py`), not here.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml

# %%
import pandas as pd

from psftlib.config import ROOT, load_profile
from psftlib.data import encode_all, read_jsonl
from psftlib.runtime import set_threads
from psftlib.worlds.build import build_world, load_tokenizer

prof = load_profile(profile)
print(f"torch threads: {set_threads(prof['pretrain'].get('threads', prof['threads']))}")
data_dir, world_dir = prof.layout.data, prof.layout.base.parent
build_world(prof.data, data_dir, world_dir)
print((data_dir / "card.md").read_text())

# %% [markdown]
# The base model's pretraining curve (response-token NLL).

# %%
curve = pd.read_json(world_dir / "pretrain_metrics.jsonl", lines=True)
curve.plot(x="step", y="nll", logy=True, figsize=(6, 2.5), title="base model pretraining")
curve.tail(3)

# %% [markdown]
# One demonstration as the model sees it: prompt tokens carry no loss, [response tokens] and the final EOS do.

# %%
tokenizer = load_tokenizer(prof.layout.base)
rows = read_jsonl(data_dir / "train.jsonl")
example = encode_all(tokenizer, rows[:1])[0][0]
tokens = tokenizer.convert_ids_to_tokens(example.input_ids)
print(" ".join(f"[{t}]" if m else t for t, m in zip(tokens, example.loss_mask, strict=True)))
print(f"vocabulary: {len(tokenizer)}; base model: {world_dir.relative_to(ROOT) / 'base'}")
