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
# # Tables 4-5, Figures 9, 19, 20: PSFT on a vision-language model (§4.4, App. C.7.4-C.7.6, C.9)
#
# Qwen2.5-VL-7B-Instruct, vision tower frozen, fine-tuned with SFT / PSFT on the text-only OpenR1-Math-4096 (Table
# 17), then GRPO from each on Geometry-3K image-text problems (Table 12 with 5k response tokens, App. C.7.6). The
# paper's claims: PSFT avoids entropy collapse with comparable in-domain scores (Figure 9), keeps MMLU / MMLU-Pro
# where SFT loses them (Table 4), and stays best after RL on the multimodal benchmarks (Table 5); Figures 19-20 show
# responses. Ours: entropy from the runs' logs, in-training accuracy of the GRPO runs, final scores from the eval
# harness, beside the paper's numbers. Only reads `results/`.

# %% tags=["parameters"]
profile: str = "paper"  # config/<profile>.yaml (this experiment exists in the paper profile only)
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = [
    "vlm_base",
    "vlm_sft",
    "vlm_psft",
]  # the base VLM and the SFT-stage runs (figures.table4_vlm.runs); their +grpo runs follow

# %%
import pandas as pd

from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import curves, per_train_batch, run_metrics, write_table
from psftlib.report.plots import ENTROPY, STEP, finish, new_figure, plot_runs, save_figure
from psftlib.report.task_tables import (
    case_lines,
    cases,
    evaluated,
    paper_rows,
    percent_markdown,
    task_table,
)

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/
prof = load_profile(profile)
grpo_runs = [f"{r}+grpo" for r in runs if f"{r}+grpo" in prof.post_runs]
trained = [r for r in runs if r not in prof.base_runs]  # the base model has no training logs
grpo_data = {r: prof.post_stage("grpo", r)[1].stem for r in runs}  # each cold start's GRPO prompts
# App. C.7.4 (i) and (ii): the math sets, MMLU / MMLU-Pro (those the profile has: a tiny world keeps our tasks only)
TEXT_SETS = [s for s in ("in_domain", "vlm_text_ood") if s in prof.task_sets]
IMAGE_SETS = [
    "vlm_image_in_domain",
    "vlm_image_out_of_domain",
]  # App. C.7.4 (iii) and (iv), when the profile has them
image_sets = [s for s in IMAGE_SETS if s in prof.task_sets]
print(
    f"GRPO prompts per cold start: {grpo_data}; multimodal task sets in the profile: {image_sets or 'none'}"
)

# %% [markdown]
# Figure 9: entropy during the text-only SFT stage and during GRPO, and the in-domain accuracy of the in-training
# evaluations of GRPO (the profile's `eval.task_sets.curves`; hub SFT-stage runs keep no in-training curves).

# %%
fig, axes = new_figure(3, width=4.2, height=3.6)
plot_runs(
    axes[0][0], profile, trained, lambda r: per_train_batch(run_metrics(profile, r), ["entropy"])["entropy"]
)
axes[0][0].set(xlabel=STEP, ylabel=ENTROPY, title="(a) entropy, SFT stage (text only)")
if grpo_runs:
    plot_runs(axes[0][1], profile, grpo_runs, lambda r: run_metrics(profile, r).dropna(subset=["entropy"])
              .set_index("train_batch")["entropy"])  # fmt: skip
    plot_runs(axes[0][2], profile, grpo_runs, lambda r: 100 * curves(profile, r).set_index("train_batch")["in_domain"],
              marker="o", ms=3)  # fmt: skip
axes[0][1].set(xlabel="step (generation rounds)", ylabel=ENTROPY, title="(b) entropy during GRPO")
axes[0][2].set(xlabel="step (generation rounds)", ylabel="accuracy (%, in-training subset)",
               title="(c) in-domain accuracy during GRPO")  # fmt: skip
finish(fig, axes, "Figure 9: PSFT on Qwen2.5-VL, then GRPO")
written = save_figure(fig, outputs.figures / "fig9_vlm")

# %% [markdown]
# Table 4: the text benchmarks of the base VLM and after the SFT stage (and, ours, after GRPO).

# %%
text = task_table(profile, evaluated(profile, [*runs, *grpo_runs], TEXT_SETS), TEXT_SETS)
lines4 = ["# Table 4: the VLM after text-only SFT / PSFT, text benchmarks", "",
          f"## This run (profile `{profile}`: task sets {', '.join(f'`{s}`' for s in TEXT_SETS)})", "",
          "The base row is the untrained VLM (`paper.base_models`). Rows `+grpo` are ours "
          "(after GRPO on " + ", ".join(sorted(set(grpo_data.values()))) + "); the paper's Table 4 has none.", "",
          percent_markdown(text), "", *paper_rows("table4_vlm_text", "Table 4")]  # fmt: skip
write_table(outputs, "table4_vlm_text", lines4, text)
text

# %% [markdown]
# Table 5: the multimodal benchmarks before and after GRPO on Geometry-3K, when the profile declares the task sets
# `vlm_image_in_domain` (Geo3K, MathVerse, MathVista) and `vlm_image_out_of_domain` (MMMU, MMMU-Pro).

# %%
rows5 = [x for r in runs for x in (r, f"{r}+grpo") if x in runs or x in grpo_runs]  # Table 5's row order
image = (
    task_table(profile, evaluated(profile, rows5, image_sets), image_sets) if image_sets else pd.DataFrame()
)
body5 = (
    [percent_markdown(image)]
    if len(image)
    else ["Not evaluated: the profile declares no task set "
          + " / ".join(f"`{s}`" for s in IMAGE_SETS)
          + " (image-text tasks need a multimodal lm-eval model, `hf-multimodal` / `vllm-vlm`)."]
)  # fmt: skip
lines5 = ["# Table 5: the VLM before and after GRPO on Geometry-3K, multimodal benchmarks", "",
          f"## This run (profile `{profile}`)", "", *body5, "", *paper_rows("table5_vlm_multimodal", "Table 5")]  # fmt: skip
write_table(outputs, "table5_vlm_multimodal", lines5, image)
image

# %% [markdown]
# Figures 19-20 (App. C.9): what the VLM answers after text-only PSFT and GRPO: the first problems each final model
# solved (its first sample), from the evaluation's per-sample log.

# %%
case_set = image_sets[0] if image_sets else "in_domain"
shown = [r for r in [*grpo_runs[::-1], *runs[::-1]] if r in evaluated(profile, [r], [case_set])][:2]
examples = cases(profile, shown, case_set)
lines19 = ["# Figures 19-20: case studies of the VLM", "",
           f"Profile `{profile}`, task set `{case_set}`: the first problems each model answered correctly in its first "
           "sample (else its first problems); long texts cut in the middle.", "", *case_lines(examples)]  # fmt: skip
write_table(outputs, "fig19_vlm_cases", lines19, examples)
print("\n".join(lines4[:10]))
