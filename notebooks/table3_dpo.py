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
from psftlib.eval.judge_scores import judge_table
from psftlib.layout import Layout
from psftlib.report.analysis import (
    markdown_table,
    paper_sections,
    run_metrics,
    scores_table,
    write_table,
)
from psftlib.report.plots import ENTROPY, finish, new_figure, plot_runs, save_figure
from psftlib.report.styles import style_table
from psftlib.report.task_tables import task_table

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)

runs = [f"{c}+dpo" for c in cold_starts]
base = prof.base_of(cold_starts[0])  # the cold starts' untrained model (a hub profile: Qwen3-4B-Base, §4.3)
# the alignment tax: Table 16's lm-eval tasks where the profile has that set (App. C.7.3), else the skills below
tax_set = "alignment_tax" if "alignment_tax" in prof.task_sets else None
# styles: the cold start's (psftlib/report/styles.py); chosen and rejected rewards in panels of their own
fig, axes = new_figure(3, width=4.0, height=3.5)
for ax, column in zip(axes[0], ["entropy", "reward_chosen", "reward_rejected"], strict=True):
    plot_runs(ax, profile, runs, lambda r, c=column: run_metrics(profile, r).set_index("train_batch")[c])
axes[0][0].set(xlabel="step (DPO batches)", ylabel=ENTROPY, title="(a) entropy during DPO")
axes[0][1].set(
    xlabel="step (DPO batches)", ylabel="implicit reward β log(π/π_ref)", title="(b) chosen responses"
)
axes[0][2].set(
    xlabel="step (DPO batches)", ylabel="implicit reward β log(π/π_ref)", title="(c) rejected responses"
)
finish(fig, axes, legend_from=axes[0][0])
written = save_figure(fig, outputs.figures / "fig6_dpo")

# %%
table = scores_table(profile, [base, *cold_starts, *runs], ["in_domain", "out_of_domain"])
# alignment: the small world's rule-based format following; a hub profile has none (the judge's columns below)
fmt = "world_skill_format" if "world_skill_format" in table else None
skills = [c for c in table if c in prof.domain_tasks("out_of_domain") and c != fmt]
ours = table.assign(
    **({"alignment": table[fmt]} if fmt else {}), ood_without_format=table[skills].mean(axis=1)
)[["alignment"] * bool(fmt) + ["ood_without_format", "in_domain"]]
if tax_set:  # the mean over Table 16's tasks (a group, e.g. cmmlu, by its subtasks' size-weighted mean)
    ours[tax_set] = task_table(profile, [base, *cold_starts, *runs], [tax_set])[prof.task_sets[tax_set]].mean(
        axis=1
    )
tax = tax_set or "ood_without_format"
# (Figure 7) each cold start's out-of-domain score after the SFT stage (hatched) and after DPO, the base model's
# as a line: the alignment tax is the drop from the base
table_styles = style_table(profile)
fig, ax = plt.subplots(figsize=(7.5, 3.6), layout="constrained")
x = np.arange(len(cold_starts))
for i, (cold, run) in enumerate(zip(cold_starts, runs, strict=True)):
    color = table_styles[cold].color
    ax.bar(i - 0.2, 100 * ours.loc[cold, tax], 0.4, color=color, alpha=0.45, hatch="//",
           edgecolor=color, label="after the SFT stage" if i == 0 else None)  # fmt: skip
    ax.bar(i + 0.2, 100 * ours.loc[run, tax], 0.4, color=color,
           label="after DPO" if i == 0 else None)  # fmt: skip
ax.axhline(100 * ours.loc[base, tax], color="0.3", ls=":", label="base model")
ax.set_xticks(x, [table_styles[c].label for c in cold_starts])
ax.set(xlabel="cold start", ylabel="accuracy (%, mean of Table 16's tasks)" if tax_set else "out-of-domain accuracy (%, skills)",
       title="Figure 7: alignment tax (out-of-domain skills after each stage)")  # fmt: skip
ax.grid(alpha=0.3, axis="y")
ax.legend(frameon=False, fontsize=8, loc="lower right")
written += save_figure(fig, outputs.figures / "fig7_alignment_tax")

# %%
# Table 3's judge columns (AlpacaEval 2 LC / WR, Arena-Hard WR, MT-Bench), where the judge rule wrote them
# (rules/judge.smk, a profile with paper.judge): joined to the table
judged = judge_table(profile, [*cold_starts, *runs])
if not judged.empty:
    ours = ours.join(judged, how="left")
lines = ["# Table 3: alignment after DPO", "",
         f"## This run (profile `{profile}`; alignment = rule-based format following; DPO lr {prof['dpo']['lr']:g} = SFT "
         f"lr / {prof.run_config('sft').lr / prof['dpo']['lr']:.3g}, paper: / 40 (Table 14: 5e-7 vs 2e-5))", "",
         markdown_table(ours, "run"), "", *paper_sections("table3_dpo_alignment", "Table 3")]  # fmt: skip
write_table(outputs, "table3_dpo", lines, ours)
print("\n".join(lines[:10]))
