# psft: every table and figure of "Proximal Supervised Fine-Tuning", regenerated from scratch.
#
#   snakemake --cores all                          # default profile: mini (CPU, small world)
#   snakemake --cores all --config profile=smoke   # tests / CI
#   snakemake --cores all --config redraw=true     # make figures: every figure, table, the findings and the report
#                                                  # re-drawn from the committed results; nothing trains
#
# Compute rules (world, train, eval, grpo, dpo) write data under results/ (rules/small_world.smk or rules/hub.smk);
# one rule per table or figure, named after it, only reads it, so restyling never retrains. Those rules are made
# from the artifact registry (config/artifacts.yaml): its notebook, the results it reads, its outputs, its
# parameters. Paths come from psftlib.layout; each rule's source files from the import graph (psftlib.sources).
import json
import re
from pathlib import Path

import yaml

from snakemake.exceptions import WorkflowError

from psftlib.artifacts import present
from psftlib.config import CONFIG_DIR, ROOT, ConfigError, load_profile
from psftlib.notebook import use_this_interpreter
from psftlib.sources import sources


CONFIG_KEYS = {"profile": "a profile name (config/<name>.yaml)", "redraw": "true: re-draw from committed results"}
# A whole profile may come as `--configfile config/<name>.yaml` (its keys then fill `config`; see rules/hub.smk)
PROFILE_FILES = [Path(f) for f in workflow.overwrite_configfiles or []]
PROFILE_KEYS = {k for f in PROFILE_FILES for k in yaml.safe_load(f.read_text()) or {}}
unknown = sorted(set(config) - set(CONFIG_KEYS) - PROFILE_KEYS)
if unknown:
    raise WorkflowError(f"--config: unknown key(s) {unknown}; known: {CONFIG_KEYS}")
if len(PROFILE_FILES) > 1:
    raise WorkflowError(f"--configfile: one profile at a time, got {[str(f) for f in PROFILE_FILES]}")
PROFILE = PROFILE_FILES[0] if PROFILE_FILES else config.get("profile", "mini")
# Redraw (make figures): only the figure, table, findings and report rules exist, so the committed results they
# read (metrics.jsonl, eval.jsonl, results/eval/**.json, tokens.parquet, the data card) are plain inputs and no
# checkpoint is ever needed. Their benchmark files go to the logs, so the committed wall times stay those of the run.
REDRAW = {True: True, False: False, "true": True, "false": False}.get(config.get("redraw", False))
if REDRAW is None:
    raise WorkflowError(f"--config redraw={config['redraw']!r}: expected true or false")
try:
    P = load_profile(PROFILE)
except ConfigError as err:
    raise WorkflowError(f"invalid profile:\n{err}") from None
# The DAG runs exactly the profile it validated: every job loads it again by its name (`--profile {P.name}`,
# `-p profile {P.name}`: config/<name>.yaml), so the file given must be that one. A copy elsewhere, or a copied
# profile that still says `profile: smoke`, would have the jobs train smoke's config (issue 22): refused.
BY_NAME = CONFIG_DIR / f"{P.name}.yaml"
if not (BY_NAME.exists() and BY_NAME.samefile(ROOT / P.path)):
    raise WorkflowError(
        f"{P.path} says `profile: {P.name}`, but every job loads a profile by that name, from "
        f"{BY_NAME.relative_to(ROOT)}{'' if BY_NAME.exists() else ' (missing)'}, not from {P.path}: the jobs would "
        "not run the profile validated here. Keep a profile in config/ under its own name (config/<name>.yaml "
        "with `profile: <name>`) and run `snakemake --config profile=<name>`."
    )
if PROFILE_FILES and config.get("profile") != P.name:
    raise WorkflowError(f"--config profile={config['profile']} and --configfile {PROFILE}: give one profile")

