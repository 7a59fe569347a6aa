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
import matplotlib.pyplot as plt

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
from psftlib.report.plots import save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for run in runs:
    cfg = prof.run_config(run)
    label = f"{cfg.objective.upper()} lr {cfg.lr:g}"
    m = run_metrics(profile, run)
    cols = ["entropy", *(["clip_fraction_high"] if "clip_fraction_high" in m else [])]
    tb = per_train_batch(m, cols)
    axes[0].plot(tb.index, tb["entropy"], lw=1.3, label=label, ls="-" if cfg.objective == "psft" else "--")
    if "clip_fraction_high" in tb:
        axes[1].plot(tb.index, tb["clip_fraction_high"], lw=1.3, label=label)
axes[0].set(xlabel="step (train batches)", ylabel="entropy (nats)", title="(a) entropy")
axes[1].set(xlabel="step (train batches)", ylabel="share of tokens with r > 1 + eps_high",
            title="(b) clip fraction (PSFT)")  # fmt: skip
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
fig.suptitle("Figure 17: learning rate, entropy and clip fraction")
fig.tight_layout()
written = save_figure(fig, outputs.figures / "fig17_learning_rates")

# %%
ours = scores_table(profile, ["base", *runs], ["in_domain", "out_of_domain"])
ours.insert(0, "lr", [float("nan"), *(prof.run_config(r).lr for r in runs)])
lines = ["# Table 10: learning rates", "", f"## This run (profile `{profile}`: SFT at x, PSFT at x / 20)", "",
         markdown_table(ours, "run"), "", *paper_sections("table10_learning_rate", "Table 10")]  # fmt: skip
write_table(outputs, "table10_learning_rates", lines, ours)
print("\n".join(lines[:12]))
