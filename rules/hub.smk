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
GRPO_CFG = P.data.get("grpo") or {}  # server mode: the trl vllm-serve server takes GPUs of the job (psftlib.post.vllm_server)
GRPO_SERVER_GPUS = GRPO_CFG.get("vllm_server_gpus", 1) if GRPO_CFG.get("use_vllm") and GRPO_CFG.get("vllm_mode") == "server" else 0
CODE_EVAL = "HF_ALLOW_CODE_EVAL=1 " if P["eval"].get("allow_code_execution") else ""  # eval.allow_code_execution
HUB_DATASETS = sorted(PAPER["datasets"])
# Figure 3's curves and Table 1's selection: with eval.during_training on, each run also writes eval.jsonl and its
# selected checkpoint, evaluated as <run>@selected (psftlib.train.hub: under FSDP on rank 0, the model gathered)
CURVES = bool((P["eval"].get("during_training") or {}).get("every_train_batches"))
COMMON_SETS = [s for s in FINAL_SETS if s not in P.task_set_runs]  # every run's (rule eval); the others: eval_only


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
        prompts=lambda wc: LAY.rel(P.post_stage("grpo", wc.cold)[1]),
        checkpoint=lambda wc: eval_checkpoint(wc.cold),
    output:
        metrics=f"{RUNS}/{{cold}}+grpo/metrics.jsonl",
        evals=f"{RUNS}/{{cold}}+grpo/eval.jsonl",
        checkpoint=directory(f"{RUNS}/{{cold}}+grpo/checkpoint"),
    params:
        slice=lambda wc: json.dumps({"grpo": P.post_stage("grpo", wc.cold)[0]}, sort_keys=True),
        profile=P.name,
        accelerate=ACCELERATE,
        gpus=PROCESSES - GRPO_SERVER_GPUS,
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
    """The final task sets every run gets, on a finished run (or a base model, paper.base_models; or the checkpoint
    its in-domain curve selects: run=<run>@selected, Table 1) with lm-eval on vLLM, one GPU."""
    input:
        src=sources("psftlib.eval.__main__"),
        checkpoint=lambda wc: eval_checkpoint(wc.run),
        # a selected checkpoint that is the final one reuses the final evaluation (psftlib.eval.reuse_final_eval)
        final_eval=lambda wc: [f"{EVALS}/{selected_of(wc.run)}/{s}.json" for s in COMMON_SETS] if selected_of(wc.run)
        else [],
    output:
        scores=[f"{EVALS}/{{run}}/{task_set}.json" for task_set in COMMON_SETS],
        samples=[f"{EVALS}/{{run}}/{task_set}.samples.jsonl" for task_set in COMMON_SETS],
    wildcard_constraints:
        run="|".join(map(re.escape, ALL_RUNS + SELECTED)),
    params:
        slice=slice_of("eval"),
        profile=P.name,
        sets=COMMON_SETS,
        out_dir=lambda wc: f"{EVALS}/{wc.run}",
        model=lambda wc: eval_model(wc.run),
        reuse=lambda wc: f"--reuse-final {EVALS}/{selected_of(wc.run)}" if selected_of(wc.run) else "",
        code_eval=CODE_EVAL,
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
        "{params.code_eval}python -m psftlib.eval --profile {params.profile} --checkpoint {params.model} --task-sets {params.sets:q} "
        "--out-dir {params.out_dir} {params.reuse} > {log} 2>&1"


if P.task_set_runs:

    rule eval_only:
        """A task set evaluated on some runs only (eval.task_set_runs: §4.4's VLM sets, App. C.6's code set), one job per
        run and set, as rule eval does."""
        input:
            src=sources("psftlib.eval.__main__"),
            checkpoint=lambda wc: eval_checkpoint(wc.run),
        output:
            scores=f"{EVALS}/{{run}}/{{task_set}}.json",
            samples=f"{EVALS}/{{run}}/{{task_set}}.samples.jsonl",
        wildcard_constraints:
            run="|".join(map(re.escape, ALL_RUNS)),
            task_set="|".join(map(re.escape, P.task_set_runs)),
        params:
            slice=slice_of("eval"),
            profile=P.name,
            out_dir=lambda wc: f"{EVALS}/{wc.run}",
            model=lambda wc: eval_model(wc.run),
            code_eval=CODE_EVAL,
        log:
            f"{LOGS}/eval_{{run}}_{{task_set}}.log",
        benchmark:
            f"{BENCH}/eval_{{run}}_{{task_set}}.tsv"
        threads: P["threads"]
        resources:
            gpu=GPUS.get("eval", 1),
        conda:
            "../environment.gpu.lock.yml"
        shell:
            "{params.code_eval}python -m psftlib.eval --profile {params.profile} --checkpoint {params.model} "
            "--task-sets {wildcards.task_set} --out-dir {params.out_dir} > {log} 2>&1"
