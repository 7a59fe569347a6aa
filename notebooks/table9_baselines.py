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
# # Table 9 and Figure 15: the recent baselines DFT and iw-SFT (App. C.4)
#
# DFT (SFT with each token's loss weighted by its probability) and iw-SFT (importance-weighted SFT, weights clipped
# to [0.2, 1.8]) at SFT's step structure and learning rate, beside SFT and PSFT: training dynamics (Figure 15:
# entropy and training NLL per train batch) and final scores (Table 9) beside the paper's. Only reads `results/`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = [
    "sft",
    "psft",
    "psft_lr3e-5",
    "iw_sft",
    "dft",
]  # methods compared; names from the profile's runs

# %%
import matplotlib.pyplot as plt

from psftlib.layout import Layout
from psftlib.report.analysis import (
    markdown_table,
    paper_sections,
    per_train_batch,
    run_metrics,
    scores_table,
    write_table,
)
from psftlib.report.plots import STYLE, save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for run in runs:
    m = per_train_batch(run_metrics(profile, run), ["entropy", "nll"])
    style = STYLE.get(run, {"label": run})
    axes[0].plot(m.index, m["entropy"], lw=1.3, **style)
    axes[1].plot(m.index, m["nll"], lw=1.3, **style)
axes[0].set(xlabel="step (train batches)", ylabel="entropy (nats)", title="(a) entropy")
axes[1].set(xlabel="step (train batches)", ylabel="training NLL (nats/token)", title="(b) training NLL")
for ax in axes:
    ax.grid(alpha=0.3)
axes[0].legend(frameon=False, fontsize=8)
fig.suptitle("Figure 15: DFT and iw-SFT beside SFT and PSFT")
fig.tight_layout()
written = save_figure(fig, outputs.figures / "fig15_baselines")

# %%
ours = scores_table(profile, ["base", *runs], ["in_domain", "out_of_domain"])
lines = ["# Table 9: recent baselines (DFT, iw-SFT)", "", f"## This run (profile `{profile}`)", "",
         markdown_table(ours, "run"), "", *paper_sections("table9_dft_iwsft", "Table 9")]  # fmt: skip
write_table(outputs, "table9_baselines", lines, ours)
print("\n".join(lines[:12]))
