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
from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import (
    curves,
    per_train_batch,
    run_metrics,
    scores_table,
    write_csv,
)
from psftlib.report.plots import ENTROPY, STEP, finish, new_figure, plot_runs, save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)
# styles and legend names from each run's configuration (psftlib/report/styles.py); seed bands where repeated
fig, axes = new_figure(3, width=4.3, height=3.5)
for ax, column in zip(axes[0][:2], ["entropy", "grad_norm"], strict=True):
    plot_runs(ax, profile, runs, lambda r, c=column: per_train_batch(run_metrics(profile, r), [c])[c], lw=1.2)
plot_runs(axes[0][2], profile, runs, lambda r: 100 * curves(profile, r).set_index("train_batch")["in_domain"],
          marker="o", ms=3)  # fmt: skip
axes[0][1].set_yscale("log")  # no clip: a spike of two orders of magnitude in the first steps
labels = [ENTROPY, "gradient norm (L2, before clipping; log scale)", "accuracy (%, in-training subset)"]
titles = ["(a) entropy", "(b) gradient norm", "(c) in-domain accuracy"]
for ax, ylabel, title in zip(axes[0], labels, titles, strict=True):
    ax.set(xlabel=STEP, ylabel=ylabel, title=title)
finish(fig, axes, "PSFT's clip value ε_high (§5.2)", legend_from=axes[0][0])
written = save_figure(fig, outputs.figures / "fig11_clip_ablation")
table = scores_table(profile, runs, ["in_domain", "out_of_domain"])[["in_domain", "out_of_domain"]]
table.insert(0, "clip_high", [prof.run_config(r).clip_high for r in runs])
write_csv(table, outputs.tables / "fig11_clip_ablation.csv", index_label="run")
table
