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
# # Table 1, the Llama-3.1-8B-Instruct rows (§4.1)
#
# The paper's second base model, trained on the same OpenR1-Math data with the same settings as Qwen2.5-7B-Instruct
# (Table 11, "the same configuration" for Qwen and Llama). `table1_main` shows the Qwen rows; this table the Llama
# runs, per task of the profile's in-domain, out-of-domain and IFEval task sets, beside the paper's Llama rows.
# Only reads `results/`.

# %% tags=["parameters"]
profile: str = "paper"  # config/<profile>.yaml (this experiment exists in the paper profile only)
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = [
    "llama_base",
    "llama_sft",
    "llama_sft_kl",
    "llama_psft",
]  # figures.table1_llama.runs (base first)

# %%
from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import write_table
from psftlib.report.task_tables import paper_rows, percent_markdown, task_table

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/
prof = load_profile(profile)
task_sets = [s for s in ("in_domain", "out_of_domain", "ifeval") if s in prof.task_sets]
models = sorted(
    {prof.base_model_id(r) if r in prof.base_runs else prof.run_source(r)["model_id"] for r in runs}
)
paper_model = "Llama3.1-8B-Instruct"  # as results/paper/table1_sft_main.csv names it

# %%
ours = task_table(profile, runs, task_sets)
lines = ["# Table 1: the Llama-3.1-8B-Instruct rows", "",
         f"## This run (profile `{profile}`: {', '.join(f'`{m}`' for m in models)}; task sets "
         f"{', '.join(f'`{s}`' for s in task_sets)})", "",
         "The base row is the untrained model (`paper.base_models`); the paper's PSFT with warm-up column has no Llama "
         "run here.", "",
         percent_markdown(ours), "", *paper_rows("table1_sft_main", "Table 1", model=paper_model)]  # fmt: skip
write_table(outputs, "table1_llama", lines, ours)
print("\n".join(lines[:10]))
ours
