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
# # Figure 3: in-domain and out-of-domain performance during fine-tuning
#
# The paper's Figure 3 plots AIME-24 (a) and GPQA (b) against training steps. Ours: (a) the mean avg@k over the
# graded target sets, (b) the mean over the out-of-domain curve tasks (format following and arithmetic facts),
# both on the in-training subset (`eval.during_training`), once per epoch. Only reads `eval.jsonl`.

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

# %%
from psftlib.layout import Layout
from psftlib.report.analysis import curves
from psftlib.report.plots import STEP, finish, new_figure, plot_runs, save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

# styles from each run's configuration (psftlib/report/styles.py); runs repeated over seeds: mean and range
fig, axes = new_figure(2, width=4.6, height=3.6)
for ax, column, title in zip(axes[0], ["in_domain", "out_of_domain"],
                             ["(a) in-domain", "(b) out-of-domain"],
                             strict=True):  # fmt: skip
    plot_runs(ax, profile, runs, lambda r, c=column: 100 * curves(profile, r).set_index("train_batch")[c],
              marker="o", ms=3)  # fmt: skip
    ax.set(xlabel=STEP, ylabel="accuracy (%, in-training subset)", title=title)
finish(fig, axes, "Accuracy during fine-tuning", legend_from=axes[0][0])
written = save_figure(fig, outputs.figures / "fig3_performance")
print("\n".join(map(str, written)))

# %%
from IPython.display import Image

Image(filename=str(written[0]))
