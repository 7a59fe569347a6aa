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
from psftlib.report.plots import ENTROPY, finish, new_figure, plot_runs, save_figure

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)

runs = [f"{c}+grpo" for c in cold_starts]
fig, axes = new_figure(2, width=4.6, height=3.6)  # styles: the cold start's (psftlib/report/styles.py)
plot_runs(axes[0][0], profile, runs, lambda r: run_metrics(profile, r).dropna(subset=["entropy"])
          .set_index("train_batch")["entropy"])  # fmt: skip
plot_runs(axes[0][1], profile, runs, lambda r: 100 * curves(profile, r).set_index("train_batch")["in_domain"],
          marker="o", ms=3)  # fmt: skip
axes[0][0].set(xlabel="step (generation rounds)", ylabel=ENTROPY, title="(a) entropy during GRPO")
axes[0][1].set(xlabel="step (generation rounds)", ylabel="accuracy (%, in-training subset)",
               title="(b) in-domain accuracy during GRPO")  # fmt: skip
finish(fig, axes, legend_from=axes[0][0])
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
