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
# # Table 6 and Figure 12: how often the old policy is refreshed (§5.3)
#
# PSFT with the old policy refreshed every 4, 8 (= every train batch, the default) or 16 mini batches, or never
# (the initial model: a trust region around the base). Entropy during training (Figure 12) and final scores
# (Table 6), beside the paper's Table 6. Only reads `results/`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = [
    "psft_refresh4",
    "psft",
    "psft_refresh16",
    "psft_refresh_never",
]  # PSFT runs differing only in old_policy_refresh

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


def refresh_label(run: str) -> str:
    cfg = prof.run_config(run)
    every = cfg.old_policy_refresh
    return f"every {cfg.steps_per_train_batch} mini batches" if every == "train_batch" else (
        "never" if every == "never" else f"every {every} mini batches")  # fmt: skip


fig, ax = plt.subplots(figsize=(6, 3.4))
for run in runs:
    m = per_train_batch(run_metrics(profile, run), ["entropy"])
    ax.plot(m.index, m["entropy"], lw=1.3, label=refresh_label(run))
ax.set(xlabel="step (train batches)", ylabel="entropy (nats)", title="Figure 12: old-policy update frequency")
ax.grid(alpha=0.3)
ax.legend(frameon=False, fontsize=8)
fig.tight_layout()
written = save_figure(fig, outputs.figures / "fig12_update_frequency")

# %%
ours = scores_table(profile, runs, ["in_domain", "out_of_domain"])
ours.insert(0, "old_policy_refresh", [refresh_label(r) for r in runs])
lines = ["# Table 6: old-policy update frequency", "", f"## This run (profile `{profile}`)", "",
         markdown_table(ours, "run"), "", *paper_sections("table6_update_frequency", "Table 6")]  # fmt: skip
write_table(outputs, "table6_update_frequency", lines, ours)
print("\n".join(lines[:10]))
