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
import matplotlib.pyplot as plt

from psftlib.layout import Layout
from psftlib.report.analysis import curves
from psftlib.report.plots import STYLE, save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

data = {run: curves(profile, run) for run in runs}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for ax, column, title in zip(axes, ["in_domain", "out_of_domain"], ["(a) in-domain", "(b) out-of-domain"],
                             strict=True):  # fmt: skip
    for run, df in data.items():
        ax.plot(df["train_batch"], df[column], marker="o", ms=3, lw=1.4, **STYLE.get(run, {"label": run}))
    ax.set_xlabel("step (train batches)")
    ax.set_ylabel("avg@k (in-training subset)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
axes[0].legend(frameon=False, fontsize=7)
fig.tight_layout()
written = save_figure(fig, outputs.figures / "fig3_performance")
print("\n".join(map(str, written)))

# %%
from IPython.display import Image

Image(filename=str(written[0]))
