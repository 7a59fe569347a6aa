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
# # Figure 5 and Table 2: GRPO from the SFT and PSFT cold starts
#
# §4.2: with PSFT as the cold start, RL keeps a higher entropy (Figure 5a), starts slower and catches up in-domain
# (Figure 5b), and ends better in and out of domain (Table 2). Ours: GRPO through TRL with the paper's DAPO
# settings (`psftlib.post.grpo`) from each cold start; entropy and in-domain curves from the runs' logs, final scores
# from the eval harness, beside the paper's Table 2. Only reads `results/`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
cold_starts: list = ["sft", "psft"]  # grpo.cold_starts of the profile

# %%
import matplotlib.pyplot as plt

from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import (
    curves,
    markdown_table,
    paper_sections,
    run_metrics,
    scores_table,
    write_table,
)
from psftlib.report.plots import STYLE, save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)

runs = [f"{c}+grpo" for c in cold_starts]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for cold, run in zip(cold_starts, runs, strict=True):
    style = {**STYLE.get(cold, {}), "label": f"{STYLE.get(cold, {}).get('label', cold)} → GRPO"}
    m = run_metrics(profile, run).dropna(subset=["entropy"])
    axes[0].plot(m["train_batch"], m["entropy"], lw=1.4, **style)
    c = curves(profile, run)
    axes[1].plot(c["train_batch"], c["in_domain"], marker="o", ms=3, lw=1.4, **style)
axes[0].set(xlabel="step (generation rounds)", ylabel="entropy (nats)", title="(a) entropy during GRPO")
axes[1].set(
    xlabel="step (generation rounds)", ylabel="in-domain avg@k (subset)", title="(b) in-domain during GRPO"
)
for ax in axes:
    ax.grid(alpha=0.3)
axes[0].legend(frameon=False)
fig.tight_layout()
written = save_figure(fig, outputs.figures / "fig5_grpo")

# %%
ours = scores_table(profile, [*cold_starts, *runs], ["in_domain", "out_of_domain"])
lines = ["# Table 2: GRPO from the SFT and PSFT cold starts", "",
         f"## This run (profile `{profile}`; GRPO lr {prof['grpo']['lr']:g} = SFT lr / "
         f"{prof.run_config('sft').lr / prof['grpo']['lr']:.3g}, paper: / 20 (Table 12: 1e-6 vs 2e-5); "
         f"{prof['grpo']['train_batches']} generation rounds of {prof['grpo']['train_batch_size']} prompts)", "",
         markdown_table(ours, "run"), "", *paper_sections("table2_grpo", "Table 2")]  # fmt: skip
write_table(outputs, "table2_grpo", lines, ours)
print("\n".join(lines[:8]))
