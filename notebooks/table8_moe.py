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
# # Table 8: PSFT on a larger mixture-of-experts model (App. C.3)
#
# Qwen3-30B-A3B-Instruct-2507 fine-tuned with SFT and PSFT on OpenR1-Math (App. C.3 states no hyperparameters: the
# profile uses Table 11's). The paper reports AIME-24 / AIME-25 in domain and TruthfulQA / IFEval out of domain, with
# PSFT ahead on all four and far ahead on IFEval (88.52 vs 50.56). Ours: every task of the profile's in-domain,
# out-of-domain and IFEval task sets, beside the paper's. Only reads `results/`.

# %% tags=["parameters"]
profile: str = "paper"  # config/<profile>.yaml (this experiment exists in the paper profile only)
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = ["moe_sft", "moe_psft"]  # figures.table8_moe.runs

# %%
from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import write_table
from psftlib.report.task_tables import paper_rows, percent_markdown, task_table

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/
prof = load_profile(profile)
task_sets = [s for s in ("in_domain", "out_of_domain", "ifeval") if s in prof.task_sets]
models = sorted({prof.run_source(r)["model_id"] for r in runs})

# %%
ours = task_table(profile, runs, task_sets)
lines = ["# Table 8: PSFT on Qwen3-30B-A3B (MoE)", "",
         f"## This run (profile `{profile}`: {', '.join(f'`{m}`' for m in models)}; task sets "
         f"{', '.join(f'`{s}`' for s in task_sets)})", "",
         "No base row (the paper's Table 8 has none).", "",
         percent_markdown(ours), "", *paper_rows("table8_moe_30b", "Table 8")]  # fmt: skip
write_table(outputs, "table8_moe", lines, ours)
print("\n".join(lines[:10]))
ours
