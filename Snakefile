# psft: every table and figure of "Proximal Supervised Fine-Tuning", regenerated from scratch.
#
#   snakemake --cores all                          # default profile: mini (CPU, small world)
#   snakemake --cores all --config profile=smoke   # tests / CI
#
# Reads like the paper's table of contents: one rule per table or figure, named after it. Compute rules
# (world, train) write data under results/; figure rules only read it, so restyling never retrains.
# Each rule declares its notebook and the psftlib modules it uses as inputs, and its slice of the profile
# as params (Snakemake re-runs a job when its params change).
import json
import re
from glob import glob

from snakemake.exceptions import WorkflowError

from psftlib.config import ConfigError, load_profile, replicates
from psftlib.notebook import use_this_interpreter


PROFILE = config.get("profile", "mini")
try:
    P = load_profile(PROFILE)
except ConfigError as err:
    raise WorkflowError(f"invalid profile:\n{err}") from None

# Jobs call `python` from PATH: put this interpreter's folder first, so a venv's snakemake uses that venv
# even when it is not activated (and params stay free of machine-specific paths).
use_this_interpreter()
NB = f"results/notebooks/{P.name}"
DATA = f"results/data/{P.name}"
LOGS = f"results/logs/{P.name}"
BENCH = f"results/benchmarks/{P.name}"  # wall time and memory per job (the report shows them)
FIG = "figures" if P.name == "mini" else f"figures/{P.name}"
RUN_NOTEBOOK = "python -m psftlib.notebook"
EVAL = P.data.get("eval", {})
TASK_SETS = list(EVAL.get("task_sets", {}))
CURVES = (EVAL.get("during_training") or {}).get("task_set")
FINAL_SETS = [t for t in TASK_SETS if t != CURVES]  # the in-training subset is never run as a final eval
POST = [f"{cold}+{stage}" for stage in ("grpo", "dpo") for cold in P.data.get(stage, {}).get("cold_starts", [])]
ALL_RUNS = ["base", *P.runs, *POST]
SRC = {
    "world": ["psftlib/world.py", "psftlib/smallworld.py", "psftlib/pretrain.py", "psftlib/data.py",
              "psftlib/config.py"],
    "train": ["psftlib/train.py", "psftlib/objectives.py", "psftlib/logprobs.py", "psftlib/data.py",
              "psftlib/config.py", "psftlib/world.py", "psftlib/eval.py", "psftlib/verify.py"],
    "plots": ["psftlib/plots.py", "psftlib/analysis.py"],
    "eval": ["psftlib/eval.py", "psftlib/verify.py", "psftlib/world.py", *sorted(glob("psftlib/tasks/*"))],
    "post": ["psftlib/posttrain.py", "psftlib/rl.py", "psftlib/dpo.py", "psftlib/verify.py", "psftlib/world.py",
             "psftlib/eval.py"],
}


include: "rules/common.smk"


wildcard_constraints:
    run="|".join(map(re.escape, P.runs)),
    cold="|".join(map(re.escape, P.runs)),


TABLES = "results/tables" if P.name == "mini" else f"results/tables/{P.name}"
CAL = P.data.get("calibration", {})
FINDINGS = "results/findings.md" if P.name == "mini" else f"results/{P.name}/findings.md"
CAL_RUNS = [*CAL.get("sft_grid", []), *CAL.get("psft_grid", []), *CAL.get("matched", [])]
# Table 1's runs are also evaluated at the checkpoint their in-training in-domain curve selects (§4.1.2;
# psftlib.eval.selection_score): eval of "<run>@selected". The small world only (hub runs keep no curves).
SELECTED = (
    [f"{r}@selected" for r in with_replicates(P["figures"]["table1_main"]["runs"])]
    if P["world"]["kind"] != "hub" and CURVES and "table1_main" in P["figures"]
    else []
)


