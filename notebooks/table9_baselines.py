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
from psftlib.layout import Layout
from psftlib.report.analysis import (
    markdown_table,
    paper_sections,
    per_train_batch,
    run_metrics,
    scores_table,
    write_table,
)
from psftlib.report.plots import ENTROPY, STEP, finish, new_figure, plot_runs, save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

# styles from each run's configuration (psftlib/report/styles.py); seed bands where a run is repeated
fig, axes = new_figure(2, width=4.6, height=3.6)
for ax, column in zip(axes[0], ["entropy", "nll"], strict=True):
    plot_runs(ax, profile, runs, lambda r, c=column: per_train_batch(run_metrics(profile, r), [c])[c], lw=1.2)
axes[0][0].set(xlabel=STEP, ylabel=ENTROPY, title="(a) entropy")
axes[0][1].set(xlabel=STEP, ylabel="training NLL (nats per token)", title="(b) training NLL")
finish(fig, axes, "Figure 15: DFT and iw-SFT beside SFT and PSFT", legend_from=axes[0][0])
written = save_figure(fig, outputs.figures / "fig15_baselines")

# %%
ours = scores_table(profile, ["base", *runs], ["in_domain", "out_of_domain"])
lines = ["# Table 9: recent baselines (DFT, iw-SFT)", "", f"## This run (profile `{profile}`)", "",
         markdown_table(ours, "run"), "", *paper_sections("table9_dft_iwsft", "Table 9")]  # fmt: skip
write_table(outputs, "table9_baselines", lines, ours)
print("\n".join(lines[:12]))
