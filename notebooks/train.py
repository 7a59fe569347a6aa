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
# # Train one run: SFT or PSFT from the base model
#
# Each *train batch* refreshes the old policy (its log-probs of the batch's tokens are taken once, before
# the first update); each *mini batch* is one optimizer step on the PSFT loss (paper eq. 6, A = 1) or the
# plain NLL. The run's settings are the profile's `train:` defaults updated with `runs.<run>`; `overrides`
# changes any field for a by-hand experiment. Outputs: `results/runs/<profile>/<run>/`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
run: str = "psft"  # a name under runs: in the profile
overrides: dict = {}  # TrainConfig fields to change, e.g. {"lr": 5e-4, "epochs": 2.0}
out_dir: str = ""  # empty: results/runs/<profile>/<run>
# the base model's in-training evaluation (psftlib.eval --initial-curves), read as step 0 of the curves instead of
# evaluating it again; empty: evaluate it here
initial_curves: str = ""

# %%
import dataclasses

from psftlib.config import load_profile
from psftlib.runtime import set_threads
from psftlib.train import train_run

prof = load_profile(profile)
print(f"torch threads: {set_threads(prof['threads'])}")
print(dataclasses.asdict(prof.run_config(run, overrides)))

# %%
history = train_run(profile, run, overrides, out_dir or None, initial_curves=initial_curves or None)

# %% [markdown]
# ## What happened
# Loss, entropy of the policy on the trained tokens, and (PSFT) the share of tokens whose ratio left the
# trust region from above — the only ones whose gradient the clip removes.

# %%
import pandas as pd

df = pd.DataFrame(history)
cols = [c for c in ["loss", "nll", "entropy", "token_accuracy", "clip_fraction_high", "grad_norm"] if c in df]
ax = df.plot(x="step", y=cols, subplots=True, figsize=(7, 1.6 * len(cols)), legend=False, title=cols)
df[["step", "epoch", *cols]].iloc[:: max(1, len(df) // 10)]