REPORTED = [
    f"{FIG}/fig1_entropy.png",
    *([f"{FIG}/fig3_performance.png"] if "fig3_performance" in P["figures"] else []),
    *([f"{TABLES}/table1_main.md"] if "table1_main" in P["figures"] else []),
    *([f"{TABLES}/world_calibration.md"] if CAL else []),
    FINDINGS,
    *([f"{FIG}/fig11_clip_ablation.png"] if "fig11_clip_ablation" in P["figures"] else []),
    *([f"{TABLES}/table6_update_frequency.md"] if "table6_update_frequency" in P["figures"] else []),
    *([f"{TABLES}/table2_grpo.md"] if P.data.get("grpo") else []),
    *([f"{TABLES}/table3_dpo.md"] if P.data.get("dpo") else []),
    *([f"{FIG}/fig10_clipped_tokens.png"] if "fig10_clipped_tokens" in P["figures"] else []),
    *(f"{TABLES}/{t}.md" for t in ("table7_entropy_tokens", "table9_baselines", "table10_learning_rates")
      if t in P["figures"]),
]
REPORT = "results/report.html" if P.name == "mini" else f"results/{P.name}/report.html"


rule all:
    input:
        REPORTED,
        REPORT,
        expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json", run=ALL_RUNS, task_set=FINAL_SETS),


# ---- compute ---------------------------------------------------------------------------------------------

# The small world builds its own base model and data (rules/small_world.smk); a hub profile (config/paper.yaml)
# loads public models and datasets and trains on GPUs (rules/hub.smk). Both provide the rules train, eval, grpo
# and dpo with the same outputs, so the figure and table rules below serve either.
if P["world"]["kind"] == "hub":

    include: "rules/hub.smk"

else:

    include: "rules/small_world.smk"


# ---- figures and tables (read results/, never train) -----------------------------------------------------

rule fig1_entropy:
    """Figure 1: token entropy over training, one line per method."""
    input:
        notebook="notebooks/fig1_entropy.py",
        src=SRC["plots"],
        metrics=expand(f"results/runs/{P.name}/{{run}}/metrics.jsonl",
                       run=with_replicates(P["figures"]["fig1_entropy"]["runs"])),
    output:
        png=f"{FIG}/fig1_entropy.png",
        pdf=f"{FIG}/fig1_entropy.pdf",
        notebook=f"{NB}/fig1_entropy.ipynb",
    params:
        slice=slice_of("figures"),
        runs=json.dumps(P["figures"]["fig1_entropy"]["runs"]),
        smooth=P["figures"]["fig1_entropy"].get("smooth", 1),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/fig1_entropy.log",
    benchmark:
        f"{BENCH}/fig1_entropy.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p runs '{params.runs}' -p smooth {params.smooth} > {log} 2>&1"


rule world_calibration:
    """The small world's calibration table: base skills and target, SFT/PSFT learning-rate grid, matched controls."""
    input:
        notebook="notebooks/world_calibration.py",
        src=["psftlib/analysis.py"],
        evals=expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json", run=["base", *CAL_RUNS],
                     task_set=["in_domain", "out_of_domain"]),
        metrics=expand(f"results/runs/{P.name}/{{run}}/metrics.jsonl", run=CAL_RUNS),
        curves=expand(f"results/runs/{P.name}/{{run}}/eval.jsonl", run=CAL_RUNS),
    output:
        md=f"{TABLES}/world_calibration.md",
        csv=f"{TABLES}/world_calibration.csv",
        epochs=f"{TABLES}/world_calibration_epochs.csv",
        notebook=f"{NB}/world_calibration.ipynb",
    params:
        slice=slice_of("calibration"),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/world_calibration.log",
    benchmark:
        f"{BENCH}/world_calibration.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} -p profile {params.profile} > {log} 2>&1"


rule table1_main:
    """Table 1: in-domain and out-of-domain scores of every SFT-stage method, beside the paper's."""
    input:
        notebook="notebooks/table1_main.py",
        src=["psftlib/analysis.py", "psftlib/paper.py", "results/paper/table1_sft_main.csv"],
        evals=lambda wc: expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json",
                                run=["base", *with_replicates(P["figures"]["table1_main"]["runs"]), *SELECTED],
                                task_set=FINAL_SETS),
    output:
        md=f"{TABLES}/table1_main.md",
        csv=f"{TABLES}/table1_main.csv",
        notebook=f"{NB}/table1_main.ipynb",
    params:
        runs=lambda wc: json.dumps(P["figures"]["table1_main"]["runs"]),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/table1_main.log",
    benchmark:
        f"{BENCH}/table1_main.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p runs '{params.runs}' > {log} 2>&1"


