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
# # Figure 11: the clip value (§5.2)
#
# PSFT without clipping and with other ε_high: entropy, gradient norm and in-domain score during training. The
# paper: without the clip, entropy collapses and gradient norms spike; ε_high trades stability for speed. Only
# reads the runs' `metrics.jsonl` / `eval.jsonl`; final scores beside them in `results/tables/fig11_clip_ablation.csv`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = ["psft", "psft_noclip", "psft_clip0.4"]  # PSFT runs differing only in clip_high

# %%
import matplotlib.pyplot as plt

from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import (
    curves,
    per_train_batch,
    run_metrics,
    scores_table,
    write_csv,
)
from psftlib.report.plots import save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)
labels = {r: f"ε_high = {prof.run_config(r).clip_high:g}".replace("inf", "∞ (no clip)") for r in runs}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for run in runs:
    m = per_train_batch(run_metrics(profile, run), ["entropy", "grad_norm"])
    axes[0].plot(m.index, m["entropy"], lw=1.3, label=labels[run])
    axes[1].plot(m.index, m["grad_norm"], lw=1.3, label=labels[run])
    c = curves(profile, run)
    axes[2].plot(c["train_batch"], c["in_domain"], marker="o", ms=3, lw=1.3, label=labels[run])
for ax, title in zip(axes, ["(a) entropy", "(b) gradient norm", "(c) in-domain (subset)"], strict=True):
    ax.set(xlabel="step (train batches)", title=title)
    ax.grid(alpha=0.3)
axes[0].legend(frameon=False, fontsize=8)
fig.tight_layout()
written = save_figure(fig, outputs.figures / "fig11_clip_ablation")
table = scores_table(profile, runs, ["in_domain", "out_of_domain"])[["in_domain", "out_of_domain"]]
table.insert(0, "clip_high", [prof.run_config(r).clip_high for r in runs])
write_csv(table, outputs.tables / "fig11_clip_ablation.csv", index_label="run")
table
