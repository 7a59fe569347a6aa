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
# **Checkpoint selection.** The paper selects checkpoints by in-domain score (§4.1.2). So do we, by a rule written
# as code (`psftlib.eval.selection_score`): each run keeps the checkpoint with the highest mean in-domain avg@k of
# its in-training evaluations (Figure 3's curves, every `eval.during_training.every_train_batches`, on a small
# subset: `limit` problems per set), ties going to the later checkpoint; the base model (step 0) is no candidate.
# That checkpoint is then evaluated on the full sets. The subset is small, so the selection is noisy (and selects
# on the same test problems, as the paper's does): the final checkpoints are shown too, and the findings use the
# final checkpoints (every run trained for the same number of steps). The two extra rows `sft_as_psft` /
# `psft_as_sft` are ours (controls: step size vs clipping).

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = ["sft", "sft_kl", "psft_warmup12", "psft_warmup24", "psft", "sft_as_psft", "psft_as_sft"]

# %%
import pandas as pd

from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import (
    markdown_table,
    paper_sections,
    scores_table,
    seed_spread_table,
    selected_table,
    write_table,
)
from psftlib.report.paper import load_paper_table

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)
controls = [r for r in ("sft_as_psft", "psft_as_sft") if r in runs]  # ours, not in the paper
if prof["world"]["kind"] == "hub":
    scale, domains = (
        "the paper's models and data",
        "In-domain and out-of-domain: the profile's `eval.task_sets`.",
    )
else:
    scale = (
        f"the small world, a {prof['model']['hidden_size']}-wide {prof['model']['num_hidden_layers']}-layer "
        "Qwen2 base"
    )
    domains = (
        f"In-domain: avg@k on chains of {' / '.join(map(str, prof['world']['levels']))} terms (`world_target_*`); "
        "out-of-domain: base skills and format following (`world_skill_*`, greedy)."
    )
ours = scores_table(prof.name, ["base", *runs], ["in_domain", "out_of_domain"])
selected = selected_table(prof.name, runs, ["in_domain", "out_of_domain"])
selected

# %% [markdown]
# The final checkpoints (after the last epoch; what the findings compare):

# %%
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
    f"## This run (profile `{prof.name}`: {scale})",
    "",
    domains
    + (f" {', '.join(f'`{c}`' for c in controls)}: our controls, not in the paper." if controls else ""),
    "",
    *(
        [
            "### Selected checkpoints (§4.1.2: by in-domain score)",
            "",
            "Rule (`psftlib.eval.selection_score`): the checkpoint with the highest mean in-domain avg@k among the",
            "in-training evaluations after step 0 (a subset of "
            f"{prof['eval']['during_training'].get('limit')} problems per set; ties: the later checkpoint),",
            "then evaluated on the full sets. `selected_epoch`: where it was taken; `selected_on`: its subset score.",
            "Noisy at this scale (and selected on test problems, as in the paper); the findings use final checkpoints.",
            "",
            markdown_table(selected, "run"),
            "",
            "### Final checkpoints",
            "",
        ]
        if len(selected)
        else ["Final checkpoints (no selection: these runs keep no in-training curves).", ""]
    ),
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
checkpoints = (
    [selected.assign(checkpoint="selected"), ours.assign(checkpoint="final")] if len(selected) else [ours]
)
write_table(outputs, "table1_main", lines, pd.concat(checkpoints))
print("\n".join(lines[:12]))
