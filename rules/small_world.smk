# Compute rules of the small world (world.kind: small: the mini and smoke profiles): the base model and data are
# built here (rule world), then every run trains from them on CPU. Included by the Snakefile.
from psftlib.smallworld import SKILLS

EVAL_SPLITS = [*(f"eval_{skill}" for skill in SKILLS), "eval_format", *(f"eval_target_{n}" for n in P["world"]["levels"])]


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
        src=SRC["eval"],
        data=rules.world.output.train,
        heldout=rules.world.output.heldout,
        evals=rules.world.output.evals,
        base=rules.world.output.base,
    output:
        f"results/eval/{P.name}/base/initial_curves.json",
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
        src=SRC["train"],
        data=rules.world.output.train,
        heldout=rules.world.output.heldout,
        evals=rules.world.output.evals,
        base=rules.world.output.base,
        initial_curves=rules.initial_curves.output,
    output:
        metrics=f"results/runs/{P.name}/{{run}}/metrics.jsonl",
        config=f"results/runs/{P.name}/{{run}}/config.json",
        evals=f"results/runs/{P.name}/{{run}}/eval.jsonl",
        checkpoint=directory(f"results/runs/{P.name}/{{run}}/checkpoint"),
        selected=directory(f"results/runs/{P.name}/{{run}}/selected"),  # Table 1's selection (in-domain curve)
        notebook=f"{NB}/train_{{run}}.ipynb",
    params:
        slice=lambda wc: json.dumps(
            {**P.data["train"], **P.data["runs"][wc.run], "eval": EVAL.get("during_training")}, sort_keys=True
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
    benchmark:
        f"{BENCH}/grpo_{{cold}}.tsv"
    priority: 1
    threads: P["threads"]
    conda:
        "../environment.lock.yml"
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
    benchmark:
        f"{BENCH}/dpo_{{cold}}.tsv"
    priority: 1
    threads: P["threads"]
    conda:
        "../environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.posttrain --profile {params.profile} --stage dpo "
        "--cold-start {wildcards.cold} > {log} 2>&1"


rule eval:
    """The final task sets, in one process, on a finished run's final checkpoint (or the base model: run=base; or
    the checkpoint selected by the run's in-domain curve: run=<run>@selected, Table 1)."""
    input:
        src=SRC["eval"],
        data=rules.world.output.evals,
        checkpoint=lambda wc: (
            rules.world.output.base
            if wc.run == "base"
            else f"results/runs/{P.name}/{selected_of(wc.run)}/selected"
            if selected_of(wc.run)
            else f"results/runs/{P.name}/{wc.run}/checkpoint"
        ),
        # a selected checkpoint that is the final one reuses the final evaluation (psftlib.eval.reuse_final_eval)
        final_eval=lambda wc: (
            [f"results/eval/{P.name}/{selected_of(wc.run)}/{s}.json" for s in FINAL_SETS]
            if selected_of(wc.run)
            else []
        ),
    output:
        scores=[f"results/eval/{P.name}/{{run}}/{task_set}.json" for task_set in FINAL_SETS],
        samples=[f"results/eval/{P.name}/{{run}}/{task_set}.samples.jsonl" for task_set in FINAL_SETS],
    wildcard_constraints:
        run="|".join(map(re.escape, ALL_RUNS + SELECTED)),
    params:
        slice=slice_of("eval"),
        profile=P.name,
        sets=" ".join(FINAL_SETS),
        out_dir=lambda wc: f"results/eval/{P.name}/{wc.run}",
        reuse=lambda wc: f"--reuse-final results/eval/{P.name}/{selected_of(wc.run)}" if selected_of(wc.run) else "",
    log:
        f"{LOGS}/eval_{{run}}.log",
    benchmark:
        f"{BENCH}/eval_{{run}}.tsv"
    threads: P["threads"]
    conda:
        "../environment.lock.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m psftlib.eval --profile {params.profile} "
        "--checkpoint {input.checkpoint} --task-sets {params.sets} --out-dir {params.out_dir} {params.reuse} "
        "> {log} 2>&1"