rule fig3_performance:
    """Figure 3: in-domain and out-of-domain curves during fine-tuning."""
    input:
        notebook="notebooks/fig3_performance.py",
        src=["psftlib/analysis.py", *SRC["plots"]],
        curves=lambda wc: expand(f"results/runs/{P.name}/{{run}}/eval.jsonl",
                                 run=P["figures"]["fig3_performance"]["runs"]),
    output:
        png=f"{FIG}/fig3_performance.png",
        pdf=f"{FIG}/fig3_performance.pdf",
        notebook=f"{NB}/fig3_performance.ipynb",
    params:
        runs=lambda wc: json.dumps(P["figures"]["fig3_performance"]["runs"]),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/fig3_performance.log",
    benchmark:
        f"{BENCH}/fig3_performance.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p runs '{params.runs}' > {log} 2>&1"


rule findings:
    """Every finding of the paper as a test on this run's outputs, with a verdict (results/findings.md)."""
    input:
        notebook="notebooks/findings.py",
        src=["psftlib/findings.py", "psftlib/analysis.py"],
        evals=expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json", run=ALL_RUNS, task_set=FINAL_SETS),
        metrics=expand(f"results/runs/{P.name}/{{run}}/metrics.jsonl", run=P.runs),
    output:
        md=FINDINGS,
        notebook=f"{NB}/findings.ipynb",
    params:
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/findings.log",
    benchmark:
        f"{BENCH}/findings.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} -p profile {params.profile} > {log} 2>&1"


rule fig10_clipped_tokens:
    """Figure 10: the tokens PSFT clips, early / middle / late in training (word clouds + reflective-word shares)."""
    input:
        notebook="notebooks/fig10_clipped_tokens.py",
        src=["psftlib/analysis.py", *SRC["plots"]],
        # the run writes tokens.parquet beside metrics.jsonl when its token_sample_rate > 0
        metrics=lambda wc: f"results/runs/{P.name}/{P['figures']['fig10_clipped_tokens']['runs'][0]}/metrics.jsonl",
    output:
        png=f"{FIG}/fig10_clipped_tokens.png",
        pdf=f"{FIG}/fig10_clipped_tokens.pdf",
        csv=f"{TABLES}/fig10_clipped_tokens.csv",
        notebook=f"{NB}/fig10_clipped_tokens.ipynb",
    params:
        run=lambda wc: P["figures"]["fig10_clipped_tokens"]["runs"][0],
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/fig10_clipped_tokens.log",
    benchmark:
        f"{BENCH}/fig10_clipped_tokens.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p run {params.run} > {log} 2>&1"


rule table2_grpo:
    """Figure 5 and Table 2: GRPO from each cold start (entropy, in-domain curve, final scores)."""
    input:
        notebook="notebooks/table2_grpo.py",
        src=["psftlib/analysis.py", "psftlib/paper.py", *SRC["plots"], "results/paper/table2_grpo.csv"],
        metrics=expand(f"results/runs/{P.name}/{{cold}}+grpo/metrics.jsonl", cold=P.data.get("grpo", {}).get("cold_starts", [])),
        evals=expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json", run=ALL_RUNS, task_set=FINAL_SETS),
    output:
        fig5_grpo=f"{FIG}/fig5_grpo.png",
        fig5_grpo_pdf=f"{FIG}/fig5_grpo.pdf",
        md=f"{TABLES}/table2_grpo.md",
        csv=f"{TABLES}/table2_grpo.csv",
        notebook=f"{NB}/table2_grpo.ipynb",
    params:
        cold=json.dumps(P.data.get("grpo", {}).get("cold_starts", [])),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/table2_grpo.log",
    benchmark:
        f"{BENCH}/table2_grpo.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p cold_starts '{params.cold}' > {log} 2>&1"


