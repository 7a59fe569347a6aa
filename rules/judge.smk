# Table 3's judge scores (§4.3, App. C.7.3): AlpacaEval 2 LC / WR, Arena-Hard WR, MT-Bench 1-/2-turn of each DPO cold
# start and its DPO run, judged by paper.judge.model (vLLM on GPUs, or transformers: backend hf) with the profile's
# prompts (paper.judge.templates) and scored by each benchmark's published scorer (psftlib.eval.judge_scores).
# Included by the Snakefile only when the profile has a paper.judge section.

JUDGE = P["paper"]["judge"]
JUDGED = [*P.cold_starts("dpo"), *(f"{cold}+dpo" for cold in P.cold_starts("dpo"))]  # Table 3's rows


rule judge:
    """One run's answers to every paper.judge benchmark, judged and scored: <eval dir>/<run>/judge.json."""
    input:
        src=sources("psftlib.eval.judge_run"),
        templates=JUDGE.get("templates", "psftlib/eval/judge_templates.yaml"),
        references=[b["reference_answers"] for b in JUDGE.get("benchmarks", {}).values() if b.get("reference_answers")],
        checkpoint=f"{RUNS}/{{run}}/checkpoint",
    output:
        scores=f"{EVALS}/{{run}}/judge.json",
        samples=f"{EVALS}/{{run}}/judge.samples.json",
    wildcard_constraints:
        run="|".join(map(re.escape, JUDGED)),
    params:
        slice=lambda wc: json.dumps({"judge": JUDGE, "system_prompts": P["paper"]["system_prompts"]}, sort_keys=True),
        profile=P.name,
    log:
        f"{LOGS}/judge_{{run}}.log",
    benchmark:
        f"{BENCH}/judge_{{run}}.tsv"
    threads: P["threads"]
    resources:
        gpu=P["paper"].get("resources", {}).get("judge", {}).get("gpu", JUDGE.get("tensor_parallel_size", 1)),
    conda:
        "../environment.gpu.lock.yml"
    shell:
        "python -m psftlib.eval.judge_run --profile {params.profile} --run {wildcards.run} "
        "--checkpoint {input.checkpoint} --out {output.scores} > {log} 2>&1"