# Jobs call `python` from PATH: put this interpreter's folder first, so a venv's snakemake uses that venv
# even when it is not activated (and params stay free of machine-specific paths).
use_this_interpreter()
LAY = P.layout
DATA, LOGS, BENCH = LAY.rel(LAY.data), LAY.rel(LAY.logs), LAY.rel(LAY.benchmarks)
RUNS = f"results/runs/{P.name}"
EVALS = f"results/eval/{P.name}"
RUN_NOTEBOOK = "python -m psftlib.notebook"
FINAL_SETS = P.final_task_sets  # the in-training subset is never run as a final eval
ALL_RUNS = P.all_runs
SELECTED = P.selected_runs  # Table 1's runs at their selected checkpoints: eval of "<run>@selected"
ARTIFACTS = present(P)
REPORTED = [path for a in ARTIFACTS for key, path in a.outputs(P).items() if key != "notebook"]
REPORT = LAY.rel(LAY.report)


include: "rules/common.smk"


wildcard_constraints:
    run="|".join(map(re.escape, P.runs)),
    cold="|".join(map(re.escape, P.runs + (P.base_runs if P["world"]["kind"] == "hub" else []))),


if REDRAW:
    missing = sorted({f for a in ARTIFACTS for f in a.inputs(P) if not Path(f).exists()})
    if missing:
        raise WorkflowError(
            f"redraw reads the committed results of profile {P.name!r}, but {len(missing)} are missing, e.g. "
            f"{missing[:3]}; build them first: snakemake --cores all --config profile={P.name}"
        )


rule all:
    input:
        REPORTED,
        REPORT,
        [] if REDRAW else [f"{EVALS}/{run}/{task_set}.json" for run, task_set in P.evaluations(ALL_RUNS)],


# ---- compute ---------------------------------------------------------------------------------------------

# The small world builds its own base model and data (rules/small_world.smk); a hub profile (config/paper.yaml)
# loads public models and datasets and trains on GPUs (rules/hub.smk). Both provide the rules train, eval, grpo
# and dpo with the same outputs, so the figure and table rules below serve either.
if REDRAW:
    pass
elif P["world"]["kind"] == "hub":

    include: "rules/hub.smk"

    if P["paper"].get("judge"):  # Table 3's judge scores (rules/judge.smk)

        include: "rules/judge.smk"

else:

    include: "rules/small_world.smk"


# ---- figures and tables (read results/, never train): one rule per config/artifacts.yaml entry -----------

for art in ARTIFACTS:

    rule:
        name:
            art.name
        input:
            notebook=art.notebook,
            src=sources(art.notebook),
            results=art.inputs(P),
        output:
            **reported_outputs(art),
        params:
            slice=slice_of("figures", "calibration", "eval", "seed_replicates", "grpo", "dpo"),
            flags=art.shell_params(P),
            runner=RUN_NOTEBOOK,
        log:
            f"{LOGS}/{art.name}.log",
        benchmark:
            f"{LOGS}/redraw/{art.name}.tsv" if REDRAW else f"{BENCH}/{art.name}.tsv"
        conda:
            "environment.lock.yml"
        shell:
            "(OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} {params.flags} "
            "&& python -m psftlib.report.html --code {output.notebook} {output.executed}) > {log} 2>&1"


rule report:
    """The report (results/report.html): every figure and table of config/artifacts.yaml with its caption, the
    findings, token-by-token demonstrations, wall time per job and provenance (the executed notebook, without code)."""
    input:
        notebook="notebooks/report.py",
        src=sources("notebooks/report.py", "psftlib.report.html"),
        outputs=REPORTED,
        # what the runs' data lost (each run's config.json) and the data card: the small world writes them
        data=[] if P["world"]["kind"] == "hub" else [f"{RUNS}/{r}/config.json" for r in P.runs] + [f"{DATA}/card.md"],
    output:
        html=REPORT,
        notebook=LAY.rel(LAY.notebook("report")),
    params:
        profile=P.name,
        runner=RUN_NOTEBOOK,
    log:
        f"{LOGS}/report.log",
    conda:
        "environment.lock.yml"
    shell:
        "(OMP_NUM_THREADS=1 {params.runner} {input.notebook} {output.notebook} -p profile {params.profile} "
        "&& python -m psftlib.report.html {output.notebook} {output.html}) > {log} 2>&1"
