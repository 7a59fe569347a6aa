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
# # App. C.6: PSFT on a coding task
#
# Qwen2.5-7B-Instruct fine-tuned with SFT and PSFT on OpenR1 code traces shorter than 8,192 tokens (about 13k
# examples), evaluated on LiveCodeBench. The paper prints no table here, only its conclusion: "both SFT and PSFT
# effectively learn the target domain, PSFT better preserves mathematical instruction-following ability". So there is
# no paper column: ours are the base model and both runs on the code task set (`eval.task_sets.code`, when the
# profile declares one) and on the profile's in-domain (math), out-of-domain and IFEval task sets. Only reads
# `results/`.

# %% tags=["parameters"]
profile: str = "paper"  # config/<profile>.yaml (this experiment exists in the paper profile only)
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = ["code_sft", "code_psft"]  # figures.table_c6_code.runs

# %%
from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import write_table
from psftlib.report.task_tables import evaluated, percent_markdown, task_table

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/
prof = load_profile(profile)
task_sets = [s for s in ("code", "in_domain", "out_of_domain", "ifeval") if s in prof.task_sets]
models = sorted({prof.run_source(r)["model_id"] for r in runs})
rows = [prof.base_of(runs[0]), *runs]  # the untrained model of these runs (paper.base_models) first

# %%
ours = task_table(profile, evaluated(profile, rows, task_sets), task_sets)
lines = ["# App. C.6: SFT and PSFT on code (OpenR1 code, LiveCodeBench)", "",
         f"## This run (profile `{profile}`: {', '.join(f'`{m}`' for m in models)}; task sets "
         f"{', '.join(f'`{s}`' for s in task_sets)})", "",
         *([] if "code" in task_sets else ["No code task set in the profile (`eval.task_sets.code`): LiveCodeBench "
                                           "is not evaluated; the other task sets are.", ""]),
         percent_markdown(ours), "",
         "## Paper (App. C.6)", "",
         "No numbers printed (`results/paper/README.md`): \"while both SFT and PSFT effectively learn the target "
         "domain, PSFT better preserves mathematical instruction-following ability\".", ""]  # fmt: skip
write_table(outputs, "table_c6_code", lines, ours)
print("\n".join(lines[:10]))
ours
