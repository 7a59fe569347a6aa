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
# # Figures 6-7 and Table 3: DPO from SFT, PSFT and prolonged PSFT
#
# §4.3: DPO after PSFT keeps entropy (Figure 6a), uses both chosen and rejected samples (Figure 6b), aligns at
# least as well (Table 3) and pays a smaller alignment tax on out-of-domain tasks (Figure 7). Ours: DPO through
# TRL (`psftlib.post.dpo`) on the small world's preference pairs; the alignment score is rule-based (format following,
# our AlpacaEval analog: does the response follow the instruction); the alignment tax is the out-of-domain mean
# of the other skills. Only reads `results/`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
cold_starts: list = ["sft", "psft", "psft_prolong"]  # dpo.cold_starts of the profile

# %%
import matplotlib.pyplot as plt
import numpy as np

from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import (
    markdown_table,
    paper_sections,
    run_metrics,
    scores_table,
    write_table,
)
from psftlib.report.plots import STYLE, save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)

runs = [f"{c}+dpo" for c in cold_starts]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for cold, run in zip(cold_starts, runs, strict=True):
    base_style = STYLE.get(cold, {"label": cold})
    m = run_metrics(profile, run)
    axes[0].plot(
        m["train_batch"], m["entropy"], lw=1.4, **{**base_style, "label": f"{base_style['label']} → DPO"}
    )
    axes[1].plot(
        m["train_batch"],
        m["reward_chosen"],
        lw=1.4,
        **{**base_style, "label": f"{base_style['label']} chosen"},
    )
    axes[1].plot(m["train_batch"], m["reward_rejected"], lw=1.4, alpha=0.6,
                 **{**base_style, "ls": ":", "label": f"{base_style['label']} rejected"})  # fmt: skip
axes[0].set(xlabel="step", ylabel="entropy (nats)", title="(a) entropy during DPO")
axes[1].set(xlabel="step", ylabel="implicit reward", title="(b) chosen / rejected rewards")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
fig.tight_layout()
written = save_figure(fig, outputs.figures / "fig6_dpo")

# %%
table = scores_table(profile, ["base", *cold_starts, *runs], ["in_domain", "out_of_domain"])
skills = [c for c in table if c in prof.domain_tasks("out_of_domain") and c != "world_skill_format"]
ours = table.assign(alignment=table["world_skill_format"], ood_without_format=table[skills].mean(axis=1))[
    ["alignment", "ood_without_format", "in_domain"]
]
fig, ax = plt.subplots(figsize=(7, 3.4))
x = np.arange(len(ours))
ax.bar(x, ours["ood_without_format"], color=["0.6", *[STYLE.get(r.split("+")[0], {}).get("color", "0.3")
                                                        for r in ours.index[1:]]])  # fmt: skip
ax.set_xticks(x, ours.index, rotation=30, ha="right")
ax.set(
    ylabel="out-of-domain mean (skills)",
    title="Figure 7: alignment tax (out-of-domain skills after each stage)",
)
ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
written += save_figure(fig, outputs.figures / "fig7_alignment_tax")

# %%
lines = ["# Table 3: alignment after DPO", "",
         f"## This run (profile `{profile}`; alignment = rule-based format following; DPO lr {prof['dpo']['lr']:g} = SFT "
         f"lr / {prof.run_config('sft').lr / prof['dpo']['lr']:.3g}, paper: / 40 (Table 14: 5e-7 vs 2e-5))", "",
         markdown_table(ours, "run"), "", *paper_sections("table3_dpo_alignment", "Table 3")]  # fmt: skip
write_table(outputs, "table3_dpo", lines, ours)
print("\n".join(lines[:10]))
