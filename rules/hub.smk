# Compute rules of a hub-scale profile (world.kind: hub, config/paper.yaml): public models and datasets on GPUs.
# Included by the Snakefile in place of rules/small_world.smk; the figure and table rules are shared.
#
#   snakemake -n --configfile config/paper.yaml                       # every job, nothing run
#   snakemake --configfile config/paper.yaml --executor slurm --profile profiles/slurm
#
# GPU counts are Snakemake resources (`gpu`), which the SLURM executor turns into --gres requests
# (profiles/slurm/config.yaml); a local `snakemake --resources gpu=8` never over-subscribes one node.

PAPER = P["paper"]
GPUS = {rule: spec.get("gpu", 0) for rule, spec in PAPER.get("resources", {}).items()}  # paper.resources
ACCELERATE = PAPER["launcher"]["accelerate_config"]
PROCESSES = PAPER["launcher"].get("num_processes", GPUS.get("train", 1))
HUB_DATASETS = sorted(PAPER["datasets"])
# Figure 3's curves and Table 1's selection: with eval.during_training on, each run also writes eval.jsonl and its
# selected checkpoint, evaluated as <run>@selected (psftlib.train.hub: under FSDP on rank 0, the model gathered)
CURVES = bool((P["eval"].get("during_training") or {}).get("every_train_batches"))


rule world:
    """One paper.datasets entry, loaded by id with the paper's filters into our JSONL schema (psftlib.worlds.loaders)."""
    input:
        src=sources("psftlib.worlds.loaders"),
    output:
        f"{DATA}/{{dataset}}.jsonl",
    wildcard_constraints:
        dataset="|".join(map(re.escape, HUB_DATASETS)),
    params:
        spec=lambda wc: json.dumps(PAPER["datasets"][wc.dataset], sort_keys=True),
        profile=P.name,
    log:
        f"{LOGS}/world_{{dataset}}.log",
    benchmark:
        f"{BENCH}/world_{{dataset}}.tsv"
    threads: P["threads"]
    resources:
        gpu=GPUS.get("world", 0),
    conda:
        "../environment.gpu.lock.yml"
    shell:
        "python -m psftlib.worlds.loaders --profile {params.profile} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule train:
    """One SFT-stage run on GPUs: the run's hub model (paper.run_sources) on its dataset, accelerate + FSDP."""
    input:
        src=sources("psftlib.train.hub"),
        data=run_data,
    output:
        metrics=f"{RUNS}/{{run}}/metrics.jsonl",
        checkpoint=directory(f"{RUNS}/{{run}}/checkpoint"),
        **({"evals": f"{RUNS}/{{run}}/eval.jsonl", "selected": directory(f"{RUNS}/{{run}}/selected")} if CURVES else {}),
    params:
        slice=lambda wc: json.dumps({**P.data["train"], **P.data["runs"][wc.run], **P.run_source(wc.run),
                                     "during_training": P["eval"].get("during_training")}, sort_keys=True),
        profile=P.name,
        accelerate=ACCELERATE,
        gpus=PROCESSES,
    log:
        f"{LOGS}/train_{{run}}.log",
    benchmark:
        f"{BENCH}/train_{{run}}.tsv"
    threads: P["threads"]
    resources:
        gpu=GPUS.get("train", PROCESSES),
    conda:
        "../environment.gpu.lock.yml"
    shell:
        "accelerate launch --config_file {params.accelerate} --num_processes {params.gpus} "
        "-m psftlib.train.hub --profile {params.profile} --run {wildcards.run} > {log} 2>&1"