rule table3_dpo:
    """Figures 6-7 and Table 3: DPO from each cold start (entropy, rewards, alignment, alignment tax)."""
    input:
        notebook="notebooks/table3_dpo.py",
        src=["psftlib/analysis.py", "psftlib/paper.py", *SRC["plots"], "results/paper/table3_dpo_alignment.csv"],
        metrics=expand(f"results/runs/{P.name}/{{cold}}+dpo/metrics.jsonl", cold=P.data.get("dpo", {}).get("cold_starts", [])),
        evals=expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json", run=ALL_RUNS, task_set=FINAL_SETS),
    output:
        fig6_dpo=f"{FIG}/fig6_dpo.png",
        fig6_dpo_pdf=f"{FIG}/fig6_dpo.pdf",
        fig7_alignment_tax=f"{FIG}/fig7_alignment_tax.png",
        fig7_alignment_tax_pdf=f"{FIG}/fig7_alignment_tax.pdf",
        md=f"{TABLES}/table3_dpo.md",
        csv=f"{TABLES}/table3_dpo.csv",
        notebook=f"{NB}/table3_dpo.ipynb",
    params:
        cold=json.dumps(P.data.get("dpo", {}).get("cold_starts", [])),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/table3_dpo.log",
    benchmark:
        f"{BENCH}/table3_dpo.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p cold_starts '{params.cold}' > {log} 2>&1"


rule fig11_clip_ablation:
    """Figure 11: PSFT without clipping and with other eps_high (entropy, grad norm, in-domain)."""
    input:
        notebook="notebooks/fig11_clip_ablation.py",
        src=["psftlib/analysis.py", *SRC["plots"]],
        metrics=lambda wc: expand(f"results/runs/{P.name}/{{run}}/metrics.jsonl", run=P["figures"]["fig11_clip_ablation"]["runs"]),
        evals=lambda wc: expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json",
                                run=P["figures"]["fig11_clip_ablation"]["runs"], task_set=FINAL_SETS),
    output:
        png=f"{FIG}/fig11_clip_ablation.png",
        pdf=f"{FIG}/fig11_clip_ablation.pdf",
        csv=f"{TABLES}/fig11_clip_ablation.csv",
        notebook=f"{NB}/fig11_clip_ablation.ipynb",
    params:
        runs=lambda wc: json.dumps(P["figures"]["fig11_clip_ablation"]["runs"]),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/fig11_clip_ablation.log",
    benchmark:
        f"{BENCH}/fig11_clip_ablation.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p runs '{params.runs}' > {log} 2>&1"


rule table6_update_frequency:
    """Table 6 and Figure 12: old-policy refresh every 4 / 8 / 16 mini batches or never."""
    input:
        notebook="notebooks/table6_update_frequency.py",
        src=["psftlib/analysis.py", "psftlib/paper.py", *SRC["plots"], "results/paper/table6_update_frequency.csv"],
        metrics=lambda wc: expand(f"results/runs/{P.name}/{{run}}/metrics.jsonl",
                                  run=P["figures"]["table6_update_frequency"]["runs"]),
        evals=lambda wc: expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json",
                                run=P["figures"]["table6_update_frequency"]["runs"], task_set=FINAL_SETS),
    output:
        png=f"{FIG}/fig12_update_frequency.png",
        pdf=f"{FIG}/fig12_update_frequency.pdf",
        md=f"{TABLES}/table6_update_frequency.md",
        csv=f"{TABLES}/table6_update_frequency.csv",
        notebook=f"{NB}/table6_update_frequency.ipynb",
    params:
        runs=lambda wc: json.dumps(P["figures"]["table6_update_frequency"]["runs"]),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/table6_update_frequency.log",
    benchmark:
        f"{BENCH}/table6_update_frequency.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p runs '{params.runs}' > {log} 2>&1"


