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


PROFILE = config.get("profile", "mini")
try:
    P = load_profile(PROFILE)
except ConfigError as err:
    raise WorkflowError(f"invalid profile:\n{err}") from None

# Jobs call `python` from PATH: put this interpreter's folder first, so a venv's snakemake uses that venv
# even when it is not activated (and params stay free of machine-specific paths).
use_this_interpreter()
NB = f"results/notebooks/{P.name}"
LOGS = f"results/logs/{P.name}"
FIG = "figures" if P.name == "mini" else f"figures/{P.name}"
RUN_NOTEBOOK = "python -m psftlib.notebook"
EVAL = P.data.get("eval", {})
TASK_SETS = list(EVAL.get("task_sets", {}))
POST = [f"{cold}+{stage}" for stage in ("grpo", "dpo") for cold in P.data.get(stage, {}).get("cold_starts", [])]
ALL_RUNS = ["base", *P.runs, *POST]
SRC = {
    "world": ["psftlib/world.py", "psftlib/data.py", "psftlib/config.py"],
    "train": ["psftlib/train.py", "psftlib/objectives.py", "psftlib/logprobs.py", "psftlib/data.py",
              "psftlib/config.py", "psftlib/world.py", "psftlib/eval.py", "psftlib/verify.py"],
    "plots": ["psftlib/plots.py"],
    "eval": ["psftlib/eval.py", "psftlib/verify.py", "psftlib/world.py", *sorted(glob("psftlib/tasks/*"))],
    "post": ["psftlib/posttrain.py", "psftlib/rl.py", "psftlib/dpo.py", "psftlib/verify.py", "psftlib/world.py",
             "psftlib/eval.py"],
}


def slice_of(*keys):
    """The part of the profile a job depends on, as a stable string (params trigger re-runs)."""
    return json.dumps({k: P.data[k] for k in keys}, sort_keys=True)


wildcard_constraints:
    run="|".join(P.runs),
    cold="|".join(P.runs),


rule all:
    input:
        f"{FIG}/fig1_entropy.png",
        expand(f"results/eval/{P.name}/{{run}}/{{task_set}}.json", run=ALL_RUNS, task_set=TASK_SETS),


# ---- compute ---------------------------------------------------------------------------------------------

rule world:
    """Tokenizer, base model and demonstration data of the profile (offline)."""
    input:
        notebook="notebooks/world.py",
        src=SRC["world"],
    output:
        train=f"results/data/{P.name}/train.jsonl",
        eval=f"results/data/{P.name}/eval.jsonl",
        card=f"results/data/{P.name}/card.md",
        rl=f"results/data/{P.name}/rl.jsonl",
        prefs=f"results/data/{P.name}/prefs.jsonl",
        base=directory(f"results/world/{P.name}/base"),
        notebook=f"{NB}/world.ipynb",
    params:
        slice=slice_of("seed", "world", "model"),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/world.log",
    threads: P["threads"]
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
    """The full task sets, once, on a finished run's checkpoint (or the base model: run=base)."""
    input:
        src=SRC["eval"],
        data=rules.world.output.eval,
        checkpoint=lambda wc: (
            rules.world.output.base if wc.run == "base" else f"results/runs/{P.name}/{wc.run}/checkpoint"
        ),
    output:
        scores=f"results/eval/{P.name}/{{run}}/{{task_set}}.json",
        samples=f"results/eval/{P.name}/{{run}}/{{task_set}}.samples.jsonl",
    wildcard_constraints:
        run="|".join(map(re.escape, ALL_RUNS)),
        task_set="|".join(TASK_SETS) or "none",
    params:
        slice=slice_of("eval"),
        profile=P.name,
        stem=lambda wc, output: output.scores.removesuffix(".json"),
    log:
        f"{LOGS}/eval_{{run}}_{{task_set}}.log",
    threads: P["threads"]
    conda:
        "environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.eval --profile {params.profile} "
        "--checkpoint {input.checkpoint} --task-set {wildcards.task_set} --out {params.stem} > {log} 2>&1"


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