rule grpo:
    """GRPO (TRL + vLLM generation, the paper's DAPO settings) from a cold-start run: Figure 5, Table 2."""
    input:
        src=sources("psftlib.post.__main__"),
        prompts=post_data("grpo"),
        checkpoint=f"{RUNS}/{{cold}}/checkpoint",
    output:
        metrics=f"{RUNS}/{{cold}}+grpo/metrics.jsonl",
        evals=f"{RUNS}/{{cold}}+grpo/eval.jsonl",
        checkpoint=directory(f"{RUNS}/{{cold}}+grpo/checkpoint"),
    params:
        slice=lambda wc: json.dumps({"grpo": P.data.get("grpo")}, sort_keys=True),
        profile=P.name,
        accelerate=ACCELERATE,
        gpus=PROCESSES,
    log:
        f"{LOGS}/grpo_{{cold}}.log",
    benchmark:
        f"{BENCH}/grpo_{{cold}}.tsv"
    threads: P["threads"]
    resources:
        gpu=GPUS.get("grpo", PROCESSES),
    conda:
        "../environment.gpu.lock.yml"
    shell:
        "accelerate launch --config_file {params.accelerate} --num_processes {params.gpus} "
        "-m psftlib.post --profile {params.profile} --stage grpo --cold-start {wildcards.cold} > {log} 2>&1"


rule dpo:
    """DPO (TRL) from a cold-start run: Figures 6-7, Table 3."""
    input:
        src=sources("psftlib.post.__main__"),
        pairs=post_data("dpo"),
        checkpoint=f"{RUNS}/{{cold}}/checkpoint",
    output:
        metrics=f"{RUNS}/{{cold}}+dpo/metrics.jsonl",
        evals=f"{RUNS}/{{cold}}+dpo/eval.jsonl",
        checkpoint=directory(f"{RUNS}/{{cold}}+dpo/checkpoint"),
    params:
        slice=lambda wc: json.dumps({"dpo": P.data.get("dpo")}, sort_keys=True),
        profile=P.name,
        accelerate=ACCELERATE,
        gpus=PROCESSES,
    log:
        f"{LOGS}/dpo_{{cold}}.log",
    benchmark:
        f"{BENCH}/dpo_{{cold}}.tsv"
    threads: P["threads"]
    resources:
        gpu=GPUS.get("dpo", PROCESSES),
    conda:
        "../environment.gpu.lock.yml"
    shell:
        "accelerate launch --config_file {params.accelerate} --num_processes {params.gpus} "
        "-m psftlib.post --profile {params.profile} --stage dpo --cold-start {wildcards.cold} > {log} 2>&1"


rule eval:
    """The final task sets on a finished run (or a run's base model: run=base; or the checkpoint its in-domain curve
    selects: run=<run>@selected, Table 1) with lm-eval on vLLM, one GPU."""
    input:
        src=sources("psftlib.eval.__main__"),
        checkpoint=lambda wc: [] if wc.run == "base" else f"{RUNS}/{selected_of(wc.run)}/selected"
        if selected_of(wc.run) else f"{RUNS}/{wc.run}/checkpoint",
        # a selected checkpoint that is the final one reuses the final evaluation (psftlib.eval.reuse_final_eval)
        final_eval=lambda wc: [f"{EVALS}/{selected_of(wc.run)}/{s}.json" for s in FINAL_SETS] if selected_of(wc.run)
        else [],
    output:
        scores=[f"{EVALS}/{{run}}/{task_set}.json" for task_set in FINAL_SETS],
        samples=[f"{EVALS}/{{run}}/{task_set}.samples.jsonl" for task_set in FINAL_SETS],
    wildcard_constraints:
        run="|".join(map(re.escape, ALL_RUNS + SELECTED)),
    params:
        slice=slice_of("eval"),
        profile=P.name,
        sets=FINAL_SETS,
        out_dir=lambda wc: f"{EVALS}/{wc.run}",
        model=lambda wc: PAPER["models"][PAPER.get("base_model", "qwen25_7b")] if wc.run == "base"
        else f"{RUNS}/{selected_of(wc.run)}/selected" if selected_of(wc.run) else f"{RUNS}/{wc.run}/checkpoint",
        reuse=lambda wc: f"--reuse-final {EVALS}/{selected_of(wc.run)}" if selected_of(wc.run) else "",
    log:
        f"{LOGS}/eval_{{run}}.log",
    benchmark:
        f"{BENCH}/eval_{{run}}.tsv"
    threads: P["threads"]
    resources:
        gpu=GPUS.get("eval", 1),
    conda:
        "../environment.gpu.lock.yml"
    shell:
        "python -m psftlib.eval --profile {params.profile} --checkpoint {params.model} --task-sets {params.sets:q} "
        "--out-dir {params.out_dir} {params.reuse} > {log} 2>&1"
