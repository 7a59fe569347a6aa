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
# # Figure 1: token entropy during fine-tuning
#
# The paper (§4.1.1, Finding 1) reports that SFT's entropy drops at every epoch boundary (a sawtooth, a sign
# of memorisation) while PSFT's stays smooth. Runs repeated over seeds show the seed mean and a band from
# the lowest to the highest seed; our controls get a panel of their own. This notebook only reads `metrics.jsonl` of finished runs and
# draws; changing it never retrains anything.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = [
    "sft",
    "sft_kl",
    "psft",
    "psft_warmup12",
    "psft_warmup24",
    "sft_as_psft",
    "psft_as_sft",
]  # run names, one line each
smooth: int = 1  # rolling mean over this many steps; 1 draws raw values

# %%
from psftlib.layout import Layout
from psftlib.report.analysis import run_metrics
from psftlib.report.plots import plot_entropy, save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

metrics = {run: run_metrics(profile, run) for run in runs}
# styles from each run's configuration (psftlib/report/styles.py); runs repeated over seeds (seed_replicates in
# the profile) drawn as the seed mean with a band from the lowest to the highest seed
fig = plot_entropy(profile, runs, smooth=smooth)
written = save_figure(fig, outputs.figures / "fig1_entropy")
print("\n".join(map(str, written)))

# %%
from IPython.display import Image

Image(filename=str(written[0]))

# %%
import pandas as pd

pd.DataFrame(
    {
        run: {
            "entropy first step": df["entropy"].iloc[0],
            "entropy last step": df["entropy"].iloc[-1],
            "steps": len(df),
        }
        for run, df in metrics.items()
    }
).T
