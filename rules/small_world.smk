# Compute rules of the small world (world.kind: small: the mini and smoke profiles): the base model and data are
# built here (rule world), then every run trains from them on CPU. Included by the Snakefile.
from psftlib.worlds.small import SKILLS

EVAL_SPLITS = [*(f"eval_{skill}" for skill in SKILLS), "eval_format", *(f"eval_target_{n}" for n in P["world"]["levels"])]


rule world:
    """Tokenizer, base model and demonstration data of the profile (offline)."""
    input:
        notebook="notebooks/world.py",
        src=sources("notebooks/world.py"),
    output:
        train=f"{DATA}/train.jsonl",
        heldout=f"{DATA}/heldout.jsonl",
        evals=[f"{DATA}/{split}.jsonl" for split in EVAL_SPLITS],
        card=f"{DATA}/card.md",
        rl=f"{DATA}/rl.jsonl",
        prefs=f"{DATA}/prefs.jsonl",
        pretrain=f"{DATA}/pretrain.jsonl",
        base=directory(LAY.rel(LAY.base)),
        notebook=LAY.rel(LAY.notebook("world")),
    params:
        slice=slice_of("seed", "world", "model", "pretrain"),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/world.log",
    benchmark:
        f"{BENCH}/world.tsv"
    threads: P["pretrain"].get("threads", P["threads"])
    conda:
        "../environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} > {log} 2>&1"


rule initial_curves:
    """The base model on the in-training subset (eval.during_training): step 0 of every run's curves, evaluated
    once (each run would compute the same seeded scores; the runs check the base's fingerprint)."""
    input:
        src=sources("psftlib.eval.__main__"),
        data=rules.world.output.train,
        heldout=rules.world.output.heldout,
        evals=rules.world.output.evals,
        base=rules.world.output.base,
    output:
        LAY.rel(LAY.initial_curves),
    params:
        slice=slice_of("eval"),
        profile=P.name,
    log:
        f"{LOGS}/initial_curves.log",
    benchmark:
        f"{BENCH}/initial_curves.tsv"
    threads: P["threads"]
    conda:
        "../environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.eval --profile {params.profile} --checkpoint {input.base} "
        "--initial-curves {output} > {log} 2>&1"


rule train:
    """One SFT or PSFT run (runs.<run> in the profile) from the base model."""
    input:
        notebook="notebooks/train.py",
        src=sources("notebooks/train.py"),
        data=rules.world.output.train,
        heldout=rules.world.output.heldout,
        evals=rules.world.output.evals,
        base=rules.world.output.base,
        initial_curves=rules.initial_curves.output,
    output:
        metrics=f"{RUNS}/{{run}}/metrics.jsonl",
        config=f"{RUNS}/{{run}}/config.json",
        evals=f"{RUNS}/{{run}}/eval.jsonl",
        checkpoint=directory(f"{RUNS}/{{run}}/checkpoint"),
        selected=directory(f"{RUNS}/{{run}}/selected"),  # Table 1's selection (in-domain curve)
        notebook=LAY.rel(LAY.notebook("train_{run}")),
    params:
        slice=lambda wc: json.dumps(
            {**P.data["train"], **P.data["runs"][wc.run], "eval": P.data["eval"].get("during_training")}, sort_keys=True
        ),
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/train_{{run}}.log",
    benchmark:
        f"{BENCH}/train_{{run}}.tsv"
    # long jobs first (rules/common.smk): with evaluations first, the last training runs and their chains
    # (evaluation, selected checkpoint, Table 1, the report) ran alone at the end of the DAG
    priority: lambda wc: train_priority(wc.run)
    threads: P["threads"]
    conda:
        "../environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} {params.runner} {input.notebook} {output.notebook} "
        "-p profile {params.profile} -p run {wildcards.run} -p initial_curves {input.initial_curves} "
        "> {log} 2>&1"


rule grpo:
    """GRPO (TRL, the paper's DAPO settings) from a cold-start run: Figure 5, Table 2."""
    input:
        src=sources("psftlib.post.__main__"),
        prompts=rules.world.output.rl,
        checkpoint=f"{RUNS}/{{cold}}/checkpoint",
    output:
        metrics=f"{RUNS}/{{cold}}+grpo/metrics.jsonl",
        evals=f"{RUNS}/{{cold}}+grpo/eval.jsonl",
        checkpoint=directory(f"{RUNS}/{{cold}}+grpo/checkpoint"),
    params:
        slice=lambda wc: json.dumps({"grpo": P.data.get("grpo"), "eval": P.data["eval"]}, sort_keys=True),
        profile=P.name,
    log:
        f"{LOGS}/grpo_{{cold}}.log",
    benchmark:
        f"{BENCH}/grpo_{{cold}}.tsv"
    priority: 1
    threads: P["threads"]
    conda:
        "../environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.post --profile {params.profile} --stage grpo "
        "--cold-start {wildcards.cold} > {log} 2>&1"


rule dpo:
    """DPO (TRL) from a cold-start run: Figures 6-7, Table 3."""
    input:
        src=sources("psftlib.post.__main__"),
        pairs=rules.world.output.prefs,
        checkpoint=f"{RUNS}/{{cold}}/checkpoint",
    output:
        metrics=f"{RUNS}/{{cold}}+dpo/metrics.jsonl",
        evals=f"{RUNS}/{{cold}}+dpo/eval.jsonl",
        checkpoint=directory(f"{RUNS}/{{cold}}+dpo/checkpoint"),
    params:
        slice=lambda wc: json.dumps({"dpo": P.data.get("dpo"), "eval": P.data["eval"]}, sort_keys=True),
        profile=P.name,
    log:
        f"{LOGS}/dpo_{{cold}}.log",
    benchmark:
        f"{BENCH}/dpo_{{cold}}.tsv"
    priority: 1
    threads: P["threads"]
    conda:
        "../environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.post --profile {params.profile} --stage dpo "
        "--cold-start {wildcards.cold} > {log} 2>&1"


rule eval:
    """The final task sets, in one process, on a finished run's final checkpoint (or the base model: run=base; or
    the checkpoint selected by the run's in-domain curve: run=<run>@selected, Table 1)."""
    input:
        src=sources("psftlib.eval.__main__"),
        data=rules.world.output.evals,
        checkpoint=lambda wc: (
            rules.world.output.base
            if wc.run == "base"
            else f"{RUNS}/{selected_of(wc.run)}/selected"
            if selected_of(wc.run)
            else f"{RUNS}/{wc.run}/checkpoint"
        ),
        # a selected checkpoint that is the final one reuses the final evaluation (psftlib.eval.reuse_final_eval)
        final_eval=lambda wc: (
            [f"{EVALS}/{selected_of(wc.run)}/{s}.json" for s in FINAL_SETS]
            if selected_of(wc.run)
            else []
        ),
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
        reuse=lambda wc: f"--reuse-final {EVALS}/{selected_of(wc.run)}" if selected_of(wc.run) else "",
    log:
        f"{LOGS}/eval_{{run}}.log",
    benchmark:
        f"{BENCH}/eval_{{run}}.tsv"
    threads: P["threads"]
    conda:
        "../environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.eval --profile {params.profile} "
        "--checkpoint {input.checkpoint} --task-sets {params.sets:q} --out-dir {params.out_dir} {params.reuse} "
        "> {log} 2>&1"
