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

from psftlib.config import ConfigError, load_profile
from psftlib.notebook import use_this_interpreter
from psftlib.smallworld import SKILLS


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
EVAL_SPLITS = [*(f"eval_{skill}" for skill in SKILLS), "eval_format", *(f"eval_target_{n}" for n in P["world"]["levels"])]
LOGS = f"results/logs/{P.name}"
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


def slice_of(*keys):
    """The part of the profile a job depends on, as a stable string (params trigger re-runs)."""
    return json.dumps({k: P.data.get(k) for k in keys}, sort_keys=True)


wildcard_constraints:
    run="|".join(map(re.escape, P.runs)),
    cold="|".join(map(re.escape, P.runs)),


TABLES = "results/tables" if P.name == "mini" else f"results/tables/{P.name}"
CAL = P.data.get("calibration", {})
FINDINGS = "results/findings.md" if P.name == "mini" else f"results/{P.name}/findings.md"
CAL_RUNS = [*CAL.get("sft_grid", []), *CAL.get("psft_grid", []), *CAL.get("matched", [])]


rule all:
    input:
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
        expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json", run=ALL_RUNS, task_set=FINAL_SETS),


# ---- compute ---------------------------------------------------------------------------------------------

rule world:
    """Tokenizer, base model and demonstration data of the profile (offline)."""
    input:
        notebook="notebooks/world.py",
        src=SRC["world"],
    output:
        train=f"{DATA}/train.jsonl",
        heldout=f"{DATA}/heldout.jsonl",
        evals=[f"{DATA}/{split}.jsonl" for split in EVAL_SPLITS],
        card=f"{DATA}/card.md",
        rl=f"{DATA}/rl.jsonl",
        prefs=f"{DATA}/prefs.jsonl",
        pretrain=f"{DATA}/pretrain.jsonl",
        base=directory(f"results/world/{P.name}/base"),
        notebook=f"{NB}/world.ipynb",
    params:
        slice=slice_of("seed", "world", "model", "pretrain"),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/world.log",
    threads: P["pretrain"].get("threads", P["threads"])
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} > {log} 2>&1"


rule train:
    """One SFT or PSFT run (runs.<run> in the profile) from the base model."""
    input:
        notebook="notebooks/train.py",
        src=SRC["train"],
        data=rules.world.output.train,
        heldout=rules.world.output.heldout,
        evals=rules.world.output.evals,
        base=rules.world.output.base,
    output:
        metrics=f"results/runs/{P.name}/{{run}}/metrics.jsonl",
        config=f"results/runs/{P.name}/{{run}}/config.json",
        evals=f"results/runs/{P.name}/{{run}}/eval.jsonl",
        checkpoint=directory(f"results/runs/{P.name}/{{run}}/checkpoint"),
        notebook=f"{NB}/train_{{run}}.ipynb",
    params:
        slice=lambda wc: json.dumps(
            {**P.data["train"], **P.data["runs"][wc.run], "eval": EVAL.get("during_training")}, sort_keys=True
        ),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/train_{{run}}.log",
    threads: P["threads"]
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p run {wildcards.run} > {log} 2>&1"


rule grpo:
    """GRPO (TRL, the paper's DAPO settings) from a cold-start run: Figure 5, Table 2."""
    input:
        src=SRC["post"],
        prompts=rules.world.output.rl,
        checkpoint=f"results/runs/{P.name}/{{cold}}/checkpoint",
    output:
        metrics=f"results/runs/{P.name}/{{cold}}+grpo/metrics.jsonl",
        evals=f"results/runs/{P.name}/{{cold}}+grpo/eval.jsonl",
        checkpoint=directory(f"results/runs/{P.name}/{{cold}}+grpo/checkpoint"),
    params:
        slice=lambda wc: json.dumps({"grpo": P.data.get("grpo"), "eval": EVAL}, sort_keys=True),
        profile=P.name,
    log:
        f"{LOGS}/grpo_{{cold}}.log",
    threads: P["threads"]
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.posttrain --profile {params.profile} --stage grpo "
        "--cold-start {wildcards.cold} > {log} 2>&1"


rule dpo:
    """DPO (TRL) from a cold-start run: Figures 6-7, Table 3."""
    input:
        src=SRC["post"],
        pairs=rules.world.output.prefs,
        checkpoint=f"results/runs/{P.name}/{{cold}}/checkpoint",
    output:
        metrics=f"results/runs/{P.name}/{{cold}}+dpo/metrics.jsonl",
        evals=f"results/runs/{P.name}/{{cold}}+dpo/eval.jsonl",
        checkpoint=directory(f"results/runs/{P.name}/{{cold}}+dpo/checkpoint"),
    params:
        slice=lambda wc: json.dumps({"dpo": P.data.get("dpo"), "eval": EVAL}, sort_keys=True),
        profile=P.name,
    log:
        f"{LOGS}/dpo_{{cold}}.log",
    threads: P["threads"]
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.posttrain --profile {params.profile} --stage dpo "
        "--cold-start {wildcards.cold} > {log} 2>&1"


rule eval:
    """The final task sets, in one process, on a finished run's checkpoint (or the base model: run=base)."""
    input:
        src=SRC["eval"],
        data=rules.world.output.evals,
        checkpoint=lambda wc: (
            rules.world.output.base if wc.run == "base" else f"results/runs/{P.name}/{wc.run}/checkpoint"
        ),
    output:
        scores=[f"results/eval/{P.name}/{{run}}/{task_set}.json" for task_set in FINAL_SETS],
        samples=[f"results/eval/{P.name}/{{run}}/{task_set}.samples.jsonl" for task_set in FINAL_SETS],
    wildcard_constraints:
        run="|".join(map(re.escape, ALL_RUNS)),
    params:
        slice=slice_of("eval"),
        profile=P.name,
        sets=" ".join(FINAL_SETS),
        out_dir=lambda wc: f"results/eval/{P.name}/{wc.run}",
    log:
        f"{LOGS}/eval_{{run}}.log",
    threads: P["threads"]
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.eval --profile {params.profile} "
        "--checkpoint {input.checkpoint} --task-sets {params.sets} --out-dir {params.out_dir} > {log} 2>&1"


# ---- figures and tables (read results/, never train) -----------------------------------------------------

rule fig1_entropy:
    """Figure 1: token entropy over training, one line per method."""
    input:
        notebook="notebooks/fig1_entropy.py",
        src=SRC["plots"],
        metrics=expand(f"results/runs/{P.name}/{{run}}/metrics.jsonl", run=P["figures"]["fig1_entropy"]["runs"]),
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
                                run=["base", *P["figures"]["table1_main"]["runs"]], task_set=FINAL_SETS),
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
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p runs '{params.runs}' > {log} 2>&1"
