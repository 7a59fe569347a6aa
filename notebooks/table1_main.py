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
# # Table 1: in-domain and out-of-domain scores after fine-tuning
#
# Ours (the profile's small world) beside the paper's (Qwen2.5-7B-Instruct and Llama-3.1-8B-Instruct on
# OpenR1-Math). In-domain = the graded target sets (our AIME / AMC / MATH-500 analogs, avg@k sampled at T 0.7);
# out-of-domain = the base skills and format following (our GPQA ... IFEval analogs, greedy).
#
# **Checkpoint selection.** The paper selects checkpoints by in-domain score (§4.1.2). We report each run's
# *final* checkpoint (no selection): the in-training curves (Figure 3) are on a small subset, too noisy to select
# on. The two extra columns `sft_as_psft` / `psft_as_sft` are ours (controls: step size vs clipping).

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
runs: list = ["sft", "sft_kl", "psft_warmup12", "psft_warmup24", "psft", "sft_as_psft", "psft_as_sft"]

# %%
from psftlib.analysis import markdown_table, paper_sections, scores_table, seed_spread_table, write_table
from psftlib.config import load_profile
from psftlib.paper import load_paper_table

prof = load_profile(profile)
ours = scores_table(prof.name, ["base", *runs], ["in_domain", "out_of_domain"])
ours

# %% [markdown]
# **Seeds.** The runs the profile repeats over seeds (`seed_replicates`: same config, other data order and sampling)
# are summarised as mean and standard deviation over seeds; the main table shows the seed-0 run.

# %%
spread = seed_spread_table(prof, runs)
spread

# %%
paper = load_paper_table("table1_sft_main")
paper[paper["model"] == paper["model"].iloc[0]].pivot_table(
    index="method_id", columns="benchmark_id", values="value", sort=False
)

# %%
lines = [
    "# Table 1: in-domain and out-of-domain scores after fine-tuning",
    "",
    f"## This run (profile `{prof.name}`: the small world, a {prof['model']['hidden_size']}-wide "
    f"{prof['model']['num_hidden_layers']}-layer Qwen2 base; final checkpoints, no selection)",
    "",
    "In-domain: avg@k on chains of 3 / 4 / 5 terms (`world_target_*`); out-of-domain: base skills and format",
    "following (`world_skill_*`, greedy). `sft_as_psft`, `psft_as_sft`: our controls, not in the paper.",
    "",
    markdown_table(ours, "run"),
    "",
    *(
        [
            "### Over seeds (mean and standard deviation of the domain means; seed-0 run + `seed_replicates`)",
            "",
            markdown_table(spread, "run"),
            "",
        ]
        if len(spread)
        else []
    ),
    *paper_sections("table1_sft_main", "Table 1"),
]
write_table(prof.name, "table1_main", lines, ours)
print("\n".join(lines[:12]))