rule table7_entropy_tokens:
    """Table 7 (App. C.2): PSFT trained on the highest-entropy tokens only."""
    input:
        notebook="notebooks/table7_entropy_tokens.py",
        src=["psftlib/analysis.py", "psftlib/paper.py", *SRC["plots"], "results/paper/table7_entropy_tokens.csv"],
        metrics=lambda wc: expand(f"results/runs/{P.name}/{{run}}/metrics.jsonl",
                                  run=P["figures"]["table7_entropy_tokens"]["runs"]),
        evals=lambda wc: expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json",
                                run=["base", *P["figures"]["table7_entropy_tokens"]["runs"]], task_set=FINAL_SETS),
    output:
        md=f"{TABLES}/table7_entropy_tokens.md",
        csv=f"{TABLES}/table7_entropy_tokens.csv",
        notebook=f"{NB}/table7_entropy_tokens.ipynb",
    params:
        runs=lambda wc: json.dumps(P["figures"]["table7_entropy_tokens"]["runs"]),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/table7_entropy_tokens.log",
    benchmark:
        f"{BENCH}/table7_entropy_tokens.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p runs '{params.runs}' > {log} 2>&1"


rule table9_baselines:
    """Table 9 and Figure 15 (App. C.4): the DFT and iw-SFT baselines."""
    input:
        notebook="notebooks/table9_baselines.py",
        src=["psftlib/analysis.py", "psftlib/paper.py", *SRC["plots"], "results/paper/table9_dft_iwsft.csv"],
        metrics=lambda wc: expand(f"results/runs/{P.name}/{{run}}/metrics.jsonl",
                                  run=P["figures"]["table9_baselines"]["runs"]),
        evals=lambda wc: expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json",
                                run=["base", *P["figures"]["table9_baselines"]["runs"]], task_set=FINAL_SETS),
    output:
        png=f"{FIG}/fig15_baselines.png",
        pdf=f"{FIG}/fig15_baselines.pdf",
        md=f"{TABLES}/table9_baselines.md",
        csv=f"{TABLES}/table9_baselines.csv",
        notebook=f"{NB}/table9_baselines.ipynb",
    params:
        runs=lambda wc: json.dumps(P["figures"]["table9_baselines"]["runs"]),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/table9_baselines.log",
    benchmark:
        f"{BENCH}/table9_baselines.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p runs '{params.runs}' > {log} 2>&1"


rule table10_learning_rates:
    """Table 10 and Figure 17 (App. C.5): learning rate and clip fraction."""
    input:
        notebook="notebooks/table10_learning_rates.py",
        src=["psftlib/analysis.py", "psftlib/paper.py", *SRC["plots"], "results/paper/table10_learning_rate.csv"],
        metrics=lambda wc: expand(f"results/runs/{P.name}/{{run}}/metrics.jsonl",
                                  run=P["figures"]["table10_learning_rates"]["runs"]),
        evals=lambda wc: expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json",
                                run=["base", *P["figures"]["table10_learning_rates"]["runs"]], task_set=FINAL_SETS),
    output:
        png=f"{FIG}/fig17_learning_rates.png",
        pdf=f"{FIG}/fig17_learning_rates.pdf",
        md=f"{TABLES}/table10_learning_rates.md",
        csv=f"{TABLES}/table10_learning_rates.csv",
        notebook=f"{NB}/table10_learning_rates.ipynb",
    params:
        runs=lambda wc: json.dumps(P["figures"]["table10_learning_rates"]["runs"]),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/table10_learning_rates.log",
    benchmark:
        f"{BENCH}/table10_learning_rates.tsv"
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p runs '{params.runs}' > {log} 2>&1"


rule report:
    """results/report.html: every figure and table with its caption, the findings, token-by-token demonstrations,
    wall time per job and provenance (the executed notebook, converted without its code)."""
    input:
        notebook="notebooks/report.py",
        src=["psftlib/report.py", "psftlib/analysis.py"],
        outputs=REPORTED,
    output:
        html=REPORT,
        notebook=f"{NB}/report.ipynb",
    params:
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/report.log",
    conda:
        "environment.lock.yml"
    shell:
        "(OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} -p profile {params.profile} "
        "&& python -m psftlib.report {output.notebook} {output.html}) > {log} 2>&1"
