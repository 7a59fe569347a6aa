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
# # Table 10 and Figure 17: learning rate and clip fraction (App. C.5)
#
# The paper: a larger learning rate makes bigger updates, hence a higher clip fraction (Figure 17), and PSFT stays
# stable where SFT at a small learning rate still loses IFEval (Table 10). Ours: the profile's learning-rate grid
# (SFT at x, PSFT at x / 20): clip fraction per train batch of the PSFT runs, entropy of all, final scores beside
# the paper's Table 10. Only reads `results/`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = ["sft", "sft_lr6e-4", "psft", "psft_lr3e-5"]  # SFT and PSFT runs at several learning rates

# %%
from psftlib.config import load_profile
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

prof = load_profile(profile)
# styles from each run's configuration (psftlib/report/styles.py); seed bands where a run is repeated
fig, axes = new_figure(2, width=4.6, height=3.6)
plot_runs(
    axes[0][0],
    profile,
    runs,
    lambda r: per_train_batch(run_metrics(profile, r), ["entropy"])["entropy"],
    lw=1.2,
)
clipped = [
    r for r in runs if "clip_fraction_high" in run_metrics(profile, r)
]  # runs that log a clip fraction
plot_runs(
    axes[0][1],
    profile,
    clipped,
    lambda r: 100 * per_train_batch(run_metrics(profile, r), ["clip_fraction_high"])["clip_fraction_high"],
    lw=1.2,
)
axes[0][0].set(xlabel=STEP, ylabel=ENTROPY, title="(a) entropy")
axes[0][1].set(xlabel=STEP, ylabel="clipped tokens (% with r > 1 + ε_high)", title="(b) clip fraction (PSFT)")
finish(fig, axes, "Figure 17: learning rate, entropy and clip fraction", legend_from=axes[0][0])
written = save_figure(fig, outputs.figures / "fig17_learning_rates")

# %%
ours = scores_table(profile, ["base", *runs], ["in_domain", "out_of_domain"])
ours.insert(0, "lr", [float("nan"), *(prof.run_config(r).lr for r in runs)])
lines = ["# Table 10: learning rates", "", f"## This run (profile `{profile}`: SFT at x, PSFT at x / 20)", "",
         markdown_table(ours, "run"), "", *paper_sections("table10_learning_rate", "Table 10")]  # fmt: skip
write_table(outputs, "table10_learning_rates", lines, ours)
print("\n".join(lines[:12]))
