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
# # Table 7: PSFT trained only on high-entropy tokens (App. C.2)
#
# PSFT with the loss restricted to the top-ρ highest-entropy response tokens of each old-policy window
# (`entropy_top_fraction`, entropy under the old policy) against PSFT on every token: final scores beside the
# paper's Table 7 (whose ρ values are lost in the text: `results/paper/README.md`). Only reads `results/`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = ["psft", "psft_entropy0.2"]  # PSFT on all tokens, then PSFT runs with entropy_top_fraction set

# %%
from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import markdown_table, paper_sections, scores_table, write_table

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)
ours = scores_table(profile, runs, ["in_domain", "out_of_domain"])
ours.insert(0, "trained_tokens", [
    "all" if prof.run_config(r).entropy_top_fraction is None else f"top {prof.run_config(r).entropy_top_fraction:.0%}"
    for r in runs
])  # fmt: skip
lines = ["# Table 7: PSFT on high-entropy tokens only", "", f"## This run (profile `{profile}`)", "",
         markdown_table(ours, "run"), "", *paper_sections("table7_entropy_tokens", "Table 7")]  # fmt: skip
write_table(outputs, "table7_entropy_tokens", lines, ours)
print("\n".join(lines[:10]))
